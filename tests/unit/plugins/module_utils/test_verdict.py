# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The judgement, situation by situation: each scenario names exactly the findings it must give; then
the same on records the real probe engine made of loopback servers replaying real MTA behaviour."""

from __future__ import annotations

import collections
import copy
import json

import pytest

from ansible_collections.mailsec.starttls.plugins.module_utils import _verdict
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict import certificate_store
from ansible_collections.mailsec.starttls.plugins.module_utils._probe.engine import probe_many
from ansible_collections.mailsec.starttls.tests.unit.plugins import scenarios as sc
from ansible_collections.mailsec.starttls.tests.unit.plugins.scripted_server import (
    imap_ok_then_bye,
    self_signed_certificate,
    smtp_open,
    smtp_starttls_refused,
)

SCENARIOS = sc.scenarios()


def run(name: str, **option_overrides) -> list:
    case = copy.deepcopy(SCENARIOS[name])
    options = dict(case['options'], **option_overrides)
    return _verdict.judge(case['listeners'], case['probes'], options)


def pairs(findings: list) -> list:
    """Every sighting as (id, vantage): the scenarios name what each vantage must see."""
    return sorted(((finding['id'], sighting['vantage']) for finding in findings for sighting in finding['sightings']),
                  key=repr)


def by_sighting(findings: list) -> dict:
    """(id, vantage) -> the finding as that sighting saw it (its vantage, severity, summary, evidence)."""
    views = {}
    for finding in findings:
        for index, sighting in enumerate(finding['sightings']):
            views[(finding['id'], sighting['vantage'])] = finding if index == 0 else dict(
                finding, vantage=sighting['vantage'], severity=sighting['severity'], summary=sighting['summary'],
                evidence=sighting['evidence'])
    return views


@pytest.mark.parametrize('name', sorted(SCENARIOS))
def test_scenario_gives_exactly_the_expected_findings(name):
    case = SCENARIOS[name]
    findings = run(name)
    assert collections.Counter(pairs(findings)) == collections.Counter(case['expect']), json.dumps(
        [{key: finding[key] for key in ('id', 'vantage', 'summary')} for finding in findings], indent=1)
    for finding in findings:
        assert finding['id'] in _verdict.RULES
        assert finding['severity'] in _verdict.SEVERITIES
        assert finding['summary'] and '\n' not in finding['summary']
        assert finding['fix'], finding['id']
        assert finding['waived'] is False and finding['waiver'] is None
        where = {'host': finding['host'], 'address': finding['listener']['address'],
                 'port': finding['listener']['port']}
        assert finding['key'] == _verdict.fault_key(finding['id'], where)
        assert finding['vantage'] == finding['sightings'][0]['vantage']
        assert finding['vantages'] == [sighting['vantage'] for sighting in finding['sightings']]
        for sighting in finding['sightings']:
            assert sighting['key'] == _verdict.finding_key(finding['id'], where, sighting['vantage'])
        # The fault's severity is the worst of its sightings'.
        assert finding['severity'] == _verdict.worst_severity(finding['sightings'])
        if 'fix_contains' in case and finding['id'].startswith('starttls-advertised'):
            assert case['fix_contains'] in finding['fix']
        if 'summary_contains' in case:
            assert case['summary_contains'] in finding['summary']
        for rule, severity in case.get('severity', {}).items():
            if finding['id'] == rule:
                assert finding['severity'] == severity
        for sighting in finding['sightings']:
            expected_severity = case.get('severities', {}).get((finding['id'], sighting['vantage']))
            if expected_severity:
                assert sighting['severity'] == expected_severity
    # One finding per fault: no (id, host, address, port) twice.
    faults = [finding['key'] for finding in findings]
    assert len(faults) == len(set(faults))
    # Findings are JSON: they travel through facts and reports unchanged.
    assert json.loads(json.dumps(findings)) == findings


def test_keys_are_unique_and_stable():
    for name in SCENARIOS:
        first, second = run(name), run(name)
        keys = [finding['key'] for finding in first]
        assert len(keys) == len(set(keys)), name
        assert keys == [finding['key'] for finding in second], name


def test_postfix_kb_state_evidence_and_fix():
    findings = by_sighting(run('postfix-missing-file-454'))
    network = findings[('starttls-advertised-without-certificate', 'controller')]
    assert network['severity'] == 'critical'
    assert network['evidence']['probe']['starttls_reply'] == {
        'code': '454', 'text': '4.7.0 TLS not available due to local problem'}
    assert network['evidence']['binding']['certificate'] == '/etc/postfix/missing.pem'
    assert network['evidence']['store']['usable'] is False
    assert "postconf -P '127.0.10.2:smtp/inet/smtpd_tls_security_level=none'" in network['fix']
    assert 'smtpd_tls_chain_files=/etc/postfix/missing.key,/etc/postfix/missing.pem' in network['fix']
    store_side = findings[('certificate-unreadable', None)]
    assert store_side['vantage'] is None
    assert store_side['evidence']['problem']['id'] == 'certificate-missing'
    assert 'more' in store_side['evidence']  # the key-missing problem is kept with it
    assert store_side['key'] == 'certificate-unreadable|mx1|127.0.10.2|25'
    assert store_side['sightings'][0]['key'] == 'certificate-unreadable|mx1|127.0.10.2|25|-'


def test_one_fault_seen_from_the_host_and_the_controller_is_one_finding():
    findings = run('postfix-missing-file-454')
    advertised = [f for f in findings if f['id'] == 'starttls-advertised-without-certificate']
    assert len(advertised) == 1
    fault = advertised[0]
    assert fault['key'] == 'starttls-advertised-without-certificate|mx1|127.0.10.2|25'
    assert fault['vantage'] == 'host' and fault['vantages'] == ['host', 'controller']
    assert fault['summary'].endswith('; also seen from controller')
    # Each vantage's own evidence is kept: the host's in the finding, the controller's in its sighting.
    assert fault['evidence']['probe']['vantage'] == 'host'
    assert fault['sightings'][1]['evidence']['probe']['vantage'] == 'controller'
    assert fault['sightings'][1]['key'] == 'starttls-advertised-without-certificate|mx1|127.0.10.2|25|controller'
    # Three sightings of one missing file are two faults: the unreadable file and what it does to STARTTLS.
    assert len(findings) == 2


def test_the_worst_sighting_sets_the_severity():
    listener = sc.blackbox('127.0.60.5', 25, 'smtp')
    refused = sc.probe('127.0.60.5', 25, 'smtp', 'host', greeting={'code': '554', 'lines': ['no']},
                       starttls_advertised=None, flags=['greeting_refused'])
    unreachable = sc.unreachable('127.0.60.5', 25)
    findings = _verdict.judge([listener], [refused, unreachable], {'now': sc.NOW})
    failed = [f for f in findings if f['id'] == 'probe-failed']
    assert len(failed) == 1
    assert sorted(s['severity'] for s in failed[0]['sightings']) == ['info', 'medium']
    assert failed[0]['severity'] == 'medium'


def test_exim_self_made_certificate_is_caught_from_both_sides():
    findings = by_sighting(run('exim-self-made-certificate'))
    differs = findings[('presented-certificate-differs', 'host')]
    assert differs['severity'] == 'high'  # the MTA serves a certificate nobody gave it
    assert 'Exim Developers' in differs['summary']
    assert 'tls_advertise_hosts = ${if and{{eq{$received_ip_address}{127.0.20.2}}{eq{$received_port}{25}}}{}{*}}' \
        in differs['fix']
    assert findings[('validation-failure', 'controller')]['evidence']['probe']['certificate']['self_signed'] is True
    remote_only = pairs(run('exim-self-made-certificate-remote-only'))
    assert ('tls-terminated-elsewhere', 'controller') in remote_only


def test_opensmtpd_usable_store_does_not_excuse_a_failing_handshake():
    finding = next(f for f in run('opensmtpd-valid-config-handshake-fails') if f['vantage'] == 'host')
    assert 'usable on disk' in finding['summary']
    assert 'listen on 127.0.40.1 port 25' in finding['fix']
    assert finding['evidence']['store']['usable'] is True


def test_dovecot_plaintext_bye_is_evidence():
    finding = next(f for f in run('dovecot-ok-then-bye') if f['vantage'] == 'host')
    assert finding['evidence']['probe']['tls']['server_plaintext'].startswith('* BYE [UNAVAILABLE]')
    assert finding['evidence']['probe']['outcome'] == 'handshake-failed'
    assert 'local 127.0.30.2 { ssl = no }' in finding['fix']


def test_severity_options():
    raised = run('starttls-not-offered-static', starttls_not_offered_severity='high')
    assert [f['severity'] for f in raised] == ['high']
    policy = run('postfix-missing-file-454', severity={'certificate-unreadable': 'low'})
    assert {f['severity'] for f in policy if f['id'] == 'certificate-unreadable'} == {'low'}
    drift = run('listener-drift', severity={'probe-failed': 'high'})
    assert {f['severity'] for f in drift if f['id'] == 'probe-failed'} == {'high'}


def test_expiring_window_and_now_are_options():
    assert pairs(run('certificate-expiring-host-side', expiring_days=5)) == []
    assert pairs(run('certificate-expiring-host-side', now='2026-12-09')) == [('certificate-expired', None)]
    finding = run('certificate-expiring-host-side')[0]
    assert 'expires in 9 days' in finding['summary']
    assert finding['evidence']['served_to'] == ['host']


@pytest.mark.parametrize('options, message', [
    ({'expiring_days': 'soon'}, 'expiring_days'),
    ({'expiring_days': -1}, 'negative'),
    ({'now': 'yesterday'}, 'now'),
    ({'severity': {'no-such-rule': 'high'}}, 'unknown finding ID'),
    ({'severity': {'certificate-expired': 'fatal'}}, 'not one of'),
    ({'starttls_not_offered_severity': 'urgent'}, 'not one of'),
    ({'colour': 'red'}, 'unknown judge option'),
])
def test_bad_options_are_refused_with_a_clear_message(options, message):
    with pytest.raises(_verdict.VerdictError, match=message):
        _verdict.judge([], [], options)


def test_a_bad_record_does_not_hide_the_others():
    case = copy.deepcopy(SCENARIOS['postfix-missing-file-454'])
    broken = sc.listener('postfix', '127.0.10.9', 25, 'smtp')
    broken['binding'] = {'certificate': '/x.pem', 'store': {'usable': True, 'problems': ['not a dict'],
                                                            'certificate': {'describe': {'not_after': 12}},
                                                            'key': 'nonsense'}}
    broken['offers_starttls'] = True
    weird_probe = {'target': {'address': '127.0.10.9', 'port': 25, 'protocol': 'smtp'}, 'vantage': 'controller',
                   'connected': True, 'tls_mode': 'starttls', 'starttls_advertised': True,
                   'starttls_reply': {'code': 454, 'text': None}, 'tls': None, 'certificate': {'sha256': 5},
                   'flags': None}
    findings = _verdict.judge(case['listeners'] + [broken, 'not a record'], case['probes'] + [weird_probe, None],
                              case['options'])
    ids = pairs(findings)
    for expected in SCENARIOS['postfix-missing-file-454']['expect']:
        assert expected in ids
    broken_findings = [f for f in findings if f['listener']['address'] == '127.0.10.9']
    assert [f['id'] for f in broken_findings] == ['starttls-advertised-without-certificate']
    assert broken_findings[0]['evidence']['probe']['starttls_reply']['code'] == '454'


def test_judgement_error_is_a_finding(monkeypatch):
    def explode(*_args):
        raise RuntimeError('boom')

    monkeypatch.setattr(certificate_store, 'judge_store', explode)
    findings = run('postfix-missing-file-454')
    assert [f['id'] for f in findings] == ['judgement-error']
    assert 'RuntimeError: boom' in findings[0]['summary']


def test_hostile_text_is_bounded_and_made_visible():
    hostile = '\x1b[31m<script>alert(1)</script>\x00' + 'A' * 5000
    probe = sc.refused_454('127.0.60.2', 25, text=hostile)
    findings = _verdict.judge([sc.blackbox('127.0.60.2', 25, 'smtp')], [probe], {'now': sc.NOW})
    finding = findings[0]
    assert '\x1b' not in finding['summary'] and '\\x1b' in finding['summary']
    assert len(finding['summary']) <= 300
    reply = finding['evidence']['probe']['starttls_reply']['text']
    assert '\x00' not in reply and len(reply) < 1100


def test_join_matches_vantages_wildcards_and_keeps_orphans():
    case = SCENARIOS['wildcard-dedupe']
    entries = _verdict.join(case['listeners'], case['probes'], case['options'])
    assert len(entries) == 1 and len(entries[0]['probes']) == 2
    finding = next(f for f in run('wildcard-dedupe') if f['vantage'] == 'controller')
    assert finding['evidence']['also_seen'][0]['probe']['target'] == '127.0.60.9:25'
    orphans = _verdict.join([], [sc.refused_454('127.0.60.10', 25)])
    assert orphans[0]['listener']['mode'] == 'probe'


def test_a_listeners_own_probe_is_the_host_vantage():
    record = sc.with_probe(sc.listener('postfix', '127.0.10.2', 25, 'smtp'), sc.refused_454('127.0.10.2', 25, 'mx1.lab'))
    entries = _verdict.join([record], [])
    assert entries[0]['probes'][0]['vantage'] == 'host'
    assert entries[0]['probes'][0]['vantage_label'] == 'mx1.lab'


def test_ipv6_addresses_match_in_any_spelling():
    record = sc.blackbox('2001:db8::25', 25, 'smtp')
    probe = sc.refused_454('[2001:DB8:0:0::25]', 25)
    entries = _verdict.join([record], [probe])
    assert len(entries) == 1 and entries[0]['probes'] == [probe]
    finding = _verdict.judge([record], [probe], {'now': sc.NOW})[0]
    assert finding['key'] == 'starttls-advertised-without-certificate|partner|2001:db8::25|25'
    assert finding['sightings'][0]['key'] == 'starttls-advertised-without-certificate|partner|2001:db8::25|25|controller'


def test_classify_probe_by_stage():
    assert _verdict.classify_probe(sc.unreachable('127.0.0.1', 25)) == 'unreachable'
    assert _verdict.classify_probe(sc.refused_454('127.0.0.1', 25)) == 'starttls-refused'
    assert _verdict.classify_probe(sc.tls_ok('127.0.0.1', 25, 'smtp')) == 'tls'
    assert _verdict.classify_probe(sc.not_advertised('127.0.0.1', 25)) == 'not-advertised'
    dropped = sc.probe('127.0.0.1', 25, 'smtp', error={'stage': 'starttls', 'message': 'connection closed'})
    assert _verdict.classify_probe(dropped) == 'starttls-dropped'
    anonymous = sc.tls_ok('127.0.0.1', 25, 'smtp', certificate=None, flags=['no_certificate'])
    anonymous['certificate'] = None
    assert _verdict.classify_probe(anonymous) == 'no-certificate'
    rejected = sc.probe('127.0.0.1', 25, 'smtp', starttls_advertised=None, flags=['ehlo_rejected'])
    assert _verdict.classify_probe(rejected) == 'refused'


def test_applicable_rules_follow_mode_and_evidence():
    starttls_host = _verdict.applicable_rules(sc.listener('postfix', '127.0.10.1', 25, 'smtp'))
    implicit_host = _verdict.applicable_rules(sc.listener('postfix', '127.0.10.1', 465, 'smtps'))
    black_box = _verdict.applicable_rules(sc.blackbox('127.0.60.2', 25, 'smtp'))
    assert 'starttls-advertised-without-certificate' in starttls_host
    assert 'implicit-tls-without-certificate' not in starttls_host
    assert 'implicit-tls-without-certificate' in implicit_host and 'starttls-stripped' not in implicit_host
    assert 'private-key-exposed' in starttls_host and 'private-key-exposed' not in black_box
    assert 'starttls-advertised-without-certificate' in black_box
    assert 'judgement-error' not in starttls_host


def test_every_rule_has_a_fix_for_every_mta_and_none():
    """The MTAs' own words are tested beside the adapters (mta/test_fix_texts.py); here the general text."""
    base = {'address': '127.0.0.5', 'port': 25, 'protocol': 'smtp', 'service': '127.0.0.5:smtp',
            'binding': {'certificate': '/c.pem', 'key': '/k.pem'}}
    rule = 'starttls-advertised-without-certificate'
    assert 'report only' in _verdict.fix_for(rule, dict(base, mta='exchange'))
    assert 'docs/findings.md' in _verdict.fix_for(rule, dict(base, mta=None))
    for rule_id in _verdict.RULES:
        for mta in ('postfix', 'exim', 'dovecot', 'opensmtpd', 'sendmail', 'exchange', None):
            assert _verdict.fix_for(rule_id, dict(base, mta=mta)), (rule_id, mta)


def test_time_parsing():
    assert _verdict.parse_time('2026-11-28T00:00:00Z').isoformat() == '2026-11-28T00:00:00+00:00'
    assert _verdict.parse_time('2026-11-28').day == 28
    assert _verdict.parse_time('2026-11-28T01:02:03+02:00').utcoffset().total_seconds() == 7200
    assert _verdict.parse_time('never') is None


def test_a_host_probe_passed_twice_counts_once():
    own = sc.refused_454('127.0.10.2', 25, 'mx1.lab', timings_ms={'connect': 0.2, 'total': 3.7})
    record = sc.with_probe(sc.listener('postfix', '127.0.10.2', 25, 'smtp'), own)
    findings = _verdict.judge([record], [copy.deepcopy(own)], {'now': sc.NOW})
    assert pairs(findings) == [('starttls-advertised-without-certificate', 'host')]
    assert findings[0]['evidence']['probe']['vantage_label'] == 'mx1.lab'


def test_a_store_that_could_not_be_inspected_is_visible_not_guessed():
    record = sc.listener('postfix', '127.0.10.2', 25, 'smtp', cert='/c.pem', key='/k.pem',
                         store_record={'error': 'PermissionError: denied', 'stage': 'store_inspection'})
    assert _verdict.usable_certificate(record) is None
    findings = _verdict.judge([record], [], {'now': sc.NOW})
    assert pairs(findings) == [('judgement-error', None)]
    assert 'could not be inspected' in findings[0]['summary']


# -- real probe records ---------------------------------------------------------------------
# The probe engine against small loopback servers that replay what the real MTAs do
# (research/MTA-BEHAVIOUR.md), so that the judgement is tested on the engine's own records.


@pytest.fixture(scope='module')
def exim_like_certificate(tmp_path_factory):
    """A self-signed certificate shaped like Exim's self-made one (O=Exim Developers, short-lived)."""
    return self_signed_certificate(tmp_path_factory.mktemp('exim-auto'), '/C=UK/O=Exim Developers/CN=lab-host',
                                   san=None, days=1, key_type='rsa')


@pytest.fixture
def real_probe(scripted):
    """probe(script, protocol): the engine's record of one connection to a scripted server."""
    def run_probe(script, protocol='smtp'):
        server = scripted(script)
        probe = probe_many([{'address': '127.0.0.1', 'port': server.port, 'protocol': protocol}],
                           {'vantage': 'controller', 'ehlo_name': 'probe.test', 'timeout': 5, 'deadline': 15})[0]
        server.finished()
        return probe
    return run_probe


def test_real_probe_postfix_454_with_missing_file(real_probe):
    probe = real_probe(smtp_starttls_refused())
    record = sc.listener('postfix', '127.0.0.1', probe['target']['port'], 'smtp', cert='/etc/postfix/missing.pem',
                         key='/etc/postfix/missing.pem', store_record=sc.missing_store('/etc/postfix/missing.pem'))
    findings = _verdict.judge([record], [probe], {'now': sc.NOW})
    assert pairs(findings) == [('certificate-unreadable', None), ('starttls-advertised-without-certificate', 'controller')]
    assert findings[1]['evidence']['probe']['outcome'] == 'starttls-refused'


def test_real_probe_dovecot_ok_then_bye(real_probe):
    # Dovecot fails only on the ClientHello, and says so in plaintext.
    probe = real_probe(imap_ok_then_bye(), 'imap')
    findings = _verdict.judge([sc.blackbox('127.0.0.1', probe['target']['port'], 'imap')], [probe], {'now': sc.NOW})
    assert pairs(findings) == [('starttls-advertised-without-certificate', 'controller')]
    assert 'BYE [UNAVAILABLE]' in findings[0]['summary']


def test_real_probe_opensmtpd_handshake_abort_with_usable_store(real_probe):
    probe = real_probe(smtp_open() + [('send', b'220 2.0.0 Ready to start TLS\r\n'), ('close',)])
    record = sc.listener('opensmtpd', '127.0.0.1', probe['target']['port'], 'smtp', cert='/etc/smtpd/lab.crt',
                         key='/etc/smtpd/lab.key', store_record=sc.store(cert='/etc/smtpd/lab.crt', key='/etc/smtpd/lab.key'))
    findings = _verdict.judge([record], [probe], {'now': sc.NOW})
    assert pairs(findings) == [('starttls-advertised-without-certificate', 'controller')]
    assert 'usable on disk' in findings[0]['summary'] and 'EVP lib' in findings[0]['fix']


def test_real_probe_exim_self_made_certificate(real_probe, exim_like_certificate):
    probe = real_probe(smtp_open() + [('send', b'220 TLS go ahead\r\n'), ('tls', exim_like_certificate),
                                      ('expect', 'EHLO'), ('send', b'250-mail.lab.test\r\n250 8BITMIME\r\n'),
                                      ('expect', 'QUIT')])
    assert probe['certificate']['self_signed'] is True and 'Exim Developers' in probe['certificate']['subject']
    bound = sc.listener('exim', '127.0.0.2', 25, 'smtp', cert='/etc/exim4/lab.crt', key='/etc/exim4/lab.key',
                        store_record=sc.store(cert='/etc/exim4/lab.crt', key='/etc/exim4/lab.key'))
    unbound = sc.listener('exim', '127.0.0.1', probe['target']['port'], 'smtp', reader_user='Debian-exim')
    findings = _verdict.judge([bound, unbound], [probe], {})
    ids = {finding['id'] for finding in findings}
    assert ids == {'presented-certificate-differs', 'tls-terminated-elsewhere', 'validation-failure', 'certificate-expiring'}
    assert all(finding['vantage'] == 'controller' for finding in findings)


def test_real_probe_implicit_tls_without_certificate(real_probe):
    probe = real_probe([('close',)], 'smtps')
    record = sc.listener('postfix', '127.0.0.1', probe['target']['port'], 'smtps', service='127.0.0.1:submissions')
    findings = _verdict.judge([record], [probe], {'now': sc.NOW})
    assert pairs(findings) == [('implicit-tls-without-certificate', 'controller')]


def test_real_probe_response_injection(real_probe, exim_like_certificate):
    probe = real_probe(smtp_open() + [('send', b'220 2.0.0 Ready\r\n250 injected after the reply\r\n'),
                                      ('tls', exim_like_certificate), ('expect', 'EHLO'),
                                      ('send', b'250-mail.lab.test\r\n250 8BITMIME\r\n'), ('expect', 'QUIT')])
    findings = _verdict.judge([sc.blackbox('127.0.0.1', probe['target']['port'], 'smtp')], [probe], {})
    assert ('pre-tls-surplus', 'controller') in pairs(findings)
    surplus = next(f for f in findings if f['id'] == 'pre-tls-surplus')
    assert 'injected after the reply' in surplus['evidence']['pre_tls_surplus']


def test_probes_of_an_address_many_hosts_share_pair_each_with_its_own_host():
    # Aliases of one mail host (or hosts behind one NAT address): every listener record names the same
    # address; the controller's probe for each host is evidence about that host alone, once.
    hosts = [f'alias{index:03d}' for index in range(300)]
    records = [sc.listener('postfix', '127.0.60.1', 25, 'smtp', host=host) for host in hosts]
    probes = [dict(sc.probe('127.0.60.1', 25, 'smtp'), host=host) for host in hosts]
    entries = _verdict.join(records, probes)
    assert len(entries) == len(hosts)
    assert [[probe['host'] for probe in entry['probes']] for entry in entries] == [[host] for host in hosts]
