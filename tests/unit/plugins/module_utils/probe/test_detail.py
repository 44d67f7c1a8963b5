# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The compact and the full shape of a probe record (listener_probe's `detail`)."""

from __future__ import annotations

import copy
import json

import pytest

from ansible_collections.mailsec.starttls.plugins.module_utils import _verdict
from ansible_collections.mailsec.starttls.plugins.module_utils._probe import detail
from ansible_collections.mailsec.starttls.plugins.module_utils._probe.engine import probe_many

from ansible_collections.mailsec.starttls.tests.unit.plugins import scenarios as sc


def full_probe() -> dict:
    record = sc.tls_ok('127.0.10.1', 25, 'smtp', certificate=sc.presented(), version='TLSv1.3')
    record['certificate']['tlsa_chain'] = [{'cert_sha256': 'aa' * 32, 'cert_sha512': 'bb' * 64,
                                            'spki_sha256': 'cc' * 32, 'spki_sha512': 'dd' * 64}]
    record['capabilities'] = ['PIPELINING', 'SIZE 10240000', 'STARTTLS']
    record['capabilities_after_tls'] = ['PIPELINING', 'AUTH PLAIN']
    record['capabilities_reply'] = {'code': '250', 'text': 'mail.lab.test\nPIPELINING\nSTARTTLS'}
    record['timings_ms'] = {'connect': 0.2, 'greeting': 1.0, 'handshake': 3.0, 'total': 6.5}
    record['peer_address'] = '127.0.10.1'
    return record


def test_compact_keeps_what_a_person_and_the_judgement_read():
    full = full_probe()
    original = copy.deepcopy(full)
    compact = detail.compact(full)
    assert full == original, 'the full record must not be changed'
    assert set(compact) == set(detail.COMPACT_KEYS)
    # A kept key keeps its value: compact is the full record with keys left out.
    for key in set(detail.COMPACT_KEYS) - {'certificate', 'timings_ms'}:
        assert compact[key] == full[key], key
    assert compact['tls']['established'] is True
    assert set(compact['certificate']) == set(detail.COMPACT_CERTIFICATE_KEYS)
    assert compact['certificate']['sha256'] == full['certificate']['sha256']
    assert compact['certificate']['verified'] is True
    assert compact['timings_ms'] == {'total': 6.5}
    # Evidence only the full record carries.
    for key in ('capabilities', 'capabilities_after_tls', 'capabilities_reply'):
        assert key not in compact
    assert 'tlsa_chain' not in compact['certificate'] and 'issuer' not in compact['certificate']
    assert len(json.dumps(compact)) < 0.6 * len(json.dumps(full))


def test_compact_keeps_the_evidence_of_rare_faults():
    full = full_probe()
    full.update(peer_address='127.0.10.9', pre_tls_surplus='250 injected', injected_reply='250 ok',
                attempts=[{'starttls_reply': '220'}, {'starttls_reply': '454'}])
    full['flags'] = ['ehlo_rejected', 'response_injection']
    full['certificate']['error'] = 'certificate does not parse: truncated'
    compact = detail.compact(full)
    assert compact['peer_address'] == '127.0.10.9'
    assert compact['pre_tls_surplus'] == '250 injected'
    assert compact['injected_reply'] == '250 ok'
    assert compact['attempts'] == full['attempts']
    assert compact['capabilities_reply'] == full['capabilities_reply']
    assert compact['certificate']['error'] == 'certificate does not parse: truncated'


def test_compact_of_a_probe_that_never_connected():
    full = sc.unreachable('127.0.10.3', 25)
    compact = detail.compact(full)
    assert compact['connected'] is False
    assert compact['tls'] is None and compact['certificate'] is None and compact['greeting'] is None
    assert compact['error'] == full['error']


def test_shape_full_returns_the_records_as_they_are_and_refuses_unknown_levels():
    probes = [full_probe()]
    assert detail.shape(probes, 'full') is probes
    assert detail.shape(probes, 'compact') == [detail.compact(probes[0])]
    with pytest.raises(ValueError):
        detail.shape(probes, 'tiny')


def finding_keys(findings: list) -> list:
    return sorted((item['id'], item.get('vantage'), item['severity'], json.dumps(item.get('listener'), sort_keys=True))
                  for item in findings)


@pytest.mark.parametrize('name', sorted(sc.scenarios()))
def test_the_judgement_finds_the_same_faults_in_compact_records(name):
    """Every certificate, dialog and flag rule reads only what the compact record keeps; it only gives
    less evidence (no capability lists)."""
    case = sc.scenarios()[name]
    full = _verdict.judge(copy.deepcopy(case['listeners']), copy.deepcopy(case['probes']), case['options'])
    compact_probes = [detail.compact(probe) if isinstance(probe, dict) else probe for probe in case['probes']]
    compact = _verdict.judge(copy.deepcopy(case['listeners']), compact_probes, case['options'])
    assert finding_keys(compact) == finding_keys(full)


def test_compact_of_a_real_probe(scripted, server_cert):
    server = scripted([('send', b'220 mail.test ESMTP Postfix\r\n'), ('expect', 'EHLO'),
                       ('send', b'250-mail.test\r\n250 STARTTLS\r\n'), ('expect', 'STARTTLS'),
                       ('send', b'220 2.0.0 Ready to start TLS\r\n'), ('tls',), ('expect', 'EHLO'),
                       ('send', b'250 mail.test\r\n'), ('expect', 'QUIT')])
    full = probe_many([f'127.0.0.1:{server.port}/smtp'], {'timeout': 3, 'vantage': 'unit'})[0]
    compact = detail.compact(full)
    assert compact['tls']['established'] is True
    assert compact['certificate']['sha256'] == full['certificate']['sha256']
    assert compact['certificate']['self_signed'] is True
    assert 'tlsa_chain' in full['certificate'] and 'tlsa_chain' not in compact['certificate']
    assert compact['timings_ms'] == {'total': full['timings_ms']['total']}
