# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The report as Markdown for pull requests and chat (docs/reports.md).

Server text is HTML-escaped and its inline Markdown syntax backslash-escaped; code and evidence
are fenced with more backticks than they contain."""

from __future__ import annotations

import html
import re

from ansible_collections.mailsec.starttls.plugins.module_utils import _verdict
from ansible_collections.mailsec.starttls.plugins.plugin_utils import _changes
from ansible_collections.mailsec.starttls.plugins.plugin_utils._report_text import (
    CHANGE_LIST_LIMIT, GENERATOR, all_evidence, code_spans, endpoint, evidence_json, seen_from, waiver_text)

# Inline Markdown syntax; <, > and & are HTML-escaped first. Line-start syntax (#, -, 1.) cannot
# occur: every piece of text is placed after other text on its line.
_MD_SPECIAL = re.compile(r'([\\`*_\[\]|~!])')


def md_text(value) -> str:
    """Text for Markdown (tables included): HTML-escaped, punctuation backslash-escaped, one line."""
    text = _verdict.one_line(value, 2000) if value is not None else ''
    text = html.escape(text, quote=False)
    return _MD_SPECIAL.sub(r'\\\1', text)


def md_code(value) -> str:
    text = _verdict.one_line(value, 2000)
    longest = max((len(run) for run in re.findall(r'`+', text)), default=0)
    fence = '`' * (longest + 1)
    return f'{fence} {text} {fence}'


def md_fix(text: str) -> str:
    pieces = []
    for is_code, part in code_spans(text):
        if is_code:
            pieces.append(md_code(part))
        else:
            lead = ' ' if part[:1].isspace() else ''
            trail = ' ' if part[-1:].isspace() and part.strip() else ''
            pieces.append(lead + md_text(part) + trail)
    return ''.join(pieces)


def md_block(text: str, language: str = '') -> str:
    longest = max((len(run) for run in re.findall(r'`+', text)), default=0)
    fence = '`' * max(3, longest + 1)
    return f'{fence}{language}\n{text}\n{fence}'


def _first_seen_text(finding: dict) -> str:
    if finding.get('change') == 'new':
        return 'new'
    if finding.get('change') == 'persisting':
        return f'since {str(finding.get("first_seen") or "?")[:10]}'
    return ''


def _md_changes(report: dict) -> list:
    """The change since the previous report, first thing after the result."""
    changes = report.get('changes') or {}
    out = ['## What changed', '', md_text(_changes.headline(changes))]
    if changes.get('previous') is None:
        return out
    new = [finding for finding in report.get('findings') or [] if finding.get('change') == 'new']
    for title, items in (('New', new), ('Resolved', changes.get('resolved_findings') or [])):
        if not items:
            continue
        out += ['', f'{title}:', '']
        for item in items[:CHANGE_LIST_LIMIT]:
            out.append(f'- **{md_text(item.get("severity"))}** {md_code(item.get("id"))} on {md_text(item.get("host"))} '
                       f'{md_text(endpoint(item.get("listener") or {}))}'
                       + (f' (first seen {md_text(str(item.get("first_seen"))[:10])})' if title == 'Resolved' else ''))
        if len(items) > CHANGE_LIST_LIMIT:
            out.append(f'- and {len(items) - CHANGE_LIST_LIMIT} more (see the JSON report)')
    return out


def render_markdown(report: dict) -> str:
    summary = report['summary']
    out = ['# STARTTLS audit report', '',
           f'Generated {md_text(report.get("generated_at"))} by {GENERATOR} '
           f'{md_text((report.get("generator") or {}).get("version") or "")} (report schema {report.get("schema_version")}).', '']
    if summary.get('failed'):
        out.append(f'**Result: FAILED.** {md_text(summary.get("fail_reason"))}')
    else:
        out.append('**Result: passed.**')
    out += [''] + _md_changes(report)
    out += ['', f'Failure rule: {md_code(summary.get("fail_when"))}', '', '## Summary', '',
            '| hosts | listeners | probes | findings | waived | ' + ' | '.join(_verdict.SEVERITIES) + ' |',
            '|' + '---|' * (5 + len(_verdict.SEVERITIES)),
            f'| {summary["hosts"]} | {summary["listeners"]} | {summary["probes"]} | {summary["findings"]} | '
            f'{summary["waived"]} | ' + ' | '.join(str(summary['unwaived_by_severity'][sev]) for sev in _verdict.SEVERITIES) + ' |',
            '', 'Severity columns count unwaived findings.', '', '## Hosts', '',
            '| host | mode | listeners | unwaived | ' + ' | '.join(_verdict.SEVERITIES) + ' | worst |',
            '|' + '---|' * (5 + len(_verdict.SEVERITIES))]
    for host in report.get('hosts') or []:
        out.append(f'| {md_text(host["host"])} | {md_text(host["mode"])} | {host["listeners"]} | {host["unwaived"]} | '
                   + ' | '.join(str(host['unwaived_by_severity'][sev]) for sev in _verdict.SEVERITIES)
                   + f' | {md_text(host["worst"] or "-")} |')
    findings_by_key = {finding['key']: finding for finding in report.get('findings') or []}
    out += ['', '## Findings', '']
    any_findings = False
    for item in report.get('listeners') or []:
        findings = [findings_by_key[key] for key in item.get('findings') or [] if key in findings_by_key]
        if not findings:
            continue
        any_findings = True
        what = ', '.join(part for part in (item.get('mta'), f'service {item["service"]}' if item.get('service') else None,
                                           item.get('defined_at')) if part)
        out += [f'### {md_text(item.get("host"))}: {md_text(endpoint(item))}' + (f' ({md_text(what)})' if what else ''), '']
        for finding in findings:
            state = f' ({md_text(waiver_text(finding.get("waiver")))})' if finding.get('waived') else ''
            if _first_seen_text(finding):
                state += f' ({md_text(_first_seen_text(finding))})'
            out.append(f'- **{md_text(finding["severity"])}** {md_code(finding["id"])} from '
                       f'{md_text(seen_from(finding))}{state}: {md_text(finding["summary"])}')
            out.append(f'  - Fix: {md_fix(finding.get("fix") or "")}')
            out.append('  - Evidence:')
            out.append('')
            out.append('\n'.join('    ' + line for line in md_block(evidence_json(all_evidence(finding), markup_safe=True), 'json').splitlines()))
            out.append('')
    if not any_findings:
        out.append('No findings.')
        out.append('')
    waivers = (report.get('policy') or {}).get('waivers') or []
    if waivers or report.get('waivers_expired'):
        out += ['## Waivers', '', '| # | state | matched | expires | reason | query |', '|---|---|---|---|---|---|']
        for waiver in waivers:
            out.append(f'| {waiver["index"]} | {md_text(waiver["state"])} | {waiver["matched"]} | '
                       f'{md_text(waiver.get("expires") or "-")} | {md_text(waiver["reason"])} | {md_text(waiver["query"])} |')
        for waiver in report.get('waivers_expired') or []:
            out.append('')
            out.append(f'Waiver {waiver["index"]} expired on {md_text(waiver["expires"])}; it would have waived '
                       f'{waiver["matched"]} finding(s).')
        out.append('')
    errors = (report.get('policy') or {}).get('waiver_errors') or []
    for error in errors:
        where = f'failed on {md_text(error.get("finding"))}' if error.get('finding') else 'cannot be used'
        out.append(f'- Waiver {error["index"]} {where}: {md_text(error["error"])}')
    return '\n'.join(out).rstrip('\n') + '\n'
