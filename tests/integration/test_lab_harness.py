# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lab harness itself (tests/lab/mta_lab.py).

Every listener must do on the wire what manifest.json says it does, nothing may listen off
loopback or ask DNS, start must be idempotent, and stop must leave no process behind, also after
a start that failed halfway. The client here is deliberately tiny: it only checks the lab; the
real probe engine lives in plugins/module_utils/_probe/.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import shutil
import socket
import ssl
import sys
import time
from pathlib import Path

import pytest

LAB_DIR = Path(__file__).resolve().parents[1] / 'lab'
sys.path.insert(0, str(LAB_DIR))
import mta_lab  # noqa: E402  pylint: disable=import-error,wrong-import-position
from conftest import bind_udp_sink, drain  # noqa: E402  pylint: disable=wrong-import-position

# The same root as the `lab` fixture in conftest.py: both fixtures share one running lab
# (start is idempotent), since two labs cannot hold the same addresses at once.
LAB_ROOT = os.environ.get('MAILSEC_LAB_ROOT', '/tmp/mailsec-lab-it')
SCRATCH_ROOT = LAB_ROOT.rstrip('/') + '-scratch'
TIMEOUT = 10.0


# ---------------------------------------------------------------------------------------------
# A minimal client: greeting, capabilities, STARTTLS, one handshake. Nothing more.
# ---------------------------------------------------------------------------------------------

class Dialog:
    def __init__(self, address: str, port: int):
        self.sock = socket.create_connection((address, port), timeout=TIMEOUT)
        self.reader = self.sock.makefile('rb')

    def line(self) -> str:
        raw = self.reader.readline(4096)
        if not raw:
            raise ConnectionError('connection closed by the server')
        return raw.decode('latin-1').rstrip('\r\n')

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode('ascii') + b'\r\n')

    def smtp_reply(self) -> list[str]:
        lines = [self.line()]
        while lines[-1][3:4] == '-':
            lines.append(self.line())
        return lines


def handshake(sock: socket.socket) -> tuple[bool, str | None]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with context.wrap_socket(sock) as tls:
            der = tls.getpeercert(binary_form=True)
    except (ssl.SSLError, OSError):
        return False, None
    return True, hashlib.sha256(der).hexdigest() if der else None


def probe(address: str, port: int, protocol: str) -> dict:
    """What a plain client sees: advertised?, the STARTTLS reply code, handshake, certificate."""
    seen = {'advertised': None, 'starttls_code': None, 'handshake': None, 'cert_sha256': None}
    dialog = Dialog(address, port)
    try:
        if protocol in mta_lab.IMPLICIT_TLS_PROTOCOLS:
            seen['handshake'], seen['cert_sha256'] = handshake(dialog.sock)
            return seen
        if protocol in ('smtp', 'submission', 'lmtp'):
            dialog.smtp_reply()
            dialog.send(('LHLO' if protocol == 'lmtp' else 'EHLO') + ' probe.lab.test')
            keywords = [line[4:].split(' ')[0].upper() for line in dialog.smtp_reply()[1:]]
            seen['advertised'] = 'STARTTLS' in keywords
            dialog.send('STARTTLS')
            seen['starttls_code'] = dialog.smtp_reply()[-1][:3]
            go_ahead = seen['starttls_code'] == '220'
        elif protocol == 'imap':
            dialog.line()
            dialog.send('a CAPABILITY')
            capabilities = []
            while not (line := dialog.line()).startswith('a '):
                capabilities += line.upper().split()
            seen['advertised'] = 'STARTTLS' in capabilities
            dialog.send('b STARTTLS')
            while not (line := dialog.line()).startswith('b '):
                pass
            seen['starttls_code'] = line.split(' ')[1]
            go_ahead = seen['starttls_code'] == 'OK'
        elif protocol == 'pop3':
            dialog.line()
            dialog.send('CAPA')
            capabilities = []
            if dialog.line().startswith('+OK'):
                while (line := dialog.line()) != '.':
                    capabilities.append(line.upper())
            seen['advertised'] = 'STLS' in capabilities
            dialog.send('STLS')
            seen['starttls_code'] = dialog.line().split(' ')[0]
            go_ahead = seen['starttls_code'] == '+OK'
        else:   # ManageSieve (RFC 5804): the greeting is the capability list
            capabilities = []
            while not (line := dialog.line()).startswith(('OK', 'NO', 'BYE')):
                capabilities.append(line.upper())
            seen['advertised'] = any(item.startswith('"STARTTLS"') for item in capabilities)
            dialog.send('STARTTLS')
            seen['starttls_code'] = dialog.line().split(' ')[0]
            go_ahead = seen['starttls_code'] == 'OK'
        if go_ahead:
            seen['handshake'], seen['cert_sha256'] = handshake(dialog.sock)
        return seen
    finally:
        with contextlib.suppress(OSError):
            dialog.sock.close()


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope='session')
def dns_sink():
    if os.geteuid() != 0:
        pytest.skip('the lab starts real MTAs on privileged loopback ports and needs root')
    sink = bind_udp_sink(mta_lab.UNUSED_RESOLVER)
    yield sink
    if sink is not None:
        sink.close()


@pytest.fixture(scope='session')
def lab(dns_sink):
    """The lab, shared with conftest.py's fixture of the same root; stopped at the end."""
    instance = mta_lab.Lab(LAB_ROOT)
    instance.start()
    yield instance
    instance.stop()


@contextlib.contextmanager
def lab_paused(lab: mta_lab.Lab):
    """Stop the shared lab for a test that needs its addresses, and bring it back afterwards."""
    lab.stop()
    try:
        yield
    finally:
        lab.start()


def planned_addresses(manifest: dict, running_only: bool = True) -> set[tuple[str, int]]:
    return {(item['address'], item['port']) for item in manifest['listeners']
            if item['expect']['starts'] or not running_only}


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------

def test_suite_runs_in_a_network_of_its_own(dns_sink):  # pylint: disable=unused-argument
    """The suite's servers live in a network namespace the suite created (conftest.py), so nothing
    else on the machine (the demo host on 127.0.60.1, another test run) can hold their addresses."""
    # The process that started pytest stayed in the network it was started in.
    assert os.readlink('/proc/self/ns/net') != os.readlink(f'/proc/{os.getppid()}/ns/net')
    with open('/proc/net/dev', encoding='ascii') as devices:
        interfaces = {line.split(':')[0].strip() for line in devices.readlines()[2:]}
    assert interfaces == {'lo'}
    # While this suite runs, a demo host may hold 127.0.60.1:25 in the machine's namespace; here the
    # address is free unless this suite's own lab holds it.
    lab_roots = [root for root in (LAB_ROOT, SCRATCH_ROOT) if mta_lab.lab_processes(root)]
    if not lab_roots:
        assert ('127.0.60.1', 25) not in mta_lab.listening_now()


def test_manifest_lists_every_planned_listener_and_daemon(lab):
    manifest = lab.manifest()
    assert [item['id'] for item in manifest['listeners']] == mta_lab.planned_listener_ids('full')
    assert manifest['root'] == str(lab.root)
    for daemon in manifest['daemons']:
        assert daemon['started'] is daemon['expect_starts'], daemon
        if daemon['started']:
            assert mta_lab.is_lab_process(daemon['pid'], lab.root)
        else:
            assert daemon['pid'] is None and daemon['error'], daemon
    scenarios = {(item['mta'], item['scenario']) for item in manifest['listeners']}
    for mta in ('postfix', 'exim', 'dovecot', 'opensmtpd'):
        for scenario in ('compliant', 'cert-missing', 'cert-bound-one-listener', 'implicit-tls-no-cert'):
            assert (mta, scenario) in scenarios
    for mta in ('postfix', 'exim', 'dovecot', 'opensmtpd'):
        assert (mta, 'tls-off-cert-present') in scenarios
        assert (mta, 'key-mismatch') in scenarios
    assert {'postfix-a', 'postfix-b'} <= {d['instance'] for d in manifest['daemons'] if d['started']}


def test_certificates_match_their_files(lab):
    certificates = lab.manifest()['certificates']
    assert {'lab-ca', 'expired', 'self-signed', 'unrelated-key'} <= set(certificates)
    for name, entry in certificates.items():
        key = Path(entry['key'])
        mode = key.stat().st_mode & 0o777
        assert oct(mode) == '0o' + entry['key_mode'][1:], name
        assert key.stat().st_uid == 0, name
        if entry['cert'] is None:
            assert entry['sha256'] is None
            continue
        der = ssl.PEM_cert_to_DER_cert(Path(entry['cert']).read_text())
        assert hashlib.sha256(der).hexdigest() == entry['sha256'], name
    assert certificates['postfix-a']['key_mode'] == '0600'
    for listener in lab.manifest()['listeners']:
        for kind in ('bound_cert', 'bound_key'):
            path = listener[kind]
            if path is None:
                continue
            # A scenario that binds an absent file says so with a path under certs/absent/.
            assert os.path.exists(path) is ('/absent/' not in path), (listener['id'], kind, path)
    fingerprints = [entry['sha256'] for entry in certificates.values() if entry['sha256']]
    assert len(fingerprints) == len(set(fingerprints))


@pytest.mark.parametrize('listener_id', mta_lab.planned_listener_ids('full'))
def test_listener_behaves_as_the_manifest_says(lab, listener_id):
    manifest = lab.manifest()
    listener = next(item for item in manifest['listeners'] if item['id'] == listener_id)
    expect = listener['expect']
    if not expect['starts']:
        assert not mta_lab.can_connect(listener['address'], listener['port'], timeout=1)
        return
    seen = probe(listener['address'], listener['port'], listener['protocol'])
    wanted = {key: expect[key] for key in ('advertised', 'starttls_code', 'handshake', 'cert_sha256')}
    if expect['handshake'] and expect['cert_sha256'] is None:
        # A certificate the daemon makes itself (Exim): it must be none of the lab's.
        lab_fingerprints = {entry['sha256'] for entry in manifest['certificates'].values()}
        assert seen['cert_sha256'] and seen['cert_sha256'] not in lab_fingerprints
        wanted['cert_sha256'] = seen['cert_sha256']
    assert seen == wanted, f'{listener_id}: saw {seen}, manifest says {wanted} ({expect["notes"]})'


def test_listens_on_loopback_only_and_exactly_where_planned(lab):
    manifest = lab.manifest()
    sockets = mta_lab.lab_sockets(lab.root)
    assert sockets, 'found no socket of the lab processes'
    for row in sockets:
        assert ipaddress.ip_address(row['address']).is_loopback, row
    tcp = {(row['address'], row['port']) for row in sockets if row['kind'].startswith('tcp')}
    assert tcp == planned_addresses(manifest)


def test_no_daemon_asks_dns(lab, dns_sink):
    if dns_sink is None:
        pytest.skip(f'{mta_lab.UNUSED_RESOLVER}:53 is taken by something else; cannot watch for DNS')
    # Every connection is a chance for a reverse lookup of the client; wait for each greeting.
    for item in lab.manifest()['listeners']:
        if item['expect']['starts']:
            with contextlib.suppress(OSError), socket.create_connection((item['address'], item['port']), 5) as sock:
                if item['protocol'] not in mta_lab.IMPLICIT_TLS_PROTOCOLS:
                    sock.settimeout(5)
                    with contextlib.suppress(OSError):
                        sock.recv(512)
    time.sleep(1.0)
    assert drain(dns_sink) == []


def test_start_again_is_a_no_op(lab):
    before = lab.manifest()
    began = time.monotonic()
    again = lab.start()
    assert time.monotonic() - began < 5
    assert [d['pid'] for d in again['daemons']] == [d['pid'] for d in before['daemons']]
    assert again['started_at'] == before['started_at']


def test_stop_leaves_nothing_and_start_comes_back(lab, dns_sink):
    manifest = lab.manifest()
    with lab_paused(lab):
        assert mta_lab.lab_processes(lab.root) == []
        for pid in (d['pid'] for d in manifest['daemons'] if d['pid']):
            assert not mta_lab.process_alive(pid)
        assert not planned_addresses(manifest) & mta_lab.listening_now()
        assert not lab.manifest_path.exists()
        assert lab.status()['running'] is False
        if dns_sink is not None:
            drain(dns_sink)
    # lab_paused started it again: fresh processes, all healthy, and nobody asked DNS on start-up.
    status = lab.status()
    assert status['healthy'], status
    assert {d['pid'] for d in lab.manifest()['daemons'] if d['pid']}.isdisjoint(
        d['pid'] for d in manifest['daemons'] if d['pid'])
    if dns_sink is not None:
        time.sleep(0.5)
        assert drain(dns_sink) == []


def test_failed_start_names_the_daemon_and_leaves_nothing(lab):
    scratch = mta_lab.Lab(SCRATCH_ROOT, only=['exim', 'dovecot'])
    victim = ('127.0.30.1', 143)   # dovecot-main
    with lab_paused(lab):
        # Bound but not listening, without SO_REUSEADDR: the lab's pre-check does not see it,
        # Dovecot's bind() fails once the other daemons are already up.
        blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Connections that earlier tests made may leave the port in TIME_WAIT for up to a minute.
        deadline = time.monotonic() + 75
        while True:
            try:
                blocker.bind(victim)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        try:
            with pytest.raises(mta_lab.LabError) as failure:
                scratch.start()
        finally:
            blocker.close()
        message = str(failure.value)
        assert 'dovecot-main (dovecot) failed to start' in message
        assert 'Address already in use' in message
        assert mta_lab.lab_processes(scratch.root) == []
        assert not scratch.manifest_path.exists()
    shutil.rmtree(scratch.root, ignore_errors=True)


def test_demo_profile_is_the_small_demo_host(lab):
    demo = mta_lab.Lab(SCRATCH_ROOT, profile='demo')
    with lab_paused(lab):
        try:
            manifest = demo.start()
            assert {d['instance'] for d in manifest['daemons']} == {'postfix-demo', 'dovecot-demo'}
            by_port = {item['port']: item for item in manifest['listeners']}
            assert set(by_port) == {25, 587, 143, 993}
            assert all(item['address'] == '127.0.60.1' for item in by_port.values())
            kb = probe('127.0.60.1', 25, 'smtp')
            assert kb['advertised'] is True and kb['starttls_code'] == '454'
            good = probe('127.0.60.1', 587, 'submission')
            assert good['handshake'] is True
            assert good['cert_sha256'] == manifest['certificates']['demo']['sha256']
        finally:
            demo.stop()
        assert mta_lab.lab_processes(demo.root) == []
    shutil.rmtree(demo.root, ignore_errors=True)
