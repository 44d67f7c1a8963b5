# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What changed since the previous report: new, resolved and persisting faults, with the date
each was first seen (docs/reports.md, "Changes since the previous report").

Faults are compared by their fault key `id|host|address|port` (_verdict.fault_key), computed
from the finding's fields so that a report written before one finding per fault (whose keys
named the vantage) compares as well. A fault of the previous report on a host this run did not
assess (another slice, a --limit batch) is neither resolved nor persisting: it is counted as
`not_assessed` and not listed.
"""

from __future__ import annotations

import json
import os

from ansible_collections.mailsec.starttls.plugins.module_utils import _verdict

# The resolved faults a report lists; the count is always complete.
RESOLVED_LIST_LIMIT = 5000


class PreviousReportError(ValueError):
    """A previous report that exists but cannot be read or is not a report."""


def load_previous(path: str | None, required: bool = False) -> dict | None:
    """The report at `path`, or None when there is none (PreviousReportError when `required`).
    A file that is there but is not a mailsec.starttls report raises PreviousReportError."""
    if not path:
        return None
    if not os.path.exists(path):
        if required:
            raise PreviousReportError(f'previous report {path} does not exist')
        return None
    try:
        with open(path, encoding='utf-8') as stream:
            report = json.load(stream)
    except (OSError, ValueError) as exc:
        raise PreviousReportError(f'previous report {path} cannot be read: {exc}')
    if not isinstance(report, dict) or not isinstance(report.get('findings'), list) \
            or not isinstance(report.get('schema_version'), int):
        raise PreviousReportError(f'previous report {path} is not a mailsec.starttls JSON report')
    report.setdefault('source', path)
    return report


def fault_of(finding: dict) -> str:
    listener = finding.get('listener') if isinstance(finding.get('listener'), dict) else {}
    return _verdict.fault_key(str(finding.get('id')), {'host': finding.get('host'), 'address': listener.get('address'),
                                                       'port': listener.get('port')})


def _counts(findings: list) -> dict:
    counts = {severity: 0 for severity in _verdict.SEVERITIES}
    for finding in findings:
        if finding.get('severity') in counts:
            counts[finding['severity']] += 1
    return counts


def compare(report: dict, previous: dict | None, assessed_hosts) -> dict:
    """Sets each finding's `first_seen` and `change` (`new`, `persisting`, or None without a
    previous report) and the report's `changes`; returns `changes`."""
    now = report.get('generated_at')
    findings = report.get('findings') or []
    if previous is None:
        for finding in findings:
            finding['first_seen'] = finding.get('first_seen') or now
            finding['change'] = None
        report['changes'] = {'previous': None, 'new': None, 'resolved': None, 'persisting': None,
                             'not_assessed': None, 'new_by_severity': None, 'resolved_by_severity': None,
                             'resolved_findings': []}
        return report['changes']
    previous_at = previous.get('generated_at')
    earlier: dict = {}
    for finding in previous.get('findings') or []:
        if isinstance(finding, dict):
            fault = fault_of(finding)
            first_seen = finding.get('first_seen') or previous_at
            # A report of before one finding per fault can hold one fault several times.
            if fault not in earlier or str(first_seen) < str(earlier[fault].get('first_seen') or previous_at):
                earlier[fault] = dict(finding, first_seen=first_seen)
    new, persisting = [], []
    current = set()
    for finding in findings:
        fault = fault_of(finding)
        current.add(fault)
        before = earlier.get(fault)
        if before is None:
            finding['first_seen'] = now
            finding['change'] = 'new'
            new.append(finding)
        else:
            finding['first_seen'] = before.get('first_seen') or previous_at
            finding['change'] = 'persisting'
            persisting.append(finding)
    assessed = {str(host) for host in assessed_hosts or []}
    resolved, not_assessed = [], 0
    for fault, finding in sorted(earlier.items()):
        if fault in current:
            continue
        if str(finding.get('host')) not in assessed:
            not_assessed += 1
            continue
        listener = finding.get('listener') if isinstance(finding.get('listener'), dict) else {}
        resolved.append({
            'key': fault, 'id': finding.get('id'), 'severity': finding.get('severity'), 'host': finding.get('host'),
            'listener': {'address': listener.get('address'), 'port': listener.get('port'),
                         'protocol': listener.get('protocol')},
            'summary': finding.get('summary'), 'waived': bool(finding.get('waived')),
            'first_seen': finding.get('first_seen'), 'last_seen': previous_at,
        })
    resolved.sort(key=lambda item: (_verdict.SEVERITY_RANK.get(item['severity'], 9), str(item['host']), item['key']))
    report['changes'] = {
        'previous': {'generated_at': previous_at, 'source': previous.get('source'),
                     'findings': len(previous.get('findings') or [])},
        'new': len(new),
        'resolved': len(resolved),
        'persisting': len(persisting),
        'not_assessed': not_assessed,
        'new_by_severity': _counts(new),
        'resolved_by_severity': _counts(resolved),
        'resolved_findings': resolved[:RESOLVED_LIST_LIMIT],
    }
    return report['changes']


def headline(changes: dict | None) -> str:
    """One line for people: what changed since the previous report."""
    if not changes or changes.get('previous') is None:
        return 'No previous report to compare with: every finding is listed with this run as first seen.'
    previous = changes['previous']
    text = (f"Since the report of {previous.get('generated_at')}: {changes['new']} new, {changes['resolved']} resolved, "
            f"{changes['persisting']} persisting")
    if changes.get('not_assessed'):
        text += f"; {changes['not_assessed']} earlier finding(s) on hosts this run did not assess are not compared"
    return text + '.'
