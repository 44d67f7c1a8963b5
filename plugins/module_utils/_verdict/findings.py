# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The finding record: its keys (one per sighting, one per fault), the collector that builds findings
in order (severity by site policy, rule or catalogue; the fix text), and the merge of the sightings of
one fault into one finding."""

from __future__ import annotations

from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.catalogue import RULES, SEVERITY_RANK
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.fixes import fix_for
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.records import listener_identity
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.values import as_port, one_line


def finding_key(rule: str, listener: dict, vantage) -> str:
    host, address, port = listener_identity(listener)
    return f'{rule}|{host}|{address}|{port}|{vantage if vantage else "-"}'


class Collector:
    """Findings in order, one per (id, host, address, port, vantage)."""

    def __init__(self, options: dict):
        self.options = options
        self.findings: list = []
        self.by_key: dict = {}

    def add(self, rule: str, listener: dict, vantage, summary: str, evidence: dict, detail: dict | None = None,
            severity: str | None = None) -> dict:
        key = finding_key(rule, listener, vantage)
        # The caller goes on adding to its evidence dict for the next rule: keep this one's own copy.
        evidence = dict(evidence)
        existing = self.by_key.get(key)
        if existing is not None:
            # Same listener, same vantage, another address of a wildcard or another SNI name.
            also = existing['evidence'].setdefault('also_seen', [])
            if len(also) < 10:
                also.append({key: value for key, value in evidence.items()
                             if key in ('probe', 'target', 'sni', 'record_error')})
            return existing
        # Site policy (options['severity']) beats a rule's situational severity, which beats the catalogue.
        severity = self.options['severity'].get(rule) or severity or RULES[rule]['severity']
        finding = {
            'id': rule,
            'severity': severity,
            'title': RULES[rule]['title'],
            'host': listener.get('host'),
            'listener': {
                'address': listener.get('address'),
                'port': as_port(listener.get('port')),
                'protocol': listener.get('protocol'),
                'mta': listener.get('mta'),
                'service': listener.get('service'),
                'instance': listener.get('instance'),
                'defined_at': listener.get('defined_at'),
            },
            'vantage': vantage,
            'summary': one_line(summary, 300),
            'evidence': evidence,
            'fix': fix_for(rule, listener, detail),
            'waived': False,
            'waiver': None,
            'key': key,
        }
        self.by_key[key] = finding
        self.findings.append(finding)
        return finding


def fault_key(rule: str, listener: dict) -> str:
    """The identity of a fault: one rule on one listener of one host, whoever saw it."""
    host, address, port = listener_identity(listener)
    return f'{rule}|{host}|{address}|{port}'


def merge_sightings(findings: list) -> list:
    """One finding per fault (host, listener, rule): the sightings of every vantage and of the
    configuration folded into the first one, in the order they were made.

    The merged finding keeps the first sighting's `vantage`, `summary`, `evidence` and `fix`, takes
    the worst severity of all sightings, and lists them all in `sightings` ({vantage, severity,
    summary, key}, plus `evidence` from the second on) and `vantages`. Its `key` is the fault key, which
    does not depend on who saw it, so that reports of different runs can be compared.
    """
    merged: list = []
    by_fault: dict = {}
    for finding in findings:
        key = fault_key(finding['id'], dict(finding.get('listener') or {}, host=finding.get('host')))
        # The sighting keeps its own key (id|host|address|port|vantage): waivers written for it still match.
        sighting = {'vantage': finding.get('vantage'), 'severity': finding.get('severity'),
                    'summary': finding.get('summary'), 'key': finding.get('key')}
        first = by_fault.get(key)
        if first is None:
            finding['key'] = key
            finding['sightings'] = [sighting]
            finding['vantages'] = [finding.get('vantage')]
            by_fault[key] = finding
            merged.append(finding)
            continue
        sighting['evidence'] = finding.get('evidence')
        first['sightings'].append(sighting)
        first['vantages'].append(finding.get('vantage'))
        if SEVERITY_RANK.get(finding.get('severity'), 9) < SEVERITY_RANK.get(first.get('severity'), 9):
            first['severity'] = finding.get('severity')
    for finding in merged:
        if len(finding['sightings']) > 1:
            others = ', '.join(str(vantage) if vantage else 'the configuration' for vantage in finding['vantages'][1:])
            finding['summary'] = one_line(f'{finding["summary"]}; also seen from {others}', 500)
    return merged
