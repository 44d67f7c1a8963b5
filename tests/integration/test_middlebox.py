# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Middleboxes in front of real MTAs (issue 12): the audit probes each lab listener from the host
itself and, through the address map, from the controller and a jump host via a relay (tests/lab/
middlebox.py) that masks, strips, refuses or terminates STARTTLS; the findings must name the modes
and the vantages that disagree, and the transparent relay (a port forward 2525->25) must add nothing."""

from __future__ import annotations

import json
import subprocess

import pytest

from middlebox import Middlebox  # pylint: disable=import-error
from test_audit_role import run_audit, write_inventory

# Source address of the controller's probes; the stripping relay strips STARTTLS for it alone.
CONTROLLER_SOURCE = '127.0.0.7'
SEEN_FROM = ('controller', 'jump:bastion')

# listener as the host binds it -> (relay address, relay port, mode, relay options)
LAYOUT = {
    ('127.0.10.1', 25): ('127.0.90.2', 25, 'mask', {}),
    ('127.0.10.1', 587): ('127.0.90.3', 587, 'mask', {'starred_banner': True}),
    ('127.0.11.1', 25): ('127.0.90.4', 25, 'terminate', {}),
    ('127.0.11.1', 587): ('127.0.90.5', 587, 'refuse', {}),
    ('127.0.10.5', 25): ('127.0.90.6', 25, 'strip', {'strip_for': (CONTROLLER_SOURCE,)}),
    ('127.0.20.1', 25): ('127.0.90.1', 2525, 'transparent', {}),  # a port forward 2525 -> 25
}
UNREACHABLE = ('127.0.20.1', 587)


@pytest.fixture(scope='module')
def gateway_certificate(tmp_path_factory):
    """The terminating relay's own certificate: one the lab host does not hold."""
    work = tmp_path_factory.mktemp('gateway')
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '30',
                    '-subj', '/CN=gateway.middlebox.test', '-keyout', str(work / 'gw.key'),
                    '-out', str(work / 'gw.crt')], check=True, capture_output=True)
    return str(work / 'gw.crt'), str(work / 'gw.key')


@pytest.fixture(scope='module')
def relays(lab, gateway_certificate):  # pylint: disable=unused-argument
    started = []
    try:
        for (address, port), (relay_address, relay_port, mode, options) in LAYOUT.items():
            if mode == 'terminate':
                options = dict(options, certificate=gateway_certificate)
            started.append(Middlebox((relay_address, relay_port), (address, port), mode, **options))
        yield started
    finally:
        for relay in started:
            relay.stop()


@pytest.fixture(scope='module')
def audited_through_middleboxes(lab, sshd, relays, ansible_env, tmp_path_factory):  # pylint: disable=unused-argument
    work = tmp_path_factory.mktemp('middlebox-audit')
    inventory_path = work / 'inventory.json'
    write_inventory(inventory_path, lab, sshd)
    inventory = json.loads(inventory_path.read_text())
    del inventory['all']['hosts']['partner-mx']
    address_map = [{'listener': f'{address}:{port}', 'default': f'{relay[0]}:{relay[1]}'}
                   for (address, port), relay in LAYOUT.items()]
    address_map.append({'listener': f'{UNREACHABLE[0]}:{UNREACHABLE[1]}', 'default': 'none'})
    host = inventory['all']['hosts']['lab-host']
    host['starttls_address_map'] = address_map
    inventory['all']['vars']['starttls_probe_options'] = dict(inventory['all']['vars']['starttls_probe_options'],
                                                              source_address=CONTROLLER_SOURCE)
    inventory_path.write_text(json.dumps(inventory))
    completed = run_audit(ansible_env, str(inventory_path), work / 'reports', args=('--check',))
    report_path = work / 'reports' / 'starttls-report.json'
    assert report_path.exists(), completed.stdout[-5000:] + completed.stderr[-3000:]
    return {'completed': completed, 'report': json.loads(report_path.read_text())}


def findings_at(report, address, port, rule):
    return [finding for finding in report['findings'] if finding['host'] == 'lab-host'
            and (finding['listener']['address'], finding['listener']['port']) == (address, port)
            and finding['id'] == rule]


def vantages_of(findings) -> set:
    # One finding per fault: every vantage that saw it is in `vantages` (issue 11).
    return {vantage for finding in findings for vantage in finding.get('vantages') or [finding['vantage']]}


@pytest.mark.parametrize('listener', [('127.0.10.1', 25), ('127.0.10.1', 587)], ids=['mask', 'mask-starred-banner'])
def test_masking_is_middlebox_masking_from_each_vantage_behind_it(audited_through_middleboxes, listener):
    report = audited_through_middleboxes['report']
    masked = findings_at(report, *listener, 'middlebox-masking')
    assert vantages_of(masked) == set(SEEN_FROM), masked
    # Masking is said once, as masking: not also as a listener that does not offer STARTTLS.
    assert not findings_at(report, *listener, 'starttls-not-offered')
    assert 'host' not in {vantage for finding in report['findings'] for vantage in finding.get('vantages') or [finding['vantage']]
                          if (finding['listener']['address'], finding['listener']['port']) == listener
                          and finding['id'] == 'middlebox-masking'}


def test_starred_banner_is_evidence(audited_through_middleboxes):
    masked = findings_at(audited_through_middleboxes['report'], '127.0.10.1', 587, 'middlebox-masking')
    greeting = masked[0]['evidence']['probe']['greeting']['lines'][0]
    assert set(greeting) == {'*'}


def test_terminating_gateway_is_tls_terminated_elsewhere(audited_through_middleboxes):
    found = findings_at(audited_through_middleboxes['report'], '127.0.11.1', 25, 'tls-terminated-elsewhere')
    assert vantages_of(found) == set(SEEN_FROM), found
    assert all('gateway.middlebox.test' in finding['summary'] for finding in found)
    assert all(finding['evidence']['probe']['reached_for'] == '127.0.11.1:25' for finding in found)


def test_refusing_gateway_is_the_kb_finding_from_behind_it_only(audited_through_middleboxes):
    report = audited_through_middleboxes['report']
    found = findings_at(report, '127.0.11.1', 587, 'starttls-advertised-without-certificate')
    assert vantages_of(found) == set(SEEN_FROM), found
    assert all('554' in finding['summary'] for finding in found)


def test_stripping_for_one_source_is_starttls_stripped_for_that_vantage_alone(audited_through_middleboxes):
    report = audited_through_middleboxes['report']
    found = findings_at(report, '127.0.10.5', 25, 'starttls-stripped')
    assert vantages_of(found) == {'controller'}, found
    assert 'host probe' in found[0]['summary']
    assert not findings_at(report, '127.0.10.5', 25, 'starttls-not-offered')


def test_transparent_port_forward_adds_nothing(audited_through_middleboxes):
    report = audited_through_middleboxes['report']
    serious = [(finding['id'], finding['vantage']) for finding in report['findings'] if finding['host'] == 'lab-host'
               and (finding['listener']['address'], finding['listener']['port']) == ('127.0.20.1', 25)
               and finding['severity'] in ('critical', 'high', 'medium')]
    assert serious == []
    listener = next(item for item in report['listeners'] if item['host'] == 'lab-host'
                    and (item['address'], item['port']) == ('127.0.20.1', 25))
    probed_from = {probe['vantage']: probe for probe in listener['probes']}
    assert set(SEEN_FROM) <= set(probed_from), probed_from
    assert probed_from['controller']['target'] == '127.0.90.1:2525'


def test_a_listener_no_vantage_can_reach_says_so(audited_through_middleboxes):
    completed = audited_through_middleboxes['completed']
    assert f'{UNREACHABLE[0]}:{UNREACHABLE[1]} is reached from no vantage' in completed.stdout + completed.stderr
    report = audited_through_middleboxes['report']
    listener = next(item for item in report['listeners'] if item['host'] == 'lab-host'
                    and (item['address'], item['port']) == UNREACHABLE)
    assert {probe['vantage'] for probe in listener['probes']} <= {'host'}


@pytest.fixture(scope='module')
def audited_with_inventory_vantages(lab, relays, ansible_env, tmp_path_factory):  # pylint: disable=unused-argument
    """Two vantage hosts from the inventory (local connection) and one that cannot be reached; the
    controller does not probe at all: the vantages alone reach the listeners, through the relays."""
    work = tmp_path_factory.mktemp('vantage-audit')
    inventory_path = work / 'inventory.json'
    write_inventory(inventory_path, lab)
    inventory = json.loads(inventory_path.read_text())
    hosts = inventory['all']['hosts']
    del hosts['partner-mx']
    hosts['lab-host']['starttls_address_map'] = [
        {'listener': '127.0.10.1:25', 'default': '127.0.90.2:25'},          # masked for everyone
        {'listener': '127.0.20.1:25', 'default': '127.0.90.1:2525',         # the port forward
         'vantages': {'inventory:inside-probe': 'own'}},                   # ... except from inside
    ]
    for name in ('outside-probe', 'inside-probe'):
        hosts[name] = {'ansible_connection': 'local', 'starttls_host_inspection': False}
    hosts['gone-probe'] = {'ansible_connection': 'ssh', 'ansible_host': '127.0.0.9', 'ansible_port': 9,
                           'starttls_host_inspection': False}
    inventory_path.write_text(json.dumps(inventory))
    completed = run_audit(ansible_env, str(inventory_path), work / 'reports', args=('--check',), extra={
        'starttls_target': 'lab-host', 'starttls_controller_probe': False,
        'starttls_vantages': ['outside-probe', 'inside-probe', 'gone-probe'],
        'starttls_vantage_ca_file': f"{lab['root']}/certs/lab-ca.crt"})
    report_path = work / 'reports' / 'starttls-report.json'
    assert report_path.exists(), completed.stdout[-5000:] + completed.stderr[-3000:]
    return {'completed': completed, 'report': json.loads(report_path.read_text())}


INVENTORY_VANTAGES = {'inventory:outside-probe', 'inventory:inside-probe'}


def test_inventory_vantages_probe_by_delegation_and_are_judged_with_the_host(audited_with_inventory_vantages):
    report = audited_with_inventory_vantages['report']
    assert vantages_of(findings_at(report, '127.0.10.1', 25, 'middlebox-masking')) == INVENTORY_VANTAGES
    listener = next(item for item in report['listeners'] if item['host'] == 'lab-host'
                    and (item['address'], item['port']) == ('127.0.20.1', 25))
    targets = {probe['vantage']: probe['target'] for probe in listener['probes']}
    assert targets['inventory:outside-probe'] == '127.0.90.1:2525'
    assert targets['inventory:inside-probe'] == '127.0.20.1:25'
    assert 'controller' not in {probe['vantage'] for item in report['listeners'] for probe in item['probes']}


def test_an_unreachable_vantage_costs_only_its_own_probes(audited_with_inventory_vantages):
    completed, report = audited_with_inventory_vantages['completed'], audited_with_inventory_vantages['report']
    assert 'vantage inventory:gone-probe gave no probes' in completed.stdout + completed.stderr
    seen = {probe['vantage'] for item in report['listeners'] for probe in item['probes']}
    assert INVENTORY_VANTAGES <= seen and 'inventory:gone-probe' not in seen


def test_probes_through_one_jump_host_keep_to_its_channel_limit(lab, sshd):
    from ansible_collections.mailsec.starttls.plugins.module_utils._probe import engine, ssh  # pylint: disable=import-outside-toplevel
    targets = [f"{item['address']}:{item['port']}/{item['protocol']}" for item in lab['listeners']
               if item['expect']['starts']] * 3
    connect, jump = ssh.jump_connector(dict(sshd, max_channels=3), 5)
    assert jump is not None
    try:
        probes = engine.probe_many(targets, {'timeout': 5, 'per_host_limit': 64, 'vantage': 'jump:bastion'},
                                   connect=connect, max_parallel=jump.max_channels)
    finally:
        jump.close()
    assert 0 < jump.peak_channels <= 3
    assert jump.open_now == 0  # every channel given back
    assert sum(1 for probe in probes if probe['connected']) == len(targets)
