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

This module is the lab's command line and its ``Lab`` API; the parts it is made of live beside it:

- ``lab_scenarios.py``: the scenarios (instances, listeners, certificates, expected behaviour);
- ``lab_certs.py``: the test CA, issuing and renewing certificates, their paths;
- ``lab_configs.py``: one configuration writer per MTA;
- ``lab_daemons.py``: namespaces, launching, waiting for and stopping daemons;
- ``lab_proc.py``: processes and sockets read from /proc (with the collection's own decoder);
- ``lab_common.py``: the error, the environment marker and small helpers they share.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

# The lab's parts live beside this file, which is both a script and the module tests import
# (tests/lab on sys.path); pylint sees neither.
# pylint: disable=import-error,wrong-import-position
from lab_certs import LabCertificates, needed_certificates
from lab_common import MARKER, UNUSED_RESOLVER, LabError, clean_environment
from lab_configs import configure
from lab_daemons import Daemon, DaemonSupervisor
from lab_proc import can_connect, holders, is_lab_process, lab_processes, lab_sockets, listening_now, process_alive, socket_table
from lab_scenarios import (
    CERTIFICATES,
    IMPLICIT_TLS_PROTOCOLS,
    MTAS,
    PORT_PROTOCOL,
    PROFILES,
    all_instances,
    listener_id,
    planned_listener_ids,
    select_instances,
)
# pylint: enable=import-error,wrong-import-position

# What importers (tests/integration, bench, README examples) use as mta_lab.NAME.
__all__ = [
    'CERTIFICATES', 'DEFAULT_PKGROOT', 'DEFAULT_ROOT', 'IMPLICIT_TLS_PROTOCOLS', 'MARKER', 'MTAS', 'PORT_PROTOCOL',
    'PROFILES', 'UNUSED_RESOLVER', 'Lab', 'LabError', 'all_instances', 'can_connect', 'is_lab_process', 'lab_processes',
    'lab_sockets', 'listener_id', 'listening_now', 'main', 'planned_listener_ids', 'process_alive', 'socket_table',
]

DEFAULT_ROOT = Path(os.environ.get('MAILSEC_LAB_ROOT', '/tmp/mailsec-lab'))
DEFAULT_PKGROOT = Path(os.environ.get('MAILSEC_LAB_PKGROOT', '/opt/mailsec-lab/root'))
ROOT_MARKER_FILE = '.mailsec-lab'
SAFE_ROOT = re.compile(r'^/[A-Za-z0-9._/-]+$')


class Lab:
    """The lab rooted at one directory. Not thread-safe; concurrent processes are serialised."""

    def __init__(self, root: str | os.PathLike = DEFAULT_ROOT, profile: str = 'full',
                 only: list[str] | None = None, pkgroot: str | os.PathLike = DEFAULT_PKGROOT):
        self.root = Path(os.path.realpath(root))
        self.profile = profile
        self.only = sorted(set(only)) if only else None
        self.pkgroot = Path(pkgroot)
        self.specs = select_instances(profile, self.only)
        self.certs = LabCertificates(self.root)
        self.daemons = DaemonSupervisor(self.root, self.pkgroot)

    # ---- paths -------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / 'manifest.json'

    def cert_path(self, name: str) -> Path:
        return self.certs.cert_path(name)

    def key_path(self, name: str) -> Path:
        return self.certs.key_path(name)

    def absent_path(self, filename: str) -> Path:
        return self.certs.absent_path(filename)

    def resolve(self, template: str) -> str:
        """Expand {cert:NAME}, {key:NAME} and {absent:FILE} placeholders to lab paths."""
        return self.certs.resolve(template)

    def bound_path(self, bound: str | None, suffix: str) -> str | None:
        return self.certs.bound_path(bound, suffix)

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
                certificates = self.certs.make(needed_certificates(self.specs))
                self.daemons.make_namespace_layers()
                daemons = [configure(self.daemons.layout(spec), self.certs) for spec in self.specs]
                self.daemons.launch_and_wait(daemons)
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
        return self.daemons.run(specs[instance], argv, **kwargs)

    def renew_certificate(self, name: str) -> str:
        """Issue a new certificate for NAME from its existing request and key (new serial, new dates)
        and put it in place of the old file without reloading anything: the renewed-not-reloaded
        situation. Returns the new certificate's SHA-256."""
        return self.certs.renew(name)

    def reload(self, instance: str) -> None:
        """Reload one running instance the way its MTA does (Postfix and Dovecot with their own
        command, Exim with SIGHUP); OpenSMTPD cannot reload its configuration."""
        specs = {spec.instance: spec for spec in self.specs}
        if instance not in specs:
            raise LabError(f'unknown instance {instance!r}; known: {", ".join(specs)}')
        daemon = self.daemons.layout(specs[instance])
        if daemon.spec.mta == 'postfix':
            argv = ['postfix', '-c', str(daemon.config_path), 'reload']
        elif daemon.spec.mta == 'dovecot':
            argv = ['dovecot', '-c', str(daemon.config_path), 'reload']
        else:
            # Exim re-executes itself on SIGHUP, and with -C it loses root and cannot bind port 25 again
            # ("exim user lost privilege for using -C option"); OpenSMTPD has no reload. Restart instead.
            self.restart(instance)
            return
        completed = subprocess.run(argv, capture_output=True, text=True, env=clean_environment(self.root), check=False)
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
            daemon = self.daemons.layout(dataclasses.replace(specs[instance], expect_starts=True))
            self.daemons.launch_and_wait([daemon])
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
        holding = holders(set(busy))
        raise LabError(f'{len(busy)} lab addresses are already in use (another lab root, or another '
                       'server on 127.0.x.y?):\n  ' + '\n  '.join(holding or [f'{a}:{p}' for a, p in busy])
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
            'versions': versions(self.pkgroot),
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
        main_pids = {entry['pid'] for entry in (manifest or {}).get('daemons', []) if entry.get('pid')}
        signalled = self.daemons.stop(main_pids, daemons)
        with contextlib.suppress(FileNotFoundError):
            self.manifest_path.unlink()
        return signalled


def versions(pkgroot: Path) -> dict:
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
