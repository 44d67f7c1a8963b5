# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Probe many mail listeners concurrently and describe what each one does when asked for TLS.

`probe_many(targets, options)` is the one entry point; every caller (the listener_probe
module, the host inspection, the benchmark) goes through it. A target never raises: whatever
a server does becomes a classified probe record with the stage it happened in.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

from ansible_collections.mailsec.starttls.plugins.module_utils._model import (
    LEGACY_TLS_VERSIONS,
    PORT_PROTOCOL,
    PROTOCOL_DIALOG,
    PROTOCOL_TLS_MODE,
    new_probe,
)
from ansible_collections.mailsec.starttls.plugins.module_utils._probe.dialogs import DIALOGS, reply_summary
from ansible_collections.mailsec.starttls.plugins.module_utils._probe.reader import LineReader, MalformedReply
from ansible_collections.mailsec.starttls.plugins.module_utils._probe import validate
from ansible_collections.mailsec.starttls.plugins.module_utils._probe.wire import (
    Deadline,
    ProbeError,
    TcpTransport,
    TlsLayer,
    observing_context,
)
from ansible_collections.mailsec.starttls.plugins.module_utils import _tlsa, _trust, _x509
from ansible_collections.mailsec.starttls.plugins.module_utils._text import visible_deep, visible_record

DEFAULT_OPTIONS = {
    'ehlo_name': None,
    'timeout': 10.0,
    'greeting_timeout': 30.0,
    'deadline': 60.0,
    'concurrency': 128,
    'per_host_limit': 8,
    'attempts': 1,
    'ca_file': None,
    'ca_path': None,
    'vantage': None,
    'try_starttls_when_not_advertised': False,
    'test_command_injection': False,
    'source_address': None,
    # How many processes share a run probed from this machine; None: as many as pay off (process_count).
    'processes': None,
}

# How long to wait, after the handshake, for a reply to the command we pipelined behind STARTTLS.
INJECTION_WAIT = 1.0
# A goodbye is sent but its reply not awaited: it would cost one more round trip per listener.
GOODBYE_WAIT = 0.0


# A target or option that cannot be probed as given (bad arguments, not a server's fault); the
# message names the option. One class with the validators' error, so that callers catch one thing.
TargetError = validate.OptionError

# A run of more than this many targets checks its chains with `cryptography` from the first one (when
# it is installed): such a run meets many chains, and the library's import (about 90 ms of CPU) costs
# less than the `openssl` runs (about 7 ms each, more from a process with a hundred threads) that
# _trust.library_for_checks would make first. Smaller runs (a host's own listeners) keep its rule.
LIBRARY_RUN_SIZE = 100

# Upper bounds that keep a typo from starting thousands of threads or probing a pool for an hour.
OPTION_LIMITS = {'concurrency': 1024, 'per_host_limit': 1024, 'attempts': 20, 'processes': 64}

# Targets per process when the engine chooses how many processes probe a run from this machine: one
# process is enough below twice this, and a fork (a few milliseconds) pays off well above it. One
# process holds the interpreter lock for the dialog, framing and record keeping of every probe, so a
# large run is bound to one core however many threads wait on the network; each further process is
# another core (bench/README.md, issue 15).
PROCESS_SHARE = 100


def normalise_options(options: dict | None) -> dict:
    """The probe options with defaults filled in, every value checked before any connection."""
    if options is not None and not isinstance(options, dict):
        raise TargetError(f'probe options must be a dictionary, not {type(options).__name__}')
    merged = dict(DEFAULT_OPTIONS)
    for key, value in (options or {}).items():
        if key not in DEFAULT_OPTIONS:
            raise TargetError(f'unknown probe option {key!r}')
        if value is not None:
            merged[key] = value
    for key in ('timeout', 'greeting_timeout', 'deadline'):
        merged[key] = validate.seconds(merged[key], key)
    for key in ('concurrency', 'per_host_limit', 'attempts'):
        merged[key] = validate.whole_number(merged[key], key, 1, OPTION_LIMITS[key])
    if merged['processes'] is not None:
        merged['processes'] = validate.whole_number(merged['processes'], 'processes', 1, OPTION_LIMITS['processes'])
    merged['ehlo_name'] = validate.ehlo_name(merged['ehlo_name'])
    for key in ('try_starttls_when_not_advertised', 'test_command_injection'):
        merged[key] = validate.flag(merged[key], key)
    for key in ('ca_file', 'ca_path', 'vantage'):
        merged[key] = validate.text(merged[key], key)
    if merged['source_address'] is not None and not validate.is_ip(merged['source_address']):
        raise TargetError(f'source_address must be an IP address of this machine, not {merged["source_address"]!r}')
    if not merged['vantage']:
        merged['vantage'] = socket.gethostname()
    return merged


def is_ip(text: str | None) -> bool:
    return validate.is_ip(text)


def _split_spec(spec: str):
    """'address[:port][/protocol]' with IPv6 in brackets: returns (address, port, protocol)."""
    text, _sep, protocol = spec.strip().partition('/')
    port = None
    if text.startswith('['):
        address, _sep, rest = text[1:].partition(']')
        if rest.startswith(':'):
            port = rest[1:]
        elif rest:
            raise TargetError(f'cannot read target {spec!r}')
    elif text.count(':') == 1:
        address, port = text.split(':')
    else:
        address = text
    return address, port, protocol or None


def parse_target(target) -> dict:
    if isinstance(target, str):
        validate.text(target, 'target', validate.MAX_TEXT)
        address, port, protocol = _split_spec(target)
        target = {'address': address, 'port': port, 'protocol': protocol}
    elif not isinstance(target, dict):
        raise TargetError(f'a target must be a string or a dictionary, not {type(target).__name__}')
    address = target.get('address')
    if address is not None and not isinstance(address, str):
        raise TargetError(f'target {target!r}: address must be a string, not {type(address).__name__}')
    address = (address or '').strip()
    if address.startswith('[') and address.endswith(']'):
        address = address[1:-1]
    if not address:
        raise TargetError(f'target {target!r} has no address')
    address = validate.address(address, 'target address')
    protocol = target.get('protocol')
    port = target.get('port')
    if port in (None, ''):
        port = None
    else:
        port = validate.port(port, f'target {address}: port')
    if protocol is not None and not isinstance(protocol, str):
        raise TargetError(f'target {address}: protocol must be a string, not {type(protocol).__name__}')
    if protocol is None:
        if port is None or port not in PORT_PROTOCOL:
            raise TargetError(f'target {address}:{port}: give a protocol, the port is not a well-known mail port')
        protocol = PORT_PROTOCOL[port]
    protocol = protocol.lower()
    if protocol not in PROTOCOL_TLS_MODE:
        raise TargetError(f'target {address}: unknown protocol {protocol[:40]!r}')
    if port is None:
        port = next(p for p, name in PORT_PROTOCOL.items() if name == protocol)
    sni = target.get('sni') or None
    if sni is not None and not validate.is_ip(sni):
        # Sent in the ClientHello; an IP literal is never sent (RFC 6066 3), only compared.
        sni = validate.host_name(sni, f'target {address}: sni')
    expected = target.get('expected_names') or []
    if isinstance(expected, str):
        expected = [expected]
    if not isinstance(expected, (list, tuple)):
        raise TargetError(f'target {address}: expected_names must be a list of names')
    return {
        'address': address,
        'port': port,
        'protocol': protocol,
        'sni': sni,
        'expected_names': [validate.text(name if isinstance(name, str) else str(name),
                                         f'target {address}: expected_names[{index}]', validate.MAX_HOST_NAME + 2,
                                         allow_none=False)
                           for index, name in enumerate(expected)],
    }


def parse_targets(targets) -> list:
    """parse_target for each, the error naming the target's index."""
    if not isinstance(targets, (list, tuple)):
        raise TargetError(f'targets must be a list, not {type(targets).__name__}')
    parsed = []
    for index, target in enumerate(targets):
        try:
            parsed.append(parse_target(target))
        except TargetError as exc:
            raise TargetError(f'targets[{index}]: {exc}')
    return parsed


def default_ehlo_name(transport) -> str:
    """The local host name when it is fully qualified, else our address as an RFC 5321 literal.

    No DNS lookup: a probe of IP literals must not send a single query.
    """
    name = socket.gethostname()
    try:
        name = validate.ehlo_name(name, 'the local host name') or ''
    except validate.OptionError:
        # Not a usable EHLO argument (a non-ASCII or odd host name): fall back to the address literal.
        name = ''
    if '.' in name and not is_ip(name):
        return name
    local = transport.local()
    if local and is_ip(local.split('%', 1)[0]):
        local = local.split('%', 1)[0]
        return f'[IPv6:{local}]' if ':' in local else f'[{local}]'
    return name or 'localhost'


def load_library_for_many_chains() -> None:
    """Import `cryptography` for a run that meets many chains (see LIBRARY_RUN_SIZE), unless the backend
    is fixed."""
    if _x509.BACKEND == 'auto':
        _x509.Cryptography.load()


class CertificateDescriber:
    """Describes presented chains once per distinct chain in a run (a fleet shares few certs)."""

    def __init__(self, ca_file: str | None, ca_path: str | None, many_chains: bool = False):
        self.ca_file = ca_file
        self.ca_path = ca_path
        self.lock = threading.Lock()
        # Whether to load `cryptography` before the first verification (see LIBRARY_RUN_SIZE); under
        # a lock of its own, so that no probe verifies while another is halfway through the import.
        self.many_chains = many_chains
        self.library_lock = threading.Lock()
        self.cache: dict = {}
        # Chains being described right now: the first probe to meet a chain describes it, the others
        # that meet it meanwhile wait for that description. Probes start together, so without this a
        # run of 500 listeners presenting 16 chains described and verified some chains many times over
        # (24 verifications, 23 `openssl` runs instead of 16 and 8: bench/README.md, issue 15).
        self.pending: dict = {}

    def describe(self, chain: list, expected_names: list) -> dict:
        key = (tuple(chain), tuple(expected_names))
        with self.lock:
            cached = self.cache.get(key)
            waiting = None
            if cached is None:
                waiting = self.pending.get(key)
                if waiting is None:
                    self.pending[key] = threading.Event()
        if cached is not None:
            return dict(cached)
        if waiting is not None:
            waiting.wait()
            with self.lock:
                cached = self.cache.get(key)
            if cached is not None:
                return dict(cached)
            # The describing probe failed (a defect, not a server's fault): describe it here.
            return dict(self._describe(chain, expected_names))
        try:
            record = self._describe(chain, expected_names)
            with self.lock:
                self.cache[key] = record
        finally:
            with self.lock:
                self.pending.pop(key).set()
        return dict(record)

    def _describe(self, chain: list, expected_names: list) -> dict:
        if self.many_chains:
            with self.library_lock:
                load_library_for_many_chains()
        record = _x509.describe_der(chain[0], expected_names=expected_names or None)
        verified, verify_error = _trust.verify_chain(chain, ca_file=self.ca_file, ca_path=self.ca_path)
        record.update({'chain_length': len(chain), 'verified': verified, 'verify_error': verify_error})
        # What a DANE TLSA record can pin, for every certificate served (docs/dane-mta-sts.md).
        record['tlsa_chain'] = _tlsa.chain_digests(chain)
        # Certificate names are server text: made visible once per distinct chain, not per probe.
        return visible_deep(record)


def _elapsed_ms(start: float) -> float:
    return round((time.monotonic() - start) * 1000, 1)


class TargetProbe:
    """One dialog with one listener; fills the probe record as it goes."""

    def __init__(self, target: dict, options: dict, context, describer: CertificateDescriber, connect):
        self.target = target
        self.options = options
        self.context = context
        self.describer = describer
        self.connect = connect
        self.record = new_probe(target['address'], target['port'], target['protocol'], target['sni'],
                                options['vantage'], target.get('name'))
        self.stage = 'connect'
        self.deadline = Deadline(options['deadline'])
        self.transport = None
        self.dialog = None

    def phase(self, stage: str, greeting: bool = False) -> float:
        self.stage = stage
        return self.deadline.phase(self.options['greeting_timeout' if greeting else 'timeout'])

    def flag(self, name: str | None) -> None:
        if name and name not in self.record['flags']:
            self.record['flags'].append(name)

    def run(self) -> dict:
        started = time.monotonic()
        try:
            self._dialog()
        except ProbeError as exc:
            self.record['error'] = {'stage': self.stage, 'message': exc.message}
            self.flag(exc.flag)
        except Exception as exc:  # pylint: disable=broad-except
            # A defect of ours must still not cost the other targets their results.
            self.record['error'] = {'stage': self.stage,
                                    'message': f'internal error: {type(exc).__name__}: {exc}'}
        finally:
            if self.dialog is not None:
                for name in self.dialog.flags:
                    self.flag(name)
                if self.dialog.reader.bad_line_ending:
                    # Parsed all the same, but a line did not end in exactly one CRLF.
                    self.flag('malformed_reply')
            if self.transport is not None:
                self.transport.close()
            self.record['timings_ms']['total'] = _elapsed_ms(started)
        # Server text (banners, replies, surplus bytes) goes to terminals and reports: terminal
        # controls and bidi overrides become visible escapes here, once. The certificate description
        # is already visible (CertificateDescriber), and shared by every probe of the same chain.
        certificate = self.record['certificate']
        self.record['certificate'] = None
        self.record = visible_record(self.record)
        self.record['certificate'] = certificate
        return self.record

    def _timed(self, stage: str, func, *args):
        start = time.monotonic()
        try:
            return func(*args)
        finally:
            self.record['timings_ms'][stage] = _elapsed_ms(start)

    def _dialog(self) -> None:
        target, record = self.target, self.record
        until = self.phase('connect')
        if target.get('resolve_error'):
            raise ProbeError(target['resolve_error'])
        self.transport = self._timed('connect', self.connect, target['address'], target['port'], until)
        record['connected'] = True
        record['peer_address'] = self.transport.peer()
        ehlo_name = self.options['ehlo_name'] or default_ehlo_name(self.transport)
        dialog_class = DIALOGS[PROTOCOL_DIALOG[target['protocol']]]
        self.dialog = dialog_class(LineReader(self.transport), self.transport, ehlo_name)
        if record['tls_mode'] == 'implicit':
            self._implicit()
        else:
            self._starttls()

    def _greet(self) -> bool:
        greeting = self._timed('greeting', self.dialog.greeting, self.phase('greeting', greeting=True))
        self.record['greeting'] = {'code': greeting['code'], 'lines': greeting['lines']}
        if greeting['code'] not in self.dialog.greeting_ok:
            self.flag('greeting_refused')
            self._goodbye()
            return False
        return True

    def _starttls(self) -> None:
        record, dialog = self.record, self.dialog
        if not self._greet():
            return
        try:
            capabilities, reply = self._timed('capabilities', dialog.capabilities, self.phase('capabilities'))
        except MalformedReply as exc:
            if exc.capabilities is not None:
                # Stopped at a cap: what was read stays evidence; the dialog ends here (out of step).
                record['capabilities'] = exc.capabilities
                record['capabilities_reply'] = reply_summary(exc.partial)
                record['starttls_advertised'] = dialog.advertises_starttls(exc.capabilities)
            raise
        record['capabilities'] = capabilities
        record['capabilities_reply'] = reply_summary(reply)
        advertised = dialog.advertises_starttls(capabilities)
        record['starttls_advertised'] = advertised
        # Never STARTTLS after a rejected EHLO: a HELO session has no extensions (RFC 5321 4.1.1.1).
        if 'ehlo_rejected' in dialog.flags or not (advertised or self.options['try_starttls_when_not_advertised']):
            self._goodbye()
            return
        until = self.phase('starttls')
        command = dialog.starttls_command() + '\r\n'
        if self.options['test_command_injection']:
            # CVE-2011-0411: a command sent in the same segment as STARTTLS must be discarded.
            command += dialog.injection_command() + '\r\n'
        start = time.monotonic()
        self.transport.send(command.encode('ascii'), until)
        reply = dialog.read_starttls_reply(until)
        record['timings_ms']['starttls'] = _elapsed_ms(start)
        record['starttls_reply'] = reply_summary(reply)
        surplus = dialog.reader.surplus()
        if reply['code'] not in dialog.starttls_ok:
            # Refused: the session stays in plaintext, so whatever follows (the legitimate answer to
            # the command pipelined by test_command_injection, whenever it arrives) is no injection.
            # Only bytes after a positive reply and before the handshake are (NO STARTTLS, 2021).
            self._goodbye()
            return
        if surplus:
            # Bytes queued behind the STARTTLS reply would be taken as TLS-protected later.
            self.flag('response_injection')
            record['pre_tls_surplus'] = surplus[:200].decode('ascii', 'replace')
        tls = self._handshake()
        if tls.pre_tls_plaintext:
            # Plaintext lines between the positive reply and the server's first TLS record: the same
            # injection, arrived after the reader had looked (the handshake went on without them).
            self.flag('response_injection')
            late = tls.pre_tls_plaintext.decode('ascii', 'replace')
            record['pre_tls_surplus'] = ((record['pre_tls_surplus'] or '') + late)[:200]
        dialog.use(tls)
        if self.options['test_command_injection']:
            self._check_injection(tls)
        self._after_tls()

    def _implicit(self) -> None:
        tls = self._handshake()
        self.dialog.use(tls)
        if not self._greet():
            return
        self._after_tls()

    def _after_tls(self) -> None:
        try:
            capabilities, reply = self._timed('post_tls', self.dialog.capabilities_after_tls, self.phase('post_tls'))
        except MalformedReply as exc:
            if exc.capabilities is not None:
                self.record['capabilities_after_tls'] = exc.capabilities
            raise
        self.record['capabilities_after_tls'] = capabilities
        if reply is not None and self.record.get('capabilities_reply') is None:
            self.record['capabilities_reply'] = reply_summary(reply)
        if self.dialog.advertises_starttls(capabilities):
            self.flag('starttls_after_tls')
        self._goodbye()

    def _handshake(self) -> TlsLayer:
        target, record = self.target, self.record
        until = self.phase('handshake')
        sni = target['sni'] if target['sni'] and not is_ip(target['sni']) else None
        # After STARTTLS, plaintext lines before the first TLS record are surplus (response injection).
        tls = TlsLayer(self.transport, self.context, sni, hold_plaintext=record['tls_mode'] == 'starttls')
        record['tls'] = {'established': False, 'version': None, 'cipher': None, 'error': None,
                         'sni': sni}
        start = time.monotonic()
        try:
            tls.handshake(until)
        except ProbeError as exc:
            sample = tls.plaintext_sample()
            if sample:
                exc.message = f'{exc.message}; the server answered in plaintext: {sample!r}'
                record['tls']['server_plaintext'] = sample
            record['tls']['error'] = exc.message
            raise
        finally:
            record['timings_ms']['handshake'] = _elapsed_ms(start)
        record['tls'].update({'established': True, 'version': tls.obj.version(),
                              'cipher': (tls.obj.cipher() or (None,))[0]})
        if record['tls']['version'] in LEGACY_TLS_VERSIONS:
            self.flag('legacy_tls')
        chain = tls.chain_der()
        if not chain:
            self.flag('no_certificate')
        else:
            expected = target['expected_names'] or ([target['sni']] if target['sni'] else [])
            record['certificate'] = self.describer.describe(chain, expected)
        self.transport = tls
        return tls

    def _check_injection(self, tls: TlsLayer) -> None:
        until = time.monotonic() + min(INJECTION_WAIT, self.options['timeout'])
        try:
            unsolicited = tls.recv(until)
        except ProbeError:
            return
        if unsolicited:
            self.flag('command_injection')
            self.record['injected_reply'] = unsolicited[:200].decode('ascii', 'replace')

    def _goodbye(self) -> None:
        try:
            self.dialog.send(self.dialog.goodbye(), self.deadline.phase(1.0))
        except ProbeError:
            pass


def _signature(probe: dict) -> dict:
    return {
        'starttls_advertised': probe['starttls_advertised'],
        'starttls_reply': (probe['starttls_reply'] or {}).get('code'),
        'tls_established': (probe['tls'] or {}).get('established'),
        'certificate': (probe['certificate'] or {}).get('sha256'),
        'error_stage': (probe['error'] or {}).get('stage'),
    }


def _interleave(indexes_by_host: dict) -> list:
    """Round-robin over hosts so that one host's limit never idles the workers."""
    order, queues = [], [list(queue) for queue in indexes_by_host.values()]
    while queues:
        queues = [queue for queue in queues if queue]
        for queue in queues:
            order.append(queue.pop(0))
    return order


def _resolver_addresses(name: str, port: int) -> list:
    """Every address the system resolver (getaddrinfo: /etc/hosts, then DNS as nsswitch.conf says)
    gives for `name`, in the resolver's order, each once."""
    addresses = []
    for _family, _type, _proto, _canon, sockaddr in socket.getaddrinfo(name, port, 0, socket.SOCK_STREAM):
        address = sockaddr[0]
        if address not in addresses:
            addresses.append(address)
    return addresses


def resolve_targets(parsed: list, resolver=None) -> list:
    """The targets with every name replaced by one target per address it resolves to (an MX name with
    several A/AAAA records is several listeners); each keeps the name in `name`. IP literals are never
    looked up. A name that does not resolve stays one target that fails in stage connect."""
    resolver = resolver or _resolver_addresses
    expanded = []
    for target in parsed:
        address = target['address']
        if is_ip(address.split('%', 1)[0]):
            expanded.append(dict(target, name=None))
            continue
        try:
            addresses = resolver(address, target['port'])
        except (socket.gaierror, UnicodeError, OSError) as exc:
            message = getattr(exc, 'strerror', None) or str(exc)
            expanded.append(dict(target, name=address, resolve_error=f'cannot resolve {address}: {message}'))
            continue
        if not addresses:
            expanded.append(dict(target, name=address, resolve_error=f'cannot resolve {address}: no address'))
        for resolved in addresses:
            expanded.append(dict(target, address=resolved, name=address))
    return expanded


def probe_many(targets: list, options: dict | None = None, connect=None, max_parallel: int | None = None) -> list:
    """Probe every target; results come back in the order of `targets`.

    A target given as a name is resolved here with the system resolver when the probe connects from
    this machine (`connect` left out), and gives one result per address, in the resolver's order, each
    with `target.name` set. Through a jump host (`connect` given), the jump host resolves the name
    and there is one result. `max_parallel` caps the probes in flight (a jump host's channel limit).
    Raises TargetError only for arguments that cannot be probed as given.
    """
    options = normalise_options(options)
    parsed = parse_targets(targets)
    if connect is None:
        parsed = resolve_targets(parsed)
    else:
        parsed = [dict(target, name=None if is_ip(target['address'].split('%', 1)[0]) else target['address'])
                  for target in parsed]
    direct = connect is None
    if direct:
        connect = _direct_connect(options['source_address'])
    processes = process_count(options, parsed) if direct and max_parallel is None else 1
    # Decided for the whole run, whichever process describes a chain.
    many_chains = len(parsed) > LIBRARY_RUN_SIZE
    if processes > 1:
        return _probe_in_processes(parsed, options, processes, connect, many_chains)
    return _probe_here(parsed, options, connect, max_parallel, many_chains)


def _direct_connect(source: str | None):
    """How a probe from this machine connects: from `source` when given (a vantage with an address of
    its own), else from the address the kernel chooses."""
    if not source:
        return TcpTransport.connect

    def connect(address, port, until):
        return TcpTransport.connect(address, port, until, source=source)
    return connect


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def process_count(options: dict, parsed: list) -> int:
    """How many processes probe `parsed` from this machine: `processes` when given, else one per
    PROCESS_SHARE targets up to one per usable CPU; never more than there are addresses (each address
    is probed by one process, so that per_host_limit holds), and one unless this process may fork."""
    addresses = len({target['address'] for target in parsed})
    wanted = options['processes']
    if wanted is None:
        wanted = min(usable_cpus(), len(parsed) // PROCESS_SHARE)
    wanted = min(wanted, addresses)
    # A fork copies only the calling thread: a lock another thread held at that moment (in the
    # logging module, in OpenSSL, in a queue) would stay held in the child for ever.
    if wanted > 1 and (not hasattr(os, 'fork') or threading.active_count() > 1):
        return 1
    return max(1, wanted)


def shard_by_address(parsed: list, shards: int) -> list:
    """The indexes of `parsed` in `shards` lists of about equal length, every address in one of them
    (the busiest addresses placed first, each on the list that is shortest so far); each list in
    target order."""
    by_address: dict = {}
    for index, target in enumerate(parsed):
        by_address.setdefault(target['address'], []).append(index)
    lists: list = [[] for _shard in range(shards)]
    for indexes in sorted(by_address.values(), key=len, reverse=True):
        min(lists, key=len).extend(indexes)
    return [sorted(indexes) for indexes in lists if indexes]


def _lost_record(target: dict, options: dict, why: str) -> dict:
    record = new_probe(target['address'], target['port'], target['protocol'], target['sni'],
                       options['vantage'], target.get('name'))
    record['error'] = {'stage': 'connect', 'message': f'internal error: {why}; what it saw of this target is lost'}
    return record


def _probe_in_processes(parsed: list, options: dict, processes: int, connect, many_chains: bool) -> list:
    """Probe from `processes` processes: this one and forked children, each with its own addresses and
    its share of `concurrency`; the children send their records back as JSON through a pipe. A child
    that cannot be started leaves its share to this process; one that ends without its records gives
    each of its targets a record that says so (the other targets keep theirs)."""
    shards = shard_by_address(parsed, processes)
    share = dict(options, concurrency=max(1, -(-options['concurrency'] // len(shards))))
    if many_chains:
        load_library_for_many_chains()  # once, before the fork, for every process
    own = list(shards[0])
    children = []
    for shard in shards[1:]:
        read_end, write_end = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            os.close(read_end)
            os.close(write_end)
            own.extend(shard)
            continue
        if pid == 0:  # pragma: no cover - the child's coverage is not collected; tests check its records
            status = 1
            try:
                os.close(read_end)
                records = _probe_here([parsed[index] for index in shard], share, connect, None, many_chains)
                with os.fdopen(write_end, 'wb') as pipe:
                    pipe.write(json.dumps(records).encode('utf-8'))
                status = 0
            finally:
                # Never back into the caller's code (an Ansible module, a test runner): no exit
                # handlers, no flushing of output buffers this process shares with its parent.
                os._exit(status)
        os.close(write_end)
        children.append((pid, shard, read_end, []))
    # Readers only once every child is forked (a fork copies no thread but the caller); they drain the
    # pipes while this process probes its own share, so that no child waits on a full pipe.
    readers = [threading.Thread(target=_read_all, args=(read_end, chunks), daemon=True)
               for _pid, _shard, read_end, chunks in children]
    for reader in readers:
        reader.start()
    results: list = [None] * len(parsed)
    own.sort()
    try:
        for index, record in zip(own, _probe_here([parsed[index] for index in own], share, connect, None, many_chains)):
            results[index] = record
    finally:
        for (pid, shard, _read_end, chunks), reader in zip(children, readers):
            reader.join()
            _pid, status = os.waitpid(pid, 0)
            records = _child_records(chunks, status, len(shard))
            if records is None:
                why = f'the probe process for {len(shard)} targets ended without their results ({_ended(status)})'
                records = [_lost_record(parsed[index], options, why) for index in shard]
            for index, record in zip(shard, records):
                results[index] = record
    return results


def _child_records(chunks: list, status: int, expected: int) -> list | None:
    """What a child sent: its records when it ended well and sent one for each of its targets."""
    if status != 0:
        return None
    try:
        records = json.loads(b''.join(chunks).decode('utf-8'))
    except ValueError:
        return None
    if not isinstance(records, list) or len(records) != expected or not all(isinstance(r, dict) for r in records):
        return None
    return records


def _ended(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f'killed by signal {os.WTERMSIG(status)}'
    return f'exit status {os.WEXITSTATUS(status)}'


def _read_all(descriptor: int, chunks: list) -> None:
    try:
        while True:
            chunk = os.read(descriptor, 65536)
            if not chunk:
                return
            chunks.append(chunk)
    finally:
        os.close(descriptor)


def _probe_here(parsed: list, options: dict, connect, max_parallel: int | None, many_chains: bool) -> list:
    """Probe every target from this process with a pool of threads; results in the order of `parsed`.
    `many_chains`: the run (all processes together) is large enough to check chains with the library."""
    context = observing_context()
    describer = CertificateDescriber(options['ca_file'], options['ca_path'], many_chains=many_chains)
    limits: dict = {}
    by_host: dict = {}
    for index, target in enumerate(parsed):
        limits.setdefault(target['address'], threading.BoundedSemaphore(options['per_host_limit']))
        by_host.setdefault(target['address'], []).append(index)
    results: list = [None] * len(parsed)

    def run(index: int) -> None:
        target = parsed[index]
        with limits[target['address']]:
            first = TargetProbe(target, options, context, describer, connect).run()
            if options['attempts'] > 1:
                signatures = [_signature(first)]
                for _attempt in range(options['attempts'] - 1):
                    signatures.append(_signature(TargetProbe(target, options, context, describer, connect).run()))
                first['attempts'] = signatures
                if len({json.dumps(sig, sort_keys=True) for sig in signatures}) > 1:
                    first['flags'].append('inconsistent')
        results[index] = first

    # Through a jump host, never more probes at once than it has channels (its MaxSessions): a probe
    # waiting for a channel would spend its own deadline waiting. No more threads than can probe at
    # once under the per-address limits either (500 targets on one address with a limit of 8 need 8,
    # not 128 threads that mostly wait and contend for the interpreter).
    runnable = sum(min(options['per_host_limit'], len(indexes)) for indexes in by_host.values())
    workers = max(1, min(options['concurrency'], runnable, max_parallel or options['concurrency']))
    order = _interleave(by_host)
    if workers == 1:
        for index in order:
            run(index)
    else:
        ProbePool(run, order, workers).run()
    return results


class ProbePool:
    """Threads that call `work` for each item of `order`: as few as keep this process busy, as many
    as `most`.

    A probe waits either on the network (a slow or distant server) or on this process: the dialog,
    the TLS library and the record keeping all run under the one interpreter lock. Threads beyond
    what the work needs only hand that lock to one another: with 64 threads on a CPU-bound run of
    250 loopback listeners a fifth of the process's CPU went to switching between them (perf,
    bench/README.md, issue 15). So the pool starts with FIRST_THREADS and, every GROW_EVERY seconds,
    doubles while the process used less than GROW_BELOW of a CPU in that time and work is waiting:
    a sweep of slow servers reaches `most` within a tenth of a second, a sweep the CPU limits stays
    small. (Where other processes hold the CPUs, the process gets less than that and the pool grows
    as it did before it adapted: more threads then cost what they always did.)
    """

    FIRST_THREADS = 8
    GROW_EVERY = 0.02
    GROW_BELOW = 0.75

    def __init__(self, work, order: list, most: int):
        self.work = work
        self.items = iter(order)
        self.left = len(order)
        self.most = most
        self.lock = threading.Lock()
        self.finished = threading.Event()
        if not self.left:
            self.finished.set()  # nothing to do: run() returns at once, not after waiting for a last item
        self.threads: list = []
        self.failure = None

    def _next(self):
        with self.lock:
            return next(self.items, None) if self.failure is None else None

    def _worker(self) -> None:
        while True:
            item = self._next()
            if item is None:
                return
            try:
                self.work(item)
            except BaseException as exc:  # pylint: disable=broad-except
                # A defect of ours (TargetProbe never raises): no more items; run() raises it.
                with self.lock:
                    self.failure = self.failure or exc
                    self.finished.set()
                return
            with self.lock:
                self.left -= 1
                if self.left == 0:
                    self.finished.set()

    def _add(self, count: int) -> None:
        for _thread in range(count):
            thread = threading.Thread(target=self._worker, daemon=True)
            thread.start()
            self.threads.append(thread)

    def run(self) -> None:
        self._add(min(self.most, self.FIRST_THREADS))
        wall, cpu = time.monotonic(), time.process_time()
        while not self.finished.wait(self.GROW_EVERY):
            if len(self.threads) >= self.most:
                continue
            now_wall, now_cpu = time.monotonic(), time.process_time()
            if (now_cpu - cpu) / max(now_wall - wall, 1e-6) < self.GROW_BELOW:
                self._add(min(self.most - len(self.threads), len(self.threads)))
            wall, cpu = now_wall, now_cpu
        for thread in self.threads:
            thread.join()
        if self.failure is not None:
            raise self.failure


def summarise(probes: list) -> dict:
    return {
        'targets': len(probes),
        'connected': sum(1 for probe in probes if probe['connected']),
        'starttls_advertised': sum(1 for probe in probes if probe['starttls_advertised']),
        'tls_established': sum(1 for probe in probes if (probe['tls'] or {}).get('established')),
        'errors': sum(1 for probe in probes if probe['error']),
    }
