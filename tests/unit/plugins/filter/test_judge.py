# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The judgement filters as templates call them."""

from __future__ import annotations

import copy

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.mailsec.starttls.plugins.filter.judge import FilterModule
from ansible_collections.mailsec.starttls.tests.unit.plugins import scenarios as sc

FILTERS = FilterModule().filters()


def case(name):
    return copy.deepcopy(sc.scenarios()[name])


def test_the_filters_exist():
    assert set(FILTERS) == {'findings', 'waive', 'report', 'report_junit', 'report_markdown', 'report_html'}


def test_findings_filter_accepts_records_and_module_results():
    kb = case('postfix-missing-file-454')
    direct = FILTERS['findings'](kb['listeners'], kb['probes'], kb['options'])
    wrapped = FILTERS['findings']([{'listeners': kb['listeners'], 'unmatched_sockets': []}],
                                  [{'probes': kb['probes'], 'changed': False}], kb['options'])
    assert [f['key'] for f in direct] == [f['key'] for f in wrapped]
    assert {f['id'] for f in direct} == {'certificate-unreadable', 'starttls-advertised-without-certificate'}


def test_waive_and_report_filters():
    kb = case('postfix-missing-file-454')
    found = FILTERS['findings'](kb['listeners'], kb['probes'], kb['options'])
    # One fault seen from the host and the controller: a waiver for the controller alone does not waive it.
    waived = FILTERS['waive'](found, [{'query': "vantage=='controller'", 'reason': 'seen'}], '2026-11-28')
    assert [f['waived'] for f in waived].count(True) == 0
    waived = FILTERS['waive'](found, [{'query': "contains(vantages, 'controller')", 'reason': 'seen'}], '2026-11-28')
    assert [f['id'] for f in waived if f['waived']] == ['starttls-advertised-without-certificate']
    report = FILTERS['report'](kb['listeners'], kb['probes'], kb['options'], [], "summary.findings > `10`",
                               {'generated_at': 'fixed'})
    assert report['summary']['failed'] is False and report['generated_at'] == 'fixed'
    again = FILTERS['report'](kb['listeners'], kb['probes'], kb['options'], [], None, {'generated_at': 'later'},
                              report)
    assert again['changes']['persisting'] == len(again['findings']) and again['changes']['new'] == 0
    assert all(finding['first_seen'] == 'fixed' for finding in again['findings'])
    assert FILTERS['report_junit'](report).startswith('<?xml')
    assert FILTERS['report_markdown'](report).startswith('# STARTTLS audit report')
    assert FILTERS['report_html'](report).startswith('<!DOCTYPE html>')


@pytest.mark.parametrize('call, message', [
    (lambda: FILTERS['findings']('not a list'), 'listeners must be a list'),
    (lambda: FILTERS['findings']([], [], {'colour': 1}), 'unknown judge option'),
    (lambda: FILTERS['waive']([], [{'query': '[['}]), r'starttls_waivers\[0\]'),
    (lambda: FILTERS['waive'](['not a finding'], []), r'findings\[0\] is a str'),
    (lambda: FILTERS['waive']([], [{'query': '(' * 3000, 'reason': 'deep'}]), r'starttls_waivers\[0\]\.query.*recursion'),
    (lambda: FILTERS['report']([], [], {}, [], 'summary.'), 'starttls_fail_when'),
    (lambda: FILTERS['report']([], [], {}, [], None, 'meta'), 'meta must be a dictionary'),
    (lambda: FILTERS['report']([], [], {}, [], None, None, 'previous'), 'previous must be a report'),
    (lambda: FILTERS['report_html']({'findings': []}), 'schema_version 1'),
])
def test_errors_are_filter_errors(call, message):
    with pytest.raises(AnsibleFilterError, match=message):
        call()


def test_findings_filter_turns_unreadable_records_into_judgement_errors():
    good = {'host': 'mx1', 'address': '192.0.2.1', 'port': 25, 'protocol': 'smtp'}
    broken = [{'host': 'mx1', 'address': '192.0.2.1', 'port': [25], 'protocol': 'smtp'},
              {'host': 'mx2', 'address': '192.0.2.2', 'port': 25, 'binding': 'cert.pem'},
              {'host': 'mx3', 'address': '192.0.2.3', 'port': 25, 'protocol': 'gopher'}]
    probe = sc.refused_454('192.0.2.1', 25, text='no')
    result = FILTERS['findings']([good] + broken, [probe, {'target': ['x'], 'vantage': 'controller'}],
                                 {'now': '2026-12-01T00:00:00Z'})
    errors = sorted((finding['host'] or '-', finding['summary']) for finding in result if finding['id'] == 'judgement-error')
    assert [host for host, _summary in errors] == ['-', 'mx1', 'mx2', 'mx3']
    assert 'probe.target is not a dictionary' in errors[0][1]
    assert 'port is a list' in errors[1][1]
    assert 'binding is a str' in errors[2][1]
    assert "protocol 'gopher'" in errors[3][1]
    assert ('starttls-advertised-without-certificate', 'mx1') in {(finding['id'], finding['host']) for finding in result}
