# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""visible_record: the same text as visible_deep, without the walk when nothing needs an escape."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from ansible_collections.mailsec.starttls.plugins.module_utils._text import visible_deep, visible_record

# Text drawn mostly from the characters that matter: every C0 control, DEL, the C1 range, the bidi
# controls, the line and paragraph separators, the backslash and the letters of JSON's escapes.
INTERESTING = st.sampled_from([chr(code) for code in range(0x00, 0x21)] + ['\x7f', '\x85', '\x9b', '\x9f', '\xa0']
                              + ['\u061c', '\u200e', '\u200f', '\u202a', '\u202e', '\u2066', '\u2069', '\u2028',
                                 '\u2029', '\\', 'r', 'b', 'f', 'u', '0', '1', '"', 'a', 'é', '€'])
TEXT = st.text(alphabet=st.one_of(INTERESTING, st.characters()), max_size=12)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), TEXT)


def containers(children):
    return st.one_of(st.lists(children, max_size=4), st.dictionaries(TEXT, children, max_size=4))


RECORDS = st.recursive(SCALARS, containers, max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(RECORDS)
def test_visible_record_says_what_visible_deep_says(value):
    assert visible_record(value) == visible_deep(value)


def test_a_record_with_nothing_to_escape_is_returned_as_it_is():
    record = {'greeting': {'code': '220', 'lines': ['mail.test ESMTP\tPostfix']}, 'flags': [], 'port': 25,
              'path': 'C:\\mail\\queue'}
    assert visible_record(record) is record


@pytest.mark.parametrize('unsafe', ['\x1b[2J', 'a\rb', '\x08', '\x0c', '\x7f', '\x9b', '\u202e', '\u2028', '\x00'])
def test_a_record_with_an_unsafe_character_anywhere_comes_back_escaped(unsafe):
    for record in ({'reply': {'text': f'250 {unsafe}'}}, {'lines': ['ok', [unsafe]]}, {f'key{unsafe}': 1}):
        shown = visible_record(record)
        assert shown is not record
        assert shown == visible_deep(record)
        assert unsafe not in repr(shown).encode('ascii', 'backslashreplace').decode('ascii').replace('\\\\', '')


def test_values_json_cannot_write_take_the_walk():
    record = {'raw': b'\x1b', ('a', 'tuple'): 'key'}
    assert visible_record(record) == visible_deep(record)
