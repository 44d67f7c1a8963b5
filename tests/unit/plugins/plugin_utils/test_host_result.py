# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Each certificate once per host in mta_tls_info's result, and the one expansion every consumer reads."""

from __future__ import annotations

import copy
import json

import pytest

from ansible_collections.mailsec.starttls.plugins.action.fleet_assess import bind_evidence
from ansible_collections.mailsec.starttls.plugins.filter.judge import FilterModule
from ansible_collections.mailsec.starttls.plugins.filter.tlsa import tlsa_records
from ansible_collections.mailsec.starttls.plugins.module_utils import _host_result
from ansible_collections.mailsec.starttls.plugins.plugin_utils import _remediation
from ansible_collections.mailsec.starttls.tests.unit.plugins import scenarios as sc

FINDINGS = FilterModule().filters()['findings']


def host_result(listeners: list) -> dict:
    return {'mtas': [], 'listeners': copy.deepcopy(listeners), 'unmatched_sockets': [], 'warning_details': [],
            'not_visible': [], 'privileged': True, 'cost': {'cpu_seconds': 0.05, 'wall_seconds': 0.1}}


def without_host_only_fields(result: dict) -> dict:
    return dict(result, listeners=[{key: value for key, value in listener.items()
                                    if key not in _host_result.HOST_ONLY_LISTENER_KEYS}
                                   for listener in result['listeners']])


def real_shape(listeners: list) -> list:
    """gather_host keeps the store beside the binding; the scenarios keep it in it: both are read."""
    records = []
    for listener in copy.deepcopy(listeners):
        if isinstance(listener.get('binding'), dict) and 'store' in listener['binding']:
            listener['store'] = listener['binding'].pop('store')
        records.append(listener)
    return records


def shared_certificate_host() -> dict:
    """Two listeners bound to one store (the same object, as gather_host makes it), both probed and
    presented that certificate, one with an SNI entry of its own store, and one unreadable certificate."""
    store = sc.store()
    first = sc.with_probe(sc.listener('postfix', '127.0.10.1', 25, 'smtp', cert='/etc/ssl/lab/mail.crt',
                                      key='/etc/ssl/lab/mail.key', tls_settings={'smtpd_tls_cert_file': {
                                          'value': '/etc/ssl/lab/mail.crt', 'where': '/etc/postfix/main.cf:3'}}),
                          sc.tls_ok('127.0.10.1', 25, 'smtp', 'host'))
    second = sc.with_probe(sc.listener('postfix', '127.0.10.1', 587, 'submission', cert='/etc/ssl/lab/mail.crt',
                                       key='/etc/ssl/lab/mail.key'),
                           sc.tls_ok('127.0.10.1', 587, 'submission', 'host'))
    first['store'] = second['store'] = store
    first['binding']['sni'] = [{'name': 'other.lab.test', 'certificate': '/etc/ssl/lab/other.crt',
                                'store': sc.store(sc.OTHER_SHA, cert='/etc/ssl/lab/other.crt',
                                                  describe_extra={'subject': 'CN=other.lab.test'})}]
    broken = sc.listener('dovecot', '127.0.10.1', 993, 'imaps', cert='/etc/dovecot/broken.pem')
    broken['store'] = sc.store(describe_extra={'error': 'certificate does not parse: truncated', 'sha256': None,
                                               'subject': None, 'issuer': None, 'sans': None})
    return {'mtas': [], 'listeners': [first, second, broken], 'unmatched_sockets': []}


def test_each_certificate_is_described_once_and_referred_to_by_fingerprint():
    result = shared_certificate_host()
    compacted = _host_result.compact(result)
    assert set(compacted['certificates']) == {sc.LAB_SHA, sc.OTHER_SHA}
    assert compacted['certificates'][sc.LAB_SHA]['subject'] == 'CN=mail.lab.test'
    first, second, broken = compacted['listeners']
    stores = compacted['stores']
    for place in (stores[first['store']]['certificate']['describe'], stores[second['store']]['certificate']['describe'],
                  first['probe']['certificate'], stores[first['binding']['sni'][0]['store']]['certificate']['describe']):
        assert 'sha256' in place and 'subject' not in place and 'sans' not in place
    # What belongs to the place stays there: the chain it was presented with and whether it verified.
    assert first['probe']['certificate']['verified'] is True and first['probe']['certificate']['chain_length'] == 2
    # An unreadable description is not folded; settings only the adapters read stay on the host.
    assert stores[broken['store']]['certificate']['describe']['error'].startswith('certificate does not parse')
    assert 'subject' in stores[broken['store']]['certificate']['describe']
    assert 'tls_settings' not in first
    # The input is not changed, and the travelling result is smaller.
    assert 'subject' in result['listeners'][0]['store']['certificate']['describe']
    assert 'tls_settings' in result['listeners'][0]
    assert json.dumps(compacted).count('CN=mail.lab.test') == 1
    assert len(json.dumps(compacted)) < len(json.dumps(result))


def test_each_store_record_is_returned_once_and_named_by_a_key():
    result = shared_certificate_host()
    # A second listener bound to an equal store record that is not the same object (a record read
    # back from JSON, or made by hand) and a chain-files binding (a list of records) share it too.
    third = sc.listener('postfix', '127.0.10.2', 25, 'smtp', cert='/etc/ssl/lab/mail.crt', key='/etc/ssl/lab/mail.key')
    third['store'] = [copy.deepcopy(result['listeners'][0]['store']), sc.missing_store()]
    result['listeners'].append(third)
    compacted = _host_result.compact(result)
    first, second, broken, third = compacted['listeners']
    assert isinstance(first['store'], str) and first['store'] == second['store'] == third['store'][0]
    assert len({first['store'], first['binding']['sni'][0]['store'], broken['store'], third['store'][1]}) == 4
    assert set(compacted['stores']) == {first['store'], first['binding']['sni'][0]['store'], broken['store'],
                                        third['store'][1]}
    assert compacted['stores'][first['store']]['usable'] is True
    assert compacted['stores'][third['store'][1]]['usable'] is False
    # Each store is said once in the travelling result.
    assert json.dumps(compacted).count('"matches_certificate"') == len(compacted['stores']) == 4
    # The key is the record's own: the same record gets the same key in another result.
    again = _host_result.compact({'listeners': [copy.deepcopy(result['listeners'][1])]})
    assert again['listeners'][0]['store'] == first['store']
    # The input is not changed.
    assert isinstance(result['listeners'][0]['store'], dict)
    expanded = _host_result.expand(json.loads(json.dumps(compacted)))
    assert 'stores' not in expanded
    assert expanded == json.loads(json.dumps(without_host_only_fields(result)))


def test_a_store_key_the_result_lacks_stays_a_key():
    result = _host_result.compact(shared_certificate_host())
    key = result['listeners'][2]['store']
    del result['stores'][key]
    assert _host_result.expand(result)['listeners'][2]['store'] == key


def test_expand_gives_back_the_records_as_gathered():
    result = shared_certificate_host()
    expanded = _host_result.expand(json.loads(json.dumps(_host_result.compact(result))))
    assert 'certificates' not in expanded
    assert expanded == json.loads(json.dumps(without_host_only_fields(result)))


def test_a_second_reading_that_disagrees_stays_whole():
    result = shared_certificate_host()
    # Two descriptions of one certificate made on either side of midnight.
    result['listeners'][1]['probe'] = copy.deepcopy(result['listeners'][1]['probe'])
    result['listeners'][1]['probe']['certificate']['days_left'] = 364
    compacted = _host_result.compact(result)
    assert compacted['listeners'][1]['probe']['certificate']['days_left'] == 364
    assert compacted['certificates'][sc.LAB_SHA]['days_left'] == 365
    assert _host_result.expand(compacted)['listeners'][1]['probe']['certificate']['days_left'] == 364


def test_expand_leaves_other_inputs_alone():
    older = {'listeners': [sc.listener('postfix', '127.0.10.1', 25, 'smtp')], 'unmatched_sockets': []}
    assert _host_result.expand(older) is older
    failed = {'failed': True, 'msg': 'unreachable'}
    assert _host_result.expand(failed) is failed
    records = [sc.listener('postfix', '127.0.10.1', 25, 'smtp')]
    assert _host_result.expand(records) is records
    assert _host_result.listeners_of(records) == records
    # A reference to a certificate the map lacks (a tampered result) stays a reference.
    result = _host_result.compact(shared_certificate_host())
    del result['certificates'][sc.OTHER_SHA]
    sni_store = _host_result.expand(result)['listeners'][0]['binding']['sni'][0]['store']
    assert sni_store['certificate']['describe'] == {'sha256': sc.OTHER_SHA, 'hostname_match': None, 'error': None}


@pytest.mark.parametrize('name', sorted(sc.scenarios()))
def test_the_judgement_of_a_compacted_result_is_the_judgement_of_the_records(name):
    scenario = copy.deepcopy(sc.scenarios()[name])
    for shape in (scenario['listeners'], real_shape(scenario['listeners'])):
        host_records = [record for record in shape if 'binding' in record]
        others = [record for record in shape if 'binding' not in record]
        direct = FINDINGS(copy.deepcopy(shape), scenario['probes'], scenario['options'])
        travelled = json.loads(json.dumps(_host_result.compact(host_result(host_records))))
        through = FINDINGS([travelled] + others, scenario['probes'], scenario['options'])
        assert [(item['key'], item['summary']) for item in through] == \
            [(item['key'], item['summary']) for item in direct]


def test_every_consumer_reads_the_compacted_result():
    result = shared_certificate_host()
    travelled = json.loads(json.dumps(_host_result.compact(result)))
    expected = json.loads(json.dumps(without_host_only_fields(result)))
    # fleet_assess binds the evidence to its inventory name, expanded.
    bound = bind_evidence('mx1', travelled)
    assert [listener['store'] for listener in bound['listeners']] == \
        [listener['store'] for listener in expected['listeners']]
    # remediation_plan takes the registered result (or records that carry their descriptions).
    assert _host_result.listeners_of(travelled) == expected['listeners']
    findings = [{'id': 'starttls-advertised-without-certificate', 'host': 'mx1', 'severity': 'critical',
                 'listener': {'host': 'mx1', 'address': '127.0.10.1', 'port': 993, 'mta': 'dovecot'}}]
    assert _remediation.plan(findings, travelled, 'mx1') == _remediation.plan(findings, expected['listeners'], 'mx1')
    # tlsa_records reads the stores' key digests the same either way.
    assert tlsa_records(travelled, 'mx1.lab.test') == tlsa_records(expected, 'mx1.lab.test')
