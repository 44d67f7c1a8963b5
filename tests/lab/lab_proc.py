# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Processes and sockets of the lab, read from /proc: which processes a lab root started (by their
mount namespace), which addresses listen now, which sockets the lab holds, and whether an
address accepts a connection."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
from pathlib import Path

CONNECT_TIMEOUT_S = 2.0


def _load_plugin_module(name: str):
    """A dependency-free module of plugins/module_utils, loaded from its file: the lab runs
    outside any ansible_collections tree, and keeps no copy of what the collection defines."""
    path = Path(__file__).resolve().parents[2] / 'plugins' / 'module_utils' / f'{name}.py'
    spec = importlib.util.spec_from_file_location(f'mailsec_lab_{name.lstrip("_")}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The collection's own /proc/net decoder (_procnet.decode_endpoint), so that the lab and
# mta_tls_info read socket tables the same way.
decode_endpoint = _load_plugin_module('_procnet').decode_endpoint


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


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.scandir(f'/proc/{pid}/fd'):
            with contextlib.suppress(OSError):
                target = os.readlink(fd.path)
                if target.startswith('socket:['):
                    inodes.add(target[8:-1])
    return inodes


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
                address, port = decode_endpoint(fields[1])
                table.append({'kind': kind, 'address': address, 'port': port, 'inode': fields[9]})
    return table


def listening_now() -> set[tuple[str, int]]:
    return {(row['address'], row['port']) for row in socket_table() if row['kind'].startswith('tcp')}


def lab_sockets(root: str | os.PathLike) -> list[dict]:
    """TCP listeners and UDP sockets held by the lab's processes, with the owning pid."""
    owners: dict[str, int] = {}
    for pid in lab_processes(root):
        for inode in socket_inodes(pid):
            owners.setdefault(inode, pid)
    return [dict(row, pid=owners[row['inode']]) for row in socket_table() if row['inode'] in owners]


def can_connect(address: str, port: int, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def holders(addresses: set) -> list[str]:
    """'address:port held by pid N: command' for each listening (address, port) of `addresses`."""
    owners = {row['inode']: row for row in socket_table()
              if (row['address'], row['port']) in addresses and row['kind'].startswith('tcp')}
    found = []
    for entry in os.scandir('/proc'):
        if not entry.name.isdigit():
            continue
        for inode in socket_inodes(int(entry.name)) & set(owners):
            row = owners.pop(inode)
            with contextlib.suppress(OSError):
                command = Path(f'/proc/{entry.name}/cmdline').read_bytes().replace(b'\0', b' ')
                found.append(f'{row["address"]}:{row["port"]} held by pid {entry.name}: '
                             f'{command.decode(errors="replace").strip()[:160]}')
    return found
