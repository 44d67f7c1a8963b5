# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixture hosts for the MTA adapters: a directory that stands for / (configuration files and
a small fake /proc), so that host inspection runs without touching this machine's /etc."""

from __future__ import annotations

import ipaddress
import os
import textwrap

import pytest

from ansible_collections.mailsec.starttls.plugins.module_utils._host import gather_host
from ansible_collections.mailsec.starttls.plugins.module_utils._mta.context import HostContext

# fib_trie as Linux prints it for lo (127.0.0.0/8) and one more address.
FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 5
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
     |-- 198.51.100.7
        /32 host LOCAL
"""
IF_INET6 = ('00000000000000000000000000000001 01 80 10 80       lo\n'
            '20010db8000000000000000000000007 02 40 00 80     eth0\n')
TCP_HEADER = ('  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout '
              'inode\n')


def tcp_hex(address: str, port: int) -> str:
    """An address:port as /proc/net/tcp or tcp6 writes it: the inverse of
    `_procnet.decode_endpoint`, which test_host.py checks in a round trip."""
    packed = ipaddress.ip_address(address).packed
    if len(packed) == 4:
        return f'{packed[::-1].hex().upper()}:{port:04X}'
    words = b''.join(packed[index:index + 4][::-1] for index in range(0, 16, 4))
    return f'{words.hex().upper()}:{port:04X}'


class FakeHost:
    """Builds a root directory: files, /proc/net tables and processes with fds."""

    def __init__(self, root: str):
        self.root = root
        self.sockets: list = []
        self.inode = 40000
        os.makedirs(os.path.join(root, 'proc', 'net'), exist_ok=True)
        self.write('/proc/net/fib_trie', FIB_TRIE)
        self.write('/proc/net/if_inet6', IF_INET6)
        self._write_sockets()

    tcp_hex = staticmethod(tcp_hex)

    def path(self, host_path: str) -> str:
        return os.path.join(self.root, host_path.lstrip('/'))

    def write(self, host_path: str, text: str, dedent: bool = True, mtime: float | None = None) -> str:
        real = self.path(host_path)
        os.makedirs(os.path.dirname(real), exist_ok=True)
        with open(real, 'w') as handle:
            handle.write(textwrap.dedent(text).lstrip('\n') if dedent else text)
        if mtime is not None:
            os.utime(real, (mtime, mtime))
        return host_path

    def files(self, mapping: dict) -> None:
        for host_path, text in mapping.items():
            self.write(host_path, text)

    def pem(self, host_path: str, *labels: str) -> str:
        body = ''.join(f'-----BEGIN {label}-----\nAAAA\n-----END {label}-----\n' for label in labels)
        return self.write(host_path, body, dedent=False)

    def listen(self, address: str, port: int, pid: int | None = None) -> int:
        self.inode += 1
        self.sockets.append((address, port, self.inode))
        self._write_sockets()
        if pid is not None:
            fd_dir = self.path(f'/proc/{pid}/fd')
            os.makedirs(fd_dir, exist_ok=True)
            os.symlink(f'socket:[{self.inode}]', os.path.join(fd_dir, str(len(os.listdir(fd_dir)) + 3)))
        return self.inode

    def namespaces(self, pid, net: str, mnt: str = 'mnt:[1]') -> None:
        """Give /proc/PID/ns links (PID 'self' for this process's own namespaces)."""
        directory = self.path(f'/proc/{pid}/ns')
        os.makedirs(directory, exist_ok=True)
        os.symlink(net, os.path.join(directory, 'net'))
        os.symlink(mnt, os.path.join(directory, 'mnt'))

    def listen_in_namespace(self, pid: int, address: str, port: int) -> None:
        """A listening socket seen only through /proc/PID/net (the daemon's own network namespace)."""
        self.inode += 1
        directory = self.path(f'/proc/{pid}/net')
        os.makedirs(directory, exist_ok=True)
        name = 'tcp6' if ':' in address else 'tcp'
        remote = tcp_hex('::' if ':' in address else '0.0.0.0', 0)
        with open(os.path.join(directory, name), 'a') as handle:
            if handle.tell() == 0:
                handle.write(TCP_HEADER)
            handle.write(f'   0: {tcp_hex(address, port)} {remote} 0A 00000000:00000000 00:00000000 '
                         f'00000000     0        0 {self.inode} 1 0000000000000000 100 0 0 10 0\n')
        other = 'tcp' if name == 'tcp6' else 'tcp6'
        if not os.path.exists(os.path.join(directory, other)):
            with open(os.path.join(directory, other), 'w') as handle:
                handle.write(TCP_HEADER)

    def _write_sockets(self) -> None:
        for name, family in (('tcp', 4), ('tcp6', 6)):
            lines = [TCP_HEADER]
            for index, (address, port, inode) in enumerate(item for item in self.sockets
                                                           if (':' in item[0]) == (family == 6)):
                remote = tcp_hex('0.0.0.0' if family == 4 else '::', 0)
                lines.append(f'   {index}: {tcp_hex(address, port)} {remote} 0A 00000000:00000000 00:00000000 '
                             f'00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0\n')
            with open(self.path(f'/proc/net/{name}'), 'w') as handle:
                handle.write(''.join(lines))

    def process(self, pid: int, comm: str, argv: list, ppid: int = 1, environ: dict | None = None) -> None:
        base = self.path(f'/proc/{pid}')
        os.makedirs(os.path.join(base, 'fd'), exist_ok=True)
        with open(os.path.join(base, 'stat'), 'w') as handle:
            handle.write(f'{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560 0 0 0 0\n')
        with open(os.path.join(base, 'cmdline'), 'wb') as handle:
            handle.write(b'\0'.join(item.encode() for item in argv) + b'\0')
        with open(os.path.join(base, 'environ'), 'wb') as handle:
            handle.write(b'\0'.join(f'{key}={value}'.encode() for key, value in (environ or {}).items()))

    def context(self, **options) -> HostContext:
        ctx = HostContext(root=self.root, use_tools=options.pop('use_tools', 'never'))
        ctx.options = options
        return ctx

    @staticmethod
    def by_endpoint(result: dict) -> dict:
        """Listeners keyed by 'address:port' (IPv6 in brackets), for short assertions."""
        keyed = {}
        for listener in result['listeners']:
            address = listener['address']
            key = f'[{address}]:{listener["port"]}' if ':' in address else f'{address}:{listener["port"]}'
            assert key not in keyed, f'two listeners on {key}'
            keyed[key] = listener
        return keyed

    @staticmethod
    def warnings_text(result: dict) -> str:
        return '\n'.join(f'{item.get("where")}: {item["message"]}' for item in result['warnings'])

    def gather(self, **options) -> dict:
        options.setdefault('use_tools', 'never')
        options['root'] = self.root
        probe = options.pop('probe', None)
        store_inspector = options.pop('store_inspector', None)
        return gather_host(options, probe=probe, store_inspector=store_inspector)


@pytest.fixture
def host(tmp_path):
    return FakeHost(str(tmp_path / 'root'))
