# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A policy failure prints a short, specific message: Ansible prints a failed task's whole result, so
what would bury the message (findings, resolved findings) is left to the reports, and a run with
fail=false still registers all of it."""

from __future__ import annotations

import json

from ansible_collections.mailsec.starttls.plugins.action import fleet_assess
from ansible_collections.mailsec.starttls.tests.unit.plugins.action.test_fleet_assess import (  # pylint: disable=unused-import
    probed,
    run_action,
)


def partners(count: int, ports=(25, 587)) -> dict:
    """Black-box listeners on `count` hosts; the `probed` fixture makes each answer STARTTLS with 454."""
    return {f'partner-{number:03d}': {'ansible_host': f'192.0.2.{number}',
                                      'starttls_listeners': [f'192.0.2.{number}:{port}' for port in ports]}
            for number in range(1, count + 1)}


def test_the_failure_message_is_short_whatever_the_fleet_size(probed, tmp_path):  # noqa: F811
    first = run_action({'report_dir': str(tmp_path), 'fail': False}, partners(60))
    assert first['outcome'] == 'policy-failed' and not first.get('failed') and len(first['findings']) == 120
    # The next day, port 587 is gone everywhere: 60 findings resolved, 60 still there.
    result = run_action({'report_dir': str(tmp_path)}, partners(60, ports=(25,)))
    summary = result['summary']
    assert result['failed'] is True and result['outcome'] == 'policy-failed'
    assert result['msg'].startswith('STARTTLS audit failed (policy): 60 unwaived finding(s) of severity critical or high: ')
    assert 'on partner-001 192.0.2.1:25' in result['msg']
    assert result['msg'].endswith(f"(report: {result['reports']['html']})")
    reason = result['msg'][len('STARTTLS audit failed (policy): '):-len(f" (report: {result['reports']['html']})")]
    assert len(reason) <= fleet_assess.FAILURE_REASON_LIMIT + len(' ...') and reason.endswith(')' + ' ...')
    # The registered result keeps the numbers and the whole reason; the lists are in the reports.
    assert 'and 55 more' in summary['fail_reason'] and summary['fail_reason'].startswith(reason[:-len(' ...')])
    assert 'findings' not in result and 'resolved_findings' not in result['changes']
    assert result['changes']['resolved'] == 60 and result['changes']['persisting'] == 60
    written = json.loads(open(result['reports']['json'], encoding='utf-8').read())
    assert len(written['findings']) == 60 and len(written['changes']['resolved_findings']) == 60
    # What Ansible prints does not grow with the fleet: one host gives about as much.
    small = run_action({'report_dir': str(tmp_path / 'one')}, partners(1))
    assert small['failed'] is True and small['msg'].endswith(f"(report: {small['reports']['html']})")
    assert len(json.dumps(result)) < len(json.dumps(small)) + 600 < 4000


def test_a_short_reason_is_kept_whole_and_without_reports_no_path_is_named(probed):  # noqa: F811
    result = run_action({}, partners(1, ports=(25,)))
    assert result['msg'] == ('STARTTLS audit failed (policy): ' + result['summary']['fail_reason'])
    assert result['reports'] == {}


def test_fail_false_registers_everything(probed, tmp_path):  # noqa: F811
    run_action({'report_dir': str(tmp_path), 'fail': False}, partners(3))
    result = run_action({'report_dir': str(tmp_path), 'fail': False}, partners(3, ports=(25,)))
    assert not result.get('failed') and result['outcome'] == 'policy-failed'
    assert len(result['findings']) == 3 and len(result['changes']['resolved_findings']) == 3
