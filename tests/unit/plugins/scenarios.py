# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Listener and probe records for each situation the judgement must handle.

The shapes are those of the real engines: probes as `_probe.engine.probe_many` returns them
(replies, flags and error stages as seen from Postfix 3.7, Exim 4.96, Dovecot 2.3 and
OpenSMTPD 6.8 in the lab, research/MTA-BEHAVIOUR.md), listeners as `_host.gather_host` builds
them with `_certs.StoreInspector` stores. Every scenario names the findings it must produce,
as (id, vantage) pairs, and nothing else may appear.

This is the one catalogue of such records for the unit tests: the judgement, the filters, the
reports, the policy, DANE, and fleet_assess's stand-in for probe_many all build theirs here
(`listener`, `store`, `probe`, `tls_ok`, `refused_454`, ...), so that a change of the record
shapes is made once.
"""

from __future__ import annotations

import copy

from ansible_collections.mailsec.starttls.plugins.module_utils._model import new_probe

NOW = '2026-11-28T12:00:00Z'

LAB_SHA = 'a1' * 32
OLD_SHA = 'c3' * 32
EXIM_AUTO_SHA = 'e5' * 32
MIDDLEBOX_SHA = 'b2' * 32
OTHER_SHA = 'd4' * 32


def describe(sha=LAB_SHA, subject='CN=mail.lab.test', issuer='CN=mailsec lab CA', not_after='2027-11-28T00:00:00Z',
             not_before='2026-11-01T00:00:00Z', self_signed=False, **extra) -> dict:
    record = {
        'sha256': sha, 'subject': subject, 'issuer': issuer,
        'sans': ['DNS:mail.lab.test', 'IP:127.0.10.1'], 'serial': '1a2b',
        'not_before': not_before, 'not_after': not_after, 'days_left': 365, 'expired': False,
        'self_signed': self_signed, 'key_type': 'RSA', 'key_bits': 2048,
        'signature_algorithm': 'sha256WithRSAEncryption', 'hostname_match': None, 'error': None,
    }
    record.update(extra)
    return record


def presented(sha=LAB_SHA, verified=True, verify_error=None, **extra) -> dict:
    record = describe(sha, **extra)
    record.update({'chain_length': 2, 'verified': verified, 'verify_error': verify_error})
    return record


EXIM_AUTO = dict(presented(EXIM_AUTO_SHA, verified=False, verify_error='self-signed certificate',
                           subject='C=UK,O=Exim Developers,CN=lab-host', issuer='C=UK,O=Exim Developers,CN=lab-host',
                           self_signed=True, not_before='2026-11-28T11:00:00Z', not_after='2026-11-28T13:00:00Z'),
                 sans=[], chain_length=1, key_bits=2048)
MIDDLEBOX = presented(MIDDLEBOX_SHA, verified=False, verify_error='unable to get local issuer certificate',
                      subject='CN=FortiGate', issuer='CN=FortiGate CA')


def store(sha=LAB_SHA, cert='/etc/ssl/lab/mail.crt', key='/etc/ssl/lab/mail.key', usable=True, problems=(),
          exposed=False, matches=True, describe_extra=None, complete=True) -> dict:
    return {
        'certificate': {'path': cert, 'exists': True, 'readable_by': 'root', 'readable': True, 'parses': True,
                        'describe': describe(sha, **(describe_extra or {})), 'chain_length': 1},
        'key': {'path': key, 'exists': True, 'readable': True, 'owner': 'root', 'group': 'root',
                'mode': '0644' if exposed else '0600', 'exposed': exposed, 'encrypted': False, 'type': 'RSA',
                'matches_certificate': matches},
        'chain': {'complete': complete, 'error': None if complete else 'unable to get local issuer certificate'},
        'usable': usable,
        'problems': [{'id': pid, 'message': message} for pid, message in problems],
        'unknown': [],
    }


def missing_store(cert='/etc/postfix/missing.pem', key='/etc/postfix/missing.key') -> dict:
    result = store(cert=cert, key=key, usable=False,
                   problems=[('certificate-missing', f'{cert}: no such file'), ('key-missing', f'{key}: no such file')])
    result['certificate'].update({'exists': False, 'readable': None, 'parses': None, 'describe': None})
    result['key'].update({'exists': False, 'readable': None, 'exposed': None, 'matches_certificate': None,
                          'owner': None, 'group': None, 'mode': None, 'type': None})
    result['chain'] = {'complete': None, 'error': None}
    return result


def listener(mta, address, port, protocol, host='mx1', service=None, offers=True, cert=None, key=None,
             store_record=None, listening=True, defined_at=None, tls_mode=None, source=None, **extra) -> dict:
    implicit = protocol in ('smtps', 'imaps', 'pop3s')
    record = {
        'id': f'{mta}/{mta}/{service or port}/{address}:{port}',
        'host': host, 'address': address, 'port': port, 'protocol': protocol,
        'tls_mode': tls_mode or ('implicit' if implicit else 'starttls'),
        'mta': mta, 'instance': mta, 'service': service or str(port),
        'defined_at': defined_at or f'/etc/{mta}/{mta}.conf:12',
        'offers_starttls': False if implicit else offers,
        'offers_starttls_reason': 'test configuration',
        'binding': {'certificate': cert, 'key': key, 'chain': [],
                    'source': source or (f'/etc/{mta}/{mta}.conf:20 tls_cert' if cert else 'default (none configured)'),
                    'resolved': True, 'alternates': [], 'sni': []},
        'reader_user': 'root', 'listening': listening, 'owner': None,
        'probe_address': '127.0.0.1' if address == '0.0.0.0' else address,
        'wildcard': address == '0.0.0.0', 'derived_from': None, 'tls_settings': {}, 'notes': [],
        'probe': None,
    }
    if store_record is not None:
        record['binding']['store'] = store_record
    record.update(extra)
    return record


def blackbox(address, port, protocol, host='partner', **extra) -> dict:
    record = {'host': host, 'address': address, 'port': port, 'protocol': protocol}
    record.update(extra)
    return record


SMTP_GREETING = {'code': '220', 'lines': ['mail.lab.test ESMTP Postfix (Debian/GNU)']}
SMTP_CAPS = ['PIPELINING', 'SIZE 10240000', 'VRFY', 'ETRN', 'STARTTLS', 'ENHANCEDSTATUSCODES', '8BITMIME',
             'DSN', 'SMTPUTF8', 'CHUNKING']
SMTP_CAPS_TLS = [cap for cap in SMTP_CAPS if cap != 'STARTTLS']


def probe(address, port, protocol, vantage='controller', sni=None, name=None, **fields) -> dict:
    """A probe that connected and read the greeting and capabilities as the lab's MTAs give them;
    `name` is the host name the target was given as (the address is one it resolved to)."""
    record = new_probe(address, port, protocol, sni, vantage, name)
    record.update({'connected': True, 'peer_address': address})
    if record['tls_mode'] == 'starttls':
        if protocol in ('smtp', 'submission', 'lmtp'):
            record.update({'greeting': copy.deepcopy(SMTP_GREETING), 'capabilities': list(SMTP_CAPS),
                           'capabilities_reply': {'code': '250', 'text': 'mail.lab.test\n' + '\n'.join(SMTP_CAPS)},
                           'starttls_advertised': True})
        elif protocol == 'imap':
            record.update({'greeting': {'code': 'OK', 'lines': ['* OK [CAPABILITY IMAP4rev1 STARTTLS] Dovecot (Debian) ready.']},
                           'capabilities': ['IMAP4rev1', 'SASL-IR', 'LOGIN-REFERRALS', 'ID', 'ENABLE', 'IDLE',
                                            'LITERAL+', 'STARTTLS', 'LOGINDISABLED'],
                           'starttls_advertised': True})
        elif protocol == 'pop3':
            record.update({'greeting': {'code': '+OK', 'lines': ['+OK Dovecot (Debian) ready.']},
                           'capabilities': ['CAPA', 'TOP', 'UIDL', 'RESP-CODES', 'PIPELINING', 'AUTH-RESP-CODE',
                                            'STLS', 'SASL'],
                           'starttls_advertised': True})
    record.update(fields)
    return record


def tls_ok(address, port, protocol, vantage='controller', certificate=None, version='TLSv1.3', **fields) -> dict:
    ok_code = {'imap': 'OK', 'pop3': '+OK', 'sieve': 'OK'}.get(protocol, '220')
    record = probe(address, port, protocol, vantage,
                   tls={'established': True, 'version': version, 'cipher': 'TLS_AES_256_GCM_SHA384', 'error': None,
                        'sni': None},
                   certificate=copy.deepcopy(certificate or presented()))
    if record['tls_mode'] == 'starttls':
        record['starttls_reply'] = {'code': ok_code, 'text': '2.0.0 Ready to start TLS' if ok_code == '220'
                                    else 'Begin TLS negotiation now.'}
        record['capabilities_after_tls'] = list(SMTP_CAPS_TLS)
    else:
        record['greeting'] = copy.deepcopy(SMTP_GREETING)
        record['capabilities_after_tls'] = list(SMTP_CAPS_TLS)
    record.update(fields)
    return record


def refused_454(address, port, vantage='controller', text='4.7.0 TLS not available due to local problem', sni=None,
                name=None, **fields):
    record = probe(address, port, 'smtp', vantage, sni, name, starttls_reply={'code': '454', 'text': text})
    record.update(fields)
    return record


def handshake_fails(address, port, protocol, vantage='controller', reply=None, plaintext=None,
                    message='connection closed during the TLS handshake'):
    record = probe(address, port, protocol, vantage)
    if record['tls_mode'] == 'starttls':
        record['starttls_reply'] = reply or {'code': '220', 'text': '2.0.0 Ready to start TLS'}
    tls = {'established': False, 'version': None, 'cipher': None, 'error': message, 'sni': None}
    if plaintext:
        tls['server_plaintext'] = plaintext
        tls['error'] = f'{message}; the server answered in plaintext: {plaintext!r}'
    record.update({'tls': tls, 'error': {'stage': 'handshake', 'message': tls['error']},
                   'flags': ['connection_closed']})
    if record['tls_mode'] == 'implicit':
        record['greeting'] = None
    return record


def not_advertised(address, port, vantage='controller', sni=None, name=None, **fields):
    caps = [cap for cap in SMTP_CAPS if cap != 'STARTTLS']
    record = probe(address, port, 'smtp', vantage, sni, name, capabilities=caps, starttls_advertised=False,
                   capabilities_reply={'code': '250', 'text': 'mail.lab.test\n' + '\n'.join(caps)})
    record.update(fields)
    return record


def unreachable(address, port, protocol='smtp', vantage='controller', message='connection refused', flags=(),
                sni=None):
    record = new_probe(address, port, protocol, sni, vantage)
    record.update({'error': {'stage': 'connect', 'message': message}, 'flags': list(flags)})
    return record


def with_probe(record: dict, own: dict) -> dict:
    record = dict(record)
    record['probe'] = own
    return record


def scenarios() -> dict:
    """name -> {'listeners', 'probes', 'options', 'expect': [(id, vantage), ...]} and optional checks:
    'fix_contains', 'summary_contains' (text in every finding), 'severity' ({id: severity}),
    'severities' ({(id, vantage): severity})."""
    cases = {}

    def case(name, listeners, probes, expect, options=None, **extra):
        cases[name] = dict({'listeners': listeners, 'probes': probes, 'options': dict(options or {}, now=NOW),
                            'expect': sorted(expect, key=repr)}, **extra)

    # Everything right, seen from the host and the controller.
    good = listener('postfix', '127.0.10.1', 25, 'smtp', service='127.0.10.1:smtp', cert='/etc/ssl/lab/mail.crt',
                    key='/etc/ssl/lab/mail.key', store_record=store())
    case('postfix-good', [with_probe(good, tls_ok('127.0.10.1', 25, 'smtp', 'host'))],
         [tls_ok('127.0.10.1', 25, 'smtp')], [])

    # KB Q237327 alive: Postfix advertises with a missing file and answers 454.
    missing = listener('postfix', '127.0.10.2', 25, 'smtp', service='127.0.10.2:smtp', cert='/etc/postfix/missing.pem',
                       key='/etc/postfix/missing.key', store_record=missing_store())
    case('postfix-missing-file-454', [with_probe(missing, refused_454('127.0.10.2', 25, 'host'))],
         [refused_454('127.0.10.2', 25)],
         [('certificate-unreadable', None), ('starttls-advertised-without-certificate', 'host'),
          ('starttls-advertised-without-certificate', 'controller')])

    # The same seen only statically: no probe reached it.
    case('postfix-missing-file-static', [missing], [unreachable('127.0.10.2', 25, message='timed out', flags=['timeout'])],
         [('certificate-unreadable', None), ('starttls-advertised-without-certificate', None),
          ('probe-failed', 'controller')])

    # Exim: listener A has its certificate; B (TLS on globally) completes TLS with Exim's self-made one.
    exim_a = listener('exim', '127.0.20.1', 25, 'smtp', cert='/etc/exim4/lab.crt', key='/etc/exim4/lab.key',
                      store_record=store(cert='/etc/exim4/lab.crt', key='/etc/exim4/lab.key'),
                      reader_user='Debian-exim')
    exim_b = listener('exim', '127.0.20.2', 25, 'smtp', reader_user='Debian-exim')
    case('exim-self-made-certificate',
         [with_probe(exim_a, tls_ok('127.0.20.1', 25, 'smtp', 'host')),
          with_probe(exim_b, tls_ok('127.0.20.2', 25, 'smtp', 'host', certificate=EXIM_AUTO))],
         [tls_ok('127.0.20.1', 25, 'smtp'), tls_ok('127.0.20.2', 25, 'smtp', certificate=EXIM_AUTO)],
         [('presented-certificate-differs', 'host'), ('presented-certificate-differs', 'controller'),
          ('validation-failure', 'host'), ('validation-failure', 'controller'),
          ('certificate-expiring', 'host'), ('certificate-expiring', 'controller')])
    case('exim-self-made-certificate-remote-only', [exim_a, exim_b],
         [tls_ok('127.0.20.1', 25, 'smtp'), tls_ok('127.0.20.2', 25, 'smtp', certificate=EXIM_AUTO)],
         [('presented-certificate-differs', 'controller'), ('tls-terminated-elsewhere', 'controller'),
          ('validation-failure', 'controller'), ('certificate-expiring', 'controller')])

    # OpenSMTPD: a valid pki (the store is usable) and yet every handshake aborts (EVP lib).
    opensmtpd = listener('opensmtpd', '127.0.40.1', 25, 'smtp', cert='/etc/smtpd/lab.crt', key='/etc/smtpd/lab.key',
                         store_record=store(cert='/etc/smtpd/lab.crt', key='/etc/smtpd/lab.key'))
    case('opensmtpd-valid-config-handshake-fails',
         [with_probe(opensmtpd, handshake_fails('127.0.40.1', 25, 'smtp', 'host'))],
         [handshake_fails('127.0.40.1', 25, 'smtp')],
         [('starttls-advertised-without-certificate', 'host'),
          ('starttls-advertised-without-certificate', 'controller')], fix_contains='EVP lib')

    # Dovecot: an un-bound local IP says OK, then BYE in plaintext.
    dovecot = listener('dovecot', '127.0.30.2', 143, 'imap', service='imap-login')
    case('dovecot-ok-then-bye',
         [with_probe(dovecot, handshake_fails('127.0.30.2', 143, 'imap', 'host',
                                              reply={'code': 'OK', 'text': 'Begin TLS negotiation now.'},
                                              plaintext='* BYE [UNAVAILABLE] TLS initialization failed.\r\n',
                                              message='[SSL: WRONG_VERSION_NUMBER] wrong version number'))],
         [handshake_fails('127.0.30.2', 143, 'imap', reply={'code': 'OK', 'text': 'Begin TLS negotiation now.'},
                          plaintext='* BYE [UNAVAILABLE] TLS initialization failed.\r\n',
                          message='EOF occurred in violation of protocol')],
         [('starttls-advertised-without-certificate', 'host'),
          ('starttls-advertised-without-certificate', 'controller')], summary_contains='BYE')
    dovecot_pop = listener('dovecot', '127.0.30.2', 110, 'pop3', service='pop3-login')
    case('dovecot-pop3-ok-then-err', [dovecot_pop],
         [handshake_fails('127.0.30.2', 110, 'pop3', reply={'code': '+OK', 'text': 'Begin TLS negotiation now.'},
                          plaintext='-ERR [SYS/TEMP] TLS initialization failed.\r\n')],
         [('starttls-advertised-without-certificate', 'controller')])

    # A usable certificate, TLS off: STARTTLS should be offered.
    tls_off = listener('postfix', '127.0.10.3', 587, 'submission', service='127.0.10.3:submission', offers=False,
                       tls_mode='none', cert='/etc/ssl/lab/mail.crt', key='/etc/ssl/lab/mail.key', store_record=store())
    case('starttls-not-offered', [with_probe(tls_off, not_advertised('127.0.10.3', 587, 'host'))], [],
         [('starttls-not-offered', 'host')])
    case('starttls-not-offered-static', [tls_off], [], [('starttls-not-offered', None)])
    case('starttls-not-offered-raised', [tls_off], [], [('starttls-not-offered', None)],
         options={'starttls_not_offered_severity': 'high'}, severity={'starttls-not-offered': 'high'})

    # TLS off and no usable certificate: exactly what the rule wants.
    compliant = listener('postfix', '127.0.10.4', 25, 'smtp', offers=False, tls_mode='none')
    case('no-certificate-no-starttls', [with_probe(compliant, not_advertised('127.0.10.4', 25, 'host'))],
         [not_advertised('127.0.10.4', 25)], [])

    # Implicit TLS without a certificate: Postfix wrapper mode drops the connection.
    smtps = listener('postfix', '127.0.10.1', 465, 'smtps', service='127.0.10.1:submissions')
    case('implicit-tls-without-certificate', [smtps],
         [handshake_fails('127.0.10.1', 465, 'smtps', message='[Errno 104] Connection reset by peer')],
         [('implicit-tls-without-certificate', 'controller')])
    case('implicit-tls-without-certificate-static', [smtps], [],
         [('implicit-tls-without-certificate', None)])

    # A middlebox: STARTTLS removed on the way to the controller, masked on the way to the jump host.
    stripped = listener('postfix', '127.0.60.1', 25, 'smtp', cert='/etc/ssl/lab/mail.crt', key='/etc/ssl/lab/mail.key',
                        store_record=store())
    case('starttls-stripped',
         [with_probe(stripped, tls_ok('127.0.60.1', 25, 'smtp', 'host'))],
         [not_advertised('127.0.60.1', 25),
          not_advertised('127.0.60.1', 25, 'jump:bastion', flags=['masked'],
                         capabilities=['PIPELINING', 'SIZE 10240000', 'XXXXXXXA', '8BITMIME'],
                         greeting={'code': '220', 'lines': ['*******************************']})],
         [('starttls-stripped', 'controller'), ('middlebox-masking', 'jump:bastion')])
    # Without the host's own probe the configuration is the reference.
    case('starttls-stripped-vs-configuration', [stripped], [not_advertised('127.0.60.1', 25)],
         [('starttls-stripped', 'controller')])

    # A TLS-inspecting device presents its own certificate to the jump host.
    case('tls-terminated-elsewhere',
         [with_probe(stripped, tls_ok('127.0.60.1', 25, 'smtp', 'host'))],
         [tls_ok('127.0.60.1', 25, 'smtp', 'jump:bastion', certificate=MIDDLEBOX)],
         [('tls-terminated-elsewhere', 'jump:bastion'), ('validation-failure', 'jump:bastion')])

    # Renewed on disk, not reloaded: the server still serves the old certificate.
    renewed = listener('postfix', '127.0.10.5', 25, 'smtp', cert='/etc/ssl/lab/mail.crt', key='/etc/ssl/lab/mail.key',
                       store_record=store(LAB_SHA))
    case('presented-certificate-differs',
         [with_probe(renewed, tls_ok('127.0.10.5', 25, 'smtp', 'host', certificate=presented(OLD_SHA)))],
         [tls_ok('127.0.10.5', 25, 'smtp', certificate=presented(OLD_SHA))],
         [('presented-certificate-differs', 'host'), ('presented-certificate-differs', 'controller')])

    # NO STARTTLS: response injection and command injection.
    surplus = tls_ok('127.0.60.1', 25, 'smtp', flags=['response_injection'],
                     pre_tls_surplus='250-injected <script>alert(1)</script>\r\n')
    injection = tls_ok('127.0.60.1', 25, 'smtp', 'jump:bastion', flags=['command_injection'],
                       injected_reply='250 2.0.0 Ok\r\n')
    case('injection', [stripped], [surplus, injection],
         [('pre-tls-surplus', 'controller'), ('starttls-command-injection', 'jump:bastion')])

    # Legacy protocol and STARTTLS inside TLS.
    legacy = tls_ok('127.0.10.1', 25, 'smtp', version='TLSv1', flags=['legacy_tls', 'starttls_after_tls'])
    case('legacy-tls', [good], [legacy], [('legacy-tls-protocol', 'controller'), ('starttls-after-tls', 'controller')])

    # Drift: configured but not listening; listening but not configured.
    gone = listener('dovecot', '127.0.30.9', 993, 'imaps', cert='/etc/ssl/lab/mail.crt', key='/etc/ssl/lab/mail.key',
                    store_record=store(), listening=False)
    case('listener-drift', [gone], [unreachable('127.0.30.9', 993, 'imaps')],
         [('listener-drift', None), ('listener-drift', None), ('probe-failed', 'controller')],
         options={'unmatched_sockets': [{'host': 'mx1', 'address': '0.0.0.0', 'port': 2525, 'pid': 4242,
                                         'process': 'python3', 'mta': None, 'protocol_guess': None,
                                         'reason': 'listening but no configured listener matches'}]},
         severities={('probe-failed', 'controller'): 'info'})

    # A package's default configuration that is not running (Debian's dovecot-core without a
    # certificate): one drift finding naming the store problems, no certificate findings.
    dormant = listener('dovecot', '0.0.0.0', 143, 'imap', cert='/etc/dovecot/private/dovecot.pem',
                       key='/etc/dovecot/private/dovecot.key',
                       store_record=missing_store('/etc/dovecot/private/dovecot.pem', '/etc/dovecot/private/dovecot.key'),
                       listening=False)
    case('not-listening-with-broken-store', [dormant], [], [('listener-drift', None)],
         severities={('listener-drift', None): 'info'}, summary_contains='certificate-missing')

    # Black box (no host access): judged from the network alone.
    partner = blackbox('127.0.60.2', 25, 'smtp', mta='exchange')
    case('blackbox-554', [partner],
         [refused_454('127.0.60.2', 25, text='Unable to initialize security subsystem')],
         [('starttls-advertised-without-certificate', 'controller')], fix_contains='Exchange')
    case('blackbox-not-offered', [blackbox('127.0.60.3', 25, 'smtp')], [not_advertised('127.0.60.3', 25)],
         [('starttls-not-offered', 'controller')])
    expired = presented(OTHER_SHA, not_after='2026-10-01T00:00:00Z', expired=True, days_left=-58)
    case('blackbox-expired', [blackbox('127.0.60.4', 993, 'imaps')],
         [tls_ok('127.0.60.4', 993, 'imaps', certificate=expired)], [('certificate-expired', 'controller')])
    case('blackbox-unreachable', [blackbox('127.0.60.5', 25, 'smtp')],
         [unreachable('127.0.60.5', 25, message='timed out after 10.0 s', flags=['timeout'])],
         [('probe-failed', 'controller')], severities={('probe-failed', 'controller'): 'medium'})
    case('blackbox-vantages-disagree', [blackbox('127.0.60.6', 25, 'smtp')],
         [tls_ok('127.0.60.6', 25, 'smtp'), tls_ok('127.0.60.6', 25, 'smtp', 'jump:bastion', certificate=presented(OTHER_SHA))],
         [('inconsistent-answers', 'controller'), ('inconsistent-answers', 'jump:bastion')])
    case('blackbox-stripped-by-comparison', [blackbox('127.0.60.7', 25, 'smtp')],
         [tls_ok('127.0.60.7', 25, 'smtp'), not_advertised('127.0.60.7', 25, 'jump:bastion')],
         [('starttls-stripped', 'jump:bastion')])
    pinned = blackbox('127.0.60.11', 587, 'submission', mta='exchange', expected_certificates=[LAB_SHA.upper()])
    other_cert = tls_ok('127.0.60.11', 587, 'submission', 'jump:bastion', certificate=presented(OTHER_SHA))
    case('blackbox-pinned-certificate', [pinned], [tls_ok('127.0.60.11', 587, 'submission'), other_cert],
         [('presented-certificate-differs', 'jump:bastion'), ('inconsistent-answers', 'controller'),
          ('inconsistent-answers', 'jump:bastion')])
    case('greeting-refused', [blackbox('127.0.60.8', 25, 'smtp')],
         [probe('127.0.60.8', 25, 'smtp', greeting={'code': '554', 'lines': ['5.7.1 no service for you']},
                capabilities=[], starttls_advertised=None, flags=['greeting_refused'])],
         [('probe-failed', 'controller')], severities={('probe-failed', 'controller'): 'info'})

    # Host-side certificate problems, described once (vantage None) even when served.
    soon = listener('postfix', '127.0.10.6', 25, 'smtp', cert='/etc/ssl/lab/soon.crt', key='/etc/ssl/lab/soon.key',
                    store_record=store(OTHER_SHA, describe_extra={'not_after': '2026-12-08T00:00:00Z', 'days_left': 9}))
    served_soon = tls_ok('127.0.10.6', 25, 'smtp', 'host', certificate=presented(OTHER_SHA, not_after='2026-12-08T00:00:00Z'))
    case('certificate-expiring-host-side', [with_probe(soon, served_soon)], [], [('certificate-expiring', None)])
    case('certificate-expiring-window', [soon], [], [], options={'expiring_days': 5})
    exposed = listener('postfix', '127.0.10.7', 25, 'smtp', cert='/etc/ssl/lab/mail.crt', key='/etc/ssl/lab/mail.key',
                       store_record=store(exposed=True, problems=[('private-key-exposed',
                                                                   '/etc/ssl/lab/mail.key: mode 0644, owner root:root: readable by other')]))
    case('private-key-exposed', [exposed], [], [('private-key-exposed', None)])
    mismatch = listener('exim', '127.0.20.3', 25, 'smtp', cert='/etc/exim4/a.crt', key='/etc/exim4/b.key',
                        store_record=store(usable=False, matches=False, problems=[
                            ('certificate-key-mismatch', '/etc/exim4/b.key:1: the RSA private key does not match')]))
    case('certificate-key-mismatch', [mismatch],
         [refused_454('127.0.20.3', 25, text='TLS currently unavailable')],
         [('certificate-key-mismatch', None), ('starttls-advertised-without-certificate', 'controller')])

    # Sendmail fails closed: the keyword disappears when the certificate does not load.
    sendmail = listener('sendmail', '127.0.50.1', 25, 'smtp', cert='/etc/mail/tls/gone.pem', key='/etc/mail/tls/gone.key',
                        store_record=missing_store('/etc/mail/tls/gone.pem', '/etc/mail/tls/gone.key'))
    case('sendmail-fails-closed', [sendmail], [not_advertised('127.0.50.1', 25)], [('certificate-unreadable', None)])

    # A wildcard listener probed on two of its addresses from one vantage: one finding.
    wildcard = listener('postfix', '0.0.0.0', 25, 'smtp', host='mx2', service='smtp', cert='/etc/postfix/gone.pem',
                        key='/etc/postfix/gone.pem', store_record=missing_store('/etc/postfix/gone.pem', '/etc/postfix/gone.pem'))
    case('wildcard-dedupe', [wildcard],
         [refused_454('127.0.0.1', 25), refused_454('127.0.60.9', 25)],
         [('certificate-unreadable', None), ('starttls-advertised-without-certificate', 'controller')],
         options={'host_addresses': {'mx2': ['127.0.60.9']}})

    # A probe of something nobody listed is judged all the same.
    case('unmatched-probe', [], [refused_454('127.0.60.10', 25)],
         [('starttls-advertised-without-certificate', 'controller')])
    return cases
