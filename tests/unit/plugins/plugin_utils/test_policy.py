# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Waivers and the failure rule: JMESPath over findings and over the whole report."""

from __future__ import annotations

import copy
import datetime

import pytest

from ansible_collections.mailsec.starttls.plugins.module_utils import _verdict
from ansible_collections.mailsec.starttls.plugins.plugin_utils import _policy, _reports
from ansible_collections.mailsec.starttls.tests.unit.plugins import scenarios as sc

TODAY = '2026-11-28'


@pytest.fixture
def findings():
    case = copy.deepcopy(sc.scenarios()['postfix-missing-file-454'])
    legacy = copy.deepcopy(sc.scenarios()['legacy-tls'])
    return (_verdict.judge(case['listeners'], case['probes'], case['options'])
            + _verdict.judge(legacy['listeners'], legacy['probes'], legacy['options']))


def test_a_matching_waiver_waives_and_says_why(findings):
    waivers = [{'query': "id=='legacy-tls-protocol' && listener.port==`25`", 'reason': 'old relay', 'ticket': 'CHG-1'}]
    result = _policy.apply_waivers(findings, waivers, TODAY)
    waived = [f for f in result['findings'] if f['waived']]
    assert [f['id'] for f in waived] == ['legacy-tls-protocol']
    assert waived[0]['waiver'] == {'index': 0, 'reason': 'old relay', 'query': waivers[0]['query'],
                                   'expires': None, 'ticket': 'CHG-1'}
    assert result['waivers'][0]['state'] == 'active' and result['waivers'][0]['matched'] == 1
    assert all(f['waiver'] is None for f in result['findings'] if not f['waived'])
    # The input is not changed.
    assert not any(f['waived'] for f in findings)


def test_a_waiver_that_matches_nothing_is_reported_unused(findings):
    result = _policy.apply_waivers(findings, [{'query': "host=='nowhere'", 'reason': 'stale'}], TODAY)
    assert not any(f['waived'] for f in result['findings'])
    assert result['waivers'][0]['state'] == 'unused'


def test_an_expired_waiver_stops_waiving_and_is_noted(findings):
    waivers = [{'query': "id=='starttls-advertised-without-certificate'", 'reason': 'migration', 'expires': '2026-11-27'}]
    result = _policy.apply_waivers(findings, waivers, TODAY)
    assert not any(f['waived'] for f in result['findings'])
    expired = result['waivers_expired']
    assert len(expired) == 1 and expired[0]['expires'] == '2026-11-27' and expired[0]['state'] == 'expired'
    assert expired[0]['matched'] == 1  # one fault, seen from the host and the controller
    assert sorted(expired[0]['would_waive']) == sorted(
        f['key'] for f in findings if f['id'] == 'starttls-advertised-without-certificate')
    # Valid through its last day.
    still = _policy.apply_waivers(findings, [dict(waivers[0], expires='2026-11-28')], TODAY)
    assert sum(f['waived'] for f in still['findings']) == 1 and still['waivers_expired'] == []
    # Dates from YAML arrive as date objects.
    as_date = _policy.apply_waivers(findings, [dict(waivers[0], expires=datetime.date(2026, 12, 1))], TODAY)
    assert sum(f['waived'] for f in as_date['findings']) == 1
    assert as_date['waivers'][0]['expires'] == '2026-12-01'


def test_a_fault_is_waived_only_when_every_sighting_is(findings):
    fault = next(f for f in findings if f['id'] == 'starttls-advertised-without-certificate')
    assert fault['vantages'] == ['host', 'controller']
    # A waiver for one vantage matches that sighting as before, but the host still sees the fault.
    one = _policy.apply_waivers(findings, [{'query': "vantage=='controller'", 'reason': 'known'}], TODAY)
    partly = next(f for f in one['findings'] if f['key'] == fault['key'])
    assert partly['waived'] is False
    assert [s['waiver'] for s in partly['sightings']] == [None, 0]
    assert one['waivers'][0]['state'] == 'active'
    # One waiver per vantage, or one for both: the fault is waived, with the first sighting's waiver.
    both = _policy.apply_waivers(findings, [{'query': "vantage=='controller'", 'reason': 'proxy'},
                                            {'query': "vantage=='host'", 'reason': 'local'}], TODAY)
    waived = next(f for f in both['findings'] if f['key'] == fault['key'])
    assert waived['waived'] is True and waived['waiver']['reason'] == 'local'
    listed = _policy.apply_waivers(findings, [{'query': "contains(vantages, 'controller')", 'reason': 'any'}], TODAY)
    assert next(f for f in listed['findings'] if f['key'] == fault['key'])['waived'] is True


def test_a_waiver_on_a_per_vantage_key_still_matches(findings):
    old_keys = [{'query': "key=='starttls-advertised-without-certificate|mx1|127.0.10.2|25|host'", 'reason': 'a'},
                {'query': "key=='starttls-advertised-without-certificate|mx1|127.0.10.2|25|controller'",
                 'reason': 'b'},
                {'query': "key=='certificate-unreadable|mx1|127.0.10.2|25|-'", 'reason': 'c'}]
    result = _policy.apply_waivers(findings, old_keys, TODAY)
    waived = sorted(f['id'] for f in result['findings'] if f['waived'])
    assert waived == ['certificate-unreadable', 'starttls-advertised-without-certificate']
    fault_key = [{'query': "key=='starttls-advertised-without-certificate|mx1|127.0.10.2|25'", 'reason': 'new'}]
    result = _policy.apply_waivers(findings, fault_key, TODAY)
    assert [f['id'] for f in result['findings'] if f['waived']] == ['starttls-advertised-without-certificate']


def test_the_first_matching_waiver_wins(findings):
    waivers = [{'query': "severity=='critical'", 'reason': 'first'}, {'query': '`true`', 'reason': 'second'}]
    result = _policy.apply_waivers(findings, waivers, TODAY)
    assert all(f['waived'] for f in result['findings'])
    reasons = {f['waiver']['reason'] for f in result['findings'] if f['severity'] == 'critical'}
    assert reasons == {'first'}
    assert {w['state'] for w in result['waivers']} == {'active'}


def test_a_query_that_fails_on_a_finding_does_not_waive_it(findings):
    waivers = [{'query': "contains(evidence.probe.starttls_reply.code, '454')", 'reason': 'typed'}]
    result = _policy.apply_waivers(findings, waivers, TODAY)
    assert result['waiver_errors'], 'a null code should be a JMESPath type error for contains()'
    assert result['waiver_errors'][0]['index'] == 0 and 'contains' in result['waiver_errors'][0]['error']
    waived = [f for f in result['findings'] if f['waived']]
    assert waived and all(f['evidence']['probe']['starttls_reply']['code'] == '454' for f in waived)


@pytest.mark.parametrize('waivers, message', [
    ([{'query': "id=='x' &&", 'reason': 'r'}], r'starttls_waivers\[0\]\.query: invalid JMESPath expression'),
    ([{'query': "id=='x'", 'reason': 'r'}, {'query': 'findings[?', 'reason': 'r'}], r'starttls_waivers\[1\]\.query'),
    ([{'reason': 'no query'}], r'starttls_waivers\[0\]: query is required'),
    ([{'query': "id=='x'"}], r'starttls_waivers\[0\]: reason is required'),
    ([{'query': "id=='x'", 'reason': '  '}], 'reason is required'),
    ([{'query': "id=='x'", 'reason': 'r', 'expiry': '2027-01-01'}], 'unknown key.*expiry'),
    ([{'query': "id=='x'", 'reason': 'r', 'expires': '31/12/2026'}], 'not a date in the form YYYY-MM-DD'),
    ([{'query': "id=='x'", 'reason': 'r', 'expires': '2026-02-30'}], 'not a valid date'),
    (['just a string'], 'a waiver is a dictionary'),
    ({'query': 'x'}, 'must be a list'),
])
def test_invalid_waivers_fail_early_naming_the_waiver(waivers, message):
    with pytest.raises(_policy.PolicyError, match=message):
        _policy.apply_waivers([], waivers, TODAY)


def report_for(findings, fail_when=None):
    case = sc.scenarios()['postfix-missing-file-454']
    return _reports.build_report(findings, case['listeners'], case['probes'], {'generated_at': 'x'}, fail_when=fail_when)


def test_default_fail_when_fails_on_unwaived_critical_or_high(findings):
    report = report_for(findings)
    assert report['summary']['failed'] is True
    assert report['summary']['fail_when'] == _policy.DEFAULT_FAIL_WHEN
    assert report['summary']['fail_reason'].startswith('2 unwaived finding(s) of severity critical or high')
    assert '(host, controller)' in report['summary']['fail_reason']  # one fault, both vantages
    waived = _policy.apply_waivers(findings, [{'query': "contains(['critical', 'high'], severity)",
                                               'reason': 'accepted'}], TODAY)['findings']
    passed = report_for(waived)
    assert passed['summary']['failed'] is False and passed['summary']['fail_reason'] is None


def test_only_medium_and_below_do_not_fail_by_default(findings):
    medium = [dict(f, severity='medium') for f in findings]
    assert report_for(medium)['summary']['failed'] is False


def test_custom_fail_when(findings):
    strict = report_for(findings, "summary.unwaived > `0`")
    assert strict['summary']['failed'] is True
    assert "starttls_fail_when 'summary.unwaived > `0`' is true" in strict['summary']['fail_reason']
    listed = report_for(findings, "findings[?id=='legacy-tls-protocol']")
    assert listed['summary']['failed'] is True
    assert 'legacy-tls-protocol|mx1|127.0.10.1|25' in listed['summary']['fail_reason']
    assert report_for(findings, "findings[?id=='no-such-rule']")['summary']['failed'] is False
    # A count reads as a count: 0 does not fail.
    assert report_for(findings, "length(findings[?id=='no-such-rule'])")['summary']['failed'] is False
    assert report_for(findings, 'summary.unwaived_by_severity.info')['summary']['failed'] is False
    assert report_for(findings, 'summary.unwaived_by_severity.low')['summary']['failed'] is True


def test_fail_when_errors(findings):
    with pytest.raises(_policy.PolicyError, match='starttls_fail_when: invalid JMESPath expression'):
        report_for(findings, 'findings[?')
    closed = report_for(findings, 'abs(summary.fail_when)')
    assert closed['summary']['failed'] is True
    assert 'could not be evaluated' in closed['summary']['fail_reason']


@pytest.mark.parametrize('value, expected', [
    (None, False), (False, False), ('', False), ([], False), ({}, False), (0, False), (0.0, False),
    (True, True), ('x', True), ([0], True), ({'a': 1}, True), (1, True), (-1, True),
])
def test_truthiness(value, expected):
    assert _policy.truthy(value) is expected


def test_missing_jmespath_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(_policy, 'HAS_JMESPATH', False)
    monkeypatch.setattr(_policy, 'JMESPATH_IMPORT_ERROR', ImportError('No module named jmespath'))
    with pytest.raises(_policy.PolicyError, match='jmespath Python package is required'):
        _policy.check_policy([{'query': 'id', 'reason': 'r'}])


def test_check_policy_compiles_everything_up_front():
    _policy.check_policy([{'query': "id=='x'", 'reason': 'r'}], "summary.failed")
    with pytest.raises(_policy.PolicyError, match='starttls_fail_when'):
        _policy.check_policy([], '][')


def test_every_expression_in_the_policy_guide_compiles():
    """docs/policy.md shows waivers and failure rules; each one must at least compile."""
    import pathlib  # pylint: disable=import-outside-toplevel
    import re  # pylint: disable=import-outside-toplevel

    import yaml  # pylint: disable=import-outside-toplevel

    guide = (pathlib.Path(__file__).resolve().parents[4] / 'docs' / 'policy.md').read_text()
    blocks = re.findall(r'```yaml\n(.*?)```', guide, re.S)
    waivers = [waiver for block in blocks for waiver in (yaml.safe_load(block) or {}).get('starttls_waivers', [])]
    assert len(waivers) == 4
    _policy.check_policy(waivers)
    rules = re.findall(r'^\| [^|]+ \| ``(.+?)`` \|$', guide, re.M)
    assert len(rules) == 5
    for rule in rules:
        _policy.check_policy([], rule.strip())
    assert _policy.DEFAULT_FAIL_WHEN in guide


DEEP = '(' * 3000
OVERFLOW = 'ceil(`1e400`)'


def test_a_waiver_nested_too_deeply_is_named_waives_nothing_and_fails_the_run(findings, tmp_path):
    waivers = [{'query': "id=='legacy-tls-protocol'", 'reason': 'old relay'}, {'query': DEEP, 'reason': 'deep'}]
    assert _policy.check_policy(waivers, tolerate_limits=True) == [
        "starttls_waivers[1].query: JMESPath expression '" + '(' * 96 + "... (3000 characters)' cannot be compiled: "
        'nested too deeply to evaluate (recursion limit)']
    with pytest.raises(_policy.PolicyLimitError, match=r'starttls_waivers\[1\]\.query'):
        _policy.check_policy(waivers)
    listeners = [{'host': 'mx1', 'address': '192.0.2.1', 'port': 25, 'protocol': 'smtp'}]
    report = _reports.audit(listeners, [], {'now': sc.NOW}, waivers, 'summary.findings > `1000`')
    assert report['summary']['failed'] is True
    assert 'starttls_waivers[1].query' in report['summary']['fail_reason']
    assert len(report['summary']['fail_reason']) < 400
    assert report['policy']['waiver_errors'][0]['index'] == 1
    assert report['policy']['waiver_errors'][0]['finding'] is None
    assert [waiver['index'] for waiver in report['policy']['waivers']] == [0]
    written = _reports.write_reports(report, str(tmp_path))
    assert sorted(written) == sorted(_reports.FORMATS)
    markdown = (tmp_path / 'starttls-report.md').read_text()
    assert 'Waiver 1 cannot be used: starttls\\_waivers\\[1\\].query' in markdown
    assert 'Waiver 1 cannot be used: starttls_waivers[1].query' in (tmp_path / 'starttls-report.html').read_text()


def test_a_waiver_that_overflows_is_a_waiver_error_per_finding(findings):
    result = _policy.apply_waivers(findings, [{'query': OVERFLOW, 'reason': 'boom'}], TODAY)
    assert not any(finding['waived'] for finding in result['findings'])
    assert result['waiver_errors'] and all('OverflowError' in error['error'] for error in result['waiver_errors'])
    assert result['unusable'] == []


@pytest.mark.parametrize('expression, message', [
    (OVERFLOW, 'OverflowError'),
    (DEEP, 'nested too deeply'),
    ('length(' * 400 + 'findings' + ')' * 400, 'starttls_fail_when'),
])
def test_a_fail_when_beyond_the_limits_fails_closed_naming_it(findings, expression, message, tmp_path):
    report = report_for(findings, expression)
    assert report['summary']['failed'] is True
    assert 'starttls_fail_when' in report['summary']['fail_reason']
    assert message in report['summary']['fail_reason']
    assert 'fails closed' in report['summary']['fail_reason']
    assert set(_reports.write_reports(report, str(tmp_path))) == set(_reports.FORMATS)
