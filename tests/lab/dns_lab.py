# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A DNS and HTTPS lab on loopback for the DANE and MTA-STS checks, from Debian packages:

- Knot DNS (knotd) serves the zones, signing those marked `signed` itself (DNSSEC, ECDSA P-256);
- Unbound validates, with the signed zones' DS records as its only trust anchors, and reaches
  nothing but Knot (stub zones; every other name is refused, so no query can leave);
- nginx serves each MTA-STS policy over HTTPS (certificates given by the caller).

Meant to run inside the integration tests' private network namespace, as root. Everything lives
under one root directory; stop() ends the three daemons by their pids.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

AUTHORITATIVE = '127.0.53.1'
RESOLVER = '127.0.53.2'
BINARIES = {'knotd': '/usr/sbin/knotd', 'keymgr': '/usr/sbin/keymgr', 'kdig': '/usr/bin/kdig',
            'unbound': '/usr/sbin/unbound', 'nginx': '/usr/sbin/nginx'}


class DnsLabError(RuntimeError):
    pass


def missing_binaries() -> list:
    return [name for name, path in BINARIES.items() if not os.access(path, os.X_OK)]


class DnsLab:
    """zones: {name: {'signed': bool, 'records': ['owner TTL IN TYPE data', ...]}};
    sites: [{'address', 'name', 'cert', 'key', 'body'}] served as https://name/.well-known/mta-sts.txt."""

    def __init__(self, root: str | os.PathLike, zones: dict, sites: list):
        self.root = Path(root)
        self.zones = zones
        self.sites = sites
        self.processes: dict = {}

    # -- Knot ------------------------------------------------------------------------------
    def _knot_config(self) -> Path:
        knot = self.root / 'knot'
        for sub in ('zones', 'db', 'keys', 'run'):
            (knot / sub).mkdir(parents=True, exist_ok=True)
        lines = ['server:', f'    listen: {AUTHORITATIVE}@53', f'    rundir: {knot / "run"}',
                 'log:', f'  - target: {knot / "knot.log"}', '    any: info',
                 'database:', f'    storage: {knot / "db"}',
                 'keystore:', '  - id: lab', f'    config: {knot / "keys"}',
                 'policy:', '  - id: lab', '    keystore: lab', '    algorithm: ecdsap256sha256',
                 '    single-type-signing: on', '    ksk-lifetime: 0', '    zsk-lifetime: 0',
                 'template:', '  - id: default', f'    storage: {knot / "zones"}', '    zonefile-sync: -1',
                 'zone:']
        for name, zone in self.zones.items():
            body = [f'$ORIGIN {name}.', '$TTL 300',
                    f'@ IN SOA ns.{name}. hostmaster.{name}. 1 3600 600 86400 300', f'@ IN NS ns.{name}.',
                    f'ns IN A {AUTHORITATIVE}'] + list(zone['records'])
            (knot / 'zones' / f'{name}.zone').write_text('\n'.join(body) + '\n')
            lines += [f'  - domain: {name}', f'    file: {name}.zone']
            if zone.get('signed'):
                lines += ['    dnssec-signing: on', '    dnssec-policy: lab']
        path = knot / 'knot.conf'
        path.write_text('\n'.join(lines) + '\n')
        return path

    def _wait_signed(self, name: str, deadline: float) -> None:
        while time.monotonic() < deadline:
            answer = subprocess.run([BINARIES['kdig'], f'@{AUTHORITATIVE}', '+dnssec', '+time=1', '+retry=0',
                                     name, 'DNSKEY'], capture_output=True, text=True, check=False).stdout
            if re.search(r'\sRRSIG\s+DNSKEY\s', answer):
                return
            time.sleep(0.2)
        raise DnsLabError(f'knot did not serve {name} signed: {self.tail("knot/knot.log")}')

    def _trust_anchors(self, config: Path) -> list:
        anchors = []
        for name, zone in self.zones.items():
            if not zone.get('signed'):
                continue
            output = subprocess.run([BINARIES['keymgr'], '-c', str(config), name, 'ds'], capture_output=True,
                                    text=True, check=True).stdout
            anchors += [line.strip() for line in output.splitlines() if re.search(r'\sDS\s+\d+\s+13\s+2\s', line)]
        if not anchors:
            raise DnsLabError('no DS record from keymgr')
        return anchors

    # -- Unbound ---------------------------------------------------------------------------
    def _unbound_config(self, anchors: list) -> Path:
        directory = self.root / 'unbound'
        directory.mkdir(parents=True, exist_ok=True)
        lines = ['server:', f'    interface: {RESOLVER}', '    port: 53', '    do-daemonize: no', '    username: ""',
                 '    chroot: ""', f'    directory: "{directory}"', f'    pidfile: "{directory}/unbound.pid"',
                 '    use-syslog: no', f'    logfile: "{directory}/unbound.log"', '    log-queries: yes',
                 '    verbosity: 1', '    do-not-query-localhost: no', '    access-control: 127.0.0.0/8 allow',
                 '    module-config: "validator iterator"', '    val-log-level: 2', '    harden-dnssec-stripped: yes',
                 '    num-threads: 1', '    do-ip6: no', '    qname-minimisation: no',
                 # Everything outside the lab's zones is refused here: nothing is looked up elsewhere.
                 '    local-zone: "." refuse']
        for name in self.zones:
            lines.append(f'    local-zone: "{name}." transparent')
        for anchor in anchors:
            lines.append(f'    trust-anchor: "{anchor}"')
        for name in self.zones:
            lines += ['stub-zone:', f'    name: "{name}."', f'    stub-addr: {AUTHORITATIVE}']
        path = directory / 'unbound.conf'
        path.write_text('\n'.join(lines) + '\n')
        return path

    # -- nginx -----------------------------------------------------------------------------
    def _nginx_config(self) -> Path:
        directory = self.root / 'nginx'
        (directory / 'html').mkdir(parents=True, exist_ok=True)
        (directory / 'logs').mkdir(exist_ok=True)
        servers = []
        for index, site in enumerate(self.sites):
            (directory / 'html' / str(index) / '.well-known').mkdir(parents=True, exist_ok=True)
            (directory / 'html' / str(index) / '.well-known' / 'mta-sts.txt').write_text(site['body'])
            servers.append(
                f'server {{ listen {site["address"]}:443 ssl; server_name {site["name"]};\n'
                f'  ssl_certificate {site["cert"]}; ssl_certificate_key {site["key"]};\n'
                f'  root {directory / "html" / str(index)};\n'
                '  location = /.well-known/mta-sts.txt { default_type text/plain; }\n}\n')
        temp = ''.join(f'{kind}_temp_path {directory / kind};\n' for kind in
                       ('client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'))
        text = (f'daemon off; master_process on; worker_processes 1; user root; pid {directory}/nginx.pid;\n'
                f'error_log {directory}/logs/error.log info;\nevents {{ worker_connections 64; }}\n'
                f'http {{ access_log {directory}/logs/access.log; {temp}' + ''.join(servers) + '}\n')
        path = directory / 'nginx.conf'
        path.write_text(text)
        return path

    # -- life cycle ------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list) -> None:
        log = open(self.root / f'{name}.out', 'wb')  # pylint: disable=consider-using-with
        self.processes[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,  # pylint: disable=consider-using-with
                                                start_new_session=True)

    def _wait_port(self, name: str, check, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.processes[name].poll() is not None:
                raise DnsLabError(f'{name} exited: {self.tail(f"{name}.out")}')
            if check():
                return
            time.sleep(0.1)
        raise DnsLabError(f'{name} did not start: {self.tail(f"{name}.out")}')

    def _resolver_answers(self) -> bool:
        name = next(iter(self.zones))
        completed = subprocess.run([BINARIES['kdig'], f'@{RESOLVER}', '+time=1', '+retry=0', name, 'SOA'],
                                   capture_output=True, text=True, check=False)
        return 'NOERROR' in completed.stdout

    def start(self, timeout: float = 30.0) -> dict:
        missing = missing_binaries()
        if missing:
            raise DnsLabError(f'not installed: {", ".join(missing)} (tests/setup.sh installs knot, unbound, nginx-light)')
        self.root.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        knot_config = self._knot_config()
        self._spawn('knotd', [BINARIES['knotd'], '-c', str(knot_config)])
        for name, zone in self.zones.items():
            if zone.get('signed'):
                self._wait_signed(name, deadline)
        anchors = self._trust_anchors(knot_config)
        self._spawn('unbound', [BINARIES['unbound'], '-d', '-c', str(self._unbound_config(anchors))])
        self._wait_port('unbound', self._resolver_answers, deadline)
        if self.sites:
            config = self._nginx_config()
            self._spawn('nginx', [BINARIES['nginx'], '-p', str(self.root / 'nginx'), '-c', str(config)])
            self._wait_port('nginx', (self.root / 'nginx' / 'nginx.pid').exists, deadline)
            time.sleep(0.3)
        return {'resolver': RESOLVER, 'authoritative': AUTHORITATIVE, 'trust_anchors': anchors}

    def queries(self) -> list:
        """(name, type) of every query the resolver was asked (Unbound's log-queries lines)."""
        log = self.root / 'unbound' / 'unbound.log'
        found = []
        if log.exists():
            for line in log.read_text(errors='replace').splitlines():
                match = re.search(r'info: \S+ (\S+) (\S+) IN$', line)
                if match:
                    found.append((match.group(1).lower(), match.group(2)))
        return found

    def tail(self, relative: str, lines: int = 15) -> str:
        path = self.root / relative
        if not path.exists():
            return f'({relative} missing)'
        return '\n'.join(path.read_text(errors='replace').splitlines()[-lines:])

    def stop(self) -> None:
        for name, process in list(self.processes.items()):
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=5)
        self.processes.clear()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
