# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""inspection-uncertain: what host inspection could not tell is a finding, never a clean bill."""

from __future__ import annotations

from ansible_collections.mailsec.starttls.plugins.module_utils import _verdict
from ansible_collections.mailsec.starttls.tests.unit.plugins import scenarios as sc

NOW = '2026-01-01T00:00:00Z'


def host_listener(**fields) -> dict:
    fields.setdefault('uncertain', [])
    return sc.listener('exim', '127.0.0.5', 25, 'smtp', defined_at='/etc/exim4/exim4.conf:3',
                       offers_starttls_reason='tls_advertise_hosts = *', **fields)


def test_an_uncertain_listener_is_a_finding_with_its_reasons():
    uncertain = [{'what': 'offers_starttls', 'where': '/etc/exim4/exim4.conf:7',
                  'reason': 'tls_advertise_hosts: ${lookup ...} cannot be evaluated'},
                 {'what': 'binding', 'where': '/etc/exim4/exim4.conf:8', 'reason': 'tls_certificate: ${run ...}'}]
    listener = host_listener(offers_starttls=None, uncertain=uncertain)
    findings = _verdict.judge([listener], [], {'now': NOW})
    assert [finding['id'] for finding in findings] == ['inspection-uncertain']
    finding = findings[0]
    assert finding['severity'] == 'medium'
    assert finding['vantage'] is None
    assert '/etc/exim4/exim4.conf:7' in finding['summary'] and 'binding' in finding['summary']
    wheres = [item['where'] for item in finding['evidence']['uncertain']]
    assert wheres == ['/etc/exim4/exim4.conf:7', '/etc/exim4/exim4.conf:8']
    assert '/etc/exim4/exim4.conf:7' in finding['fix']


def test_severity_follows_policy_and_certain_listeners_are_silent():
    uncertain = [{'what': 'address', 'where': '/etc/smtpd.conf:1', 'reason': 'listen on wg0: no such interface'}]
    raised = _verdict.judge([host_listener(uncertain=uncertain, offers_starttls=False, tls_mode='none')], [],
                            {'now': NOW, 'severity': {'inspection-uncertain': 'high'}})
    assert [(finding['id'], finding['severity']) for finding in raised] == [('inspection-uncertain', 'high')]
    certain = host_listener(offers_starttls=False, tls_mode='none')
    assert _verdict.judge([certain], [], {'now': NOW}) == []


def test_only_host_records_can_be_uncertain():
    black_box = {'host': 'mx2', 'address': '192.0.2.1', 'port': 25, 'protocol': 'smtp', 'mode': 'black-box',
                 'uncertain': [{'what': 'address', 'where': None, 'reason': 'x'}]}
    assert 'inspection-uncertain' not in [finding['id'] for finding in _verdict.judge([black_box], [], {'now': NOW})]
    assert 'inspection-uncertain' in _verdict.applicable_rules(host_listener())
    assert 'inspection-uncertain' not in _verdict.applicable_rules(black_box)
