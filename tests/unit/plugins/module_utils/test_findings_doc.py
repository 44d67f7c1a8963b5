# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rule catalogue (_verdict/catalogue.py) and its reference, docs/findings.md, in step: one section
and one table row per rule, in the catalogue's order, with its severity, modes and evidence side;
no section, row or link for a rule the catalogue lacks."""

from __future__ import annotations

import pathlib
import re

import pytest

from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.catalogue import (
    ANY_TLS,
    DEFAULT_OPTIONS,
    IMPLICIT,
    RULES,
    STARTTLS,
)

DOC = pathlib.Path(__file__).resolve().parents[4] / 'docs' / 'findings.md'
# A heading that names a finding: an ID alone (`## starttls-not-offered`).
RULE_HEADING = re.compile(r'^## ([a-z0-9]+(?:-[a-z0-9]+)+)\s*$', re.MULTILINE)
# A row of the "Rules per listener" table: | [`id`](#anchor) | severity ... | modes ... | evidence |
TABLE_ROW = re.compile(r'^\| \[`([^`]+)`\]\(#([^)]+)\) \| ([^|]+) \| ([^|]+) \| ([^|]+) \|\s*$', re.MULTILINE)
MODES = {'STARTTLS': STARTTLS, 'implicit': IMPLICIT, 'any': ANY_TLS}


@pytest.fixture(scope='module')
def doc() -> str:
    return DOC.read_text(encoding='utf-8')


def sections(text: str) -> dict:
    """{rule ID: the text of its section, up to the next heading of any level}."""
    found = {}
    for match in RULE_HEADING.finditer(text):
        following = re.search(r'^#', text[match.end():], re.MULTILINE)
        found[match.group(1)] = text[match.end():match.end() + following.start()] if following else text[match.end():]
    return found


def test_every_rule_has_its_section_and_no_section_names_another(doc):
    assert list(sections(doc)) == list(RULES)


def test_the_rules_table_matches_the_catalogue(doc):
    rows = TABLE_ROW.findall(doc)
    assert [row[0] for row in rows] == list(RULES)
    for rule, anchor, severity, modes, evidence in rows:
        spec = RULES[rule]
        assert anchor == rule
        # The default first; a situational one may follow in parentheses ("medium (high when ...)").
        assert severity.split()[0] == spec['severity'], rule
        assert MODES[modes.split()[0]] == spec['modes'], rule
        assert evidence.strip() == spec['evidence'], rule


def test_a_severity_paragraph_starts_with_the_catalogue_severity(doc):
    for rule, text in sections(doc).items():
        stated = re.search(r'\*\*Severity\.\*\* `([a-z]+)`', text)
        if stated:
            assert stated.group(1) == RULES[rule]['severity'], rule


def test_every_link_within_the_page_finds_its_heading(doc):
    """A link to a finding the catalogue lacks (renamed, removed) would point nowhere."""
    anchors = {re.sub(r'[^a-z0-9 -]', '', heading.lower()).replace(' ', '-')
               for heading in re.findall(r'^#+ (.+?)\s*$', doc, re.MULTILINE)}
    targets = set(re.findall(r'\]\(#([^)]+)\)', doc))
    assert targets and not targets - anchors


def test_the_options_paragraph_names_every_option_and_its_default(doc):
    paragraph = doc[doc.index('Options of the judgement:'):]
    paragraph = paragraph[:paragraph.index('\n\n')]
    named = re.findall(r'`([a-z_]+)`(?: \(`?([^)`]*)`?\))?', paragraph)
    assert sorted(name for name, _default in named) == sorted(DEFAULT_OPTIONS)
    for name, default in named:
        if isinstance(DEFAULT_OPTIONS[name], (int, str)):
            assert default == str(DEFAULT_OPTIONS[name]), name
