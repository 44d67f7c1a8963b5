# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The audit role's argument spec checked once for every host (issue 11): the same messages as Ansible's
own per-host check, each host with its own values, failing hosts named, and fleet_assess refusing to go on."""

from __future__ import annotations

import os
from unittest.mock import MagicMock

import pytest

from ansible.errors import AnsibleActionFail
from ansible.parsing.dataloader import DataLoader

from ansible_collections.mailsec.starttls.plugins.action import fleet_assess
from ansible_collections.mailsec.starttls.plugins.plugin_utils import _role_arguments

AUDIT_ROLE = os.path.join(os.path.dirname(__file__), '..', '..', '..', '..', 'roles', 'audit')
GOOD_WAIVER = {'query': "id == 'x'", 'reason': 'accepted', 'expires': '2099-01-01'}


@pytest.fixture(scope='module')
def audit_options() -> dict:
    path = _role_arguments.spec_path(AUDIT_ROLE)
    return _role_arguments.entry_point_options(DataLoader().load_from_file(path), 'main', path)


def test_the_audit_role_spec_is_found_and_read(audit_options):
    assert 'starttls_waivers' in audit_options and 'starttls_expiring_days' in audit_options
    assert _role_arguments.spec_path(os.path.join(AUDIT_ROLE, 'tasks')) is None


def test_an_unknown_entry_point_is_an_error():
    with pytest.raises(_role_arguments.RoleSpecError, match="no argument spec for entry point 'merge_only'"):
        _role_arguments.entry_point_options({'argument_specs': {'main': {'options': {}}}}, 'merge_only', 'spec.yml')


def test_the_messages_are_those_of_ansibles_own_check(audit_options):
    # What ansible.builtin.validate_argument_spec reports for the same values.
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
    values = {'starttls_waivers': [{'query': "id == 'x'"}], 'starttls_expiring_days': 'many'}
    expected = ArgumentSpecValidator(audit_options).validate(values, validate_role_argument_spec=True).error_messages
    assert expected and _role_arguments.host_errors(audit_options, values) == list(expected)


def test_each_host_is_checked_with_its_own_values(audit_options):
    failing = _role_arguments.check_hosts(audit_options, [
        ('mx1', {'starttls_waivers': [GOOD_WAIVER]}),
        ('mx2', {'starttls_waivers': [{'query': "id == 'x'", 'reason': 'r', 'until': '2027-01-01'}]}),
        ('mx3', {'starttls_expiring_days': 'many'}),
        ('mx4', {}),
    ])
    assert sorted(failing) == ['mx2', 'mx3']
    assert any('until' in message for message in failing['mx2'])
    assert any('starttls_expiring_days' in message for message in failing['mx3'])


def test_hosts_with_the_same_values_are_validated_once(audit_options, monkeypatch):
    calls = []
    real = _role_arguments.host_errors
    monkeypatch.setattr(_role_arguments, 'host_errors', lambda options, values: calls.append(values) or real(options, values))
    bad = {'starttls_use_tools': 'sometimes'}
    failing = _role_arguments.check_hosts(audit_options, [(f'mx{index}', dict(bad)) for index in range(50)]
                                          + [('odd', {'starttls_use_tools': 'never'})])
    assert len(calls) == 2 and len(failing) == 50


def test_the_message_names_failing_hosts_together():
    failing = {f'mx{index}': ['argument x is wrong'] for index in range(8)}
    failing['odd'] = ['argument y is wrong']
    message = _role_arguments.describe(failing, 'mailsec.starttls.audit', 'main')
    assert message.startswith('the variables of 9 host(s) do not match the argument spec of role mailsec.starttls.audit')
    assert 'mx0, mx1, mx2, mx3, mx4 and 3 more host(s): argument x is wrong' in message
    assert 'odd: argument y is wrong' in message


class Templar:
    """Stands in for Ansible's templar: the values are plain already."""

    @staticmethod
    def template(value):
        return value

    def copy_with_new_env(self, **kwargs):  # pylint: disable=unused-argument
        return self


def run_check(hostvars: dict, current: str, current_vars: dict, role_path: str = AUDIT_ROLE) -> dict:
    task = MagicMock()
    task.args = {'validate_only': True, 'role_argument_spec': 'main'}
    task.async_val = 0
    task.check_mode = False
    task.diff = False
    action = fleet_assess.ActionModule(task=task, connection=MagicMock(), play_context=MagicMock(),
                                       loader=DataLoader(), templar=Templar(), shared_loader_obj=None)
    task_vars = dict(current_vars, hostvars=hostvars, inventory_hostname=current, role_path=role_path,
                     ansible_role_name='mailsec.starttls.audit', ansible_play_batch=list(hostvars),
                     ansible_play_hosts_all=list(hostvars))
    return action.run(task_vars=task_vars)


def test_fleet_assess_fails_for_a_host_other_than_the_one_it_runs_for(tmp_path):
    hostvars = {'mx1': {}, 'mx2': {'starttls_waivers': [{'query': "id == 'x'"}]}, 'mx3': {}}
    with pytest.raises(AnsibleActionFail, match=r'invalid input\): the variables of 1 host\(s\) do not match') as caught:
        run_check(hostvars, 'mx1', {'starttls_report_dir': str(tmp_path)})
    assert "mx2: missing required arguments: reason found in starttls_waivers" in caught.value.message
    assert caught.value.result['outcome'] == 'invalid-input'


def test_fleet_assess_checks_the_host_it_runs_for_with_its_task_variables():
    # mx2's own value wins over the one mx1's task variables hold.
    with pytest.raises(AnsibleActionFail, match=r"of 1 host\(s\) .*: mx1: value of starttls_use_tools must be one of"):
        run_check({'mx1': {}, 'mx2': {'starttls_use_tools': 'never'}}, 'mx1', {'starttls_use_tools': 'sometimes'})


def test_fleet_assess_passes_good_variables():
    result = run_check({'mx1': {}, 'mx2': {'starttls_waivers': [GOOD_WAIVER]}}, 'mx1', {'starttls_expiring_days': 14})
    assert result['outcome'] == 'validated' and not result.get('failed')


def test_fleet_assess_outside_a_role_with_a_spec_is_an_error(tmp_path):
    with pytest.raises(AnsibleActionFail, match='runs in no role with a meta/argument_specs.yml'):
        run_check({'mx1': {}}, 'mx1', {}, role_path=str(tmp_path))
