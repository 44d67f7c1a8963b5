# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documented examples, run as written: the example inventory with the quick start's host pattern, and the
report filter's EXAMPLES (with starttls_fail_when and starttls_waivers undefined, as a user starts)."""

from __future__ import annotations

import json
import subprocess

import yaml

from conftest import REPO, ansible_bin
from test_packaging import fixture_listeners, installed, built  # noqa: F401 pylint: disable=unused-import


def test_the_example_inventory_puts_every_host_under_the_documented_pattern(ansible_env):
    """docs/quickstart.md runs the audit with -e starttls_target=mail: every host of the example must be in it,
    black-box ones included, and no report directory may contradict the quick start's ./starttls-reports."""
    completed = subprocess.run([ansible_bin('ansible-inventory'), '-i', str(REPO / 'docs' / 'examples' / 'inventory.yml'),
                                '--list'], env=ansible_env, capture_output=True, text=True, check=True)
    inventory = json.loads(completed.stdout)
    hostvars = inventory['_meta']['hostvars']
    pattern = subprocess.run([ansible_bin('ansible'), '-i', str(REPO / 'docs' / 'examples' / 'inventory.yml'), 'mail',
                              '--list-hosts'], env=ansible_env, capture_output=True, text=True, check=True)
    in_mail = {line.strip() for line in pattern.stdout.splitlines()[1:] if line.strip()}
    assert in_mail == set(hostvars), (in_mail, set(hostvars))
    black_box = {host for host, variables in hostvars.items() if variables.get('starttls_host_inspection') is False}
    assert black_box == {'partner-mx.example.net', 'exchange01.example.org'}
    assert all(hostvars[host].get('starttls_listeners') for host in black_box)
    assert not any('starttls_report_dir' in variables for variables in hostvars.values())
    quickstart = (REPO / 'docs' / 'quickstart.md').read_text()
    assert '-e starttls_target=mail' in quickstart and 'starttls-reports/starttls-report.html' in quickstart


def test_the_report_filter_example_runs_with_the_policy_variables_undefined(run_playbook, fixture_listeners):
    examples = yaml.safe_load((REPO / 'plugins' / 'filter' / 'report.yml').read_text())['EXAMPLES']
    targets = [f"{item['address']}:{item['port']}/smtp" for item in fixture_listeners['listeners']]
    tasks = [
        {'name': 'Probe the simulated listeners', 'mailsec.starttls.listener_probe': {
            'targets': targets, 'ca_file': fixture_listeners['ca_file'], 'timeout': 3, 'vantage': 'controller'},
         'register': 'probed'},
        {'name': 'Inputs of the example', 'ansible.builtin.set_fact': {
            'starttls_listeners': [], 'starttls_probes': '{{ probed }}'}},
        {'name': 'The example', 'block': yaml.safe_load(examples),
         'rescue': [{'name': 'Record the outcome', 'ansible.builtin.copy': {
             'dest': '{{ result_file }}', 'content': '{{ {"report": starttls_report.summary, '
                                                     '"failure": ansible_failed_result.msg} | to_json }}'}}]},
    ]
    playbook = yaml.safe_dump([{'name': 'report filter example', 'hosts': 'localhost', 'gather_facts': False,
                                'tasks': tasks}], sort_keys=False)
    result = run_playbook(playbook)['result']
    summary = result['report']
    assert summary['fail_when'].startswith('length(findings[?!waived'), summary  # the default rule, not "omit"
    assert summary['failed'] is True and summary['findings'] >= 1
    assert 'unwaived finding(s) of severity critical or high' in result['failure']
