# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""fleet_assess outcomes (issue 13): an audit that looked at nothing never passes, reports of an earlier run
never survive, broken input is told apart from a policy failure, and validate_only probes nothing."""

from __future__ import annotations

import pytest

from ansible.errors import AnsibleActionFail

from ansible_collections.mailsec.starttls.plugins.action import fleet_assess
from ansible_collections.mailsec.starttls.tests.unit.plugins.action.test_fleet_assess import (  # pylint: disable=unused-import
    evidence,
    good_listener,
    probed,
    run_action,
)
from ansible_collections.mailsec.starttls.tests.unit.plugins.scenarios import unreachable

REPORTS = ('starttls-report.json', 'starttls-report.junit.xml', 'starttls-report.md', 'starttls-report.html')


def plant_reports(directory) -> None:
    for name in REPORTS:
        (directory / name).write_text('earlier run\n')


def remaining(directory) -> list:
    """The reports left looking current: the fleet JSON of the run before is set aside as
    starttls-report.previous.json (the base of the change comparison), which never passes for one."""
    return sorted(path.name for path in directory.iterdir() if path.name != 'starttls-report.previous.json')


def test_an_earlier_fleet_report_is_set_aside_not_left_current(tmp_path, unanswered):  # pylint: disable=unused-argument
    plant_reports(tmp_path)
    with pytest.raises(Exception):
        run_action({'report_dir': str(tmp_path), 'waivers': [{'query': 'id ==', 'reason': 'broken'}]}, {})
    assert remaining(tmp_path) == []
    assert (tmp_path / 'starttls-report.previous.json').read_text() == 'earlier run\n'


@pytest.fixture
def unanswered(monkeypatch):
    """probe_many replaced: nothing answers (connection refused at the connect stage)."""
    def fake_probe_many(targets, options=None, connect=None, max_parallel=None):
        results = []
        for target in targets:
            results.append(unreachable(target['address'], target['port'], target['protocol'],
                                       (options or {}).get('vantage') or 'controller', sni=target.get('sni')))
        return results

    monkeypatch.setattr(fleet_assess, 'probe_many', fake_probe_many)


def black_box(*targets) -> dict:
    return {'partner-mx': {'ansible_host': '192.0.2.40', 'starttls_listeners': list(targets)}}


def test_a_policy_failure_writes_this_runs_reports_and_says_policy(probed, tmp_path):  # noqa: F811
    plant_reports(tmp_path)
    result = run_action({'report_dir': str(tmp_path)}, black_box('192.0.2.40:25'))
    assert result['failed'] is True and result['outcome'] == 'policy-failed'
    assert result['msg'].startswith('STARTTLS audit failed (policy): ')
    assert all('earlier run' not in (tmp_path / name).read_text() for name in REPORTS)


def test_no_listener_is_nothing_audited_and_leaves_no_report(probed, tmp_path):  # noqa: F811
    plant_reports(tmp_path)
    with pytest.raises(AnsibleActionFail, match=r'^STARTTLS audit error \(nothing audited\): no listener found') as caught:
        run_action({'report_dir': str(tmp_path)}, {'mx-a': {'starttls_host': evidence()}})
    assert caught.value.result['outcome'] == 'nothing-audited'
    assert remaining(tmp_path) == []
    assert probed == []


def test_no_probe_made_is_nothing_audited(probed, tmp_path):  # noqa: F811
    with pytest.raises(AnsibleActionFail, match=r'\(nothing audited\): no probe was made of 1 listener'):
        run_action({'report_dir': str(tmp_path), 'controller_probe': False}, black_box('192.0.2.40:25'))
    assert remaining(tmp_path) == []


def test_no_probe_answered_is_an_unreachable_fleet(unanswered, tmp_path):
    plant_reports(tmp_path)
    result = run_action({'report_dir': str(tmp_path)}, black_box('192.0.2.40:25', '192.0.2.40:587/submission'))
    assert result['unreachable'] is True and not result.get('failed')
    assert result['outcome'] == 'unreachable'
    assert result['msg'].startswith('STARTTLS audit error (fleet unreachable): none of 2 probe(s) of 2 listener(s)')
    assert remaining(tmp_path) == []


def test_one_answer_is_enough(probed, monkeypatch, tmp_path):  # noqa: F811
    answered = fleet_assess.probe_many

    def half(targets, options=None, connect=None, max_parallel=None):
        results = answered(targets, options, connect)
        results[0].update(connected=False, starttls_advertised=None, starttls_reply=None)
        return results

    monkeypatch.setattr(fleet_assess, 'probe_many', half)
    result = run_action({'report_dir': str(tmp_path), 'fail': False}, black_box('192.0.2.40:25', '192.0.2.40:587'))
    assert result['outcome'] == 'policy-failed' and not result.get('failed')
    assert remaining(tmp_path) == sorted(REPORTS)


@pytest.mark.parametrize('args, message', [
    ({'waivers': [{'query': "id == 'x' &&", 'reason': 'r'}]}, 'starttls_waivers[0].query: invalid JMESPath'),
    ({'waivers': [{'query': "id == 'x'"}]}, 'reason'),
    ({'waivers': [{'query': "id == 'x'", 'reason': 'r', 'until': '2027-01-01'}]}, 'until'),
    ({'severity': {'no-such-finding': 'high'}}, "unknown finding ID 'no-such-finding'"),
    ({'expiring_days': -1}, 'expiring_days must not be negative'),
])
def test_broken_input_is_invalid_input_before_any_probe_and_removes_earlier_reports(probed, tmp_path, args,  # noqa: F811
                                                                                    message):
    plant_reports(tmp_path)
    with pytest.raises(AnsibleActionFail) as caught:
        run_action(dict(args, report_dir=str(tmp_path)), black_box('192.0.2.40:25'))
    assert str(caught.value.message).startswith('STARTTLS audit error (invalid input): ')
    assert message in caught.value.message and caught.value.result['outcome'] == 'invalid-input'
    assert probed == [] and remaining(tmp_path) == []


def test_a_bad_black_box_listener_of_any_host_is_invalid_input(probed, tmp_path):  # noqa: F811
    hostvars = dict(black_box('192.0.2.40:25'), other={'starttls_listeners': ['192.0.2.41:notaport']})
    with pytest.raises(AnsibleActionFail, match=r'invalid input\): other: starttls_listeners'):
        run_action({'report_dir': str(tmp_path), 'validate_only': True}, hostvars)
    assert probed == []


def test_validate_only_checks_removes_and_probes_nothing(probed, tmp_path):  # noqa: F811
    plant_reports(tmp_path)
    result = run_action({'report_dir': str(tmp_path), 'validate_only': True,
                         'waivers': [{'query': "id == 'x'", 'reason': 'r', 'expires': '2099-01-01'}]},
                        black_box('192.0.2.40:25'))
    assert result['outcome'] == 'validated' and not result.get('failed')
    assert len(result['stale_reports_removed']) == 4
    assert probed == [] and remaining(tmp_path) == []


def test_progress_and_summary_are_displayed(probed, monkeypatch, tmp_path):  # noqa: F811
    shown = []
    monkeypatch.setattr(fleet_assess.display, 'display', lambda text, *args, **kwargs: shown.append(text))
    monkeypatch.setattr(fleet_assess, 'PROGRESS_BATCH', 2)
    targets = [f'192.0.2.40:{port}/smtp' for port in (25, 26, 27, 28, 29)]
    run_action({'report_dir': str(tmp_path), 'fail': False, 'probe_options': {'concurrency': 1}}, black_box(*targets))
    assert shown[0].startswith('fleet_assess: 1 host(s), 0 inspected, 5 endpoint(s) to probe')
    assert [line for line in shown if 'controller: probed' in line] == [
        'fleet_assess: controller: probed 2/5 endpoint(s)', 'fleet_assess: controller: probed 4/5 endpoint(s)',
        'fleet_assess: controller: probed 5/5 endpoint(s)']
    assert 'unwaived, on 5 listener(s) of 1 host(s)' in shown[-2] and 'reports: ' in shown[-2]
    assert shown[-1].startswith('fleet_assess: the failure rule is true (5 unwaived finding(s)')


def test_require_audited_false_judges_an_empty_host_without_failing(probed, tmp_path):  # noqa: F811
    result = run_action({'require_audited': False, 'fail': False}, {'mx-a': {'starttls_host': evidence()}})
    assert result['outcome'] == 'passed' and result['summary']['listeners'] == 0
