# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lab's scenarios: which daemons it runs, on which loopback address and port each listener
sits, which certificate each one is bound to, and what the real server does on the wire there
(``Expect``, observed with a plain client; see README.md). Pure data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

from lab_common import LabError  # pylint: disable=import-error

PROFILES = ('full', 'demo')
MTAS = ('postfix', 'exim', 'dovecot', 'opensmtpd')

PORT_PROTOCOL = {25: 'smtp', 587: 'submission', 465: 'smtps', 24: 'lmtp', 143: 'imap',
                 993: 'imaps', 110: 'pop3', 995: 'pop3s', 4190: 'sieve'}
IMPLICIT_TLS_PROTOCOLS = frozenset({'smtps', 'imaps', 'pop3s'})


@dataclass(frozen=True)
class CertSpec:
    name: str
    kind: str                      # 'ca', 'leaf', 'expired', 'self-signed', 'key-only'
    common_name: str | None = None
    ip_addresses: tuple[str, ...] = ()
    key_group: str | None = None   # group allowed to read the key (mode 0640); else 0600 root


CERTIFICATES = (
    CertSpec('lab-ca', 'ca', 'mailsec lab CA'),
    CertSpec('postfix-a', 'leaf', 'mail-a.lab.test', ('127.0.10.1', '127.0.10.3', '127.0.10.4', '127.0.10.5')),
    CertSpec('postfix-b', 'leaf', 'mail-b.lab.test', ('127.0.11.1',)),
    # Exim's daemon reads certificates as Debian-exim, not as root: its keys must be readable
    # by that group or every handshake fails with 454 (an "unreadable" case, not the one meant).
    CertSpec('exim', 'leaf', 'exim.lab.test', ('127.0.20.1', '127.0.20.3', '127.0.20.4', '127.0.20.5'),
             key_group='Debian-exim'),
    CertSpec('dovecot', 'leaf', 'imap.lab.test', ('127.0.30.1', '127.0.30.3', '127.0.30.4', '127.0.30.5')),
    CertSpec('opensmtpd', 'leaf', 'smtpd.lab.test', ('127.0.40.1', '127.0.40.3', '127.0.40.4', '127.0.40.5')),
    CertSpec('demo', 'leaf', 'mail.lab.test', ('127.0.60.1',)),
    CertSpec('expired', 'expired', 'expired.lab.test', ('127.0.11.2',)),
    CertSpec('self-signed', 'self-signed', 'selfsigned.lab.test', ('127.0.11.3',)),
    CertSpec('unrelated-key', 'key-only'),
    CertSpec('unrelated-key-exim', 'key-only', key_group='Debian-exim'),
)
CERT_BY_NAME = {spec.name: spec for spec in CERTIFICATES}
ABSENT_PREFIX = 'absent:'   # a binding to a certificate path that does not exist


@dataclass(frozen=True)
class Expect:
    """What the real server does, observed with a plain client (see README.md)."""
    starts: bool = True
    advertised: bool | None = None
    starttls_code: str | None = None
    handshake: bool | None = None
    cert: str | None = None          # name of the certificate the handshake presents
    notes: str = ''


def works(cert: str, code: str, notes: str = '') -> Expect:
    return Expect(advertised=True, starttls_code=code, handshake=True, cert=cert, notes=notes)


def implicit(handshake: bool, cert: str | None = None, notes: str = '') -> Expect:
    return Expect(advertised=None, starttls_code=None, handshake=handshake, cert=cert, notes=notes)


def refused(code: str, advertised: bool, notes: str = '') -> Expect:
    return Expect(advertised=advertised, starttls_code=code, handshake=None, notes=notes)


def broken_after_yes(code: str, notes: str) -> Expect:
    return Expect(advertised=True, starttls_code=code, handshake=False, notes=notes)


def never_starts(notes: str) -> Expect:
    return Expect(starts=False, notes=notes)


@dataclass(frozen=True)
class ListenerSpec:
    scenario: str
    address: str
    port: int
    service: str
    bound_cert: str | None            # certificate name, ABSENT_PREFIX + name, or None
    expect: Expect
    options: tuple[tuple[str, str], ...] = ()   # MTA-specific per-listener settings
    bound_key: str | None = None      # when the key is not the certificate's own (key-mismatch)

    @property
    def protocol(self) -> str:
        return PORT_PROTOCOL[self.port]


@dataclass
class InstanceSpec:
    mta: str
    instance: str
    profiles: frozenset[str]
    expect_starts: bool
    listeners: list[ListenerSpec]
    settings: dict = field(default_factory=dict)


PF_SERVICE_NAME = {25: 'smtp', 587: 'submission', 465: 'submissions'}


def postfix_listener(scenario: str, address: str, port: int, bound_cert: str | None,
                     expect: Expect, options: dict[str, str] | None = None,
                     bound_key: str | None = None) -> ListenerSpec:
    options = dict(options or {})
    if port == 465:
        options['smtpd_tls_wrappermode'] = 'yes'
    return ListenerSpec(scenario, address, port, f'{address}:{PF_SERVICE_NAME[port]}', bound_cert,
                        expect, tuple(options.items()), bound_key)


def postfix_cert_options(cert: str, chain_files: bool = False) -> dict[str, str]:
    # Placeholders, resolved against the lab root when the configuration is written.
    if chain_files:
        return {'smtpd_tls_chain_files': f'{{key:{cert}}},{{cert:{cert}}}'}
    return {'smtpd_tls_cert_file': f'{{cert:{cert}}}', 'smtpd_tls_key_file': f'{{key:{cert}}}'}


PF_454 = 'Postfix loads the certificate per session; it advertises STARTTLS anyway, then replies 454'


def postfix_instances() -> list[InstanceSpec]:
    a = '127.0.10.'
    cert_a = postfix_cert_options('postfix-a')
    absent_a = {'smtpd_tls_cert_file': '{absent:postfix-a.crt}', 'smtpd_tls_key_file': '{absent:postfix-a.key}'}
    mismatch_a = {'smtpd_tls_cert_file': '{cert:postfix-a}', 'smtpd_tls_key_file': '{key:unrelated-key}'}
    instance_a = InstanceSpec('postfix', 'postfix-a', frozenset({'full'}), True, [
        postfix_listener('compliant', a + '1', 25, 'postfix-a', works('postfix-a', '220'), cert_a),
        postfix_listener('compliant', a + '1', 587, 'postfix-a', works('postfix-a', '220'), cert_a),
        postfix_listener('compliant', a + '1', 465, 'postfix-a', implicit(True, 'postfix-a'), cert_a),
        postfix_listener('cert-missing', a + '2', 25, ABSENT_PREFIX + 'postfix-a',
                         refused('454', True, PF_454 + ' (cannot get RSA certificate from file)'), absent_a),
        postfix_listener('key-mismatch', a + '3', 25, 'postfix-a',
                         refused('454', True, PF_454 + ' (key does not match)'), mismatch_a, 'unrelated-key'),
        postfix_listener('tls-off-cert-present', a + '4', 25, 'postfix-a',
                         refused('502', False, 'smtpd_tls_security_level=none: 502 5.5.1 command not implemented'),
                         {'smtpd_tls_security_level': 'none', **cert_a}),
        postfix_listener('cert-bound-one-listener', a + '5', 25, 'postfix-a', works('postfix-a', '220',
                         'the one service with -o smtpd_tls_cert_file'), cert_a),
        postfix_listener('cert-bound-one-listener', a + '5', 587, None,
                         refused('454', True, 'same IP, other port, no cert: No server certs available')),
        postfix_listener('cert-bound-one-listener', a + '6', 25, None,
                         refused('454', True, 'other IP, no cert: No server certs available')),
        postfix_listener('implicit-tls-no-cert', a + '7', 465, None,
                         implicit(False, notes='TCP accepted, then dropped: Wrapper-mode request dropped')),
    ], {'hostname': 'mail-a.lab.test', 'main': {'smtpd_tls_security_level': 'may'}})

    b = '127.0.11.'
    instance_b = InstanceSpec('postfix', 'postfix-b', frozenset({'full'}), True, [
        postfix_listener('compliant', b + '1', 25, 'postfix-b', works('postfix-b', '220', 'main.cf smtpd_tls_chain_files')),
        postfix_listener('compliant', b + '1', 587, 'postfix-b', works('postfix-b', '220')),
        postfix_listener('compliant', b + '1', 465, 'postfix-b', implicit(True, 'postfix-b')),
        postfix_listener('expired-cert', b + '2', 25, 'expired',
                         works('expired', '220', 'served although expired, nothing logged'),
                         postfix_cert_options('expired', chain_files=True)),
        postfix_listener('self-signed-cert', b + '3', 25, 'self-signed',
                         works('self-signed', '220'), postfix_cert_options('self-signed', chain_files=True)),
    ], {'hostname': 'mail-b.lab.test',
        'main': {'smtpd_tls_security_level': 'may', **postfix_cert_options('postfix-b', chain_files=True)}})

    demo = InstanceSpec('postfix', 'postfix-demo', frozenset({'full', 'demo'}), True, [
        postfix_listener('demo-kb-q237327', '127.0.60.1', 25, ABSENT_PREFIX + 'demo',
                         refused('454', True, 'the KB Q237327 state: STARTTLS advertised, certificate missing, 454')),
        postfix_listener('compliant', '127.0.60.1', 587, 'demo', works('demo', '220'), postfix_cert_options('demo')),
    ], {'hostname': 'mail.lab.test',
        'main': {'smtpd_tls_security_level': 'may', 'smtpd_tls_cert_file': '{absent:demo.crt}',
                 'smtpd_tls_key_file': '{absent:demo.key}'}})
    return [instance_a, instance_b, demo]


EXIM_AUTO = ('no certificate for this address: Exim completes TLS with a self-signed certificate '
             'it makes at start (O=Exim Developers), nothing logged')


def exim_instances() -> list[InstanceSpec]:
    e = '127.0.20.'

    def listener(scenario: str, address: str, port: int, bound: str | None, expect: Expect) -> ListenerSpec:
        return ListenerSpec(scenario, address, port, f'{address}.{port}', bound, expect)

    return [
        InstanceSpec('exim', 'exim-compliant', frozenset({'full'}), True, [
            listener('compliant', e + '1', 25, 'exim', works('exim', '220')),
            listener('compliant', e + '1', 587, 'exim', works('exim', '220')),
            listener('compliant', e + '1', 465, 'exim', implicit(True, 'exim')),
        ], {'tls_certificate': '{cert:exim}', 'tls_privatekey': '{key:exim}'}),
        InstanceSpec('exim', 'exim-cert-missing', frozenset({'full'}), True, [
            listener('cert-missing', e + '2', 25, ABSENT_PREFIX + 'exim',
                     refused('454', True, 'advertised, then 454 TLS currently unavailable')),
            listener('implicit-tls-no-cert', e + '7', 465, ABSENT_PREFIX + 'exim',
                     implicit(False, notes='tls_on_connect with the configured file missing: '
                                           'accepted, closed before the handshake')),
        ], {'tls_certificate': '{absent:exim.crt}', 'tls_privatekey': '{absent:exim.key}'}),
        InstanceSpec('exim', 'exim-key-mismatch', frozenset({'full'}), True, [
            ListenerSpec('key-mismatch', e + '3', 25, f'{e}3.25', 'exim', refused('454', True, 'advertised, then 454'),
                         bound_key='unrelated-key-exim'),
        ], {'tls_certificate': '{cert:exim}', 'tls_privatekey': '{key:unrelated-key-exim}'}),
        InstanceSpec('exim', 'exim-tls-off', frozenset({'full'}), True, [
            listener('tls-off-cert-present', e + '4', 25, 'exim',
                     refused('503', False, 'tls_advertise_hosts empty: 503 STARTTLS command used when not advertised')),
        ], {'tls_certificate': '{cert:exim}', 'tls_privatekey': '{key:exim}', 'tls_advertise_hosts': ''}),
        InstanceSpec('exim', 'exim-bound', frozenset({'full'}), True, [
            listener('cert-bound-one-listener', e + '5', 25, 'exim',
                     works('exim', '220', 'tls_certificate = ${if eq{$received_ip_address}{127.0.20.5}{...}{}}')),
            listener('cert-bound-one-listener', e + '6', 25, None, Expect(
                advertised=True, starttls_code='220', handshake=True, cert=None, notes=EXIM_AUTO)),
            listener('cert-bound-one-listener', e + '6', 465, None, implicit(True, None, EXIM_AUTO)),
        ], {'tls_certificate': '${if eq{$received_ip_address}{127.0.20.5}{{cert:exim}}{}}',
            'tls_privatekey': '${if eq{$received_ip_address}{127.0.20.5}{{key:exim}}{}}'}),
    ]


DOVECOT_PORTS = (143, 993, 110, 995, 4190, 24)
DOVECOT_SERVICE = {143: 'imap-login/imap', 993: 'imap-login/imaps', 110: 'pop3-login/pop3',
                   995: 'pop3-login/pop3s', 4190: 'managesieve-login/sieve', 24: 'lmtp/lmtp'}
DOVECOT_OK = {143: 'OK', 110: '+OK', 4190: 'OK', 24: '220'}
DV_BYE = ('says it will start TLS, then sends a plaintext BYE / -ERR: TLS initialization failed '
          '(client sees WRONG_VERSION_NUMBER or EOF)')


def dovecot_listener(scenario: str, address: str, port: int, bound: str | None, expect: Expect) -> ListenerSpec:
    return ListenerSpec(scenario, address, port, DOVECOT_SERVICE[port], bound, expect)


def dovecot_instances() -> list[InstanceSpec]:
    d = '127.0.30.'
    main: list[ListenerSpec] = []
    for port in DOVECOT_PORTS:
        main.append(dovecot_listener('compliant', d + '1', port, 'dovecot',
                                     implicit(True, 'dovecot') if port in (993, 995)
                                     else works('dovecot', DOVECOT_OK[port])))
    for port in DOVECOT_PORTS:
        if port in (993, 995):
            expect = implicit(False, notes='local block key mismatch: TCP reset')
        elif port == 24:
            expect = works('dovecot', '220', 'LMTP ignores the local {} block: it serves the global cert and key')
        else:
            expect = broken_after_yes(DOVECOT_OK[port], 'local block key mismatch: ' + DV_BYE)
        main.append(ListenerSpec('key-mismatch', d + '3', port, DOVECOT_SERVICE[port], 'dovecot', expect,
                                 bound_key='dovecot' if port == 24 else 'unrelated-key'))
    for port in DOVECOT_PORTS:
        if port in (993, 995):
            expect = implicit(False, notes='local { ssl = no }: TCP reset')
        elif port == 24:
            expect = works('dovecot', '220', 'LMTP ignores local { ssl = no }: advertises and completes TLS')
        elif port == 4190:
            expect = refused('NO', True, 'ManageSieve still advertises STARTTLS under ssl = no, '
                                         'then NO "TLS support isn\'t enabled."')
        else:
            expect = refused({143: 'BAD', 110: '-ERR'}[port], False, "TLS support isn't enabled")
        main.append(dovecot_listener('tls-off-cert-present', d + '4', port, 'dovecot', expect))

    missing = [dovecot_listener('cert-missing', d + '2', port, ABSENT_PREFIX + 'dovecot',
                                never_starts("doveconf: Fatal: ssl_cert: Can't open file"))
               for port in DOVECOT_PORTS]

    bound: list[ListenerSpec] = []
    for port in DOVECOT_PORTS:
        if port == 24:
            expect = refused('502', False, 'LMTP uses the global (empty) cert: SSL disabled, 502')
        elif port in (993, 995):
            expect = implicit(True, 'dovecot', 'local 127.0.30.5 { ssl_cert }')
        else:
            expect = works('dovecot', DOVECOT_OK[port], 'local 127.0.30.5 { ssl_cert }')
        bound.append(dovecot_listener('cert-bound-one-listener', d + '5', port, 'dovecot', expect))
    for port in DOVECOT_PORTS:
        if port == 24:
            expect = refused('502', False, 'LMTP: SSL context failed, disabled, 502')
        elif port in (993, 995):
            expect = implicit(False, notes='no cert for this IP (The certificate is empty): TCP reset')
        else:
            expect = broken_after_yes(DOVECOT_OK[port], 'no cert for this IP: ' + DV_BYE)
        bound.append(dovecot_listener('cert-bound-one-listener', d + '6', port, None, expect))
    for port in (993, 995):
        bound.append(dovecot_listener('implicit-tls-no-cert', d + '7', port, None, implicit(
            False, notes='ssl = yes with no ssl_cert anywhere: Dovecot starts, resets the connection')))

    demo = [dovecot_listener('compliant', '127.0.60.1', port, 'demo', expect)
            for port, expect in ((143, works('demo', 'OK')), (993, implicit(True, 'demo')))]
    return [
        InstanceSpec('dovecot', 'dovecot-main', frozenset({'full'}), True, main, {
            'hostname': 'imap.lab.test', 'ssl': 'yes', 'cert': 'dovecot',
            'local': {d + '3': {'ssl_key': '<{key:unrelated-key}'}, d + '4': {'ssl': 'no'}}}),
        InstanceSpec('dovecot', 'dovecot-cert-missing', frozenset({'full'}), False, missing, {
            'hostname': 'imap.lab.test', 'ssl': 'yes', 'cert': ABSENT_PREFIX + 'dovecot'}),
        InstanceSpec('dovecot', 'dovecot-bound', frozenset({'full'}), True, bound, {
            'hostname': 'imap.lab.test', 'ssl': 'yes', 'cert': None,
            'local': {d + '5': {'ssl_cert': '<{cert:dovecot}', 'ssl_key': '<{key:dovecot}'}}}),
        InstanceSpec('dovecot', 'dovecot-demo', frozenset({'full', 'demo'}), True, demo, {
            'hostname': 'mail.lab.test', 'ssl': 'yes', 'cert': 'demo'}),
    ]


OS_EVP = ('OpenSMTPD 6.8.0p2 on OpenSSL 3: says 220, then the handshake aborts '
          '(smtpd log: io-error ... SSL routines::EVP lib); RSA and ECDSA keys alike')


def opensmtpd_instances() -> list[InstanceSpec]:
    o = '127.0.40.'

    def listener(scenario: str, address: str, port: int, bound: str | None, expect: Expect,
                 listen: str) -> ListenerSpec:
        return ListenerSpec(scenario, address, port, f'listen on {address} port {port}', bound, expect,
                            (('listen', listen),))

    return [
        InstanceSpec('opensmtpd', 'opensmtpd-main', frozenset({'full'}), True, [
            listener('compliant', o + '1', 25, 'opensmtpd', broken_after_yes('220', OS_EVP), 'tls pki opensmtpd'),
            listener('compliant', o + '1', 587, 'opensmtpd', broken_after_yes('220', OS_EVP),
                     'tls-require pki opensmtpd'),
            listener('compliant', o + '1', 465, 'opensmtpd', implicit(False, notes=OS_EVP), 'smtps pki opensmtpd'),
            ListenerSpec('key-mismatch', o + '3', 25, f'listen on {o}3 port 25', 'opensmtpd',
                         broken_after_yes('220', 'no startup check of the key; 220, then the handshake fails'),
                         (('listen', 'tls pki mismatch'),), 'unrelated-key'),
            listener('tls-off-cert-present', o + '4', 25, 'opensmtpd',
                     refused('503', False, 'pki declared, listener without tls: 503 5.5.1 Invalid command'), ''),
            listener('cert-bound-one-listener', o + '5', 25, 'opensmtpd', broken_after_yes('220', OS_EVP),
                     'tls pki opensmtpd'),
            listener('cert-bound-one-listener', o + '6', 25, None,
                     broken_after_yes('220', 'tls without pki: 220, then reset (smtpd log: ca-failure)'), 'tls'),
            listener('implicit-tls-no-cert', o + '7', 465, None,
                     implicit(False, notes='smtps without pki: OpenSMTPD starts; TCP reset (ca-failure)'), 'smtps'),
        ], {'pki': {'opensmtpd': ('opensmtpd', 'opensmtpd'), 'mismatch': ('opensmtpd', 'unrelated-key')}}),
        # A pki named after the listener's hostname (every lab listen line says `hostname smtpd.lab.test`)
        # on a listener without `tls`: the certificate is held, and would be served with `tls`, but is not used.
        InstanceSpec('opensmtpd', 'opensmtpd-held', frozenset({'full'}), True, [
            listener('tls-off-cert-present', o + '8', 25, 'opensmtpd',
                     refused('503', False, 'pki named after the hostname, listener without tls: not advertised, '
                             '503 5.5.1 Invalid command'), ''),
        ], {'pki': {'smtpd.lab.test': ('opensmtpd', 'opensmtpd')}}),
        InstanceSpec('opensmtpd', 'opensmtpd-cert-missing', frozenset({'full'}), False, [
            listener('cert-missing', o + '2', 25, ABSENT_PREFIX + 'opensmtpd',
                     never_starts('smtpd: load_pki_tree: failed to load certificate file'), 'tls pki opensmtpd'),
        ], {'pki': {'opensmtpd': (ABSENT_PREFIX + 'opensmtpd', ABSENT_PREFIX + 'opensmtpd')}}),
    ]


def all_instances() -> list[InstanceSpec]:
    return postfix_instances() + exim_instances() + dovecot_instances() + opensmtpd_instances()


def select_instances(profile: str, only: list[str] | None) -> list[InstanceSpec]:
    if profile not in PROFILES:
        raise LabError(f'unknown profile {profile!r}; choose one of {", ".join(PROFILES)}')
    unknown = sorted(set(only or ()) - set(MTAS))
    if unknown:
        raise LabError(f'unknown MTA in --only: {", ".join(unknown)}; choose from {", ".join(MTAS)}')
    chosen = [spec for spec in all_instances()
              if profile in spec.profiles and (not only or spec.mta in only)]
    if not chosen:
        raise LabError(f'profile {profile!r} with --only {",".join(only or [])} selects no daemon')
    return chosen


def listener_id(spec: InstanceSpec, listener: ListenerSpec) -> str:
    return f'{spec.instance}/{listener.address}:{listener.port}'


def planned_listener_ids(profile: str = 'full', only: list[str] | None = None) -> list[str]:
    """The listener ids a start with these arguments will produce (no I/O; for test collection)."""
    return [listener_id(spec, listener) for spec in select_instances(profile, only)
            for listener in spec.listeners]
