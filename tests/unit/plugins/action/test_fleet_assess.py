# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""fleet_assess on the controller: evidence bound to the host that produced it (issue 9)."""

from __future__ import annotations

import json
from unittest.mock import MagicMock

import pytest

from ansible.errors import AnsibleActionFail

from ansible_collections.mailsec.starttls.plugins.action import fleet_assess
from ansible_collections.mailsec.starttls.tests.unit.plugins.scenarios import (
    listener,
    missing_store,
    not_advertised,
    probe,
    refused_454,
    store,
)


def run_action(args: dict, hostvars: dict, hosts=None, probed=None, monkeypatch=None) -> dict:
    task = MagicMock()
    task.args = args
    task.async_val = 0
    task.check_mode = False
    task.diff = False
    action = fleet_assess.ActionModule(task=task, connection=MagicMock(), play_context=MagicMock(),
                                       loader=None, templar=None, shared_loader_obj=None)
    return action.run(task_vars={'hostvars': hostvars, 'ansible_play_hosts_all': hosts or list(hostvars)})


@pytest.fixture
def probed(monkeypatch):
    """probe_many replaced: every target 'answers' STARTTLS with 454 (the KB Q237327 case)."""
    calls = []

    def fake_probe_many(targets, options=None, connect=None, max_parallel=None):
        calls.append([dict(target) for target in targets])
        results = []
        for target in targets:
            results.append(probe(target['address'], target['port'], target['protocol'],
                                 (options or {}).get('vantage') or 'controller', sni=target.get('sni'),
                                 starttls_reply={'code': '454', 'text': '4.7.0 TLS not available'}))
        return results

    monkeypatch.setattr(fleet_assess, 'probe_many', fake_probe_many)
    return calls


def evidence(*records, sockets=()) -> dict:
    return {'changed': False, 'listeners': list(records), 'unmatched_sockets': list(sockets)}


def good_listener(host, address, port=25, protocol='smtp', **extra):
    return listener('postfix', address, port, protocol, host=host, cert='/etc/ssl/mail.pem', key='/etc/ssl/mail.key',
                    store_record=store(), **extra)


def test_a_host_cannot_plant_findings_on_another_or_aim_the_prober(probed, tmp_path):
    # mx-a is compromised: its records say they are mx-b's and name mx-b's address and a third party's.
    forged = listener('postfix', '192.0.2.20', 25, 'smtp', host='mx-b', cert='/etc/missing.pem',
                      key='/etc/missing.key', store_record=missing_store())
    elsewhere = listener('postfix', '198.51.100.7', 25, 'smtp', host='victim.example', cert='/etc/missing.pem',
                         key='/etc/missing.key', store_record=missing_store())
    own = good_listener('mx-a', '192.0.2.10')
    hostvars = {
        'mx-a': {'ansible_host': '192.0.2.10',
                 'starttls_host': evidence(forged, elsewhere, own,
                                           sockets=[{'host': 'mx-b', 'address': '192.0.2.20', 'port': 2525,
                                                     'process': 'evil', 'pid': 1}])},
        'mx-b': {'ansible_host': '192.0.2.20', 'starttls_host': evidence(good_listener('mx-b', '192.0.2.20'))},
    }
    result = run_action({'report_dir': str(tmp_path), 'fail': False}, hostvars)
    probed_addresses = {(target['address'], target['port']) for batch in probed for target in batch}
    assert ('198.51.100.7', 25) not in probed_addresses
    assert probed_addresses == {('192.0.2.10', 25), ('192.0.2.20', 25)}
    assert any('198.51.100.7' in warning and 'not probed' in warning for warning in result['warnings'])
    # Everything mx-a said stays on mx-a; mx-b's only findings come from its own evidence and its own probe.
    hosts_of_forged = {finding['host'] for finding in result['findings']
                       if finding['listener']['address'] in ('198.51.100.7',) or finding['listener']['port'] == 2525}
    assert hosts_of_forged == {'mx-a'}
    mx_b = [finding for finding in result['findings'] if finding['host'] == 'mx-b']
    assert {finding['id'] for finding in mx_b} == {'starttls-advertised-without-certificate'}
    assert all('certificate-unreadable' != finding['id'] for finding in mx_b)
    report = json.loads((tmp_path / 'starttls-report.json').read_text())
    assert {host['host'] for host in report['hosts']} == {'mx-a', 'mx-b'}
    assert 'victim.example' not in json.dumps(report['hosts'])


def test_declared_addresses_are_probed(probed, tmp_path):
    second = good_listener('mx-a', '192.0.2.11')
    hostvars = {'mx-a': {'ansible_host': '192.0.2.10', 'starttls_addresses': ['192.0.2.11'],
                         'starttls_host': evidence(second)}}
    result = run_action({'fail': False}, hostvars)
    assert [target['address'] for target in probed[0]] == ['192.0.2.11']
    assert not result.get('warnings')


@pytest.mark.parametrize('bad, message', [
    ({'port': [25]}, 'port is a list'),
    ({'binding': '/etc/ssl/mail.pem'}, 'binding is a str'),
    ({'protocol': 'gopher'}, "protocol 'gopher' is not one of"),
    ({'store': 'usable'}, 'store is a str'),
    ({'probe': {'target': 'x'}}, 'probe.target is not a dictionary'),
    ({'address': {'ip': '192.0.2.10'}}, 'address is a dict'),
])
def test_a_malformed_record_is_one_judgement_error_for_its_host(probed, tmp_path, bad, message):
    broken = dict(good_listener('mx-a', '192.0.2.10'), **bad)
    hostvars = {
        'mx-a': {'ansible_host': '192.0.2.10',
                 'starttls_host': evidence(broken, good_listener('mx-a', '192.0.2.10', port=587, protocol='submission'))},
        'mx-b': {'ansible_host': '192.0.2.20', 'starttls_host': evidence(good_listener('mx-b', '192.0.2.20'))},
    }
    result = run_action({'report_dir': str(tmp_path), 'fail': False}, hostvars)
    errors = [finding for finding in result['findings'] if finding['id'] == 'judgement-error']
    assert len(errors) == 1
    assert errors[0]['host'] == 'mx-a'
    assert message in errors[0]['summary']
    # The rest of the fleet is judged as usual: mx-b and mx-a's good listener get their probe findings.
    judged = {(finding['host'], finding['listener']['port']) for finding in result['findings']
              if finding['id'] == 'starttls-advertised-without-certificate'}
    assert judged == {('mx-a', 587), ('mx-b', 25)}
    assert (tmp_path / 'starttls-report.html').exists()
    assert not any(target['protocol'] == 'gopher' for batch in probed for target in batch)


def test_a_record_that_is_not_a_dictionary_is_a_judgement_error(probed):
    hostvars = {'mx-a': {'ansible_host': '192.0.2.10', 'starttls_host': evidence('garbage', 42)}}
    result = run_action({'fail': False}, hostvars)
    assert [finding['id'] for finding in result['findings']] == ['judgement-error']
    finding = result['findings'][0]
    assert finding['host'] == 'mx-a'
    assert 'the record is a str' in finding['evidence']['record_error']
    assert finding['evidence']['also_seen'] == [{'record_error': 'the record is a int, not a dictionary'}]


@pytest.mark.parametrize('args, message', [
    ({'probe_options': {'ehlo_name': 'x\r\nMAIL FROM:<a@b>'}}, 'ehlo_name contains the control character'),
    ({'probe_options': {'timeout': float('nan')}}, 'timeout must be a finite number'),
    ({'jump_hosts': [{'host': '127.0.0.1', 'port': 70000}]}, 'jump_hosts[0].port 70000 is out of range'),
])
def test_bad_probe_options_fail_before_any_probe(probed, args, message):
    hostvars = {'mx-a': {'ansible_host': '192.0.2.10', 'starttls_host': evidence(good_listener('mx-a', '192.0.2.10'))}}
    with pytest.raises(AnsibleActionFail) as caught:
        run_action(args, hostvars)
    assert message in str(caught.value)
    assert probed == []


@pytest.mark.parametrize('args, named', [
    ({'waivers': [{'query': '(' * 3000, 'reason': 'deep'}]}, 'starttls_waivers[0].query'),
    ({'fail_when': 'ceil(`1e400`)'}, 'starttls_fail_when'),
    ({'fail_when': '(' * 3000}, 'starttls_fail_when'),
])
def test_policy_beyond_the_limits_fails_naming_it_and_the_reports_are_written(probed, tmp_path, args, named):
    hostvars = {'mx-a': {'ansible_host': '192.0.2.10', 'starttls_host': evidence(good_listener('mx-a', '192.0.2.10'))}}
    result = run_action(dict(args, report_dir=str(tmp_path)), hostvars)
    assert result['failed'] is True
    assert named in result['msg']
    assert len(result['msg']) < 1000
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        'starttls-report.html', 'starttls-report.json', 'starttls-report.junit.xml', 'starttls-report.md']
    report = json.loads((tmp_path / 'starttls-report.json').read_text())
    assert report['summary']['failed'] is True
    assert named in report['summary']['fail_reason']


def test_a_policy_syntax_error_still_fails_before_any_probe(probed, tmp_path):
    hostvars = {'mx-a': {'ansible_host': '192.0.2.10', 'starttls_host': evidence(good_listener('mx-a', '192.0.2.10'))}}
    with pytest.raises(AnsibleActionFail, match=r'starttls_waivers\[0\]\.query: invalid JMESPath'):
        run_action({'waivers': [{'query': "id=='x' &&", 'reason': 'typo'}], 'report_dir': str(tmp_path)}, hostvars)
    assert probed == []


def test_the_console_result_carries_no_raw_terminal_or_bidi_control(probed):
    hostile = 'x\x1b[2J\u009b1m\x7f\u202eexe'
    record = good_listener('mx-a', '192.0.2.10', defined_at=f'/etc/postfix/{hostile}:1',
                           service=hostile)
    record['probe'] = refused_454('192.0.2.10', 25, 'host', text=hostile, greeting={'code': '220', 'lines': [hostile]})
    hostvars = {'mx-a': {'ansible_host': '192.0.2.10', 'starttls_host': evidence(
        record, good_listener('mx-a', f'198.51.100.{hostile}'))}}
    result = run_action({'fail': True}, hostvars)
    text = json.dumps(result, ensure_ascii=False)
    for raw in ('\x1b', '\u009b', '\x7f', '\u202e'):
        assert raw not in text
    assert '\\u202e' in result['msg'] or any('\\u202e' in warning for warning in result['warnings'])


def test_a_host_reached_by_name_owns_the_addresses_of_that_name(probed, tmp_path):
    # ansible_host is a name (localhost: every hosts file answers it, no DNS query): the listener bound
    # to an address of that name is the host's own and probed; the wildcard is probed at the name.
    hostvars = {'mx-by-name': {'ansible_host': 'localhost',
                               'starttls_host': evidence(good_listener('mx-by-name', '127.0.0.1', 25),
                                                         good_listener('mx-by-name', '0.0.0.0', 587, 'submission'))}}
    result = run_action({'report_dir': str(tmp_path), 'fail': False}, hostvars)
    probed_targets = {(target['address'], target['port']) for batch in probed for target in batch}
    assert probed_targets == {('127.0.0.1', 25), ('localhost', 587)}
    assert not any('not probed' in warning for warning in result.get('warnings', []))


def test_probes_of_a_name_come_back_per_address_and_are_bound_to_their_host(monkeypatch, tmp_path):
    def per_address(targets, options=None, connect=None, max_parallel=None):
        results = []
        for target in targets:
            for address in ('127.0.0.1', '127.0.91.2'):
                results.append(not_advertised(address, target['port'], options['vantage'], name=target['address']))
        return results

    monkeypatch.setattr(fleet_assess, 'probe_many', per_address)
    hostvars = {'partner': {'starttls_host_inspection': False, 'starttls_listeners': ['mx.partner.test:25/smtp']}}
    result = run_action({'report_dir': str(tmp_path), 'fail': False}, hostvars)
    assert result['probes'] == 2
    report = json.loads((tmp_path / 'starttls-report.json').read_text())
    not_offered = [finding for finding in report['findings'] if finding['id'] == 'starttls-not-offered']
    assert not_offered and all(finding['host'] == 'partner' for finding in not_offered)


def test_address_map_sends_each_vantage_where_its_clients_reach_the_listener(probed, tmp_path, monkeypatch):
    connects = []

    def no_jump(spec, timeout):
        connects.append(spec['host'])
        return (lambda *args: None), None

    monkeypatch.setattr(fleet_assess, 'jump_connector', no_jump)
    hostvars = {'mx-nat': {
        'ansible_host': '198.51.100.5',
        'starttls_host': evidence(good_listener('mx-nat', '198.51.100.5', 25), good_listener('mx-nat', '0.0.0.0', 587, 'submission'),
                                  good_listener('mx-nat', '198.51.100.5', 143, 'imap')),
        'starttls_address_map': [
            {'listener': '198.51.100.5:25', 'default': '203.0.113.25:25', 'vantages': {'jump:inside': 'own'}},
            {'listener': '*:587', 'default': ':2587'},
            {'listener': {'port': 143}, 'default': 'none'},
        ]}}
    result = run_action({'report_dir': str(tmp_path), 'fail': False,
                         'jump_hosts': [{'host': '192.0.2.99', 'name': 'inside'}]}, hostvars)
    # The controller and the jump host probe concurrently: the batches may come in either order.
    assert {frozenset((t['address'], t['port']) for t in batch) for batch in probed} == {
        frozenset({('203.0.113.25', 25), ('198.51.100.5', 2587)}), frozenset({('198.51.100.5', 25), ('198.51.100.5', 2587)})}
    assert any('198.51.100.5:143 is reached from no vantage' in warning for warning in result['warnings'])
    report = json.loads((tmp_path / 'starttls-report.json').read_text())
    by_listener = {(item['address'], item['port']): item for item in report['listeners'] if item['host'] == 'mx-nat'}
    # Probes at 203.0.113.25:25 and :2587 are judged as the listeners the host binds, from both vantages.
    assert {(p['vantage'], p['target']) for p in by_listener[('198.51.100.5', 25)]['probes']} == {
        ('controller', '203.0.113.25:25'), ('jump:inside', '198.51.100.5:25')}
    assert {(p['vantage'], p['target']) for p in by_listener[('0.0.0.0', 587)]['probes']} == {
        ('controller', '198.51.100.5:2587'), ('jump:inside', '198.51.100.5:2587')}
    assert not [item for item in report['listeners'] if item['host'] == 'mx-nat' and item['port'] in (2587,)]
    kb = [f for f in report['findings'] if f['id'] == 'starttls-advertised-without-certificate'
          and f['listener']['port'] == 25]
    # One finding per fault: the host's and the mapped vantages' sightings of it.
    seen = [evidence for f in kb for evidence in [f['evidence']] + [sighting['evidence'] for sighting in f['sightings'][1:]]]
    assert len(kb) == 1 and {evidence['probe'].get('reached_for') for evidence in seen} == {'198.51.100.5:25', None}


@pytest.mark.parametrize('address_map, message', [
    ({'listener': '198.51.100.5:25'}, 'must be a list'),
    ([{'default': '203.0.113.25:25'}], 'with a listener key'),
    ([{'listener': '198.51.100.5:25', 'reach': 'x'}], 'unknown key'),
    ([{'listener': '198.51.100.5:25', 'default': '203.0.113.25:99999'}], 'out of range'),
    ([{'listener': '198.51.100.5:25', 'default': 'bad\nname:25'}], 'control character'),
    ([{'listener': '198.51.100.5:25', 'vantages': ['controller']}], 'vantages must map'),
])
def test_an_unusable_address_map_fails_before_any_probe_naming_the_host(probed, address_map, message):
    hostvars = {'mx': {'ansible_host': '198.51.100.5', 'starttls_host': evidence(good_listener('mx', '198.51.100.5')),
                       'starttls_address_map': address_map}}
    with pytest.raises(AnsibleActionFail, match=message) as failure:
        run_action({}, hostvars)
    assert 'mx' in str(failure.value)
    assert probed == []


def test_delegated_vantages_are_planned_then_bound_to_their_name(probed, tmp_path):
    hostvars = {'mx': {'ansible_host': '192.0.2.10', 'starttls_host': evidence(good_listener('mx', '192.0.2.10')),
                       'starttls_address_map': [{'listener': '192.0.2.10:25', 'default': '203.0.113.25:25'}]},
                'outside': {}, 'partner': {}, 'gone': {}}
    args = {'hosts': ['mx'], 'vantages': ['outside', 'partner', 'gone'], 'controller_probe': False}
    planned = run_action(dict(args, plan_only=True), hostvars)
    assert probed == []
    assert {name: [(t['address'], t['port']) for t in targets] for name, targets in planned['plan'].items()} == {
        'outside': [('203.0.113.25', 25)], 'partner': [('203.0.113.25', 25)], 'gone': [('203.0.113.25', 25)]}

    def answer(name, address, port, label):
        return {'item': name, 'probes': [not_advertised(address, port, label)]}

    delegated = [
        # The launch of an async job has no probes; its async_status result carries the item it polled.
        {'item': 'outside', 'ansible_job_id': 'j1', 'started': 1},
        {'item': {'item': 'outside', 'ansible_job_id': 'j1'}, 'probes': answer('outside', '203.0.113.25', 25, 'x')['probes']},
        # A vantage that says it is someone else, and probes of a target it was not given: bound and dropped.
        answer('partner', '203.0.113.25', 25, 'controller'),
        {'item': 'partner', 'probes': answer('partner', '198.51.100.1', 25, 'x')['probes']},
        {'item': 'gone', 'unreachable': True, 'msg': 'Failed to connect to the host via ssh'},
    ]
    result = run_action(dict(args, report_dir=str(tmp_path), fail=False, vantage_probes=delegated), hostvars)
    report = json.loads((tmp_path / 'starttls-report.json').read_text())
    listener = next(item for item in report['listeners'] if item['host'] == 'mx')
    assert {(probe['vantage'], probe['target']) for probe in listener['probes']} == {
        ('inventory:outside', '203.0.113.25:25'), ('inventory:partner', '203.0.113.25:25')}
    assert not [item for item in report['listeners'] if item['address'] == '198.51.100.1']
    assert any('inventory:gone gave no probes (Failed to connect' in warning for warning in result['warnings'])
    assert report['meta']['vantages'] == ['inventory:outside', 'inventory:partner', 'inventory:gone']


class TemplatingHostVars(dict):
    """hostvars as ansible-core gives them: item access templates (here: marks what went through it),
    raw_get returns the variables as stored."""

    def __init__(self, stored: dict) -> None:
        super().__init__({host: TemplatingVars(variables) for host, variables in stored.items()})
        self.stored = stored

    def raw_get(self, host):
        return self.stored[host]


class TemplatingVars(dict):
    def get(self, key, default=None):
        value = super().get(key, default)
        return {'templated': value} if isinstance(value, dict) else value


def test_registered_result_read_as_stored_and_copied():
    registered = evidence(good_listener('mx-a', '192.0.2.10'))
    registered['note'] = '{{ not_a_template }}'
    hostvars = TemplatingHostVars({'mx-a': {'starttls_host': registered}})
    value = fleet_assess.registered_result(hostvars, hostvars['mx-a'], 'mx-a', 'starttls_host')
    assert value == registered
    assert 'templated' not in value
    value['listeners'][0]['port'] = 1
    assert registered['listeners'][0]['port'] == 25


def test_registered_result_falls_back_to_templated_access():
    # No raw_get (older or other callers), or a value that is not a mapping: hostvars as usual.
    plain = {'mx-a': TemplatingVars({'starttls_host': {'listeners': []}, 'other': 'text'})}
    assert fleet_assess.registered_result(plain, plain['mx-a'], 'mx-a', 'starttls_host') == {'templated': {'listeners': []}}
    hostvars = TemplatingHostVars({'mx-a': {'other': 'text'}})
    assert fleet_assess.registered_result(hostvars, hostvars['mx-a'], 'mx-a', 'other') == 'text'
    assert fleet_assess.registered_result(hostvars, hostvars['mx-a'], 'mx-a', 'starttls_host') is None


def test_registered_result_keeps_ansible_objects_as_they_are():
    class WarningSummary:  # what ansible-core 2.19 keeps in a registered result's `warnings`
        pass

    note = WarningSummary()
    registered = dict(evidence(good_listener('mx-a', '192.0.2.10')), warnings=[note])
    hostvars = TemplatingHostVars({'mx-a': {'starttls_host': registered}})
    value = fleet_assess.registered_result(hostvars, hostvars['mx-a'], 'mx-a', 'starttls_host')
    assert value['warnings'][0] is note
    assert value['listeners'] == registered['listeners'] and value['listeners'] is not registered['listeners']
