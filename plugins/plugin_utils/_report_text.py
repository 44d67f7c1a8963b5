# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the report builder (_reports) and every rendering of a report share: the name a report
is signed with, the key of a finding's listener, and the plain text of a finding (where it was
seen, its evidence, its waiver, its listener). Each renderer escapes this text for its own syntax
(_report_junit, _report_markdown, _report_html)."""

from __future__ import annotations

import json

from ansible_collections.mailsec.starttls.plugins.module_utils import _verdict

GENERATOR = 'mailsec.starttls'
# New and resolved findings listed under "what changed" (Markdown; the HTML page shows four times as many).
CHANGE_LIST_LIMIT = 50


def code_spans(text: str) -> list:
    """Split fix text at backticks: [(is_code, part), ...]."""
    parts = (text or '').split('`')
    if len(parts) % 2 == 0:  # an unmatched backtick: keep it as text
        parts = parts[:-2] + [parts[-2] + '`' + parts[-1]]
    return [(index % 2 == 1, part) for index, part in enumerate(parts) if part]


def evidence_json(evidence, markup_safe: bool = False) -> str:
    # ensure_ascii escapes C1 and bidi characters; DEL is ASCII and needs it said.
    text = json.dumps(evidence, indent=2, sort_keys=True, ensure_ascii=True, default=str).replace('\x7f', '\\u007f')
    if markup_safe:
        # Still the same JSON, but with no character a Markdown renderer could take for HTML.
        text = text.replace('<', '\\u003c').replace('>', '\\u003e').replace('&', '\\u0026')
    return text


def finding_listener_key(finding: dict) -> str:
    """The key of the listener a finding is about (the `key` of its report listener entry)."""
    listener = finding.get('listener') or {}
    return _verdict.listener_key({'host': finding.get('host'), 'address': listener.get('address'),
                                  'port': listener.get('port')})


def endpoint(item: dict) -> str:
    """A listener (or a finding's listener) as ADDRESS:PORT/PROTOCOL."""
    return f'{_verdict.endpoint(item.get("address"), item.get("port"))}/{item.get("protocol") or "?"}'


def seen_from(finding: dict) -> str:
    """Who saw a finding: its vantages in order, the configuration (vantage null) by that name."""
    vantages = finding.get('vantages') or [finding.get('vantage')]
    return ', '.join(str(vantage) if vantage else 'host configuration' for vantage in vantages)


def all_evidence(finding: dict):
    """The evidence of every sighting of a finding (its own evidence when it has one sighting)."""
    sightings = finding.get('sightings') or []
    if len(sightings) < 2:
        return finding.get('evidence')
    return {'sightings': [{'vantage': sighting.get('vantage') or 'host configuration', 'summary': sighting.get('summary'),
                           'evidence': finding.get('evidence') if index == 0 else sighting.get('evidence')}
                          for index, sighting in enumerate(sightings)]}


def waiver_text(waiver: dict | None) -> str:
    if not waiver:
        return ''
    text = f'waived: {waiver.get("reason")}'
    if waiver.get('expires'):
        text += f' (until {waiver["expires"]})'
    if waiver.get('ticket'):
        text += f' [{waiver["ticket"]}]'
    return text
