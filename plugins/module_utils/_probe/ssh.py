# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Probing through a jump host: SSH direct-tcpip channels opened with paramiko.

The jump host needs nothing but an SSH server that permits TCP forwarding; every probe is one
channel over a single SSH connection, so a fleet costs one login.
"""

from __future__ import annotations

import socket
import threading
import traceback

from ansible_collections.mailsec.starttls.plugins.module_utils._probe.wire import (
    ChannelTransport,
    ProbeError,
    ProbeTimeout,
    remaining,
)

# paramiko is imported on first use: importing it costs a module process 0.1-0.2 s of start-up (it
# pulls in cryptography, bcrypt, nacl and invoke), and only a probe through a jump host needs it.
_IMPORTED: dict = {}


def paramiko_module():
    """The paramiko module, imported once; raises ImportError when it is not installed."""
    if 'paramiko' not in _IMPORTED:
        import paramiko  # pylint: disable=import-outside-toplevel
        _IMPORTED['paramiko'] = paramiko
    return _IMPORTED['paramiko']


def paramiko_import_error() -> str | None:
    """None when paramiko can be imported, else the traceback of the failed import."""
    try:
        paramiko_module()
    except ImportError:
        return traceback.format_exc()
    return None


# The `jump_host` option of listener_probe and each entry of fleet_assess's `jump_hosts`.
JUMP_HOST_ARGUMENT_SPEC = {
    'host': {'type': 'str', 'required': True},
    'port': {'type': 'int', 'default': 22},
    'user': {'type': 'str'},
    'private_key_file': {'type': 'path'},
    'password': {'type': 'str', 'no_log': True},
    'known_hosts_file': {'type': 'path'},
    'host_key_checking': {'type': 'bool', 'default': True},
    'max_channels': {'type': 'int', 'default': 10},
}

# OpenSSH's MaxSessions default: the channels one connection may hold open at once.
DEFAULT_MAX_CHANNELS = 10


class _QuickAckSocket(socket.socket):
    """The SSH connection's socket, acknowledging every segment at once.

    Probes are lockstep dialogs of small packets. sshd sends a forwarded channel's data with Nagle's
    algorithm on (it turns TCP_NODELAY on only for interactive sessions), so each small packet behind
    an unacknowledged one waits for our delayed ACK: about 40 ms per dialog step on Linux, 80% of a
    probe's time. Asking for an immediate ACK before each read (TCP_QUICKACK, which Linux clears
    again by itself) removes the wait without asking anything of the jump host."""

    def recv(self, *args, **kwargs):  # pylint: disable=signature-differs
        try:
            self.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
        except OSError:
            pass
        return super().recv(*args, **kwargs)


_TCP_QUICKACK = getattr(socket, 'TCP_QUICKACK', None)


def _connect_quick(host: str, port: int, timeout: float) -> socket.socket:
    """The TCP connection to the jump host, with TCP_NODELAY (and quick ACKs where Linux has them)."""
    raw = socket.create_connection((host, port), timeout=timeout)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if _TCP_QUICKACK is None:
        return raw
    return _QuickAckSocket(raw.family, raw.type, raw.proto, fileno=raw.detach())


class JumpHostError(Exception):
    """The jump host itself cannot be used (login, host key); no listener can be probed through it."""


class JumpHost:
    """One SSH connection to a jump host; `connect` has the signature the engine expects."""

    def __init__(self, host: str, port: int = 22, user: str | None = None, private_key_file: str | None = None,
                 password: str | None = None, known_hosts_file: str | None = None, host_key_checking: bool = True,
                 timeout: float = 10.0, max_channels: int = DEFAULT_MAX_CHANNELS):
        if paramiko_import_error() is not None:
            raise JumpHostError('probing through a jump host needs the paramiko Python library')
        paramiko = paramiko_module()
        self.host = host
        # Never more channels open at once than `max_channels` (default 10, OpenSSH's MaxSessions
        # default). OpenSSH itself counts only sessions against MaxSessions (OpenSSH 9.2 accepted 40
        # direct-tcpip channels under MaxSessions 10 in bench/bench_jump.py), but other SSH servers and
        # bastions cap channels per connection, and a refused channel would read as a listener's fault.
        self.max_channels = max_channels
        self.channels = threading.BoundedSemaphore(max_channels)
        self.open_now = 0
        self.peak_channels = 0
        self.count_lock = threading.Lock()
        self.client = paramiko.SSHClient()
        self.client.load_system_host_keys()
        if known_hosts_file:
            self.client.load_host_keys(known_hosts_file)
        # Refusing unknown host keys is the default; accepting them must be asked for in so many words.
        policy = paramiko.RejectPolicy() if host_key_checking else paramiko.AutoAddPolicy()
        self.client.set_missing_host_key_policy(policy)
        try:
            sock = _connect_quick(host, port, timeout)
            self.client.connect(host, port=port, username=user, key_filename=private_key_file, password=password,
                                sock=sock,
                                timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
                                allow_agent=password is None and private_key_file is None,
                                look_for_keys=password is None and private_key_file is None)
        except paramiko.SSHException as exc:
            raise JumpHostError(f'jump host {host}: {exc}')
        except OSError as exc:
            raise JumpHostError(f'jump host {host}: {exc.strerror or exc}')

    def connect(self, address: str, port: int, until: float) -> ChannelTransport:
        paramiko = paramiko_module()
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise ProbeError(f'the SSH connection to jump host {self.host} is gone')
        if not self.channels.acquire(timeout=remaining(until)):
            raise ProbeTimeout(f'jump host {self.host}: no free channel (at most {self.max_channels} at once)')
        with self.count_lock:
            self.open_now += 1
            self.peak_channels = max(self.peak_channels, self.open_now)
        try:
            channel = transport.open_channel('direct-tcpip', (address, port), ('127.0.0.1', 0),
                                             timeout=remaining(until))
        except paramiko.ChannelException as exc:
            self._release()
            # The jump host could not connect onwards (refused, unreachable, forwarding forbidden).
            raise ProbeError(f'jump host {self.host} could not connect to {address} port {port}: {exc.text}')
        except paramiko.SSHException as exc:
            self._release()
            if 'Timeout' in str(exc):
                raise ProbeTimeout(f'jump host {self.host}: opening a channel timed out')
            raise ProbeError(f'jump host {self.host}: {exc}')
        except BaseException:
            self._release()
            raise
        return ChannelTransport(channel, peer=address, on_close=self._release)

    def _release(self) -> None:
        with self.count_lock:
            self.open_now -= 1
        self.channels.release()

    def close(self) -> None:
        self.client.close()


def jump_connector(spec: dict, timeout: float):
    """(connect, jump) for the engine: through the jump host described by `spec` (the keys of the
    `jump_host` option), or, when it cannot be used, a connect that says why for every target, so
    that each probe carries the reason and no run fails for it. Close `jump` when done."""
    port = 22 if spec.get('port') is None else spec['port']
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        # paramiko would pack 70000 into 16 bits and connect to port 4464: refuse, never wrap.
        raise ValueError(f'jump host port {port!r} is out of range (1 to 65535)')
    try:
        jump = JumpHost(spec['host'], port=port, user=spec.get('user'),
                        private_key_file=spec.get('private_key_file'), password=spec.get('password'),
                        known_hosts_file=spec.get('known_hosts_file'),
                        host_key_checking=spec.get('host_key_checking', True), timeout=timeout,
                        max_channels=spec.get('max_channels') or DEFAULT_MAX_CHANNELS)
    except JumpHostError as exc:
        reason = str(exc)

        def unreachable(address: str, port: int, until: float):
            raise ProbeError(reason)
        return unreachable, None
    return jump.connect, jump
