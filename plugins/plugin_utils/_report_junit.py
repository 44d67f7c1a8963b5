# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The report as JUnit XML for CI pages (docs/reports.md): one test case per listener and rule.

Text from a server may hold characters XML 1.0 cannot carry and terminal controls: xml_text shows
them as visible escapes."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from ansible_collections.mailsec.starttls.plugins.module_utils import _verdict
from ansible_collections.mailsec.starttls.plugins.module_utils._text import visible
from ansible_collections.mailsec.starttls.plugins.plugin_utils._report_text import (
    GENERATOR, all_evidence, endpoint, evidence_json, seen_from, waiver_text)

JUNIT_INDENT_LIMIT = 20000

_XML_INVALID = re.compile('[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]')


def xml_text(value) -> str:
    """Text that XML 1.0 can carry and a terminal or CI page can show: characters XML forbids,
    terminal controls and bidi overrides become visible escapes."""
    text = '' if value is None else visible(value)
    return _XML_INVALID.sub(lambda match: f'\\u{ord(match.group()):04x}', text)


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
                'classname': host, 'name': xml_text(f'listener {endpoint(item)} :: {rule}'), 'time': '0'})
            counts[host]['tests'] += 1
            hits = [finding for finding in findings if finding.get('id') == rule]
            open_hits = [finding for finding in hits if not finding.get('waived')]
            if open_hits:
                worst = _verdict.worst_severity(open_hits)
                lines = []
                for finding in open_hits:
                    lines.append(f'[{finding.get("severity")}] {finding.get("summary")}')
                    lines.append(f'seen from: {seen_from(finding)}')
                    if finding.get('first_seen'):
                        lines.append(f'first seen: {finding["first_seen"]}' + (' (new)' if finding.get('change') == 'new' else ''))
                    lines.append(f'fix: {finding.get("fix")}')
                    lines.append('evidence: ' + evidence_json(all_evidence(finding)))
                    lines.append('')
                failure = ET.SubElement(case, 'failure', {
                    'type': xml_text(worst), 'message': xml_text(open_hits[0].get('summary'))})
                failure.text = xml_text('\n'.join(lines))
                counts[host]['failures'] += 1
            elif hits:
                ET.SubElement(case, 'skipped', {'message': xml_text(waiver_text(hits[0].get('waiver')))})
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
    if hasattr(ET, 'indent') and totals['tests'] <= JUNIT_INDENT_LIMIT:  # Python 3.9+
        # Indenting is for people; at fleet scale it costs seconds and nobody reads the file by eye.
        ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding='unicode') + '\n'
