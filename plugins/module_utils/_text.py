# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Text from servers and managed hosts made safe to show anywhere: a terminal, Markdown, JUnit, HTML.

A banner, a certificate subject or a configuration path can carry terminal controls (ESC and the
8-bit CSI U+009B start escape sequences that move the cursor, recolour or retitle a terminal, or
hide what follows), DEL, and Unicode bidirectional overrides and isolates (U+202A-U+202E,
U+2066-U+2069) that make a line display in an order other than its bytes (CVE-2021-42574,
"Trojan Source"). Each such character is replaced by a visible escape (\\x1b, \\x9b, \\x7f,
\\u202e), so that what a reader sees is what was sent. Tab and line feed are kept (a reply has
several lines; every output format escapes them in its own way).
"""

from __future__ import annotations

import json
import re

_UNSAFE = re.compile('[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]')
_UNSAFE_KEEPING_CR = re.compile('[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069'
                                '\u2028\u2029]')


def _escape(match) -> str:
    code = ord(match.group())
    return f'\\x{code:02x}' if code < 0x100 else f'\\u{code:04x}'


def visible(value, keep_cr: bool = False) -> str:
    """`value` as text with every unsafe character replaced by its visible escape."""
    text = value if isinstance(value, str) else str(value)
    pattern = _UNSAFE_KEEPING_CR if keep_cr else _UNSAFE
    if pattern.search(text) is None:
        return text
    return pattern.sub(_escape, text)


def visible_deep(value, depth: int = 0):
    """A copy of a JSON-like value with every string (and every string key) made visible."""
    if isinstance(value, str):
        return visible(value)
    if depth > 64:
        # Records are a few levels deep; anything deeper is not ours to walk.
        return visible(repr(value)[:200])
    if isinstance(value, dict):
        return {visible(key) if isinstance(key, str) else key: visible_deep(item, depth + 1)
                for key, item in value.items()}
    if isinstance(value, list):
        return [visible_deep(item, depth + 1) for item in value]
    if isinstance(value, tuple):
        return tuple(visible_deep(item, depth + 1) for item in value)
    return value


# What an unsafe character becomes in json.dumps(..., ensure_ascii=False): C0 controls other than tab and
# line feed as \r, \b, \f or \u00XX; the others stay as they are. A backslash of the text followed by
# r, b, f or u00 matches too: that only costs the walk.
_UNSAFE_IN_JSON = re.compile('\\\\[rbf]|\\\\u00[01]|[\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]')


def visible_record(value):
    """`value` itself when no string in it (key or value) has an unsafe character, else a copy made by
    visible_deep. One C-speed JSON dump and one search instead of a Python walk of every string: a probe
    record has about fifty of them and rarely anything to escape (bench/README.md, issue 15)."""
    try:
        text = json.dumps(value, ensure_ascii=False, check_circular=False)
    except (TypeError, ValueError, RecursionError):
        return visible_deep(value)
    if _UNSAFE_IN_JSON.search(text) is None:
        return value
    return visible_deep(value)


def has_unsafe(value) -> bool:
    return isinstance(value, str) and _UNSAFE.search(value) is not None
