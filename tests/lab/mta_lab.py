# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Real mail servers on loopback for the collection's integration tests.

The lab starts Postfix, Exim, Dovecot and OpenSMTPD with configuration and certificates it
generates itself under one root directory, each scenario on its own loopback address and on the
standard ports, and writes ``manifest.json`` describing every daemon, certificate and listener,
together with what the real server is known to do on the wire (``expect``). See README.md.

Command line::

    python3 tests/lab/mta_lab.py start|stop|status [--root DIR] [--profile full|demo]
                                                   [--only postfix,exim,dovecot,opensmtpd]
    python3 tests/lab/mta_lab.py run INSTANCE -- COMMAND...   # inside that daemon's namespace

From Python (for example as a pytest session fixture)::

    lab = Lab('/tmp/mailsec-lab')
    manifest = lab.start()          # idempotent
    ...
    lab.stop()                      # leaves no process behind

Standard library only; needs root, Debian 12 and ``tests/lab/install.sh``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import fcntl
import hashlib
import json
import os
import pty
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

DEFAULT_ROOT = Path(os.environ.get('MAILSEC_LAB_ROOT', '/tmp/mailsec-lab'))
DEFAULT_PKGROOT = Path(os.environ.get('MAILSEC_LAB_PKGROOT', '/opt/mailsec-lab/root'))
PROFILES = ('full', 'demo')
MTAS = ('postfix', 'exim', 'dovecot', 'opensmtpd')

# Every process the lab starts gets MARKER=<root> in its environment, for people reading `ps e`.
# stop() does not rely on it (Dovecot and OpenSMTPD overwrite theirs): see is_lab_process().
MARKER = 'MAILSEC_LAB'
ROOT_MARKER_FILE = '.mailsec-lab'

# The resolver the daemons see. Nothing listens there, so a lookup fails at once on loopback
# instead of leaving the machine; tests bind a sink on it to prove that no daemon asks at all.
UNUSED_RESOLVER = '127.0.99.53'

START_DEADLINE_S = 30.0
STOP_GRACE_S = 3.0
CONNECT_TIMEOUT_S = 2.0

PORT_PROTOCOL = {25: 'smtp', 587: 'submission', 465: 'smtps', 24: 'lmtp', 143: 'imap',
                 993: 'imaps', 110: 'pop3', 995: 'pop3s', 4190: 'sieve'}
IMPLICIT_TLS_PROTOCOLS = frozenset({'smtps', 'imaps', 'pop3s'})

SAFE_ROOT = re.compile(r'^/[A-Za-z0-9._/-]+$')


class LabError(RuntimeError):
    """The lab could not do what was asked; the message says which daemon and why."""


# --------------------------------------------------------------------------------------------
# What the lab is made of: certificates, instances, listeners and what each one does.
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Processes: finding, signalling and waiting for what the lab started.
# --------------------------------------------------------------------------------------------

def _proc_state(pid: int) -> str | None:
    try:
        stat = Path(f'/proc/{pid}/stat').read_text()
    except OSError:
        return None
    return stat[stat.rindex(')') + 2:].split()[0]


def process_alive(pid: int) -> bool:
    """True for a live process; a zombie has already exited and only waits to be reaped."""
    state = _proc_state(pid)
    return state is not None and state not in ('Z', 'X')


def _mount_namespace(pid: int | str) -> str | None:
    try:
        return os.readlink(f'/proc/{pid}/ns/mnt')
    except OSError:
        return None


def _namespace_needle(root: Path) -> bytes:
    return f'lowerdir={root}/ns/etc:'.encode()


def is_lab_process(pid: int, root: str | os.PathLike) -> bool:
    """True when pid lives in a mount namespace that this lab root set up.

    Every daemon runs in a private mount namespace with the lab's overlay on /etc, and every
    child it forks stays there, whatever it does to its session, process group or environment
    (Dovecot and OpenSMTPD overwrite their environment area with process titles).
    """
    root = Path(os.path.realpath(root))
    if _mount_namespace(pid) in (None, _mount_namespace('self')):
        return False
    try:
        return _namespace_needle(root) in Path(f'/proc/{pid}/mountinfo').read_bytes()
    except OSError:
        return False


def lab_processes(root: str | os.PathLike) -> list[int]:
    """Live processes started by the lab at ``root``, found by their mount namespace."""
    root = Path(os.path.realpath(root))
    needle, own = _namespace_needle(root), _mount_namespace('self')
    by_namespace: dict[str, list[int]] = {}
    for entry in os.scandir('/proc'):
        if entry.name.isdigit():
            namespace = _mount_namespace(entry.name)
            if namespace is not None and namespace != own:
                by_namespace.setdefault(namespace, []).append(int(entry.name))
    found = []
    for pids in by_namespace.values():
        for pid in pids:
            try:
                mountinfo = Path(f'/proc/{pid}/mountinfo').read_bytes()
            except OSError:
                continue
            if needle in mountinfo:
                found.extend(p for p in pids if process_alive(p))
            break
    return sorted(found)


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.scandir(f'/proc/{pid}/fd'):
            with contextlib.suppress(OSError):
                target = os.readlink(fd.path)
                if target.startswith('socket:['):
                    inodes.add(target[8:-1])
    return inodes


def _decode_proc_address(hex_address: str) -> tuple[str, int]:
    address, port = hex_address.split(':')
    raw = bytes.fromhex(address)
    if len(raw) == 4:
        ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
    else:
        ip = socket.inet_ntop(socket.AF_INET6, b''.join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
    return ip, int(port, 16)


def socket_table() -> list[dict]:
    """Every TCP listener and UDP socket of this network namespace, from /proc/net."""
    table = []
    for kind in ('tcp', 'tcp6', 'udp', 'udp6'):
        with contextlib.suppress(OSError):
            lines = Path(f'/proc/net/{kind}').read_text().splitlines()[1:]
            for line in lines:
                fields = line.split()
                listening = kind.startswith('tcp') and fields[3] == '0A'
                if kind.startswith('tcp') and not listening:
                    continue
                address, port = _decode_proc_address(fields[1])
                table.append({'kind': kind, 'address': address, 'port': port, 'inode': fields[9]})
    return table


def listening_now() -> set[tuple[str, int]]:
    return {(row['address'], row['port']) for row in socket_table() if row['kind'].startswith('tcp')}


def lab_sockets(root: str | os.PathLike) -> list[dict]:
    """TCP listeners and UDP sockets held by the lab's processes, with the owning pid."""
    owners: dict[str, int] = {}
    for pid in lab_processes(root):
        for inode in _socket_inodes(pid):
            owners.setdefault(inode, pid)
    return [dict(row, pid=owners[row['inode']]) for row in socket_table() if row['inode'] in owners]


def can_connect(address: str, port: int, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def _read_available(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except (BlockingIOError, OSError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b''.join(chunks)


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors='replace')
    except OSError:
        return ''
    return '\n'.join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------------------------
# One daemon: configuration, namespace, launch.
# --------------------------------------------------------------------------------------------

@dataclass
class Daemon:
    spec: InstanceSpec
    directory: Path
    config_path: Path
    argv: list[str]
    mounts: list[list[str]]
    log_files: list[Path]
    pidfile: Path | None = None
    uses_pty: bool = False           # Postfix prints start-up errors only to a terminal
    process: subprocess.Popen | None = None
    pty_master: int | None = None
    pid: int | None = None
    started: bool = False
    ready_seconds: float | None = None
    exited: bool = False
    error: str | None = None

    @property
    def name(self) -> str:
        return self.spec.instance

    def output_log(self) -> Path:
        return self.directory / 'launch.log'

    def describe_failure(self, reason: str) -> str:
        parts = [f'{self.name} ({self.spec.mta}) failed to start: {reason}']
        for log in [self.output_log(), *self.log_files]:
            text = tail(log)
            if text.strip():
                parts.append(f'--- {log} (last lines) ---\n{text}')
        return '\n'.join(parts)


class Lab:
    """The lab rooted at one directory. Not thread-safe; concurrent processes are serialised."""

    def __init__(self, root: str | os.PathLike = DEFAULT_ROOT, profile: str = 'full',
                 only: list[str] | None = None, pkgroot: str | os.PathLike = DEFAULT_PKGROOT):
        self.root = Path(os.path.realpath(root))
        self.profile = profile
        self.only = sorted(set(only)) if only else None
        self.pkgroot = Path(pkgroot)
        self.specs = select_instances(profile, self.only)
        self._children: list[subprocess.Popen] = []

    # ---- paths -------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / 'manifest.json'

    def cert_path(self, name: str) -> Path:
        return self.root / 'certs' / f'{name}.crt'

    def key_path(self, name: str) -> Path:
        return self.root / 'certs' / f'{name}.key'

    def absent_path(self, filename: str) -> Path:
        return self.root / 'certs' / 'absent' / filename

    def resolve(self, template: str) -> str:
        """Expand {cert:NAME}, {key:NAME} and {absent:FILE} placeholders to lab paths."""
        def replace(match: re.Match) -> str:
            kind, name = match.group(1), match.group(2)
            if kind == 'cert':
                return str(self.cert_path(name))
            if kind == 'key':
                return str(self.key_path(name))
            return str(self.absent_path(name))
        return re.sub(r'\{(cert|key|absent):([A-Za-z0-9._-]+)\}', replace, template)

    def bound_path(self, bound: str | None, suffix: str) -> str | None:
        if bound is None:
            return None
        if bound.startswith(ABSENT_PREFIX):
            return str(self.absent_path(f'{bound[len(ABSENT_PREFIX):]}.{suffix}'))
        return str(self.cert_path(bound) if suffix == 'crt' else self.key_path(bound))

    # ---- public API --------------------------------------------------------------------------
    def start(self) -> dict:
        """Start the lab (no-op when it already runs healthy) and return the manifest."""
        self._preflight()
        with self._locked():
            current = self._read_manifest()
            if current is not None and self._same_selection(current) and self._healthy(current):
                return current
            # Anything left over (another selection, a dead daemon, a crashed run) goes first.
            self._stop_locked(current)
            began = time.monotonic()
            self._check_addresses_free()
            daemons: list[Daemon] = []
            try:
                self._prepare_root()
                certificates = self._make_certificates()
                self._make_namespace_layers()
                daemons = [self._configure(spec) for spec in self.specs]
                self._launch_and_wait(daemons)
                manifest = self._build_manifest(daemons, certificates, time.monotonic() - began)
                self._write_manifest(manifest)
                return manifest
            except BaseException:
                # Never leave a half-started lab behind, whatever went wrong (Ctrl-C included).
                with contextlib.suppress(Exception):
                    self._stop_locked(None, daemons)
                raise

    def stop(self) -> list[int]:
        """Stop every process of this lab; returns the pids that were signalled."""
        with self._locked():
            return self._stop_locked(self._read_manifest())

    def manifest(self) -> dict:
        manifest = self._read_manifest()
        if manifest is None:
            raise LabError(f'the lab at {self.root} is not running (no manifest.json)')
        return manifest

    def status(self) -> dict:
        """Which daemons live and which listeners accept, next to what the manifest expects."""
        manifest = self._read_manifest()
        if manifest is None:
            return {'running': False, 'root': str(self.root), 'stray_processes': lab_processes(self.root)}
        daemons = [{'instance': d['instance'], 'pid': d['pid'], 'expected': d['expect_starts'],
                    'alive': bool(d['pid']) and process_alive(d['pid']) and is_lab_process(d['pid'], self.root)}
                   for d in manifest['daemons']]
        listeners = [{'id': item['id'], 'expected': item['expect']['starts'],
                      'accepting': can_connect(item['address'], item['port'])}
                     for item in manifest['listeners']]
        healthy = (all(d['alive'] == d['expected'] for d in daemons)
                   and all(item['accepting'] == item['expected'] for item in listeners))
        return {'running': True, 'healthy': healthy, 'root': str(self.root), 'daemons': daemons,
                'listeners': listeners}

    def run_in_namespace(self, instance: str, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        """Run a command in a fresh namespace laid out like that instance's daemon sees it.

        The unpacked Exim and OpenSMTPD exist only there: use this for `exim4 -C FILE -bP`,
        `smtpd -n -f FILE` and the like.
        """
        specs = {spec.instance: spec for spec in self.specs}
        if instance not in specs:
            raise LabError(f'unknown instance {instance!r}; known: {", ".join(specs)}')
        daemon = self._daemon_layout(specs[instance])
        check = kwargs.pop('check', False)
        return subprocess.run(self._namespace_argv(daemon.mounts, argv), env=self._environment(), check=check,
                              **kwargs)

    def renew_certificate(self, name: str) -> str:
        """Issue a new certificate for NAME from its existing request and key (new serial, new dates)
        and put it in place of the old file without reloading anything: the renewed-not-reloaded
        situation. Returns the new certificate's SHA-256."""
        certs, ca_dir = self.root / 'certs', self.root / 'certs' / 'ca'
        csr, extfile = certs / f'{name}.csr', certs / f'{name}.ext'
        if not csr.exists() or not extfile.exists():
            raise LabError(f'certificate {name!r} was not issued by the lab CA in {self.root}')
        now = dt.datetime.now(dt.timezone.utc)
        stamp = '%Y%m%d%H%M%SZ'
        staged = certs / f'.{name}.crt.renewing'
        signing = self._openssl(
            'ca', '-batch', '-config', str(ca_dir / 'openssl.cnf'), '-cert', str(self.cert_path('lab-ca')),
            '-keyfile', str(self.key_path('lab-ca')), '-in', str(csr), '-out', str(staged),
            '-startdate', (now - dt.timedelta(minutes=5)).strftime(stamp),
            '-enddate', (now + dt.timedelta(days=400)).strftime(stamp), '-extfile', str(extfile),
            '-extensions', 'leaf', '-notext')
        self._finish([signing], f'renewing {name}')
        staged.chmod(0o644)
        os.replace(staged, self.cert_path(name))
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(self.cert_path(name).read_text())).hexdigest()

    def reload(self, instance: str) -> None:
        """Reload one running instance the way its MTA does (Postfix and Dovecot with their own
        command, Exim with SIGHUP); OpenSMTPD cannot reload its configuration."""
        specs = {spec.instance: spec for spec in self.specs}
        if instance not in specs:
            raise LabError(f'unknown instance {instance!r}; known: {", ".join(specs)}')
        daemon = self._daemon_layout(specs[instance])
        if daemon.spec.mta == 'postfix':
            argv = ['postfix', '-c', str(daemon.config_path), 'reload']
        elif daemon.spec.mta == 'dovecot':
            argv = ['dovecot', '-c', str(daemon.config_path), 'reload']
        else:
            # Exim re-executes itself on SIGHUP, and with -C it loses root and cannot bind port 25 again
            # ("exim user lost privilege for using -C option"); OpenSMTPD has no reload. Restart instead.
            self.restart(instance)
            return
        completed = subprocess.run(argv, capture_output=True, text=True, env=self._environment(), check=False)
        if completed.returncode != 0:
            raise LabError(f'{shlex.join(argv)}: {completed.stderr.strip()[-500:]}')

    def restart(self, instance: str) -> int:
        """Stop one daemon (if it runs) and start it again with its configuration as it is now; returns the new
        pid and records it in the manifest."""
        with self._locked():
            manifest = self.manifest()
            entry = next((item for item in manifest['daemons'] if item['instance'] == instance), None)
            specs = {spec.instance: spec for spec in self.specs}
            if entry is None or instance not in specs:
                raise LabError(f'{instance} is not a daemon of the lab at {self.root}')
            if entry.get('pid'):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(entry['pgid'] or entry['pid'], signal.SIGTERM)
            deadline = time.monotonic() + 10
            addresses = {(listener.address, listener.port) for listener in specs[instance].listeners}
            while ((entry.get('pid') and process_alive(entry['pid'])) or addresses & listening_now()) \
                    and time.monotonic() < deadline:
                time.sleep(0.1)
            # A daemon that refused to start (its configuration since repaired) must start now.
            daemon = self._daemon_layout(dataclasses.replace(specs[instance], expect_starts=True))
            self._launch_and_wait([daemon])
            entry.update(pid=daemon.pid, pgid=os.getpgid(daemon.pid), started=True)
            self._write_manifest(manifest)
            return daemon.pid

    # ---- preparation -------------------------------------------------------------------------
    def _preflight(self) -> None:
        if os.geteuid() != 0:
            raise LabError('the mail server lab must run as root (it binds ports 25, 465, 993, ...)')
        if not SAFE_ROOT.match(str(self.root)) or self.root == Path('/') or len(self.root.parts) < 3:
            raise LabError(f'lab root {self.root} must be an absolute path of at least two levels made '
                           'of letters, digits, ".", "_", "-" (it ends up in overlay mount options)')
        needed = {'postfix': ['/usr/sbin/postfix'], 'dovecot': ['/usr/sbin/dovecot'],
                  'exim': [str(self.pkgroot / 'usr/sbin/exim4')],
                  'opensmtpd': [str(self.pkgroot / 'usr/sbin/smtpd')]}
        missing = [path for spec in self.specs for path in needed[spec.mta] if not os.path.exists(path)]
        missing += [tool for tool in ('openssl', 'unshare', 'mount') if shutil.which(tool) is None]
        if missing:
            raise LabError('missing: ' + ', '.join(sorted(set(missing)))
                           + ' -- run tests/lab/install.sh as root first')
        if any(spec.mta == 'exim' for spec in self.specs):
            # Exim reads its certificates and writes its logs as Debian-exim.
            for parent in [self.root.parent, *self.root.parent.parents]:
                if parent.exists() and not os.stat(parent).st_mode & 0o001:
                    raise LabError(f'{parent} is not searchable by others; Exim (Debian-exim) could not '
                                   f'reach the lab root {self.root}: choose another --root')

    def _check_addresses_free(self) -> None:
        wanted = {(l.address, l.port) for spec in self.specs for l in spec.listeners}
        busy = sorted(wanted & listening_now())
        if not busy:
            return
        owners = {row['inode']: row for row in socket_table()
                  if (row['address'], row['port']) in busy and row['kind'].startswith('tcp')}
        holders = []
        for entry in os.scandir('/proc'):
            if not entry.name.isdigit():
                continue
            for inode in _socket_inodes(int(entry.name)) & set(owners):
                row = owners.pop(inode)
                with contextlib.suppress(OSError):
                    command = Path(f'/proc/{entry.name}/cmdline').read_bytes().replace(b'\0', b' ')
                    holders.append(f'{row["address"]}:{row["port"]} held by pid {entry.name}: '
                                   f'{command.decode(errors="replace").strip()[:160]}')
        raise LabError(f'{len(busy)} lab addresses are already in use (another lab root, or another '
                       'server on 127.0.x.y?):\n  ' + '\n  '.join(holders or [f'{a}:{p}' for a, p in busy])
                       + '\nstop that first; two labs cannot share the addressing plan')

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        with open(self.root / '.lock', 'a+') as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _prepare_root(self) -> None:
        entries = [entry for entry in self.root.iterdir() if entry.name != '.lock']
        if entries and not (self.root / ROOT_MARKER_FILE).exists():
            raise LabError(f'{self.root} is not empty and is not a lab root (no {ROOT_MARKER_FILE}); '
                           'refusing to clear it')
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        (self.root / ROOT_MARKER_FILE).write_text('mailsec.starttls test lab; contents are regenerated\n')

    def _openssl(self, *args: str, cwd: Path | None = None) -> subprocess.Popen:
        return subprocess.Popen(['openssl', *args], cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self._environment())

    @staticmethod
    def _finish(processes: list[subprocess.Popen], what: str) -> None:
        failures = []
        for process in processes:
            out, err = process.communicate()
            if process.returncode != 0:
                failures.append(f'{shlex.join(process.args)}: {err.decode(errors="replace").strip()}')
        if failures:
            raise LabError(f'{what} failed:\n' + '\n'.join(failures))

    def _needed_certificates(self) -> list[CertSpec]:
        """The lab CA plus every certificate or key the selected instances mention."""
        names = {'lab-ca'}
        for spec in self.specs:
            names.update(re.findall(r'\{(?:cert|key):([A-Za-z0-9._-]+)\}', repr(spec.settings)))
            for listener in spec.listeners:
                names.update(re.findall(r'\{(?:cert|key):([A-Za-z0-9._-]+)\}', repr(listener.options)))
                names.update(name for name in (listener.bound_cert, listener.bound_key, listener.expect.cert)
                             if name and not name.startswith(ABSENT_PREFIX))
            for pki in spec.settings.get('pki', {}).values():
                names.update(name for name in pki if not name.startswith(ABSENT_PREFIX))
            global_cert = spec.settings.get('cert') if spec.mta == 'dovecot' else None
            if global_cert and not global_cert.startswith(ABSENT_PREFIX):
                names.add(global_cert)
        unknown = names - set(CERT_BY_NAME)
        if unknown:
            raise LabError(f'instances refer to unknown certificates: {", ".join(sorted(unknown))}')
        return [spec for spec in CERTIFICATES if spec.name in names]

    def _make_certificates(self) -> dict:
        wanted = self._needed_certificates()
        certs = self.root / 'certs'
        ca_dir = certs / 'ca'
        (ca_dir / 'issued').mkdir(parents=True)
        certs.chmod(0o755)
        (ca_dir / 'index.txt').write_text('')
        (ca_dir / 'serial').write_text('1000\n')
        (ca_dir / 'openssl.cnf').write_text(
            '[ ca ]\ndefault_ca = lab_ca\n'
            f'[ lab_ca ]\ndatabase = {ca_dir}/index.txt\nnew_certs_dir = {ca_dir}/issued\n'
            f'serial = {ca_dir}/serial\ndefault_md = sha256\npolicy = lab_policy\nunique_subject = no\n'
            '[ lab_policy ]\norganizationName = optional\ncommonName = supplied\n')
        subject = '/O=mailsec lab/CN={}'
        keygen = []
        for spec in wanted:
            key, cert = self.key_path(spec.name), self.cert_path(spec.name)
            if spec.kind == 'ca':
                keygen.append(self._openssl(
                    'req', '-x509', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', str(key), '-out', str(cert),
                    '-days', '3650', '-subj', subject.format(spec.common_name),
                    '-addext', 'basicConstraints=critical,CA:TRUE',
                    '-addext', 'keyUsage=critical,keyCertSign,cRLSign'))
            elif spec.kind == 'key-only':
                keygen.append(self._openssl('genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048',
                                            '-out', str(key)))
            elif spec.kind == 'self-signed':
                keygen.append(self._openssl(
                    'req', '-x509', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', str(key), '-out', str(cert),
                    '-days', '365', '-subj', subject.format(spec.common_name),
                    '-addext', 'basicConstraints=critical,CA:FALSE',
                    '-addext', f'subjectAltName={self._san(spec)}'))
            else:
                keygen.append(self._openssl(
                    'req', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', str(key),
                    '-out', str(certs / f'{spec.name}.csr'), '-subj', subject.format(spec.common_name)))
        self._finish(keygen, 'key generation')

        now = dt.datetime.now(dt.timezone.utc)
        stamp = '%Y%m%d%H%M%SZ'
        for spec in wanted:
            if spec.kind not in ('leaf', 'expired'):
                continue
            if spec.kind == 'expired':
                start, end = now - dt.timedelta(days=400), now - dt.timedelta(days=35)
            else:
                start, end = now - dt.timedelta(hours=1), now + dt.timedelta(days=365)
            extfile = certs / f'{spec.name}.ext'
            extfile.write_text('[ leaf ]\nbasicConstraints = critical,CA:FALSE\n'
                               'keyUsage = critical,digitalSignature,keyEncipherment\n'
                               'extendedKeyUsage = serverAuth\nauthorityKeyIdentifier = keyid\n'
                               f'subjectAltName = {self._san(spec)}\n')
            signing = self._openssl(
                'ca', '-batch', '-config', str(ca_dir / 'openssl.cnf'), '-cert', str(self.cert_path('lab-ca')),
                '-keyfile', str(self.key_path('lab-ca')), '-in', str(certs / f'{spec.name}.csr'),
                '-out', str(self.cert_path(spec.name)), '-startdate', start.strftime(stamp),
                '-enddate', end.strftime(stamp), '-extfile', str(extfile), '-extensions', 'leaf', '-notext')
            self._finish([signing], f'signing {spec.name}')

        manifest = {}
        for spec in wanted:
            key = self.key_path(spec.name)
            if spec.key_group:
                os.chown(key, 0, _group_id(spec.key_group))
                key.chmod(0o640)
            else:
                os.chown(key, 0, 0)
                key.chmod(0o600)
            cert = self.cert_path(spec.name)
            entry = {'cert': None, 'key': str(key), 'sha256': None, 'kind': spec.kind,
                     'key_mode': '0640' if spec.key_group else '0600',
                     'key_owner': f'root:{spec.key_group or "root"}'}
            if spec.kind != 'key-only':
                cert.chmod(0o644)
                der = ssl.PEM_cert_to_DER_cert(cert.read_text())
                entry.update(cert=str(cert), sha256=hashlib.sha256(der).hexdigest())
            manifest[spec.name] = entry
        return manifest

    @staticmethod
    def _san(spec: CertSpec) -> str:
        return ','.join([f'DNS:{spec.common_name}'] + [f'IP:{ip}' for ip in spec.ip_addresses])

    def _make_namespace_layers(self) -> None:
        """Files laid over /etc and /var inside each daemon's private mount namespace."""
        etc = self.root / 'ns' / 'etc'
        etc.mkdir(parents=True)
        etc.joinpath('resolv.conf').write_text(
            f'# mailsec lab: nothing answers here, so no lookup leaves loopback\n'
            f'nameserver {UNUSED_RESOLVER}\noptions timeout:1 attempts:1\n'
            # OpenSMTPD's own resolver (asr) reads OpenBSD's `lookup`: hosts file only, never DNS.
            # glibc ignores the line.
            'lookup file\n')
        names = {'127.0.0.1': ['localhost', socket.gethostname()], '::1': ['localhost', 'ip6-localhost']}
        for spec in CERTIFICATES:
            for ip in spec.ip_addresses[:1]:
                names.setdefault(ip, []).append(spec.common_name)
        etc.joinpath('hosts').write_text(''.join(f'{ip}\t{" ".join(dict.fromkeys(n))}\n' for ip, n in names.items()))
        etc.joinpath('nsswitch.conf').write_text(
            'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\n'
            'protocols: files\nservices: files\n')
        etc.joinpath('mailname').write_text('mail.lab.test\n')
        var = self.root / 'ns' / 'var'
        for sub in ('lib/opensmtpd/empty', 'spool/smtpd', 'run'):
            (var / sub).mkdir(parents=True)

    def _environment(self) -> dict[str, str]:
        # A clean environment: nothing of the caller's (proxies, locale, PATH) reaches a daemon.
        return {'PATH': '/usr/sbin:/usr/bin:/sbin:/bin', 'LANG': 'C', 'TZ': 'UTC', MARKER: str(self.root)}

    @staticmethod
    def _namespace_argv(mounts: list[list[str]], argv: list[str]) -> list[str]:
        script = 'set -e\n' + ''.join(shlex.join(mount) + '\n' for mount in mounts) + 'exec "$@"\n'
        return ['unshare', '--mount', '--propagation', 'private', '--', '/bin/sh', '-c', script,
                'mailsec-lab-namespace', *argv]

    def _mounts(self, unpacked: bool, opensmtpd_dir: Path | None = None) -> list[list[str]]:
        ns = self.root / 'ns'
        mounts = [['mount', '-t', 'overlay', 'mailsec-lab-etc', '-o', f'lowerdir={ns}/etc:/etc', '/etc']]
        if unpacked:
            mounts.append(['mount', '-t', 'overlay', 'mailsec-lab-usr', '-o',
                           f'lowerdir={self.pkgroot}/usr:/usr', '/usr'])
        if opensmtpd_dir is not None:
            # OpenSMTPD's spool, chroot and control socket are compiled-in paths under /var.
            mounts += [['mount', '-t', 'overlay', 'mailsec-lab-var', '-o', f'lowerdir={ns}/var:/var', '/var'],
                       ['mount', '--bind', str(opensmtpd_dir / 'spool'), '/var/spool/smtpd'],
                       ['mount', '--bind', str(opensmtpd_dir / 'run'), '/var/run']]
        return mounts

    # ---- per-MTA configuration ---------------------------------------------------------------
    def _daemon_layout(self, spec: InstanceSpec) -> Daemon:
        directory = self.root / spec.instance
        if spec.mta == 'postfix':
            conf = directory / 'conf'
            return Daemon(spec, directory, conf, ['postfix', '-c', str(conf), 'start'], self._mounts(False),
                          [directory / 'maillog'], pidfile=directory / 'queue' / 'pid' / 'master.pid',
                          uses_pty=True)
        if spec.mta == 'exim':
            conf = directory / 'exim4.conf'
            return Daemon(spec, directory, conf, ['/usr/sbin/exim4', '-C', str(conf), '-bdf'], self._mounts(True),
                          [directory / 'log' / 'mainlog', directory / 'log' / 'paniclog'])
        if spec.mta == 'dovecot':
            conf = directory / 'dovecot.conf'
            return Daemon(spec, directory, conf, ['/usr/sbin/dovecot', '-F', '-c', str(conf)], self._mounts(False),
                          [directory / 'dovecot.log'])
        conf = directory / 'smtpd.conf'
        return Daemon(spec, directory, conf, ['/usr/sbin/smtpd', '-d', '-f', str(conf)],
                      self._mounts(True, directory), [])

    def _configure(self, spec: InstanceSpec) -> Daemon:
        daemon = self._daemon_layout(spec)
        daemon.directory.mkdir(parents=True)
        writer = {'postfix': self._write_postfix, 'exim': self._write_exim,
                  'dovecot': self._write_dovecot, 'opensmtpd': self._write_opensmtpd}[spec.mta]
        writer(daemon)
        return daemon

    def _write_postfix(self, daemon: Daemon) -> None:
        spec, directory = daemon.spec, daemon.directory
        conf, queue, data = directory / 'conf', directory / 'queue', directory / 'data'
        for path in (conf, queue, data):
            path.mkdir()
        os.chown(data, _user_id('postfix'), -1)   # master refuses to start otherwise
        main = {
            'compatibility_level': '3.6',
            'queue_directory': str(queue),
            'data_directory': str(data),
            'mail_owner': 'postfix',
            'setgid_group': 'postdrop',
            'myhostname': spec.settings['hostname'],
            'mydomain': 'lab.test',
            'myorigin': '$myhostname',
            'mydestination': '',
            # master.cf services name their own IP; Postfix accepts only real interface addresses here.
            'inet_interfaces': 'loopback-only',
            'inet_protocols': 'ipv4',
            'mynetworks': '127.0.0.0/8',
            'smtpd_relay_restrictions': 'reject',
            # Isolation: no DNS, no reverse lookups of clients, nothing delivered, no notices.
            'smtpd_peername_lookup': 'no',
            'smtp_dns_support_level': 'disabled',
            'smtp_host_lookup': 'native',
            'lmtp_host_lookup': 'native',
            'default_transport': 'error:mailsec lab sends no mail',
            'relay_transport': 'error:mailsec lab sends no mail',
            'local_transport': 'error:mailsec lab delivers no mail',
            'notify_classes': '',
            'alias_maps': '',
            'alias_database': '',
            'local_recipient_maps': '',
            'biff': 'no',
            'maillog_file': str(directory / 'maillog'),
            'maillog_file_prefixes': str(self.root),
            'import_environment': f'MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C {MARKER}',
            'smtpd_tls_loglevel': '1',
        }
        main.update({key: self.resolve(value) for key, value in spec.settings['main'].items()})
        (conf / 'main.cf').write_text(f'# mailsec lab: Postfix instance {spec.instance}\n'
                                      + ''.join(f'{key} = {value}\n' for key, value in main.items()))
        lines = [f'# mailsec lab: Postfix instance {spec.instance}; one service per listener\n']
        for listener in spec.listeners:
            lines.append(f'{listener.service} inet n - n - - smtpd\n')
            lines.extend(f'  -o {key}={self.resolve(value)}\n' for key, value in listener.options)
        lines.append(POSTFIX_INTERNAL_SERVICES)
        (conf / 'master.cf').write_text(''.join(lines))

    def _write_exim(self, daemon: Daemon) -> None:
        spec, directory = daemon.spec, daemon.directory
        exim_uid, exim_gid = _user_id('Debian-exim'), _group_id('Debian-exim')
        for sub in ('spool', 'log'):
            (directory / sub).mkdir()
            os.chown(directory / sub, exim_uid, exim_gid)   # the daemon runs as Debian-exim
        interfaces = ' ; '.join(f'{l.address}.{l.port}' for l in spec.listeners)
        ports = sorted({l.port for l in spec.listeners})
        settings = {
            'primary_hostname': 'exim.lab.test',
            'qualify_domain': 'lab.test',
            'local_interfaces': f'<; {interfaces}',
            'daemon_smtp_ports': ' : '.join(str(p) for p in ports),
            'tls_on_connect_ports': '465',
            'spool_directory': str(directory / 'spool'),
            'log_file_path': str(directory / 'log' / '%slog'),
            'pid_file_path': str(directory / 'exim.pid'),
            'keep_environment': MARKER,
            # Isolation: no reverse lookups, no ident callbacks; no routers so nothing leaves.
            'host_lookup': '',
            'rfc1413_hosts': '',
            'never_users': 'root',
            # Exim retries a failed bind 9 times, 30 s apart; a lab should fail fast instead.
            'daemon_startup_retries': '1',
            'daemon_startup_sleep': '1s',
            'acl_smtp_rcpt': 'lab_reject',
            'tls_advertise_hosts': '*',
        }
        for key in ('tls_certificate', 'tls_privatekey', 'tls_advertise_hosts'):
            if key in spec.settings:
                settings[key] = self.resolve(spec.settings[key])
        body = ''.join(f'{key} = {value}\n' for key, value in settings.items())
        daemon.config_path.write_text(
            f'# mailsec lab: Exim instance {spec.instance}\n{body}\nbegin acl\n\nlab_reject:\n'
            '  deny message = mailsec lab accepts no mail\n\nbegin routers\n\nbegin transports\n')
        daemon.config_path.chmod(0o644)   # Exim keeps root only for a config nobody else can write
        daemon.pidfile = directory / 'exim.pid'

    def _write_dovecot(self, daemon: Daemon) -> None:
        spec, directory, settings = daemon.spec, daemon.directory, daemon.spec.settings
        (directory / 'mail').mkdir()
        (directory / 'users').write_text('lab:{PLAIN}lab-password-not-secret\n')
        addresses = list(dict.fromkeys(l.address for l in spec.listeners))
        protocols = []
        by_port: dict[int, list[str]] = {}
        for listener in spec.listeners:
            by_port.setdefault(listener.port, []).append(listener.address)
        for protocol, ports in (('imap', (143, 993)), ('pop3', (110, 995)), ('lmtp', (24,)), ('sieve', (4190,))):
            if any(port in by_port for port in ports):
                protocols.append(protocol)
        lines = [
            f'# mailsec lab: Dovecot instance {spec.instance}\n',
            f'instance_name = mailsec-lab-{spec.instance}\n',
            f'base_dir = {directory}/run\n',
            f'state_dir = {directory}/state\n',
            f'log_path = {directory}/dovecot.log\n',
            f'hostname = {settings["hostname"]}\n',
            f'protocols = {" ".join(protocols)}\n',
            # Every inet_listener names its addresses; `listen` only keeps any default one on loopback.
            f'listen = {addresses[0]}\n',
            f'import_environment = TZ {MARKER}\n',
            f'ssl = {settings["ssl"]}\n',
        ]
        cert = settings.get('cert')
        if cert:
            if cert.startswith(ABSENT_PREFIX):
                name = cert[len(ABSENT_PREFIX):]
                lines += [f'ssl_cert = <{self.absent_path(name + ".crt")}\n',
                          f'ssl_key = <{self.absent_path(name + ".key")}\n']
            else:
                lines += [f'ssl_cert = <{self.cert_path(cert)}\n', f'ssl_key = <{self.key_path(cert)}\n']
        lines += [
            f'mail_location = maildir:{directory}/mail/%u\n',
            f'passdb {{\n  driver = passwd-file\n  args = {directory}/users\n}}\n',
            f'userdb {{\n  driver = static\n  args = uid=dovecot gid=dovecot home={directory}/mail/%u\n}}\n',
        ]
        services = (('imap-login', 'imap', ((143, 'imap', False), (993, 'imaps', True))),
                    ('pop3-login', 'pop3', ((110, 'pop3', False), (995, 'pop3s', True))),
                    ('managesieve-login', 'sieve', ((4190, 'sieve', False),)),
                    ('lmtp', 'lmtp', ((24, 'lmtp', False),)))
        for service, protocol, listeners in services:
            if protocol not in protocols:
                continue
            lines.append(f'service {service} {{\n')
            for port, name, implicit_tls in listeners:
                if port in by_port:
                    lines.append(f'  inet_listener {name} {{\n    address = {", ".join(by_port[port])}\n'
                                 f'    port = {port}\n' + ('    ssl = yes\n' if implicit_tls else '') + '  }\n')
                elif protocol != 'lmtp':
                    # Without this the login service would add its default listener on `listen`.
                    lines.append(f'  inet_listener {name} {{\n    port = 0\n  }}\n')
            lines.append('}\n')
        for address, overrides in settings.get('local', {}).items():
            lines.append(f'local {address} {{\n'
                         + ''.join(f'  {key} = {self.resolve(value)}\n' for key, value in overrides.items())
                         + '}\n')
        daemon.config_path.write_text(''.join(lines))
        daemon.pidfile = directory / 'run' / 'master.pid'

    def _write_opensmtpd(self, daemon: Daemon) -> None:
        spec, directory = daemon.spec, daemon.directory
        (directory / 'spool').mkdir(mode=0o711)
        (directory / 'spool').chmod(0o711)   # smtpd insists on rwx--x--x
        (directory / 'run').mkdir()
        lines = [f'# mailsec lab: OpenSMTPD instance {spec.instance}\n']
        for pki, (cert, key) in spec.settings['pki'].items():
            lines.append(f'pki {pki} cert "{self._pki_path(cert, "crt")}"\n')
            lines.append(f'pki {pki} key "{self._pki_path(key, "key")}"\n')
        for listener in spec.listeners:
            listen = dict(listener.options)['listen']
            lines.append(f'listen on {listener.address} port {listener.port} {listen} hostname smtpd.lab.test\n'
                         .replace('  ', ' '))
        lines.append('match from any for any reject\n')
        daemon.config_path.write_text(''.join(lines))
        daemon.pidfile = directory / 'run' / 'smtpd.pid'

    def _pki_path(self, name: str, suffix: str) -> Path:
        if name.startswith(ABSENT_PREFIX):
            return self.absent_path(f'{name[len(ABSENT_PREFIX):]}.{suffix}')
        return self.cert_path(name) if suffix == 'crt' else self.key_path(name)

    # ---- launching ---------------------------------------------------------------------------
    def _launch(self, daemon: Daemon) -> None:
        argv = self._namespace_argv(daemon.mounts, daemon.argv)
        output = open(daemon.output_log(), 'wb')
        try:
            if daemon.uses_pty:
                master, slave = pty.openpty()
                os.set_blocking(master, False)
                daemon.pty_master = master
                stdout = stderr = slave
            else:
                stdout, stderr = output, subprocess.STDOUT
            daemon.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                              cwd=daemon.directory, env=self._environment(),
                                              start_new_session=True)
            self._children.append(daemon.process)
        finally:
            output.close()
            if daemon.uses_pty:
                os.close(slave)

    def _collect_pty(self, daemon: Daemon) -> None:
        if daemon.pty_master is None:
            return
        data = _read_available(daemon.pty_master)
        if data:
            with open(daemon.output_log(), 'ab') as output:
                output.write(data.replace(b'\r\n', b'\n'))

    def _launch_and_wait(self, daemons: list[Daemon]) -> None:
        launched = time.monotonic()
        for daemon in daemons:
            self._launch(daemon)
        deadline = time.monotonic() + START_DEADLINE_S
        pending = list(daemons)
        while pending:
            listening = listening_now()
            for daemon in list(pending):
                self._collect_pty(daemon)
                addresses = {(l.address, l.port) for l in daemon.spec.listeners}
                returncode = daemon.process.poll()
                if returncode is not None and not daemon.exited:
                    daemon.exited = True
                    if daemon.spec.mta == 'postfix' and returncode == 0:
                        daemon.pid = _read_pid(daemon.pidfile)   # `postfix start` returns once master runs
                    elif daemon.spec.expect_starts:
                        raise LabError(daemon.describe_failure(f'exited with status {returncode}'))
                    else:
                        daemon.error = _last_error_line(daemon.output_log()) or f'exit status {returncode}'
                        pending.remove(daemon)
                        continue
                if not daemon.spec.expect_starts:
                    if addresses & listening:
                        raise LabError(daemon.describe_failure(
                            'is expected to refuse to start but listens; the manifest needs updating'))
                    continue
                if daemon.spec.mta == 'postfix' and not daemon.exited:
                    continue   # its sockets appear before `postfix start` has written master.pid
                if addresses <= listening:
                    if daemon.pid is None:
                        daemon.pid = daemon.process.pid
                    daemon.started = True
                    daemon.ready_seconds = round(time.monotonic() - launched, 2)
                    pending.remove(daemon)
            if not pending:
                break
            if time.monotonic() > deadline:
                names = ', '.join(d.name for d in pending)
                raise LabError(pending[0].describe_failure(
                    f'not ready after {START_DEADLINE_S:.0f} s (still waiting for: {names})'))
            time.sleep(0.05)
        for daemon in daemons:
            self._collect_pty(daemon)
            if daemon.pty_master is not None:
                os.close(daemon.pty_master)
                daemon.pty_master = None
            if not daemon.started:
                continue
            for listener in daemon.spec.listeners:
                if not can_connect(listener.address, listener.port):
                    raise LabError(daemon.describe_failure(f'{listener.address}:{listener.port} does not accept'))
            if not is_lab_process(daemon.pid, self.root):
                raise LabError(daemon.describe_failure(f'pid {daemon.pid} is not a lab process'))

    # ---- manifest ----------------------------------------------------------------------------
    def _build_manifest(self, daemons: list[Daemon], certificates: dict, seconds: float) -> dict:
        listeners = []
        for daemon in daemons:
            spec = daemon.spec
            for listener in spec.listeners:
                expect = listener.expect
                listeners.append({
                    'id': listener_id(spec, listener),
                    'mta': spec.mta,
                    'instance': spec.instance,
                    'scenario': listener.scenario,
                    'address': listener.address,
                    'port': listener.port,
                    'protocol': listener.protocol,
                    'tls_mode': 'implicit' if listener.protocol in IMPLICIT_TLS_PROTOCOLS else 'starttls',
                    'service': listener.service,
                    'bound_cert': self.bound_path(listener.bound_cert, 'crt'),
                    'bound_key': self.bound_path(listener.bound_key or listener.bound_cert, 'key'),
                    'expect': {
                        'starts': expect.starts,
                        'advertised': expect.advertised,
                        'starttls_code': expect.starttls_code,
                        'handshake': expect.handshake,
                        'cert_sha256': certificates[expect.cert]['sha256'] if expect.cert else None,
                        'notes': expect.notes,
                    },
                })
        daemon_entries = []
        for daemon in daemons:
            entry = {'mta': daemon.spec.mta, 'instance': daemon.name}
            if daemon.spec.mta == 'postfix':
                entry['config_dir'] = str(daemon.config_path)
            else:
                entry['config_file'] = str(daemon.config_path)
            pgid = None
            if daemon.pid:
                with contextlib.suppress(OSError):
                    pgid = os.getpgid(daemon.pid)
            entry.update({
                'pid': daemon.pid, 'pgid': pgid, 'started': daemon.started, 'error': daemon.error,
                'ready_seconds': daemon.ready_seconds,
                'expect_starts': daemon.spec.expect_starts,
                'pidfile': str(daemon.pidfile) if daemon.pidfile else None,
                'logs': [str(path) for path in [daemon.output_log(), *daemon.log_files]],
                'command': daemon.argv,
                'namespace_mounts': [shlex.join(mount) for mount in daemon.mounts],
            })
            daemon_entries.append(entry)
        return {
            'root': str(self.root),
            'profile': self.profile,
            'only': self.only,
            'started_at': dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds'),
            'start_seconds': round(seconds, 2),
            'resolver': UNUSED_RESOLVER,
            'pkgroot': str(self.pkgroot),
            'versions': _versions(self.pkgroot),
            'daemons': daemon_entries,
            'certificates': certificates,
            'listeners': listeners,
        }

    def _write_manifest(self, manifest: dict) -> None:
        temporary = self.manifest_path.with_suffix('.tmp')
        temporary.write_text(json.dumps(manifest, indent=2) + '\n')
        temporary.replace(self.manifest_path)

    def _read_manifest(self) -> dict | None:
        try:
            return json.loads(self.manifest_path.read_text())
        except (OSError, ValueError):
            return None

    def _same_selection(self, manifest: dict) -> bool:
        return manifest.get('profile') == self.profile and manifest.get('only') == self.only

    def _healthy(self, manifest: dict) -> bool:
        for daemon in manifest['daemons']:
            if daemon['started']:
                pid = daemon['pid']
                if not pid or not process_alive(pid) or not is_lab_process(pid, self.root):
                    return False
        return all(can_connect(item['address'], item['port'])
                   for item in manifest['listeners'] if item['expect']['starts'])

    # ---- stopping ----------------------------------------------------------------------------
    def _stop_locked(self, manifest: dict | None, daemons: list[Daemon] | None = None) -> list[int]:
        main_pids = set()
        for entry in (manifest or {}).get('daemons', []):
            if entry.get('pid'):
                main_pids.add(entry['pid'])
        for daemon in daemons or []:
            if daemon.pid:
                main_pids.add(daemon.pid)
            if daemon.pty_master is not None:
                with contextlib.suppress(OSError):
                    os.close(daemon.pty_master)
                daemon.pty_master = None
        # Our own launches too: one caught between unshare and its /etc mount is not yet
        # recognisable by its namespace.
        for child in self._children:
            if child.poll() is None:
                main_pids.add(child.pid)
        signalled = set()
        # Main processes first: each shuts its own children down cleanly.
        own_children = {child.pid for child in self._children}
        for pid in main_pids:
            if process_alive(pid) and (pid in own_children or is_lab_process(pid, self.root)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                    signalled.add(pid)
        remaining = self._wait_gone(1.0 if signalled else 0.0)
        # Whatever still runs gets the signal itself: a Dovecot login process that waits for its
        # auth process holds its master's shutdown up for seconds.
        for signal_number, wait in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 3.0)):
            if not remaining:
                break
            for pid in remaining:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal_number)
                    signalled.add(pid)
            remaining = self._wait_gone(wait)
        self._reap_children()
        if remaining:
            raise LabError(f'processes of the lab at {self.root} survived SIGKILL: {remaining}')
        with contextlib.suppress(FileNotFoundError):
            self.manifest_path.unlink()
        return sorted(signalled)

    def _wait_gone(self, seconds: float) -> list[int]:
        deadline = time.monotonic() + seconds
        while True:
            self._reap_children()
            remaining = lab_processes(self.root)
            if not remaining or time.monotonic() > deadline:
                return remaining
            time.sleep(0.05)

    def _reap_children(self) -> None:
        for child in list(self._children):
            if child.poll() is not None:
                self._children.remove(child)


POSTFIX_INTERNAL_SERVICES = """
# internal services (no chroot: the lab runs from its own directories)
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def _user_id(name: str) -> int:
    import pwd
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        raise LabError(f'user {name} does not exist -- run tests/lab/install.sh') from None


def _group_id(name: str) -> int:
    import grp
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise LabError(f'group {name} does not exist -- run tests/lab/install.sh') from None


def _read_pid(pidfile: Path | None) -> int | None:
    if pidfile is None:
        return None
    with contextlib.suppress(OSError, ValueError):
        return int(pidfile.read_text().split()[0])
    return None


def _last_error_line(path: Path) -> str | None:
    lines = [line.strip() for line in tail(path, 40).splitlines() if line.strip()]
    for line in reversed(lines):
        if re.search(r'fatal|error|failed|can\'t|cannot', line, re.IGNORECASE):
            return line
    return lines[-1] if lines else None


def _versions(pkgroot: Path) -> dict:
    versions = {}
    query = subprocess.run(['dpkg-query', '-W', '-f', '${Package} ${Version}\\n', 'postfix', 'dovecot-core'],
                           capture_output=True, text=True, check=False)
    for line in query.stdout.splitlines():
        package, version = line.split(' ', 1) if ' ' in line else (line, '')
        versions[package] = version
    with contextlib.suppress(OSError):
        for line in (pkgroot / '.mailsec-lab-packages').read_text().splitlines():
            package, version = line.split('=', 1) if '=' in line else (line, '')
            if package in ('exim4-daemon-light', 'opensmtpd'):
                versions[package] = version
    return versions


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def _print_manifest_summary(manifest: dict) -> None:
    print(f'lab root {manifest["root"]} (profile {manifest["profile"]}), started in {manifest["start_seconds"]} s')
    for daemon in manifest['daemons']:
        state = f'pid {daemon["pid"]}' if daemon['started'] else f'not running: {daemon["error"]}'
        print(f'  {daemon["instance"]:<24} {state}')
    print(f'  {"listener":<34} {"scenario":<26} adv   reply  tls')
    for item in manifest['listeners']:
        expect = item['expect']
        if not expect['starts']:
            summary = 'daemon refuses to start'
        else:
            summary = (f'{_fmt(expect["advertised"]):<5} {_fmt(expect["starttls_code"]):<6} '
                       f'{_fmt(expect["handshake"])}')
        print(f'  {item["id"]:<34} {item["scenario"]:<26} {summary}')


def _fmt(value: object) -> str:
    return '-' if value is None else ('yes' if value is True else 'no' if value is False else str(value))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description='Real mail servers on loopback for mailsec.starttls tests.',
        epilog='run: mta_lab.py run INSTANCE [--root DIR] -- COMMAND... runs COMMAND in the mount '
               'namespace that instance uses (the unpacked exim4 and smtpd exist only there)')
    parser.add_argument('action', choices=('start', 'stop', 'status', 'run', 'reload'))
    parser.add_argument('instance', nargs='?', help='for run: the instance whose namespace to use; for reload: '
                                                    'the instance to reload (Exim and OpenSMTPD: restart)')
    parser.add_argument('--root', default=str(DEFAULT_ROOT), help=f'lab directory (default {DEFAULT_ROOT})')
    parser.add_argument('--profile', default='full', choices=PROFILES)
    parser.add_argument('--only', help='comma-separated subset of: ' + ','.join(MTAS))
    parser.add_argument('--json', action='store_true', help='print the manifest / status as JSON')
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[argv.index('--') + 1:] if '--' in argv else []
    args = parser.parse_args(argv[:argv.index('--')] if '--' in argv else argv)
    only = [item.strip() for item in args.only.split(',') if item.strip()] if args.only else None
    try:
        lab = Lab(args.root, profile=args.profile, only=only)
        if args.action == 'start':
            manifest = lab.start()
            if args.json:
                print(json.dumps(manifest, indent=2))
            else:
                _print_manifest_summary(manifest)
                print(f'manifest: {lab.manifest_path}')
            return 0
        if args.action == 'stop':
            signalled = lab.stop()
            print(f'stopped the lab at {lab.root} ({len(signalled)} processes signalled); none left')
            return 0
        if args.action == 'status':
            status = lab.status()
            if args.json:
                print(json.dumps(status, indent=2))
            elif not status['running']:
                strays = status['stray_processes']
                print(f'not running at {lab.root}' + (f'; stray lab processes: {strays}' if strays else ''))
            else:
                for daemon in status['daemons']:
                    print(f'  {daemon["instance"]:<24} pid {daemon["pid"]} alive={daemon["alive"]} '
                          f'expected={daemon["expected"]}')
                bad = [item for item in status['listeners'] if item['accepting'] != item['expected']]
                print(f'  {len(status["listeners"]) - len(bad)}/{len(status["listeners"])} listeners as expected'
                      + ''.join(f'\n  UNEXPECTED {item["id"]}: accepting={item["accepting"]}' for item in bad))
            return 0 if status.get('healthy') else (3 if not status['running'] else 1)
        if args.action == 'reload':
            if not args.instance:
                parser.error('reload needs INSTANCE')
            lab.reload(args.instance)
            return 0
        if not args.instance or not command:
            parser.error('run needs INSTANCE -- COMMAND...')
        return lab.run_in_namespace(args.instance, command).returncode
    except LabError as error:
        print(f'mta_lab: {error}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
