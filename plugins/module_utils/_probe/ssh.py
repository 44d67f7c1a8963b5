# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Probing through a jump host: SSH direct-tcpip channels opened with paramiko.

The jump host needs nothing but an SSH server that permits TCP forwarding; every probe is one
channel over a single SSH connection, so a fleet costs one login.
"""

from __future__ import annotations

import traceback

from ansible_collections.mailsec.starttls.plugins.module_utils._probe.wire import (
    ChannelTransport,
    ProbeError,
    ProbeTimeout,
    remaining,
)

try:
    import paramiko
    HAS_PARAMIKO = True
    PARAMIKO_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - depends on the environment
    HAS_PARAMIKO = False
    PARAMIKO_IMPORT_ERROR = traceback.format_exc()


# The `jump_host` option of listener_probe and each entry of fleet_assess's `jump_hosts`.
JUMP_HOST_ARGUMENT_SPEC = {
    'host': {'type': 'str', 'required': True},
    'port': {'type': 'int', 'default': 22},
    'user': {'type': 'str'},
    'private_key_file': {'type': 'path'},
    'password': {'type': 'str', 'no_log': True},
    'known_hosts_file': {'type': 'path'},
    'host_key_checking': {'type': 'bool', 'default': True},
}


class JumpHostError(Exception):
    """The jump host itself cannot be used (login, host key); no listener can be probed through it."""


class JumpHost:
    """One SSH connection to a jump host; `connect` has the signature the engine expects."""

    def __init__(self, host: str, port: int = 22, user: str | None = None, private_key_file: str | None = None,
                 password: str | None = None, known_hosts_file: str | None = None, host_key_checking: bool = True,
                 timeout: float = 10.0):
        if not HAS_PARAMIKO:
            raise JumpHostError('probing through a jump host needs the paramiko Python library')
        self.host = host
        self.client = paramiko.SSHClient()
        self.client.load_system_host_keys()
        if known_hosts_file:
            self.client.load_host_keys(known_hosts_file)
        # Refusing unknown host keys is the default; accepting them must be asked for in so many words.
        policy = paramiko.RejectPolicy() if host_key_checking else paramiko.AutoAddPolicy()
        self.client.set_missing_host_key_policy(policy)
        try:
            self.client.connect(host, port=port, username=user, key_filename=private_key_file, password=password,
                                timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
                                allow_agent=password is None and private_key_file is None,
                                look_for_keys=password is None and private_key_file is None)
        except paramiko.SSHException as exc:
            raise JumpHostError(f'jump host {host}: {exc}')
        except OSError as exc:
            raise JumpHostError(f'jump host {host}: {exc.strerror or exc}')

    def connect(self, address: str, port: int, until: float) -> ChannelTransport:
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise ProbeError(f'the SSH connection to jump host {self.host} is gone')
        try:
            channel = transport.open_channel('direct-tcpip', (address, port), ('127.0.0.1', 0),
                                             timeout=remaining(until))
        except paramiko.ChannelException as exc:
            # The jump host could not connect onwards (refused, unreachable, forwarding forbidden).
            raise ProbeError(f'jump host {self.host} could not connect to {address} port {port}: {exc.text}')
        except paramiko.SSHException as exc:
            if 'Timeout' in str(exc):
                raise ProbeTimeout(f'jump host {self.host}: opening a channel timed out')
            raise ProbeError(f'jump host {self.host}: {exc}')
        return ChannelTransport(channel, peer=address)

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
                        host_key_checking=spec.get('host_key_checking', True), timeout=timeout)
    except JumpHostError as exc:
        reason = str(exc)

        def unreachable(address: str, port: int, until: float):
            raise ProbeError(reason)
        return unreachable, None
    return jump.connect, jump
