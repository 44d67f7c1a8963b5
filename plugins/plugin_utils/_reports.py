# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The audit report: one versioned dict (docs/reports.md, docs/report.schema.json), built here
from judged findings and written here in every format asked for. Each format has its own module:
_report_json, _report_junit, _report_markdown and _report_html (both HTML layouts).

Everything in a report that came from a server is hostile text (a banner can carry
`<script>`, control characters or a fake table row): every renderer escapes for its own
syntax, and the HTML page forbids scripts and remote loads with its Content-Security-Policy.
Files are written atomically (a temporary file in the same directory, then a rename); the
JSON report is streamed to its file.
"""

from __future__ import annotations

import datetime
import os
import tempfile

from ansible_collections.mailsec.starttls.plugins.module_utils import _verdict
from ansible_collections.mailsec.starttls.plugins.module_utils._text import visible, visible_deep
from ansible_collections.mailsec.starttls.plugins.plugin_utils import (
    _changes, _policy, _report_html, _report_json, _report_junit, _report_markdown)
from ansible_collections.mailsec.starttls.plugins.plugin_utils._report_text import GENERATOR, finding_listener_key

SCHEMA_VERSION = 1
SEVERITIES = _verdict.SEVERITIES
FORMATS = ('json', 'junit', 'markdown', 'html')
FILE_SUFFIXES = {'json': '.json', 'junit': '.junit.xml', 'markdown': '.md', 'html': '.html'}
DEFAULT_BASENAME = 'starttls-report'


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


def _sort_key_finding(finding: dict) -> tuple:
    listener = finding.get('listener') or {}
    return (_verdict.SEVERITY_RANK.get(finding.get('severity'), 9), str(finding.get('host')),
            str(listener.get('address')), str(listener.get('port')), str(finding.get('id')),
            str(finding.get('vantage') or ''))


def _with_sightings(finding: dict) -> dict:
    """A finding made elsewhere (a filter pipeline, an older report) as one sighting of itself."""
    if not isinstance(finding.get('sightings'), list) or not finding['sightings']:
        finding['sightings'] = [{'vantage': finding.get('vantage'), 'severity': finding.get('severity'),
                                 'summary': finding.get('summary'), 'key': finding.get('key')}]
    if not isinstance(finding.get('vantages'), list):
        finding['vantages'] = [sighting.get('vantage') for sighting in finding['sightings'] if isinstance(sighting, dict)]
    return finding


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


_RULE_ORDER = {rule: position for position, rule in enumerate(_verdict.RULE_IDS)}


def _listener_entry(entry: dict, findings: list) -> dict:
    listener = entry['listener']
    store = _verdict.store_of(listener)
    certificate = _verdict.store_certificate(store)
    binding = listener.get('binding') if isinstance(listener.get('binding'), dict) else {}
    status, worst = _listener_status(findings)
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
                        key=lambda rule: _RULE_ORDER.get(rule, 99)),
        'findings': [finding['key'] for finding in findings],
        'status': status,
        'worst': worst,
    }


def build_report(findings: list, listeners: list, probes: list, meta: dict | None = None, *,
                 fail_when: str | None = None, policy: dict | None = None, judge_options: dict | None = None,
                 previous: dict | None = None, assessed_hosts=None) -> dict:
    """The report (schema_version 1). `findings` as returned by `_verdict.judge` (waivers applied
    or not), `policy` the result of `_policy.apply_waivers` when waivers were applied,
    `fail_when` the failure expression (default `_policy.DEFAULT_FAIL_WHEN`), `previous` the
    previous report to compare with (`_changes`), `assessed_hosts` the hosts this run looked at
    (default: the hosts of its listeners)."""
    findings = sorted((_with_sightings(_plain(finding)) for finding in findings or []), key=_sort_key_finding)
    entries = _verdict.join(listeners or [], probes or [], judge_options)
    by_listener: dict = {}
    for finding in findings:
        by_listener.setdefault(finding_listener_key(finding), []).append(finding)
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
    return assemble_report(findings, listener_entries, meta, fail_when=fail_when, policy=policy, previous=previous,
                           assessed_hosts=assessed_hosts)


def _listener_status(findings: list) -> tuple:
    unwaived = [finding for finding in findings if not finding.get('waived')]
    if not findings:
        return 'clean', None
    return ('findings' if unwaived else 'waived'), _verdict.worst_severity(unwaived)


def assemble_report(findings: list, listener_entries: list, meta: dict | None = None, *,
                    fail_when: str | None = None, policy: dict | None = None, previous: dict | None = None,
                    assessed_hosts=None) -> dict:
    """The report from judged findings (waivers applied) and report listener entries, as
    build_report makes them or as partial reports carry them (report_merge): hosts, summary,
    changes since `previous`, and the failure rule."""
    meta = dict(meta or {})
    policy = policy or {}
    findings = sorted(findings, key=_sort_key_finding)
    by_listener: dict = {}
    for finding in findings:
        by_listener.setdefault(finding_listener_key(finding), []).append(finding)
    for item in listener_entries:
        own = by_listener.get(item['key'], [])
        item['findings'] = [finding['key'] for finding in own]
        item['status'], item['worst'] = _listener_status(own)
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
    if assessed_hosts is None:
        assessed_hosts = [host['host'] for host in host_entries]
    _changes.compare(report, previous, assessed_hosts)
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
          meta: dict | None = None, today=None, extra_findings=None, previous: dict | None = None,
          assessed_hosts=None) -> dict:
    """The whole controller-side pipeline: judge, waive, report. Policy errors raise PolicyError
    before anything is judged; bad judge options raise _verdict.VerdictError.

    `listeners` and `probes` may be records or whole module results (see collect_inputs).
    `extra_findings(listeners, probes, findings)` returns the findings with more judgement added
    (the opt-in DNS checks, plugin_utils/_dane.py)."""
    # Syntax errors stop here; expressions beyond the evaluator's limits are judged to fail the run
    # in the report itself, so that the reports are written and name them.
    _policy.check_policy(waivers, fail_when, tolerate_limits=True)
    listeners, probes, judge_options = collect_inputs(listeners, probes, judge_options)
    findings = _verdict.judge(listeners, probes, judge_options)
    if extra_findings is not None:
        findings = extra_findings(listeners, probes, findings)
    if today is None and judge_options and judge_options.get('now') is not None:
        today = _verdict.parse_time(judge_options['now'])
    policy = _policy.apply_waivers(findings, waivers, today)
    return build_report(policy['findings'], listeners, probes, meta, fail_when=fail_when, policy=policy,
                        judge_options=judge_options, previous=previous, assessed_hosts=assessed_hosts)


# -- writing -------------------------------------------------------------------------------

RENDERERS = {'json': _report_json.render_json, 'junit': _report_junit.render_junit,
             'markdown': _report_markdown.render_markdown, 'html': _report_html.render_html}


def atomic_write(path: str, text, mode: int = 0o644) -> None:
    """Write through a temporary file in the same directory and rename it over `path`, so that a
    reader (a CI job, a browser) never sees half a report. `text` is a string or an iterable of
    strings (written as they come: the JSON report is streamed)."""
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp', dir=directory)
    try:
        with os.fdopen(handle, 'w', encoding='utf-8', newline='\n') as stream:
            if isinstance(text, str):
                stream.write(text)
            else:
                for piece in text:
                    stream.write(piece)
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
            atomic_write(path, _report_json.iter_json(report) if name == 'json' else RENDERERS[name](report))
        except OSError as exc:
            raise ReportError(f'cannot write {path}: {exc.strerror or exc}')
        written[name] = path
    return written
