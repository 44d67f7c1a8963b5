# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The audit report: one versioned dict (docs/reports.md, docs/report.schema.json) and its
renderings as JSON, JUnit XML, Markdown and one self-contained HTML page.

Everything in a report that came from a server is hostile text (a banner can carry
`<script>`, control characters or a fake table row): every renderer escapes for its own
syntax, and the HTML page forbids scripts and remote loads with its Content-Security-Policy.
Files are written atomically (a temporary file in the same directory, then a rename).
"""

from __future__ import annotations

import datetime
import html
import json
import os
import re
import tempfile
import xml.etree.ElementTree as ET

from ansible_collections.mailsec.starttls.plugins.module_utils import _verdict
from ansible_collections.mailsec.starttls.plugins.module_utils._text import visible, visible_deep
from ansible_collections.mailsec.starttls.plugins.plugin_utils import _policy

SCHEMA_VERSION = 1
GENERATOR = 'mailsec.starttls'
SEVERITIES = _verdict.SEVERITIES
FORMATS = ('json', 'junit', 'markdown', 'html')
FILE_SUFFIXES = {'json': '.json', 'junit': '.junit.xml', 'markdown': '.md', 'html': '.html'}
DEFAULT_BASENAME = 'starttls-report'
CHART_HOST_LIMIT = 40
SEVERITY_COLOURS = {'critical': '#8b0000', 'high': '#d9480f', 'medium': '#e8a400', 'low': '#4a7fb0',
                    'info': '#7d8b99', 'waived': '#c9d1d9'}


class ReportError(ValueError):
    """A report that cannot be written as asked (bad format name, unwritable directory)."""


# -- building ------------------------------------------------------------------------------

def _plain(value):
    """JSON-safe copy: dates as ISO text, tuples and sets as lists, anything else as text."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_plain(item) for item in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    return str(value)


def _counts(findings: list) -> dict:
    counts = {severity: 0 for severity in SEVERITIES}
    for finding in findings:
        if finding.get('severity') in counts:
            counts[finding['severity']] += 1
    return counts


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def _finding_listener_key(finding: dict) -> str:
    listener = finding.get('listener') or {}
    return _verdict.listener_key({'host': finding.get('host'), 'address': listener.get('address'),
                                  'port': listener.get('port')})


def _sort_key_finding(finding: dict) -> tuple:
    listener = finding.get('listener') or {}
    return (_verdict.SEVERITY_RANK.get(finding.get('severity'), 9), str(finding.get('host')),
            str(listener.get('address')), str(listener.get('port')), str(finding.get('id')),
            str(finding.get('vantage') or ''))


def _probe_summary(probe: dict) -> dict:
    target = probe.get('target') or {}
    reply = probe.get('starttls_reply') or {}
    tls = probe.get('tls') or {}
    certificate = probe.get('certificate') or {}
    return {
        'vantage': probe.get('vantage'),
        'target': _verdict.endpoint(target.get('address'), target.get('port')),
        'sni': target.get('sni'),
        'outcome': _verdict.classify_probe(probe),
        'starttls_advertised': probe.get('starttls_advertised'),
        'starttls_reply': None if not reply else _verdict.one_line(f'{reply.get("code") or ""} {reply.get("text") or ""}', 200),
        'tls_version': tls.get('version'),
        'certificate_sha256': certificate.get('sha256'),
        'certificate_subject': _verdict.one_line(certificate.get('subject'), 200) if certificate.get('subject') else None,
        'error': None if not probe.get('error') else _verdict.one_line(
            f'{probe["error"].get("stage")}: {probe["error"].get("message")}', 300),
        'flags': list(probe.get('flags') or []),
    }


def _listener_entry(entry: dict, findings: list) -> dict:
    listener = entry['listener']
    store = _verdict.store_of(listener)
    certificate = _verdict.store_certificate(store)
    binding = listener.get('binding') if isinstance(listener.get('binding'), dict) else {}
    unwaived = [finding for finding in findings if not finding.get('waived')]
    if not findings:
        status = 'clean'
    elif unwaived:
        status = 'findings'
    else:
        status = 'waived'
    return {
        'key': _verdict.listener_key(listener),
        'host': listener.get('host'),
        'address': listener.get('address'),
        'port': listener.get('port'),
        'protocol': listener.get('protocol'),
        'tls_mode': _verdict.protocol_mode(listener),
        'mode': _verdict.listener_mode(listener),
        'mta': listener.get('mta'),
        'instance': listener.get('instance'),
        'service': listener.get('service'),
        'defined_at': listener.get('defined_at'),
        'listening': listener.get('listening'),
        'offers_starttls': listener.get('offers_starttls'),
        'certificate': {
            'path': binding.get('certificate'),
            'key': binding.get('key'),
            'source': binding.get('source'),
            'sha256': certificate.get('sha256'),
            'subject': certificate.get('subject'),
            'not_after': certificate.get('not_after'),
            'usable': _verdict.usable_certificate(listener),
        },
        'probes': [_probe_summary(probe) for probe in entry['probes']],
        'rules': sorted(set(_verdict.applicable_rules(listener)) | {finding['id'] for finding in findings},
                        key=lambda rule: _verdict.RULE_IDS.index(rule) if rule in _verdict.RULE_IDS else 99),
        'findings': [finding['key'] for finding in findings],
        'status': status,
        'worst': _verdict.worst_severity(unwaived),
    }


def build_report(findings: list, listeners: list, probes: list, meta: dict | None = None, *,
                 fail_when: str | None = None, policy: dict | None = None, judge_options: dict | None = None) -> dict:
    """The report (schema_version 1). `findings` as returned by `_verdict.judge` (waivers applied
    or not), `policy` the result of `_policy.apply_waivers` when waivers were applied,
    `fail_when` the failure expression (default `_policy.DEFAULT_FAIL_WHEN`)."""
    meta = dict(meta or {})
    policy = policy or {}
    findings = sorted((_plain(finding) for finding in findings or []), key=_sort_key_finding)
    entries = _verdict.join(listeners or [], probes or [], judge_options)
    by_listener: dict = {}
    for finding in findings:
        by_listener.setdefault(_finding_listener_key(finding), []).append(finding)
    listener_entries = []
    seen_keys = set()
    for entry in entries:
        key = _verdict.listener_key(entry['listener'])
        if key in seen_keys:
            continue
        seen_keys.add(key)
        listener_entries.append(_listener_entry(entry, by_listener.get(key, [])))
    for key, orphaned in by_listener.items():
        # A finding about a listener the caller did not pass: keep it visible.
        if key not in seen_keys:
            first = orphaned[0]
            stand_in = {'host': first.get('host'), 'address': first['listener'].get('address'),
                        'port': first['listener'].get('port'), 'protocol': first['listener'].get('protocol'),
                        'mta': first['listener'].get('mta'), 'mode': 'probe'}
            listener_entries.append(_listener_entry({'listener': stand_in, 'probes': []}, orphaned))
            seen_keys.add(key)
    listener_entries.sort(key=lambda item: (str(item['host']), str(item['address']), str(item['port'])))

    hosts: dict = {}
    for item in listener_entries:
        host = hosts.setdefault(item['host'], {'host': item['host'], 'modes': set(), 'listeners': 0})
        host['listeners'] += 1
        host['modes'].add(item['mode'])
    findings_by_host: dict = {}
    for finding in findings:
        findings_by_host.setdefault(finding.get('host'), []).append(finding)
    host_entries = []
    for name, host in sorted(hosts.items(), key=lambda pair: str(pair[0])):
        own = findings_by_host.get(name, [])
        unwaived = [finding for finding in own if not finding.get('waived')]
        modes = host['modes'] - {'socket', 'probe'} or host['modes']
        host_entries.append({
            'host': name,
            'mode': modes.pop() if len(modes) == 1 else 'mixed',
            'listeners': host['listeners'],
            'findings': len(own),
            'unwaived': len(unwaived),
            'by_severity': _counts(own),
            'unwaived_by_severity': _counts(unwaived),
            'worst': _verdict.worst_severity(unwaived),
        })

    unwaived = [finding for finding in findings if not finding.get('waived')]
    report = {
        'schema_version': SCHEMA_VERSION,
        'generator': {'name': GENERATOR, 'version': _plain(meta.pop('collection_version', None))},
        'generated_at': _plain(meta.pop('generated_at', None)) or _utc_now(),
        'meta': _plain(meta),
        'summary': {
            'hosts': len(host_entries),
            'listeners': len(listener_entries),
            'probes': sum(len(item['probes']) for item in listener_entries),
            'findings': len(findings),
            'by_severity': _counts(findings),
            'unwaived_by_severity': _counts(unwaived),
            'waived': len(findings) - len(unwaived),
            'unwaived': len(unwaived),
            'failed': None,
            'fail_reason': None,
            'fail_when': fail_when or _policy.DEFAULT_FAIL_WHEN,
        },
        'policy': {
            'waivers': _plain(policy.get('waivers') or []),
            'waiver_errors': _plain(policy.get('waiver_errors') or []),
        },
        'waivers_expired': _plain(policy.get('waivers_expired') or []),
        'hosts': host_entries,
        'listeners': listener_entries,
        'findings': findings,
    }
    failed, reason = _policy.evaluate_fail_when(report, fail_when)
    report = visible_deep(report)
    unusable = [error['error'] for error in policy.get('unusable') or []]
    if unusable:
        # A waiver that cannot be evaluated waives nothing; what it was meant to accept is unknown,
        # so the run fails and says which one (docs/policy.md).
        failed = True
        reason = '; '.join(([reason] if reason else []) + unusable)
    report['summary']['failed'] = bool(failed)
    report['summary']['fail_reason'] = None if reason is None else visible(reason)
    if isinstance(report['summary']['fail_when'], str):
        report['summary']['fail_when'] = _policy.shorten(report['summary']['fail_when']) \
            if len(report['summary']['fail_when']) > 4096 else report['summary']['fail_when']
    return report


def collect_inputs(listeners, probes, judge_options: dict | None = None) -> tuple:
    """Accept records or whole module results: a list may mix listener records with
    `mta_tls_info` results ({listeners, unmatched_sockets, ...}), and probe records with
    `listener_probe` results ({probes, ...}). Returns (listeners, probes, judge_options) with
    the unmatched sockets of each result added to the judge options (tagged with their host)."""
    options = dict(judge_options or {})
    sockets = list(options.get('unmatched_sockets') or []) if not isinstance(options.get('unmatched_sockets'), dict) \
        else [dict(item, host=host) for host, items in options['unmatched_sockets'].items() for item in items or []]
    flat_listeners = []
    for item in listeners or []:
        if isinstance(item, dict) and isinstance(item.get('listeners'), list) and 'address' not in item:
            records = list(item['listeners'])
            bound_host = item.get('host') if isinstance(item.get('host'), str) and item.get('host') else None
            if bound_host:
                # A result that names its host (fleet_assess sets the inventory name): everything in it
                # is evidence about that host alone, whatever its records say (docs/reports.md).
                records = _verdict.screen_listeners(
                    [dict(record, host=bound_host) if isinstance(record, dict) else record for record in records],
                    host=bound_host)
            flat_listeners.extend(records)
            host = bound_host or next((record.get('host') for record in records
                                       if isinstance(record, dict) and isinstance(record.get('host'), str)), None)
            raw_sockets = item.get('unmatched_sockets')
            for socket_record in raw_sockets if isinstance(raw_sockets, list) else []:
                if isinstance(socket_record, dict):
                    sockets.append(dict(socket_record, host=bound_host or socket_record.get('host') or host))
        else:
            flat_listeners.append(item)
    # A record that cannot be read becomes a stand-in judged as one judgement-error (docs/findings.md).
    flat_listeners = _verdict.screen_listeners(flat_listeners)
    flat_probes = []
    for item in probes or []:
        if isinstance(item, dict) and isinstance(item.get('probes'), list) and 'target' not in item:
            flat_probes.extend(item['probes'])
        elif isinstance(item, dict) and isinstance(item.get('results'), list) and 'target' not in item:
            # A registered loop: {results: [{probes: [...]}, ...]}.
            for result in item['results']:
                if isinstance(result, dict):
                    flat_probes.extend(result.get('probes') or [])
        else:
            flat_probes.append(item)
    flat_probes, unreadable = _verdict.screen_probes(flat_probes)
    flat_listeners.extend(unreadable)
    if sockets:
        options['unmatched_sockets'] = sockets
    return flat_listeners, flat_probes, options


def audit(listeners: list, probes: list, judge_options: dict | None = None, waivers=None, fail_when=None,
          meta: dict | None = None, today=None) -> dict:
    """The whole controller-side pipeline: judge, waive, report. Policy errors raise PolicyError
    before anything is judged; bad judge options raise _verdict.VerdictError.

    `listeners` and `probes` may be records or whole module results (see collect_inputs)."""
    # Syntax errors stop here; expressions beyond the evaluator's limits are judged to fail the run
    # in the report itself, so that the reports are written and name them.
    _policy.check_policy(waivers, fail_when, tolerate_limits=True)
    listeners, probes, judge_options = collect_inputs(listeners, probes, judge_options)
    findings = _verdict.judge(listeners, probes, judge_options)
    if today is None and judge_options and judge_options.get('now') is not None:
        today = _verdict.parse_time(judge_options['now'])
    policy = _policy.apply_waivers(findings, waivers, today)
    return build_report(policy['findings'], listeners, probes, meta, fail_when=fail_when, policy=policy,
                        judge_options=judge_options)


# -- shared text helpers -------------------------------------------------------------------

_XML_INVALID = re.compile('[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]')


def xml_text(value) -> str:
    """Text that XML 1.0 can carry and a terminal or CI page can show: characters XML forbids,
    terminal controls and bidi overrides become visible escapes."""
    text = '' if value is None else visible(value)
    return _XML_INVALID.sub(lambda match: f'\\u{ord(match.group()):04x}', text)


def _code_spans(text: str) -> list:
    """Split fix text at backticks: [(is_code, part), ...]."""
    parts = (text or '').split('`')
    if len(parts) % 2 == 0:  # an unmatched backtick: keep it as text
        parts = parts[:-2] + [parts[-2] + '`' + parts[-1]]
    return [(index % 2 == 1, part) for index, part in enumerate(parts) if part]


def _evidence_json(evidence, markup_safe: bool = False) -> str:
    # ensure_ascii escapes C1 and bidi characters; DEL is ASCII and needs it said.
    text = json.dumps(evidence, indent=2, sort_keys=True, ensure_ascii=True, default=str).replace('\x7f', '\\u007f')
    if markup_safe:
        # Still the same JSON, but with no character a Markdown renderer could take for HTML.
        text = text.replace('<', '\\u003c').replace('>', '\\u003e').replace('&', '\\u0026')
    return text


def _endpoint(item: dict) -> str:
    return f'{_verdict.endpoint(item.get("address"), item.get("port"))}/{item.get("protocol") or "?"}'


def _waiver_text(waiver: dict | None) -> str:
    if not waiver:
        return ''
    text = f'waived: {waiver.get("reason")}'
    if waiver.get('expires'):
        text += f' (until {waiver["expires"]})'
    if waiver.get('ticket'):
        text += f' [{waiver["ticket"]}]'
    return text


# -- JSON ----------------------------------------------------------------------------------

def render_json(report: dict) -> str:
    return json.dumps(report, indent=2, ensure_ascii=True, default=str).replace('\x7f', '\\u007f') + '\n'


# -- JUnit XML -----------------------------------------------------------------------------

def render_junit(report: dict) -> str:
    """One test case per listener and rule: classname = host, name = 'listener ADDRESS:PORT/PROTOCOL
    :: RULE'. An unwaived finding is a failure, a waived one a skip; the rules evaluated for a
    listener are the catalogue rules applicable to it (docs/findings.md)."""
    findings_by_key = {finding['key']: finding for finding in report.get('findings') or []}
    root = ET.Element('testsuites', {'name': GENERATOR})
    totals = {'tests': 0, 'failures': 0, 'skipped': 0}
    suites: dict = {}
    counts: dict = {}
    for item in report.get('listeners') or []:
        host = xml_text(item.get('host') if item.get('host') is not None else 'unknown')
        suite = suites.get(host)
        if suite is None:
            suite = ET.SubElement(root, 'testsuite', {'name': host, 'timestamp': xml_text(report.get('generated_at'))})
            properties = ET.SubElement(suite, 'properties')
            ET.SubElement(properties, 'property', {'name': 'schema_version', 'value': str(report.get('schema_version'))})
            suites[host] = suite
            counts[host] = {'tests': 0, 'failures': 0, 'skipped': 0}
        findings = [findings_by_key[key] for key in item.get('findings') or [] if key in findings_by_key]
        for rule in item.get('rules') or []:
            case = ET.SubElement(suite, 'testcase', {
                'classname': host, 'name': xml_text(f'listener {_endpoint(item)} :: {rule}'), 'time': '0'})
            counts[host]['tests'] += 1
            hits = [finding for finding in findings if finding.get('id') == rule]
            open_hits = [finding for finding in hits if not finding.get('waived')]
            if open_hits:
                worst = _verdict.worst_severity(open_hits)
                lines = []
                for finding in open_hits:
                    lines.append(f'[{finding.get("severity")}] {finding.get("summary")}')
                    lines.append(f'vantage: {finding.get("vantage") or "host configuration"}')
                    lines.append(f'fix: {finding.get("fix")}')
                    lines.append('evidence: ' + _evidence_json(finding.get('evidence')))
                    lines.append('')
                failure = ET.SubElement(case, 'failure', {
                    'type': xml_text(worst), 'message': xml_text(open_hits[0].get('summary'))})
                failure.text = xml_text('\n'.join(lines))
                counts[host]['failures'] += 1
            elif hits:
                ET.SubElement(case, 'skipped', {'message': xml_text(_waiver_text(hits[0].get('waiver')))})
                counts[host]['skipped'] += 1
    for host, suite in suites.items():
        for name, value in counts[host].items():
            suite.set(name, str(value))
            totals[name] += value
        suite.set('errors', '0')
        suite.set('time', '0')
    for name, value in totals.items():
        root.set(name, str(value))
    root.set('errors', '0')
    root.set('time', '0')
    if hasattr(ET, 'indent'):  # Python 3.9+
        ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding='unicode') + '\n'


# -- Markdown ------------------------------------------------------------------------------

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
    for is_code, part in _code_spans(text):
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


def render_markdown(report: dict) -> str:
    summary = report['summary']
    out = ['# STARTTLS audit report', '',
           f'Generated {md_text(report.get("generated_at"))} by {GENERATOR} '
           f'{md_text((report.get("generator") or {}).get("version") or "")} (report schema {report.get("schema_version")}).', '']
    if summary.get('failed'):
        out.append(f'**Result: FAILED.** {md_text(summary.get("fail_reason"))}')
    else:
        out.append('**Result: passed.**')
    out += ['', f'Failure rule: {md_code(summary.get("fail_when"))}', '', '## Summary', '',
            '| hosts | listeners | probes | findings | waived | ' + ' | '.join(SEVERITIES) + ' |',
            '|' + '---|' * (5 + len(SEVERITIES)),
            f'| {summary["hosts"]} | {summary["listeners"]} | {summary["probes"]} | {summary["findings"]} | '
            f'{summary["waived"]} | ' + ' | '.join(str(summary['unwaived_by_severity'][sev]) for sev in SEVERITIES) + ' |',
            '', 'Severity columns count unwaived findings.', '', '## Hosts', '',
            '| host | mode | listeners | unwaived | ' + ' | '.join(SEVERITIES) + ' | worst |',
            '|' + '---|' * (5 + len(SEVERITIES))]
    for host in report.get('hosts') or []:
        out.append(f'| {md_text(host["host"])} | {md_text(host["mode"])} | {host["listeners"]} | {host["unwaived"]} | '
                   + ' | '.join(str(host['unwaived_by_severity'][sev]) for sev in SEVERITIES)
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
        out += [f'### {md_text(item.get("host"))}: {md_text(_endpoint(item))}' + (f' ({md_text(what)})' if what else ''), '']
        for finding in findings:
            state = f' ({md_text(_waiver_text(finding.get("waiver")))})' if finding.get('waived') else ''
            out.append(f'- **{md_text(finding["severity"])}** {md_code(finding["id"])} from '
                       f'{md_text(finding.get("vantage") or "host configuration")}{state}: {md_text(finding["summary"])}')
            out.append(f'  - Fix: {md_fix(finding.get("fix") or "")}')
            out.append('  - Evidence:')
            out.append('')
            out.append('\n'.join('    ' + line for line in md_block(_evidence_json(finding.get('evidence'), markup_safe=True), 'json').splitlines()))
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


# -- HTML ----------------------------------------------------------------------------------

def h(value) -> str:
    return html.escape('' if value is None else visible(value), quote=True)


def html_fix(text: str) -> str:
    return ''.join(f'<code>{h(part)}</code>' if is_code else h(part) for is_code, part in _code_spans(text))


CSS = """
:root{--fg:#1d2733;--muted:#5b6875;--line:#d9dee3;--bg:#f6f8fa}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:var(--fg);margin:0;background:#fff}
header,main,footer{max-width:1180px;margin:0 auto;padding:0 20px}
header{padding-top:18px}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:18px;margin:28px 0 10px;border-bottom:1px solid var(--line);padding-bottom:4px}
h3{font-size:15px;margin:0}
.muted{color:var(--muted)}
.result{padding:10px 14px;border-radius:6px;font-weight:600;margin:12px 0}
.result.failed{background:#fde8e8;border:1px solid #f3b4b4;color:#8b0000}
.result.passed{background:#e6f4ea;border:1px solid #a8d5b5;color:#14532d}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:10px 0;padding:0;list-style:none}
.cards li{border:1px solid var(--line);border-radius:6px;padding:8px 12px;min-width:96px;background:var(--bg)}
.cards b{display:block;font-size:20px}
.sev{display:inline-block;padding:1px 7px;border-radius:10px;color:#fff;font-size:12px;font-weight:600}
.sev-critical{background:#8b0000}.sev-high{background:#d9480f}.sev-medium{background:#b07d00}
.sev-low{background:#4a7fb0}.sev-info{background:#6b7785}.sev-waived{background:#8a96a3}
table{border-collapse:collapse;width:100%;margin:8px 0}
th,td{border:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top;overflow-wrap:break-word}
th{background:var(--bg)}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.facts th{width:240px}
.all-findings{table-layout:fixed}
.c-severity{width:92px}.c-id{width:300px}.c-host{width:130px}.c-listener{width:170px}.c-vantage{width:120px}
.all-findings code{overflow-wrap:break-word}
.listener{border:1px solid var(--line);border-radius:8px;padding:10px 14px;margin:12px 0}
.listener.status-clean{border-left:6px solid #2f9e44}
.listener.status-waived{border-left:6px solid #8a96a3}
.listener.status-findings{border-left:6px solid #d9480f}
.finding{border-top:1px dashed var(--line);padding:8px 0}
.finding.waived{opacity:.75}
.fix{background:#f1f7ff;border-left:3px solid #4a7fb0;padding:6px 10px;margin:6px 0}
code,pre{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
code{background:var(--bg);padding:0 3px;border-radius:3px;overflow-wrap:anywhere}
pre{background:var(--bg);border:1px solid var(--line);padding:8px;overflow:auto;max-height:420px;white-space:pre-wrap;overflow-wrap:anywhere}
details summary{cursor:pointer;color:var(--muted)}
svg text{font:12px system-ui,sans-serif;fill:#1d2733}
footer{color:var(--muted);padding:24px 20px 40px}
"""


def render_chart(report: dict) -> str:
    """Unwaived findings by host and severity as stacked horizontal bars, plus a waived segment."""
    hosts = sorted(report.get('hosts') or [], key=lambda host: (-host['findings'], str(host['host'])))
    hosts = [host for host in hosts if host['findings']]
    if not hosts:
        return '<p class="muted" data-chart="empty">No findings to chart.</p>'
    shown, hidden = hosts[:CHART_HOST_LIMIT], hosts[CHART_HOST_LIMIT:]
    label_width, bar_width, row, top = 240, 640, 22, 30
    most = max(host['findings'] for host in shown)
    height = top + row * len(shown) + 20
    width = label_width + bar_width + 60
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" data-chart="findings-by-host" aria-labelledby="chart-title">',
             '<title id="chart-title">Findings by host and severity</title>']
    x = label_width
    for name in list(SEVERITIES) + ['waived']:
        parts.append(f'<rect x="{x}" y="6" width="12" height="12" fill="{SEVERITY_COLOURS[name]}"></rect>'
                     f'<text x="{x + 16}" y="16">{h(name)}</text>')
        x += 90
    for index, host in enumerate(shown):
        y = top + index * row
        label = str(host['host'])
        if len(label) > 32:
            label = label[:31] + '\u2026'
        parts.append(f'<g data-host="{h(host["host"])}" data-findings="{host["findings"]}">')
        parts.append(f'<text x="{label_width - 8}" y="{y + 14}" text-anchor="end">{h(label)}</text>')
        x = float(label_width)
        segments = [(severity, host['unwaived_by_severity'][severity]) for severity in SEVERITIES]
        segments.append(('waived', host['findings'] - host['unwaived']))
        for name, count in segments:
            if not count:
                continue
            length = bar_width * count / most
            parts.append(f'<rect x="{x:.1f}" y="{y + 3}" width="{max(length, 1):.1f}" height="{row - 6}" '
                         f'fill="{SEVERITY_COLOURS[name]}" data-severity="{name}" data-count="{count}">'
                         f'<title>{h(host["host"])}: {count} {name}</title></rect>')
            x += length
        parts.append(f'<text x="{x + 6:.1f}" y="{y + 14}">{host["findings"]}</text></g>')
    parts.append('</svg>')
    if hidden:
        parts.append(f'<p class="muted">{len(hidden)} more host(s) with findings are not drawn; see the table.</p>')
    return ''.join(parts)


def _html_probe_rows(item: dict) -> str:
    if not item.get('probes'):
        return '<p class="muted">No probe reached this listener.</p>'
    rows = ['<table class="probes"><tr><th>vantage</th><th>target</th><th>outcome</th><th>STARTTLS</th>'
            '<th>reply</th><th>TLS</th><th>certificate</th><th>error</th></tr>']
    for probe in item['probes']:
        advertised = {True: 'advertised', False: 'not advertised', None: '-'}[probe.get('starttls_advertised')]
        certificate = probe.get('certificate_subject') or ''
        if probe.get('certificate_sha256'):
            certificate += f' (sha256 {probe["certificate_sha256"][:16]}\u2026)'
        rows.append(f'<tr><td>{h(probe.get("vantage"))}</td><td>{h(probe.get("target"))}</td>'
                    f'<td>{h(probe.get("outcome"))}</td><td>{h(advertised)}</td><td>{h(probe.get("starttls_reply") or "-")}</td>'
                    f'<td>{h(probe.get("tls_version") or "-")}</td><td>{h(certificate or "-")}</td>'
                    f'<td>{h(probe.get("error") or "-")}</td></tr>')
    rows.append('</table>')
    return ''.join(rows)


def render_html(report: dict) -> str:
    summary = report['summary']
    findings_by_key = {finding['key']: finding for finding in report.get('findings') or []}
    failed = bool(summary.get('failed'))
    out = ['<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">',
           # No scripts, no remote anything: evidence is hostile text and this page may be opened anywhere.
           '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; style-src \'unsafe-inline\'; '
           'img-src data:; base-uri \'none\'; form-action \'none\'">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f'<title>STARTTLS audit {h(report.get("generated_at"))}</title>', f'<style>{CSS}</style></head><body>',
           '<header><h1>STARTTLS audit</h1>',
           f'<p class="muted">Generated {h(report.get("generated_at"))} by {GENERATOR} '
           f'{h((report.get("generator") or {}).get("version") or "")} &middot; report schema {h(report.get("schema_version"))}</p>',
           '</header><main>',
           f'<section id="summary" data-schema-version="{h(report.get("schema_version"))}" data-hosts="{summary["hosts"]}" '
           f'data-listeners="{summary["listeners"]}" data-probes="{summary["probes"]}" data-findings="{summary["findings"]}" '
           f'data-waived="{summary["waived"]}" data-unwaived="{summary["unwaived"]}" data-failed="{str(failed).lower()}">',
           f'<p class="result {"failed" if failed else "passed"}" data-result="{"failed" if failed else "passed"}">'
           + (f'FAILED: {h(summary.get("fail_reason"))}' if failed else 'Passed: no finding meets the failure rule.')
           + '</p>',
           f'<p class="muted">Failure rule: <code>{h(summary.get("fail_when"))}</code></p>',
           '<ul class="cards">',
           f'<li data-metric="hosts">hosts<b>{summary["hosts"]}</b></li>',
           f'<li data-metric="listeners">listeners<b>{summary["listeners"]}</b></li>',
           f'<li data-metric="findings">findings<b>{summary["findings"]}</b></li>',
           f'<li data-metric="waived">waived<b>{summary["waived"]}</b></li>']
    for severity in SEVERITIES:
        out.append(f'<li data-severity="{severity}" data-count="{summary["by_severity"][severity]}" '
                   f'data-unwaived="{summary["unwaived_by_severity"][severity]}"><span class="sev sev-{severity}">'
                   f'{severity}</span><b>{summary["unwaived_by_severity"][severity]}</b>'
                   f'<span class="muted">{summary["by_severity"][severity] - summary["unwaived_by_severity"][severity]} waived</span></li>')
    out.append('</ul></section>')

    out.append('<section id="chart"><h2>Findings by host and severity</h2>')
    out.append(render_chart(report))
    out.append('</section>')

    out.append('<section id="hosts"><h2>Hosts</h2><table><tr><th>host</th><th>mode</th><th>listeners</th>'
               '<th>findings</th><th>unwaived</th>' + ''.join(f'<th>{severity}</th>' for severity in SEVERITIES)
               + '<th>worst</th></tr>')
    for host in report.get('hosts') or []:
        out.append(f'<tr data-host="{h(host["host"])}"><td>{h(host["host"])}</td><td>{h(host["mode"])}</td>'
                   f'<td class="num">{host["listeners"]}</td><td class="num">{host["findings"]}</td>'
                   f'<td class="num">{host["unwaived"]}</td>'
                   + ''.join(f'<td class="num">{host["unwaived_by_severity"][severity]}</td>' for severity in SEVERITIES)
                   + f'<td>{h(host["worst"] or "-")}</td></tr>')
    out.append('</table></section>')

    anchors = {item['key']: f'listener-{index}' for index, item in enumerate(report.get('listeners') or [])}
    out.append('<section id="findings"><h2>Findings</h2>')
    if report.get('findings'):
        out.append('<table class="all-findings"><colgroup><col class="c-severity"><col class="c-id"><col class="c-host">'
                   '<col class="c-listener"><col class="c-vantage"><col></colgroup>'
                   '<tr><th>severity</th><th>finding</th><th>host</th><th>listener</th><th>vantage</th><th>summary</th></tr>')
        for finding in report['findings']:
            anchor = anchors.get(_finding_listener_key(finding), '')
            state = ' <span class="sev sev-waived">waived</span>' if finding.get('waived') else ''
            out.append(f'<tr data-finding-row="{h(finding["key"])}"><td><span class="sev sev-{h(finding["severity"])}">'
                       f'{h(finding["severity"])}</span>{state}</td><td><code>{h(finding["id"])}</code></td>'
                       f'<td>{h(finding.get("host"))}</td><td><a href="#{h(anchor)}">{h(_endpoint(finding.get("listener") or {}))}'
                       f'</a></td><td>{h(finding.get("vantage") or "host configuration")}</td><td>{h(finding["summary"])}</td></tr>')
        out.append('</table>')
    else:
        out.append('<p class="muted">No findings.</p>')
    out.append('</section>')

    out.append('<section id="listeners"><h2>Listeners</h2>')
    for index, item in enumerate(report.get('listeners') or []):
        findings = [findings_by_key[key] for key in item.get('findings') or [] if key in findings_by_key]
        certificate = item.get('certificate') or {}
        out.append(f'<article class="listener status-{h(item["status"])}" id="listener-{index}" '
                   f'data-listener-key="{h(item["key"])}" data-findings="{len(findings)}" data-status="{h(item["status"])}">')
        out.append(f'<h3>{h(item.get("host"))} &mdash; {h(_endpoint(item))}'
                   + (f' <span class="muted">{h(item.get("mta"))}</span>' if item.get('mta') else '')
                   + (f' <span class="sev sev-{h(item["worst"])}">{h(item["worst"])}</span>' if item.get('worst') else '')
                   + '</h3>')
        facts = [('mode', item.get('mode')), ('service', item.get('service')), ('defined at', item.get('defined_at')),
                 ('listening', item.get('listening')), ('offers STARTTLS (configuration)', item.get('offers_starttls')),
                 ('certificate', certificate.get('path')), ('key', certificate.get('key')),
                 ('chosen by', certificate.get('source')), ('certificate usable', certificate.get('usable')),
                 ('certificate sha256', certificate.get('sha256')), ('rules evaluated', len(item.get('rules') or []))]
        out.append('<table class="facts">' + ''.join(
            f'<tr><th>{h(name)}</th><td>{h(value)}</td></tr>' for name, value in facts if value is not None) + '</table>')
        out.append(_html_probe_rows(item))
        if not findings:
            out.append('<p class="muted">No findings.</p>')
        for finding in findings:
            waived = bool(finding.get('waived'))
            out.append(f'<div class="finding{" waived" if waived else ""}" data-finding-key="{h(finding["key"])}" '
                       f'data-severity="{h(finding["severity"])}" data-waived="{str(waived).lower()}">')
            out.append(f'<h4><span class="sev sev-{h(finding["severity"])}">{h(finding["severity"])}</span> '
                       f'<code>{h(finding["id"])}</code> <span class="muted">from '
                       f'{h(finding.get("vantage") or "host configuration")}</span>'
                       + (f' <span class="sev sev-waived">{h(_waiver_text(finding.get("waiver")))}</span>' if waived else '')
                       + '</h4>')
            out.append(f'<p class="summary">{h(finding["summary"])}</p>')
            out.append(f'<p class="fix"><strong>Fix:</strong> {html_fix(finding.get("fix") or "")}</p>')
            out.append(f'<details><summary>Evidence</summary><pre>{h(_evidence_json(finding.get("evidence")))}</pre></details>')
            out.append('</div>')
        out.append('</article>')
    out.append('</section>')

    waivers = (report.get('policy') or {}).get('waivers') or []
    out.append('<section id="waivers"><h2>Waivers</h2>')
    if waivers:
        out.append('<table><tr><th>#</th><th>state</th><th>matched</th><th>expires</th><th>reason</th><th>query</th></tr>')
        for waiver in waivers:
            out.append(f'<tr data-waiver-state="{h(waiver["state"])}"><td>{h(waiver["index"])}</td><td>{h(waiver["state"])}</td>'
                       f'<td class="num">{h(waiver["matched"])}</td><td>{h(waiver.get("expires") or "-")}</td>'
                       f'<td>{h(waiver["reason"])}</td><td><code>{h(waiver["query"])}</code></td></tr>')
        out.append('</table>')
    else:
        out.append('<p class="muted">No waivers.</p>')
    for waiver in report.get('waivers_expired') or []:
        out.append(f'<p class="result failed" data-waiver-expired="{h(waiver["index"])}">Waiver {h(waiver["index"])} '
                   f'expired on {h(waiver["expires"])}: it would have waived {h(waiver["matched"])} finding(s).</p>')
    for error in (report.get('policy') or {}).get('waiver_errors') or []:
        where = f'failed on {h(error.get("finding"))}' if error.get('finding') else 'cannot be used'
        out.append(f'<p class="muted">Waiver {h(error["index"])} {where}: {h(error["error"])}</p>')
    out.append('</section></main>')
    out.append(f'<footer>{GENERATOR}: a listener advertises STARTTLS if and only if a usable certificate and key are '
               'bound to its address and port.</footer></body></html>')
    return '\n'.join(out) + '\n'


# -- writing -------------------------------------------------------------------------------

RENDERERS = {'json': render_json, 'junit': render_junit, 'markdown': render_markdown, 'html': render_html}


def atomic_write(path: str, text: str, mode: int = 0o644) -> None:
    """Write through a temporary file in the same directory and rename it over `path`, so that a
    reader (a CI job, a browser) never sees half a report."""
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp', dir=directory)
    try:
        with os.fdopen(handle, 'w', encoding='utf-8', newline='\n') as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def write_reports(report: dict, directory: str, formats=FORMATS, basename: str = DEFAULT_BASENAME) -> dict:
    """Render and write each format; returns {format: path}. ReportError for an unknown format
    or a directory that cannot be made."""
    if isinstance(formats, str):
        formats = [formats]
    unknown = [name for name in formats if name not in RENDERERS]
    if unknown:
        raise ReportError(f'unknown report format(s) {", ".join(map(str, unknown))}; known: {", ".join(FORMATS)}')
    if not basename or os.sep in basename or basename in ('.', '..'):
        raise ReportError(f'report basename {basename!r} must be a plain file name')
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise ReportError(f'cannot create report directory {directory}: {exc.strerror or exc}')
    written = {}
    for name in formats:
        path = os.path.join(directory, basename + FILE_SUFFIXES[name])
        try:
            atomic_write(path, RENDERERS[name](report))
        except OSError as exc:
            raise ReportError(f'cannot write {path}: {exc.strerror or exc}')
        written[name] = path
    return written
