# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Starting, isolating and stopping the lab's daemons.

Every daemon runs in a private mount namespace (``unshare --mount``) with the lab's overlay on
/etc (hosts file only, a resolver nobody answers on), the unpacked Exim and OpenSMTPD overlaid on
/usr, and OpenSMTPD's compiled-in /var paths bound to its own directory. The supervisor launches
them, waits until every listener accepts, and stops every process of the lab root, found by that
namespace (lab_proc.lab_processes), whatever the daemons did to their sessions.
"""

from __future__ import annotations

import contextlib
import os
import pty
import re
import shlex
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from lab_common import UNUSED_RESOLVER, LabError, clean_environment, tail  # pylint: disable=import-error
from lab_proc import can_connect, is_lab_process, lab_processes, listening_now, process_alive  # pylint: disable=import-error
from lab_scenarios import CERTIFICATES, InstanceSpec  # pylint: disable=import-error

START_DEADLINE_S = 30.0
STOP_GRACE_S = 3.0


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


class DaemonSupervisor:
    """Launches and stops the daemons of the lab rooted at `root`; remembers its own launches."""

    def __init__(self, root: Path, pkgroot: Path):
        self.root = root
        self.pkgroot = pkgroot
        self.children: list[subprocess.Popen] = []

    def run(self, spec: InstanceSpec, argv: list[str], check: bool = False, **kwargs) -> subprocess.CompletedProcess:
        """Run a command in a fresh namespace laid out like the daemon of `spec` sees it."""
        return subprocess.run(self.namespace_argv(self.layout(spec).mounts, argv), env=clean_environment(self.root),
                              check=check, **kwargs)

    def make_namespace_layers(self) -> None:
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

    @staticmethod
    def namespace_argv(mounts: list[list[str]], argv: list[str]) -> list[str]:
        script = 'set -e\n' + ''.join(shlex.join(mount) + '\n' for mount in mounts) + 'exec "$@"\n'
        return ['unshare', '--mount', '--propagation', 'private', '--', '/bin/sh', '-c', script,
                'mailsec-lab-namespace', *argv]

    def mounts(self, unpacked: bool, opensmtpd_dir: Path | None = None) -> list[list[str]]:
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

    def layout(self, spec: InstanceSpec) -> Daemon:
        directory = self.root / spec.instance
        if spec.mta == 'postfix':
            conf = directory / 'conf'
            return Daemon(spec, directory, conf, ['postfix', '-c', str(conf), 'start'], self.mounts(False),
                          [directory / 'maillog'], pidfile=directory / 'queue' / 'pid' / 'master.pid',
                          uses_pty=True)
        if spec.mta == 'exim':
            conf = directory / 'exim4.conf'
            return Daemon(spec, directory, conf, ['/usr/sbin/exim4', '-C', str(conf), '-bdf'], self.mounts(True),
                          [directory / 'log' / 'mainlog', directory / 'log' / 'paniclog'])
        if spec.mta == 'dovecot':
            conf = directory / 'dovecot.conf'
            return Daemon(spec, directory, conf, ['/usr/sbin/dovecot', '-F', '-c', str(conf)], self.mounts(False),
                          [directory / 'dovecot.log'])
        conf = directory / 'smtpd.conf'
        return Daemon(spec, directory, conf, ['/usr/sbin/smtpd', '-d', '-f', str(conf)],
                      self.mounts(True, directory), [])

    def launch(self, daemon: Daemon) -> None:
        argv = self.namespace_argv(daemon.mounts, daemon.argv)
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
                                              cwd=daemon.directory, env=clean_environment(self.root),
                                              start_new_session=True)
            self.children.append(daemon.process)
        finally:
            output.close()
            if daemon.uses_pty:
                os.close(slave)

    def collect_pty(self, daemon: Daemon) -> None:
        if daemon.pty_master is None:
            return
        data = read_available(daemon.pty_master)
        if data:
            with open(daemon.output_log(), 'ab') as output:
                output.write(data.replace(b'\r\n', b'\n'))

    def launch_and_wait(self, daemons: list[Daemon]) -> None:
        launched = time.monotonic()
        for daemon in daemons:
            self.launch(daemon)
        deadline = time.monotonic() + START_DEADLINE_S
        pending = list(daemons)
        while pending:
            listening = listening_now()
            for daemon in list(pending):
                self.collect_pty(daemon)
                addresses = {(l.address, l.port) for l in daemon.spec.listeners}
                returncode = daemon.process.poll()
                if returncode is not None and not daemon.exited:
                    daemon.exited = True
                    if daemon.spec.mta == 'postfix' and returncode == 0:
                        daemon.pid = read_pid(daemon.pidfile)   # `postfix start` returns once master runs
                    elif daemon.spec.expect_starts:
                        raise LabError(daemon.describe_failure(f'exited with status {returncode}'))
                    else:
                        daemon.error = last_error_line(daemon.output_log()) or f'exit status {returncode}'
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
            self.collect_pty(daemon)
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

    def stop(self, main_pids: set, daemons: list[Daemon] | None = None) -> list[int]:
        """Stop every process of the lab root: `main_pids` (the daemons' masters, from the manifest)
        first, then whatever else lives in its namespaces. Returns the pids signalled."""
        main_pids = set(main_pids)
        for daemon in daemons or []:
            if daemon.pid:
                main_pids.add(daemon.pid)
            if daemon.pty_master is not None:
                with contextlib.suppress(OSError):
                    os.close(daemon.pty_master)
                daemon.pty_master = None
        # Our own launches too: one caught between unshare and its /etc mount is not yet
        # recognisable by its namespace.
        for child in self.children:
            if child.poll() is None:
                main_pids.add(child.pid)
        signalled = set()
        # Main processes first: each shuts its own children down cleanly.
        own_children = {child.pid for child in self.children}
        for pid in main_pids:
            if process_alive(pid) and (pid in own_children or is_lab_process(pid, self.root)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                    signalled.add(pid)
        remaining = self.wait_gone(1.0 if signalled else 0.0)
        # Whatever still runs gets the signal itself: a Dovecot login process that waits for its
        # auth process holds its master's shutdown up for seconds.
        for signal_number, wait in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 3.0)):
            if not remaining:
                break
            for pid in remaining:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal_number)
                    signalled.add(pid)
            remaining = self.wait_gone(wait)
        self.reap_children()
        if remaining:
            raise LabError(f'processes of the lab at {self.root} survived SIGKILL: {remaining}')
        return sorted(signalled)

    def wait_gone(self, seconds: float) -> list[int]:
        deadline = time.monotonic() + seconds
        while True:
            self.reap_children()
            remaining = lab_processes(self.root)
            if not remaining or time.monotonic() > deadline:
                return remaining
            time.sleep(0.05)

    def reap_children(self) -> None:
        for child in list(self.children):
            if child.poll() is not None:
                self.children.remove(child)


def read_pid(pidfile: Path | None) -> int | None:
    if pidfile is None:
        return None
    with contextlib.suppress(OSError, ValueError):
        return int(pidfile.read_text().split()[0])
    return None


def last_error_line(path: Path) -> str | None:
    lines = [line.strip() for line in tail(path, 40).splitlines() if line.strip()]
    for line in reversed(lines):
        if re.search(r'fatal|error|failed|can\'t|cannot', line, re.IGNORECASE):
            return line
    return lines[-1] if lines else None


def read_available(fd: int) -> bytes:
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
