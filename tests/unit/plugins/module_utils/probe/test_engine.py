# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The probe engine against scripted servers that replay what real MTAs and middleboxes send."""

from __future__ import annotations

import hashlib
import ssl
import threading
import time

import pytest

from ansible_collections.mailsec.starttls.plugins.module_utils._probe.engine import (
    TargetError,
    parse_target,
    probe_many,
    summarise,
)
from ansible_collections.mailsec.starttls.tests.unit.plugins.scripted_server import (
    POSTFIX_454,
    POSTFIX_EHLO,
    POSTFIX_EHLO_TLS,
    imap_ok_then_bye,
    smtp_open,
    smtp_starttls_ok,
    smtp_starttls_refused,
)


def fingerprint(cert_path: str) -> str:
    with open(cert_path) as handle:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(handle.read())).hexdigest()


def probe(server, protocol='smtp', **options):
    options.setdefault('timeout', 3)
    return probe_many([f'127.0.0.1:{server.port}/{protocol}'], options)[0]


def test_compliant_smtp_listener(scripted, server_cert):
    server = scripted(smtp_starttls_ok())
    result = probe(server, vantage='controller')
    assert result['error'] is None, result['error']
    assert result['connected'] is True
    assert result['vantage'] == 'controller'
    assert result['greeting'] == {'code': '220', 'lines': ['mail.test ESMTP Postfix']}
    assert 'STARTTLS' in result['capabilities']
    assert 'SIZE 10240000' in result['capabilities']
    assert result['starttls_advertised'] is True
    assert result['starttls_reply']['code'] == '220'
    assert result['tls']['established'] is True
    assert result['tls']['version'] in ('TLSv1.2', 'TLSv1.3')
    assert result['certificate']['sha256'] == fingerprint(server_cert[0])
    assert result['certificate']['subject'] == 'CN=mail.test'
    assert result['certificate']['self_signed'] is True
    assert result['certificate']['verified'] is False
    assert result['capabilities_after_tls'] == ['PIPELINING', 'AUTH PLAIN', '8BITMIME']
    assert result['flags'] == []
    # Lockstep and an RFC 5321 address literal as the EHLO name (no FQDN, no DNS).
    assert server.finished().received == ['EHLO [127.0.0.1]', 'STARTTLS', 'EHLO [127.0.0.1]', 'QUIT']
    assert server.finished().errors == []
    assert set(result['timings_ms']) >= {'connect', 'greeting', 'capabilities', 'starttls', 'handshake', 'total'}


def test_advertised_then_454_is_the_kb_q237327_case(scripted):
    server = scripted(smtp_starttls_refused())
    result = probe(server)
    assert result['starttls_advertised'] is True
    assert result['starttls_reply'] == {'code': '454', 'text': '4.7.0 TLS not available due to local problem'}
    assert result['tls'] is None
    assert result['certificate'] is None
    assert result['error'] is None
    assert server.finished().errors == []


def test_dovecot_ok_then_plaintext_bye_is_a_failed_handshake(scripted):
    server = scripted(imap_ok_then_bye())
    result = probe(server, 'imap')
    assert result['starttls_advertised'] is True
    assert result['starttls_reply']['code'] == 'OK'
    assert result['tls']['established'] is False
    assert result['error']['stage'] == 'handshake'
    assert 'TLS initialization failed' in result['tls']['server_plaintext']
    assert 'LOGINDISABLED' in result['capabilities']


def test_cisco_masking_is_recognised_and_can_be_seen_through(scripted):
    masked = [('send', b'220 ******************************\r\n'), ('expect', 'EHLO'),
              ('send', b'250-mail.test\r\n250-XXXXXXXA\r\n250 8BITMIME\r\n')]
    server = scripted(masked + [('expect', 'QUIT')])
    result = probe(server)
    assert 'masked' in result['flags']
    assert result['starttls_advertised'] is False
    assert result['starttls_reply'] is None
    through = scripted(masked + [('expect', 'STARTTLS'), ('send', b'220 Go ahead\r\n'), ('tls',), ('expect', 'EHLO'),
                                 ('send', b'250 mail.test\r\n'), ('expect', 'QUIT')])
    result = probe(through, try_starttls_when_not_advertised=True)
    assert result['starttls_advertised'] is False
    assert result['tls']['established'] is True
    assert through.finished().errors == []


def test_response_injection_is_flagged_and_discarded(scripted):
    server = scripted(smtp_open() + [
        ('send', b'220 Ready\r\n250 injected before TLS\r\n'), ('sleep', 0.1), ('tls',), ('expect', 'EHLO'),
        ('send', POSTFIX_EHLO_TLS), ('expect', 'QUIT')])
    result = probe(server)
    assert 'response_injection' in result['flags']
    assert result['pre_tls_surplus'].startswith('250 injected')
    assert result['tls']['established'] is True
    assert result['capabilities_after_tls'] == ['PIPELINING', 'AUTH PLAIN', '8BITMIME']


def test_command_injection_probe(scripted):
    vulnerable = scripted(smtp_open() + [
        ('send', b'220 Ready\r\n'), ('tls',), ('send', b'250 2.0.0 Ok\r\n'), ('expect', 'EHLO'),
        ('send', POSTFIX_EHLO_TLS), ('expect', 'QUIT')])
    result = probe(vulnerable, test_command_injection=True)
    assert 'command_injection' in result['flags']
    assert result['injected_reply'].startswith('250')
    clean = scripted(smtp_starttls_ok())
    result = probe(clean, test_command_injection=True)
    assert 'command_injection' not in result['flags']
    assert clean.received[1] == 'STARTTLS'


def test_starttls_advertised_again_after_tls(scripted):
    server = scripted(smtp_open() + [
        ('send', b'220 Ready\r\n'), ('tls',), ('expect', 'EHLO'), ('send', POSTFIX_EHLO), ('expect', 'QUIT')])
    assert 'starttls_after_tls' in probe(server)['flags']


def test_trickling_greeting_is_cut_by_the_phase_deadline(scripted):
    server = scripted([('trickle', b'220 ' + b'x' * 200 + b'\r\n', 0.05)])
    start = time.monotonic()
    result = probe(server, timeout=1, greeting_timeout=1)
    assert time.monotonic() - start < 2.5
    assert result['error']['stage'] == 'greeting'
    assert 'timeout' in result['flags']


def test_silent_server_is_cut_by_the_target_deadline(scripted):
    server = scripted([('sleep', 5)])
    start = time.monotonic()
    result = probe(server, timeout=3, greeting_timeout=30, deadline=1)
    assert time.monotonic() - start < 2
    assert result['connected'] is True
    assert result['error']['stage'] == 'greeting'
    assert 'timeout' in result['flags']


@pytest.mark.parametrize('payload, message', [
    (b'220-' + b'a' * 10000, 'longer than'),
    (b'HTTP/1.1 400 Bad Request\r\n', 'not an SMTP reply line'),
    (b'220-line\r\n' * 150, 'lines'),
    (b'220-mail.test\r\n421 other code\r\n', 'changed'),
])
def test_malformed_greetings(scripted, payload, message):
    server = scripted([('send', payload), ('sleep', 0.5)])
    result = probe(server)
    assert 'malformed_reply' in result['flags']
    assert result['error']['stage'] == 'greeting'
    assert message in result['error']['message']


def test_refused_greeting_sends_no_ehlo(scripted):
    server = scripted([('send', b'554 5.7.1 go away\r\n'), ('expect', 'QUIT')])
    result = probe(server)
    assert 'greeting_refused' in result['flags']
    assert result['greeting']['code'] == '554'
    assert result['starttls_advertised'] is None
    assert server.finished().received == ['QUIT']


def test_rejected_ehlo_never_leads_to_starttls(scripted):
    server = scripted([('send', b'220 mail.test\r\n'), ('expect', 'EHLO'),
                       ('send', b'501 5.5.2 Syntax: EHLO hostname\r\n'), ('expect', 'QUIT')])
    result = probe(server, try_starttls_when_not_advertised=True)
    assert 'ehlo_rejected' in result['flags']
    assert result['capabilities_reply']['code'] == '501'
    assert result['starttls_reply'] is None
    assert server.finished().received == ['EHLO [127.0.0.1]', 'QUIT']


def test_connection_closed_after_starttls_reply(scripted):
    server = scripted(smtp_open() + [('send', b'220 Ready\r\n'), ('close',)])
    result = probe(server)
    assert result['error']['stage'] == 'handshake'
    assert result['tls']['established'] is False
    assert 'connection_closed' in result['flags']


def test_lmtp_uses_lhlo(scripted):
    server = scripted([('send', b'220 lmtp.test LMTP\r\n'), ('expect', 'LHLO'),
                       ('send', b'250-lmtp.test\r\n250 PIPELINING\r\n'), ('expect', 'QUIT')])
    result = probe(server, 'lmtp', ehlo_name='probe.example')
    assert result['starttls_advertised'] is False
    assert server.finished().received == ['LHLO probe.example', 'QUIT']


def test_pop3_stls(scripted, server_cert):
    server = scripted([('send', b'+OK Dovecot ready.\r\n'), ('expect', 'CAPA'),
                       ('send', b'+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nSTLS\r\nSASL PLAIN\r\n.\r\n'),
                       ('expect', 'STLS'), ('send', b'+OK Begin TLS negotiation now.\r\n'), ('tls',),
                       ('expect', 'CAPA'), ('send', b'+OK\r\nCAPA\r\nUIDL\r\n.\r\n'), ('expect', 'QUIT')])
    result = probe(server, 'pop3')
    assert result['starttls_advertised'] is True
    assert result['starttls_reply'] == {'code': '+OK', 'text': 'Begin TLS negotiation now.'}
    assert result['capabilities_after_tls'] == ['CAPA', 'UIDL']
    assert result['certificate']['sha256'] == fingerprint(server_cert[0])


def test_pop3_tls_disabled(scripted):
    server = scripted([('send', b'+OK ready\r\n'), ('expect', 'CAPA'), ('send', b'+OK\r\nUIDL\r\n.\r\n'),
                       ('expect', 'STLS'), ('send', b'-ERR TLS support isn\'t enabled.\r\n'), ('expect', 'QUIT')])
    result = probe(server, 'pop3', try_starttls_when_not_advertised=True)
    assert result['starttls_advertised'] is False
    assert result['starttls_reply']['code'] == '-ERR'


def test_managesieve(scripted):
    caps = b'"IMPLEMENTATION" "Dovecot Pigeonhole"\r\n"SIEVE" "fileinto reject"\r\n'
    server = scripted([('send', caps + b'"STARTTLS"\r\nOK "Dovecot ready."\r\n'), ('expect', 'STARTTLS'),
                       ('send', b'OK "Begin TLS negotiation now."\r\n'), ('tls',),
                       ('send', caps + b'"SASL" "PLAIN"\r\nOK "TLS negotiation successful."\r\n'),
                       ('expect', 'LOGOUT')])
    result = probe(server, 'sieve')
    assert result['starttls_advertised'] is True
    assert 'IMPLEMENTATION Dovecot Pigeonhole' in result['capabilities']
    assert result['starttls_reply']['code'] == 'OK'
    assert 'SASL PLAIN' in result['capabilities_after_tls']
    assert server.finished().errors == []


def test_implicit_tls(scripted, server_cert):
    server = scripted([('tls',), ('send', b'220 mail.test ESMTP\r\n'), ('expect', 'EHLO'),
                       ('send', POSTFIX_EHLO_TLS), ('expect', 'QUIT')])
    result = probe(server, 'smtps')
    assert result['tls_mode'] == 'implicit'
    assert result['starttls_advertised'] is None
    assert result['tls']['established'] is True
    assert result['greeting']['code'] == '220'
    assert result['capabilities_after_tls'] == ['PIPELINING', 'AUTH PLAIN', '8BITMIME']
    assert result['certificate']['sha256'] == fingerprint(server_cert[0])


def test_implicit_tls_dropped_like_postfix_wrapper_mode_without_cert(scripted):
    server = scripted([('close',)])
    result = probe(server, 'smtps')
    assert result['connected'] is True
    assert result['error']['stage'] == 'handshake'
    assert result['tls']['established'] is False


def test_refused_connection():
    result = probe_many(['127.0.0.1:1/smtp'], {'timeout': 2})[0]
    assert result['connected'] is False
    assert result['error']['stage'] == 'connect'


def test_one_hanging_server_costs_no_other_result(scripted):
    hanging = scripted([('sleep', 5)])
    good = [scripted(smtp_starttls_ok()) for _server in range(5)]
    targets = [f'127.0.0.1:{server.port}/smtp' for server in good[:2]]
    targets += [f'127.0.0.1:{hanging.port}/smtp', 'garbage.invalid.:25', '127.0.0.1:1/smtp']
    targets += [f'127.0.0.1:{server.port}/smtp' for server in good[2:]]
    start = time.monotonic()
    results = probe_many(targets, {'deadline': 1.5, 'timeout': 1, 'concurrency': 8, 'per_host_limit': 8})
    assert time.monotonic() - start < 3.5
    assert [r['target']['port'] for r in results] == [parse_target(t)['port'] for t in targets]
    assert [bool(r['tls'] and r['tls']['established']) for r in results] == [True, True, False, False, False, True, True, True]
    assert results[2]['error']['stage'] == 'greeting'
    assert results[3]['error']['stage'] == 'connect'
    assert summarise(results) == {'targets': 8, 'connected': 6, 'starttls_advertised': 5, 'tls_established': 5,
                                  'errors': 3}


def test_inconsistent_pool_is_flagged(scripted):
    def alternate(number):
        if number % 2:
            return [('send', b'220 b\r\n'), ('expect', 'EHLO'), ('send', b'250 b\r\n'), ('expect', 'QUIT')]
        return smtp_starttls_ok()
    server = scripted(alternate)
    result = probe(server, attempts=2)
    assert 'inconsistent' in result['flags']
    assert [a['starttls_advertised'] for a in result['attempts']] == [True, False]


@pytest.mark.parametrize('spec, expected', [
    ('192.0.2.1:25', ('192.0.2.1', 25, 'smtp')),
    ('192.0.2.1:2525/submission', ('192.0.2.1', 2525, 'submission')),
    ('[2001:db8::1]:993', ('2001:db8::1', 993, 'imaps')),
    ('2001:db8::1/imap', ('2001:db8::1', 143, 'imap')),
    ('mail.example.org/pop3s', ('mail.example.org', 995, 'pop3s')),
    ({'address': '[::1]', 'port': '4190'}, ('::1', 4190, 'sieve')),
])
def test_parse_target(spec, expected):
    target = parse_target(spec)
    assert (target['address'], target['port'], target['protocol']) == expected


@pytest.mark.parametrize('spec, message', [
    ('192.0.2.1:2525', 'give a protocol'),
    ('192.0.2.1:25/http', 'unknown protocol'),
    ('192.0.2.1:99999/smtp', 'out of range'),
    ({'port': 25}, 'no address'),
    (42, 'string or a dictionary'),
])
def test_bad_targets_are_argument_errors(spec, message):
    with pytest.raises(TargetError, match=message):
        probe_many([spec])


def test_ip_literals_never_touch_the_resolver(scripted, monkeypatch):
    import socket as socket_module
    calls = []
    real = socket_module.getaddrinfo

    def recording(host, port, family=0, type=0, proto=0, flags=0):  # pylint: disable=redefined-builtin
        calls.append((host, flags))
        return real(host, port, family, type, proto, flags)

    def forbidden(*args, **kwargs):
        raise AssertionError('a DNS lookup was made')

    monkeypatch.setattr(socket_module, 'getaddrinfo', recording)
    monkeypatch.setattr(socket_module, 'gethostbyname', forbidden)
    monkeypatch.setattr(socket_module, 'gethostbyaddr', forbidden)
    monkeypatch.setattr(socket_module, 'getfqdn', forbidden)
    server = scripted(smtp_starttls_ok())
    result = probe(server)
    assert result['tls']['established'] is True
    assert calls and all(flags & socket_module.AI_NUMERICHOST for _host, flags in calls)


def refusing_server_answering_the_pipelined_noop(run: int) -> list:
    """Refuses STARTTLS (no certificate) and answers the NOOP sent behind it, as a correct
    plaintext server must; the gap between the two replies varies from run to run."""
    gap = (0.0, 0.0005, 0.005, 0.02)[run % 4]
    steps = smtp_open()
    if run % 5 == 4:
        # Both replies in one segment: the surplus is in the reader's buffer at once.
        steps += [('expect', 'NOOP'), ('send', POSTFIX_454 + b'250 2.0.0 Ok\r\n')]
    else:
        steps += [('send', POSTFIX_454), ('sleep', gap),
                  ('expect', 'NOOP'), ('send', b'250 2.0.0 Ok\r\n')]
    return steps + [('expect', 'QUIT')]


def test_refused_starttls_with_an_answered_noop_is_never_injection(scripted):
    server = scripted(refusing_server_answering_the_pipelined_noop)
    runs = 40
    results = probe_many([f'127.0.0.1:{server.port}/smtp'] * runs,
                         {'timeout': 3, 'test_command_injection': True, 'concurrency': 8, 'per_host_limit': 8})
    assert server.connections == runs
    for result in results:
        assert result['starttls_reply']['code'] == '454'
        assert 'response_injection' not in result['flags'], result
        assert result['pre_tls_surplus'] is None
        assert 'command_injection' not in result['flags']
    from ansible_collections.mailsec.starttls.plugins.module_utils import _verdict  # pylint: disable=import-outside-toplevel
    findings = _verdict.judge([], results, {'now': '2026-12-01T00:00:00Z'})
    assert 'pre-tls-surplus' not in {finding['id'] for finding in findings}
    assert 'starttls-advertised-without-certificate' in {finding['id'] for finding in findings}


def test_bytes_after_a_positive_starttls_reply_are_injection_in_every_run(scripted):
    server = scripted(smtp_open() + [
        ('expect', 'NOOP'), ('send', b'220 2.0.0 Ready to start TLS\r\n250 2.0.0 Ok\r\n'), ('sleep', 0.2),
        ('tls',), ('expect', 'EHLO'), ('send', POSTFIX_EHLO_TLS), ('expect', 'QUIT')])
    runs = 10
    results = probe_many([f'127.0.0.1:{server.port}/smtp'] * runs,
                         {'timeout': 3, 'test_command_injection': True, 'concurrency': 5, 'per_host_limit': 5})
    for result in results:
        assert 'response_injection' in result['flags'], result
        assert result['pre_tls_surplus'].startswith('250 2.0.0 Ok')


def test_terminal_and_bidi_controls_from_a_server_come_back_escaped(scripted):
    import json  # pylint: disable=import-outside-toplevel
    hostile = 'mx\x1b]0;pwned\x07 \x1b[2J\u009b31m\x7f\u202egnp.exe\u2067'.encode('utf-8')
    server = scripted([('send', b'220 ' + hostile + b'\r\n'), ('expect', 'EHLO'),
                       ('send', b'250-mail.test\r\n250-X-' + hostile + b'\r\n250 STARTTLS\r\n'),
                       ('expect', 'STARTTLS'), ('send', b'454 4.7.0 ' + hostile + b'\r\n'), ('expect', 'QUIT')])
    result = probe(server)
    text = json.dumps(result, ensure_ascii=False)
    for raw in ('\x1b', '\x07', '\u009b', '\x7f', '\u202e', '\u2067'):
        assert raw not in text
    assert result['greeting']['lines'] == ['mx\\x1b]0;pwned\\x07 \\x1b[2J\\x9b31m\\x7f\\u202egnp.exe\\u2067']
    assert result['starttls_reply']['text'].endswith('\\u202egnp.exe\\u2067')
    assert result['starttls_advertised'] is True


def test_a_name_is_resolved_by_the_system_resolver_and_each_result_says_from_where(scripted):
    # localhost is answered by every hosts file; whether it also gives ::1 depends on the machine.
    server = scripted(smtp_starttls_ok())
    results = probe_many([f'localhost:{server.port}/smtp'], {'timeout': 3})
    assert results and all(result['target']['name'] == 'localhost' for result in results)
    by_address = {result['target']['address']: result for result in results}
    assert '127.0.0.1' in by_address
    assert by_address['127.0.0.1']['tls']['established'] is True
    assert by_address['127.0.0.1']['peer_address'] == '127.0.0.1'


def test_every_address_of_a_name_is_a_listener_in_the_resolver_order(scripted, monkeypatch):
    import socket as socket_module
    server = scripted(smtp_starttls_ok())
    asked = []

    def two_records(host, port, family=0, type=0, proto=0, flags=0):  # pylint: disable=redefined-builtin
        asked.append((host, flags))
        if flags & socket_module.AI_NUMERICHOST:
            return [(socket_module.AF_INET, socket_module.SOCK_STREAM, 6, '', (host, port))]
        assert host == 'mx.lab.test'
        return [(socket_module.AF_INET, socket_module.SOCK_STREAM, 6, '', ('127.0.0.1', port)),
                (socket_module.AF_INET, socket_module.SOCK_STREAM, 6, '', ('127.0.0.1', port)),
                (socket_module.AF_INET, socket_module.SOCK_STREAM, 6, '', ('127.0.91.9', port))]

    monkeypatch.setattr(socket_module, 'getaddrinfo', two_records)
    results = probe_many([f'mx.lab.test:{server.port}/smtp', f'127.0.0.1:{server.port}/smtp'], {'timeout': 2})
    assert [(r['target']['address'], r['target']['name']) for r in results] == [
        ('127.0.0.1', 'mx.lab.test'), ('127.0.91.9', 'mx.lab.test'), ('127.0.0.1', None)]
    assert results[0]['tls']['established'] is True
    assert results[1]['connected'] is False and results[1]['error']['stage'] == 'connect'
    # The name was looked up once; the literals (and the resolved addresses) only as numeric hosts.
    assert [host for host, flags in asked if not flags & socket_module.AI_NUMERICHOST] == ['mx.lab.test']


def test_a_name_that_does_not_resolve_is_one_connect_error(monkeypatch):
    import socket as socket_module

    def nothing(host, port, family=0, type=0, proto=0, flags=0):  # pylint: disable=redefined-builtin
        raise socket_module.gaierror(socket_module.EAI_NONAME, 'Name or service not known')

    monkeypatch.setattr(socket_module, 'getaddrinfo', nothing)
    results = probe_many(['nowhere.lab.test:25/smtp'], {'timeout': 1})
    assert len(results) == 1
    assert results[0]['target'] == {'address': 'nowhere.lab.test', 'port': 25, 'protocol': 'smtp', 'sni': None,
                                    'name': 'nowhere.lab.test'}
    assert results[0]['error'] == {'stage': 'connect',
                                   'message': 'cannot resolve nowhere.lab.test: Name or service not known'}


@pytest.mark.parametrize('delay', [0.0, 0.05, 0.3])
def test_plaintext_after_a_positive_reply_is_injection_however_late_it_comes(scripted, delay):
    # The surplus arrives after the reader looked (delay) and before the server's TLS records: it is
    # held back from the handshake, which completes, and flagged all the same.
    server = scripted(smtp_open() + [
        ('send', b'220 2.0.0 Ready to start TLS\r\n'), ('sleep', delay),
        ('send', b'250 late injected line\r\n'), ('tls',), ('expect', 'EHLO'), ('send', POSTFIX_EHLO_TLS),
        ('expect', 'QUIT')])
    result = probe(server)
    assert result['tls']['established'] is True, result['error']
    assert 'response_injection' in result['flags']
    assert '250 late injected line' in result['pre_tls_surplus']
    assert result['capabilities_after_tls'] == ['PIPELINING', 'AUTH PLAIN', '8BITMIME']


def test_a_server_that_never_starts_tls_fails_the_handshake_quickly(scripted):
    server = scripted(smtp_open() + [
        ('send', b'220 2.0.0 Ready to start TLS\r\n'), ('sleep', 0.1),
        ('send', b'500 5.5.2 Error: command not recognized\r\n'), ('sleep', 6)])
    started = time.monotonic()
    result = probe(server, timeout=8)
    assert time.monotonic() - started < 5
    assert result['tls']['established'] is False
    assert result['error']['stage'] == 'handshake'
    assert 'command not recognized' in result['tls']['server_plaintext']
    assert 'response_injection' not in result['flags']


def test_certificate_names_are_made_visible_once_per_chain(monkeypatch):
    """The describer escapes server text in the certificate description before it caches it, so
    every probe of that chain shares one visible description (the engine no longer walks it per probe)."""
    from ansible_collections.mailsec.starttls.plugins.module_utils._probe import engine  # pylint: disable=import-outside-toplevel
    calls = []

    def describe_der(der, expected_names=None):
        calls.append(der)
        return {'sha256': 'ab' * 32, 'subject': 'CN=mx\x1b[2J\u202egnp.exe', 'sans': ['DNS:mx\u2067.test']}
    monkeypatch.setattr(engine._x509, 'describe_der', describe_der)
    monkeypatch.setattr(engine._trust, 'verify_chain', lambda chain, ca_file=None, ca_path=None: (False, 'untrusted'))
    describer = engine.CertificateDescriber(None, None)
    first = describer.describe([b'leaf'], [])
    second = describer.describe([b'leaf'], [])
    assert first['subject'] == 'CN=mx\\x1b[2J\\u202egnp.exe'
    assert first['sans'] == ['DNS:mx\\u2067.test']
    assert second == first and len(calls) == 1


def test_probes_that_meet_a_chain_together_describe_and_verify_it_once(monkeypatch):
    """Probes finish their handshakes together: the first to meet a chain describes it, the others
    wait for that description instead of parsing and verifying the same chain again."""
    import threading  # pylint: disable=import-outside-toplevel
    from ansible_collections.mailsec.starttls.plugins.module_utils._probe import engine  # pylint: disable=import-outside-toplevel
    described, verified = [], []
    started = threading.Event()

    def describe_der(der, expected_names=None):
        described.append(der)
        started.set()
        time.sleep(0.2)  # long enough for every other thread to arrive meanwhile
        return {'sha256': der.hex(), 'subject': 'CN=mx'}

    def verify_chain(chain, ca_file=None, ca_path=None):
        verified.append(chain[0])
        return True, None
    monkeypatch.setattr(engine._x509, 'describe_der', describe_der)
    monkeypatch.setattr(engine._trust, 'verify_chain', verify_chain)
    describer = engine.CertificateDescriber(None, None)
    results = []

    def describe(chain):
        results.append(describer.describe(chain, []))
    first = threading.Thread(target=describe, args=([b'\x01'],))
    first.start()
    assert started.wait(5)
    others = [threading.Thread(target=describe, args=([b'\x01'] if index % 2 else [b'\x02'],)) for index in range(10)]
    for thread in others:
        thread.start()
    for thread in [first] + others:
        thread.join(10)
    assert sorted(described) == [b'\x01', b'\x02'] and sorted(verified) == [b'\x01', b'\x02']
    assert len(results) == 11
    assert sorted(result['sha256'] for result in results) == ['01'] * 6 + ['02'] * 5
    assert all(result['verified'] is True for result in results)
    # Each probe gets a record of its own (the caller may change it), equal to the cached one.
    assert len({id(result) for result in results}) == 11
    assert not describer.pending


def test_a_probe_waiting_for_a_failed_description_describes_the_chain_itself(monkeypatch):
    import threading  # pylint: disable=import-outside-toplevel
    from ansible_collections.mailsec.starttls.plugins.module_utils._probe import engine  # pylint: disable=import-outside-toplevel
    calls = []
    started, release = threading.Event(), threading.Event()

    def describe_der(der, expected_names=None):
        calls.append(der)
        if len(calls) == 1:
            started.set()
            release.wait(5)
            raise RuntimeError('a defect of ours')
        return {'sha256': 'cd' * 32, 'subject': 'CN=mx'}
    monkeypatch.setattr(engine._x509, 'describe_der', describe_der)
    monkeypatch.setattr(engine._trust, 'verify_chain', lambda chain, ca_file=None, ca_path=None: (False, 'untrusted'))
    describer = engine.CertificateDescriber(None, None)
    outcome = {}

    def owner():
        try:
            describer.describe([b'leaf'], [])
        except RuntimeError as exc:
            outcome['owner'] = str(exc)

    def waiter():
        outcome['waiter'] = describer.describe([b'leaf'], [])
    threads = [threading.Thread(target=owner)]
    threads[0].start()
    assert started.wait(5)
    threads.append(threading.Thread(target=waiter))
    threads[1].start()
    time.sleep(0.1)
    release.set()
    for thread in threads:
        thread.join(10)
    assert outcome['owner'] == 'a defect of ours'
    assert outcome['waiter']['sha256'] == 'cd' * 32 and outcome['waiter']['verified'] is False
    assert len(calls) == 2 and not describer.pending


@pytest.mark.parametrize('targets, loads', [(3, False), (100, False), (101, True)])
def test_a_large_run_loads_cryptography_before_its_first_verification(monkeypatch, targets, loads):
    """More than LIBRARY_RUN_SIZE targets: chains are checked with the library from the first one (a
    sweep meets many chains); a host's few listeners keep the openssl-first rule of _trust."""
    from ansible_collections.mailsec.starttls.plugins.module_utils._probe import engine  # pylint: disable=import-outside-toplevel
    assert engine.LIBRARY_RUN_SIZE == 100
    made = []
    real = engine.CertificateDescriber

    def recording(ca_file, ca_path, many_chains=False):
        made.append(many_chains)
        return real(ca_file, ca_path, many_chains=many_chains)
    monkeypatch.setattr(engine, 'CertificateDescriber', recording)
    probe_many(['127.0.0.1:1/smtp'] * targets, {'timeout': 2, 'concurrency': 1})
    assert made == [loads]
    order = []
    monkeypatch.setattr(engine._x509.Cryptography, 'load', classmethod(lambda cls: order.append('load') or False))
    monkeypatch.setattr(engine._x509, 'describe_der', lambda der, expected_names=None: order.append('describe') or {})
    monkeypatch.setattr(engine._trust, 'verify_chain',
                        lambda chain, ca_file=None, ca_path=None: order.append('verify') or (None, 'no checker'))
    real(None, None, many_chains=loads).describe([b'leaf'], [])
    assert order == (['load', 'describe', 'verify'] if loads else ['describe', 'verify'])


def test_no_more_threads_than_the_per_address_limits_let_probe(monkeypatch):
    from ansible_collections.mailsec.starttls.plugins.module_utils._probe import engine  # pylint: disable=import-outside-toplevel
    sizes = []
    real_pool = engine.ProbePool

    def recording_pool(work, order, most):
        sizes.append(most)
        return real_pool(work, order, most)
    monkeypatch.setattr(engine, 'ProbePool', recording_pool)
    # Port 1 on loopback refuses at once: every probe ends in stage connect.
    one_address = ['127.0.0.1:1/smtp'] * 20
    results = probe_many(one_address, {'per_host_limit': 3, 'concurrency': 64, 'timeout': 2})
    two_addresses = probe_many(one_address + ['127.0.0.2:1/smtp'] * 2,
                               {'per_host_limit': 3, 'concurrency': 64, 'timeout': 2})
    assert sizes == [3, 5]
    assert all(result['error']['stage'] == 'connect' for result in results + two_addresses)


def test_the_pool_grows_while_its_threads_wait_and_does_every_item_once():
    from ansible_collections.mailsec.starttls.plugins.module_utils._probe import engine  # pylint: disable=import-outside-toplevel
    done, lock = [], threading.Lock()

    def slow_server(item):
        time.sleep(0.05)
        with lock:
            done.append(item)
    pool = engine.ProbePool(slow_server, list(range(400)), 64)
    pool.run()
    assert sorted(done) == list(range(400))
    # Waiting threads use no CPU: the pool doubled up to its limit (8, 16, 32, 64), never beyond.
    assert len(pool.threads) == 64


def test_a_pool_with_nothing_to_do_returns_at_once():
    from ansible_collections.mailsec.starttls.plugins.module_utils._probe import engine  # pylint: disable=import-outside-toplevel
    outcome = []
    runner = threading.Thread(target=lambda: outcome.append(engine.ProbePool(outcome.append, [], 16).run()), daemon=True)
    runner.start()
    runner.join(5)
    assert not runner.is_alive(), 'ProbePool.run() waited for an item of an empty list'
    assert outcome == [None]


def test_the_pool_stays_small_while_the_work_keeps_the_process_busy(monkeypatch):
    from ansible_collections.mailsec.starttls.plugins.module_utils._probe import engine  # pylint: disable=import-outside-toplevel

    class BusyClock:
        """The process used a whole CPU all the time (a CPU-bound sweep), whatever else the machine does."""
        monotonic = staticmethod(time.monotonic)
        process_time = staticmethod(time.monotonic)
        sleep = staticmethod(time.sleep)
    monkeypatch.setattr(engine, 'time', BusyClock)
    done = []

    def work(item):
        time.sleep(0.002)
        done.append(item)
    pool = engine.ProbePool(work, list(range(300)), 128)
    pool.run()
    assert sorted(done) == list(range(300))
    # More threads could not run more of it under one interpreter lock: never more than the first 8.
    assert len(pool.threads) == engine.ProbePool.FIRST_THREADS


def test_a_defect_in_the_work_is_raised_and_stops_the_pool():
    from ansible_collections.mailsec.starttls.plugins.module_utils._probe import engine  # pylint: disable=import-outside-toplevel
    seen = []

    def work(item):
        seen.append(item)
        if item == 5:
            raise RuntimeError('a defect of ours')
        time.sleep(0.01)
    pool = engine.ProbePool(work, list(range(1000)), 16)
    with pytest.raises(RuntimeError, match='a defect of ours'):
        pool.run()
    assert 5 in seen and len(seen) < 1000
    assert not any(thread.is_alive() for thread in pool.threads)


# -- several processes ---------------------------------------------------------------------------

def test_the_engine_chooses_processes_by_targets_cpus_and_addresses(monkeypatch):
    from ansible_collections.mailsec.starttls.plugins.module_utils._probe import engine  # pylint: disable=import-outside-toplevel
    assert engine.PROCESS_SHARE == 100
    monkeypatch.setattr(engine, 'usable_cpus', lambda: 4)
    monkeypatch.setattr(engine.threading, 'active_count', lambda: 1)

    def targets(count, addresses):
        return engine.parse_targets([f'127.0.1.{index % addresses + 1}:{2000 + index}/smtp' for index in range(count)])
    auto = engine.normalise_options({})
    assert engine.process_count(auto, targets(14, 14)) == 1        # a host's own listeners
    assert engine.process_count(auto, targets(199, 100)) == 1
    assert engine.process_count(auto, targets(200, 100)) == 2
    assert engine.process_count(auto, targets(500, 250)) == 4      # at most one per usable CPU
    assert engine.process_count(auto, targets(500, 3)) == 3        # each address in one process
    assert engine.process_count(auto, targets(500, 1)) == 1
    assert engine.process_count(engine.normalise_options({'processes': 1}), targets(500, 250)) == 1
    assert engine.process_count(engine.normalise_options({'processes': 8}), targets(20, 20)) == 8
    # Never a fork from a process with another thread: the child would inherit its locks as they were.
    monkeypatch.setattr(engine.threading, 'active_count', lambda: 2)
    assert engine.process_count(engine.normalise_options({'processes': 8}), targets(500, 250)) == 1


@pytest.mark.parametrize('value, message', [(0, 'processes 0 is out of range'), (65, 'processes 65 is out of range'),
                                            ('two', 'processes must be a whole number'),
                                            (True, 'processes must be a whole number, not a boolean')])
def test_processes_out_of_range_is_refused_before_any_connection(value, message):
    with pytest.raises(TargetError, match=message):
        probe_many(['127.0.0.1:1/smtp'], {'processes': value})


def test_shards_keep_every_address_in_one_process_and_are_balanced():
    from ansible_collections.mailsec.starttls.plugins.module_utils._probe import engine  # pylint: disable=import-outside-toplevel
    # 10 targets on .1, 6 on .2, 5 on .3, 4 on .4 and 1 on .5, interleaved.
    spec = ['127.0.1.1'] * 10 + ['127.0.1.2'] * 6 + ['127.0.1.3'] * 5 + ['127.0.1.4'] * 4 + ['127.0.1.5']
    parsed = engine.parse_targets([f'{address}:{2000 + index}/smtp' for index, address in enumerate(spec[::-1])])
    shards = engine.shard_by_address(parsed, 2)
    assert sorted(index for shard in shards for index in shard) == list(range(len(parsed)))
    # 10+4 and 6+5+1: the closest split there is (no subset of 10, 6, 5, 4, 1 makes 13).
    assert sorted(len(shard) for shard in shards) == [12, 14]
    for shard in shards:
        assert shard == sorted(shard)
    homes = {}
    for number, shard in enumerate(shards):
        for index in shard:
            assert homes.setdefault(parsed[index]['address'], number) == number
    # More shards than addresses (.5 and .4 twice): one shard per address, none empty.
    assert engine.shard_by_address(parsed[:3], 8) == [[1, 2], [0]]


FORKED_RUN = r'''
import json, os, sys
from ansible_collections.mailsec.starttls.plugins.module_utils._probe import engine
parent = os.getpid()
real = engine._probe_here
mode = sys.argv[2]

def marking(parsed, options, connect, max_parallel, many_chains):
    if mode == 'lose' and os.getpid() != parent:
        os._exit(3)
    records = real(parsed, options, connect, max_parallel, many_chains)
    for record in records:
        record['flags'].append('pid-%d' % os.getpid())
    return records

engine._probe_here = marking
targets = json.loads(sys.argv[1])
print(json.dumps({'parent': parent, 'probes': engine.probe_many(targets, {'processes': 2, 'timeout': 3})}))
'''


def forked_run(targets: list, mode: str = 'normal') -> dict:
    """probe_many with processes=2 in a fresh interpreter (one thread, as a module process has)."""
    import json  # pylint: disable=import-outside-toplevel
    import os  # pylint: disable=import-outside-toplevel
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel
    completed = subprocess.run([sys.executable, '-c', FORKED_RUN, json.dumps(targets), mode], capture_output=True,
                               text=True, timeout=60, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
                               check=False)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def test_two_processes_probe_real_tls_listeners_and_keep_the_order(scripted, server_cert):
    servers = [scripted(smtp_starttls_ok()) for _server in range(2)]
    refused = [f'127.0.0.{number}:1/smtp' for number in (2, 3, 4)]
    targets = [refused[0], f'127.0.0.1:{servers[0].port}/smtp', refused[1], f'127.0.0.1:{servers[1].port}/smtp',
               refused[2]]
    run = forked_run(targets)
    probes = run['probes']
    assert [f"{probe['target']['address']}:{probe['target']['port']}/smtp" for probe in probes] == targets
    pids = {probe['target']['address']: [flag for flag in probe['flags'] if flag.startswith('pid-')] for probe in probes}
    assert len({flag for flags in pids.values() for flag in flags}) == 2
    assert f"pid-{run['parent']}" in {flag for flags in pids.values() for flag in flags}
    for number in (1, 3):
        assert probes[number]['tls']['established'] is True
        assert probes[number]['certificate']['sha256'] == fingerprint(server_cert[0])
        assert probes[number]['capabilities_after_tls'] == ['PIPELINING', 'AUTH PLAIN', '8BITMIME']
    for number in (0, 2, 4):
        assert probes[number]['error']['stage'] == 'connect' and probes[number]['connected'] is False
    for server in servers:
        assert server.finished().errors == []


def test_a_probe_process_that_dies_costs_only_its_own_targets():
    targets = [f'127.0.0.{number}:1/smtp' for number in range(1, 7)]
    run = forked_run(targets, 'lose')
    probes = run['probes']
    assert [probe['target']['address'] for probe in probes] == [f'127.0.0.{number}' for number in range(1, 7)]
    lost = [probe for probe in probes if 'ended without their results (exit status 3)' in (probe['error'] or {}).get('message', '')]
    kept = [probe for probe in probes if probe not in lost]
    assert len(lost) == 3 and len(kept) == 3
    assert all(probe['error']['stage'] == 'connect' and 'what it saw of this target is lost' in probe['error']['message']
               for probe in lost)
    assert all(f"pid-{run['parent']}" in probe['flags'] and 'connect to' in probe['error']['message'] for probe in kept)


def test_a_fork_that_fails_leaves_its_share_here_and_the_run_decides_the_chain_checker(monkeypatch):
    """200 targets in two shards of 100: each describer checks chains as a run of 200 does (with the
    library, loaded once before any fork), and a shard whose fork fails is probed by this process."""
    from ansible_collections.mailsec.starttls.plugins.module_utils._probe import engine  # pylint: disable=import-outside-toplevel
    made, loads, forks = [], [], []
    real = engine.CertificateDescriber

    def recording(ca_file, ca_path, many_chains=False):
        made.append(many_chains)
        return real(ca_file, ca_path, many_chains=many_chains)

    def no_fork():
        forks.append(1)
        raise OSError(11, 'Resource temporarily unavailable')
    monkeypatch.setattr(engine, 'CertificateDescriber', recording)
    monkeypatch.setattr(engine, 'load_library_for_many_chains', lambda: loads.append(1))
    monkeypatch.setattr(engine, 'process_count', lambda options, parsed: 2)
    monkeypatch.setattr(engine.os, 'fork', no_fork)
    targets = ['127.0.0.1:1/smtp', '127.0.0.2:1/smtp'] * 100
    results = probe_many(targets, {'timeout': 2})
    assert forks == [1] and loads == [1]
    assert made == [True]
    assert [result['target']['address'] for result in results] == [target.partition(':')[0] for target in targets]
    assert all(result['error']['stage'] == 'connect' and 'internal error' not in result['error']['message']
               for result in results)
