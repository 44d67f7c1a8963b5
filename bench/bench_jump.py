# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Probing through one SSH jump host: N listeners (default 200) through a real OpenSSH server
with MaxSessions set (default 10, OpenSSH's default), against direct probing of the same
listeners in the same run.

The bench starts bench/fixture.py (N SMTP listeners on 127.0.70.1) and an sshd of its own on
127.0.71.1:2222 (its own host key, a client key for root, AllowTcpForwarding yes, MaxSessions N),
then measures, interleaved run by run: `probe_many` direct, and `probe_many` through one SSH
connection (jump_connector: one login, one direct-tcpip channel per probe, at most MaxSessions
open at once). Every run's probes are checked against the fixture's manifest, and the peak number
of channels open at once is recorded. As root it runs in a network namespace of its own (loopback
only), so it never meets anything else on the machine. See bench/README.md.

Targets: through the jump host >= 100 listeners/s, never more channels than MaxSessions, every
result right. (OpenSSH does not count direct-tcpip channels against MaxSessions; the probe's own
channel limit, jump_host.max_channels, keeps to it for servers that do.)
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)

import bench_probe  # noqa: E402  pylint: disable=wrong-import-position
import benchlib  # noqa: E402  pylint: disable=wrong-import-position

JUMP_ADDRESS = '127.0.71.1'
JUMP_PORT = 2222
TARGET_LISTENERS_PER_S = 100.0
CLONE_NEWNET = 0x40000000


def private_network() -> str:
    """Enter a network namespace with only loopback up (as root); returns where the bench runs."""
    if os.environ.get('MAILSEC_SHARED_NETWORK') == '1' or os.geteuid() != 0:
        return 'the machine\'s network'
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        return f'the machine\'s network (unshare failed: {os.strerror(ctypes.get_errno())})'
    benchlib.loopback_up()
    return 'a private network namespace'


class Sshd:
    """A real OpenSSH server on loopback with MaxSessions set."""

    def __init__(self, workdir: str, max_sessions: int):
        binary = shutil.which('sshd') or '/usr/sbin/sshd'
        if not os.path.exists(binary):
            raise RuntimeError('sshd is not installed (tests/setup.sh installs openssh-server)')
        self.root = os.path.join(workdir, 'sshd')
        os.makedirs(self.root)
        host_key = os.path.join(self.root, 'host_ed25519')
        self.client_key = os.path.join(self.root, 'client_ed25519')
        for key in (host_key, self.client_key):
            subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', key], check=True)
        authorized = os.path.join(self.root, 'authorized_keys')
        shutil.copy(f'{self.client_key}.pub', authorized)
        os.chmod(authorized, 0o600)
        self.known_hosts = os.path.join(self.root, 'known_hosts')
        with open(f'{host_key}.pub', encoding='ascii') as public, \
                open(self.known_hosts, 'w', encoding='ascii') as known:
            known.write(f'[{JUMP_ADDRESS}]:{JUMP_PORT} {public.read()}')
        config = os.path.join(self.root, 'sshd_config')
        with open(config, 'w', encoding='ascii') as handle:
            handle.write('\n'.join([
                f'ListenAddress {JUMP_ADDRESS}:{JUMP_PORT}', f'HostKey {host_key}', f'AuthorizedKeysFile {authorized}',
                f'PidFile {self.root}/sshd.pid', 'PermitRootLogin prohibit-password', 'PasswordAuthentication no',
                'KbdInteractiveAuthentication no', 'UsePAM no', 'AllowTcpForwarding yes', 'StrictModes no',
                'UseDNS no', f'MaxSessions {max_sessions}', '']))
        os.makedirs('/run/sshd', exist_ok=True)
        self.process = subprocess.Popen([binary, '-D', '-e', '-f', config], stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not benchlib.accepting(JUMP_ADDRESS, JUMP_PORT):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError('sshd did not start')
            time.sleep(0.05)

    def spec(self) -> dict:
        return {'host': JUMP_ADDRESS, 'port': JUMP_PORT, 'user': 'root', 'private_key_file': self.client_key,
                'known_hosts_file': self.known_hosts, 'host_key_checking': True}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()


def measure(engine, ssh, manifest: dict, options: dict, jump_spec: dict | None, max_channels: int) -> dict:
    targets = bench_probe.target_strings(manifest)
    run: dict = {'login_s': 0.0, 'peak_channels': None}
    cpu_start = time.process_time()
    if jump_spec is None:
        start = time.monotonic()
        probes = engine.probe_many(targets, dict(options, vantage='controller'))
        run['wall_s'] = time.monotonic() - start
    else:
        login_start = time.monotonic()
        connect, jump = ssh.jump_connector(dict(jump_spec, max_channels=max_channels), options['timeout'])
        run['login_s'] = time.monotonic() - login_start
        if jump is None:
            raise RuntimeError('the jump host refused the login')
        try:
            start = time.monotonic()
            probes = engine.probe_many(targets, dict(options, vantage='jump:bench'), connect=connect,
                                       max_parallel=jump.max_channels)
            run['wall_s'] = time.monotonic() - start
            run['peak_channels'] = jump.peak_channels
        finally:
            jump.close()
    run['cpu_ms_per_listener'] = (time.process_time() - cpu_start) * 1000 / len(targets)
    run['listeners_per_s'] = len(targets) / run['wall_s']
    run['check'] = bench_probe.check_probes(manifest, probes)
    run['errors'] = sorted({(probe.get('error') or {}).get('message', '')[:80] for probe in probes
                            if probe.get('error')})[:5]
    return run


def parse_arguments(argv: list | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--n', type=int, default=200, help='listeners (default 200)')
    parser.add_argument('--max-sessions', type=int, default=10, help='sshd MaxSessions and the channel limit')
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--base-port', type=int, default=21000)
    parser.add_argument('--enforce', action='store_true', help='exit 1 when a target is missed')
    parser.add_argument('--smoke', action='store_true',
                        help='40 listeners, one run: correctness and the channel limit only (the rate is not judged)')
    parser.add_argument('--results-dir', default=os.path.join(BENCH_DIR, 'results'))
    return parser.parse_args(argv)


def main(argv: list | None = None) -> int:
    arguments = parse_arguments(argv)
    if arguments.smoke:
        arguments.n, arguments.repeat = 40, 1
    where = private_network()
    workdir = tempfile.mkdtemp(prefix='mailsec-bench-jump-')
    sys.path.insert(0, benchlib.collection_tree(workdir))
    # pylint: disable=import-outside-toplevel
    from ansible_collections.mailsec.starttls.plugins.module_utils._probe import engine, ssh
    if ssh.paramiko_import_error() is not None:
        print(f'bench_jump: SKIP, {sys.executable} has no paramiko (tests/setup.sh installs it in venv-core-*)')
        shutil.rmtree(workdir, ignore_errors=True)
        return 0
    fixture = sshd = None
    try:
        fixture = bench_probe.FixtureProcess(sys.executable, arguments.n, 0.0, arguments.base_port, workdir,
                                             1800, 16)
        fixture.wait_ready()
        sshd = Sshd(workdir, arguments.max_sessions)
        # All listeners share one address: the per-address limit (default 8) is lifted so that the
        # channel limit is what bounds the probes through the jump host.
        options = {'ehlo_name': bench_probe.EHLO_NAME, 'ca_file': fixture.manifest['ca_file'], 'timeout': 10.0,
                   'per_host_limit': 64}
        runs: dict = {'direct': [], 'jump': []}
        for _round in range(arguments.repeat):
            for way in ('direct', 'jump'):
                runs[way].append(measure(engine, ssh, fixture.manifest, options,
                                         sshd.spec() if way == 'jump' else None, arguments.max_sessions))
                fixture.stats()  # settle: the previous run's sessions are gone before the next starts
    finally:
        if sshd is not None:
            sshd.stop()
        if fixture is not None:
            fixture.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    summary = {}
    for way, items in runs.items():
        summary[way] = {
            'listeners_per_s': statistics.median(item['listeners_per_s'] for item in items),
            'wall_s': statistics.median(item['wall_s'] for item in items),
            'login_s': statistics.median(item['login_s'] for item in items),
            'cpu_ms_per_listener': statistics.median(item['cpu_ms_per_listener'] for item in items),
            'wrong': max(item['check']['mismatches'] for item in items),
            'peak_channels': max((item['peak_channels'] or 0) for item in items) if way == 'jump' else None,
        }
    print(f'\n{arguments.n} listeners, sshd MaxSessions {arguments.max_sessions}, median of {arguments.repeat} '
          f'(runs interleaved), in {where}')
    print(f"{'way':<8} {'listeners/s':>12} {'wall s':>8} {'login s':>8} {'cpu ms/l':>9} {'wrong':>6} {'peak ch':>8}")
    for way, row in summary.items():
        print(f"{way:<8} {row['listeners_per_s']:>12.1f} {row['wall_s']:>8.3f} {row['login_s']:>8.3f} "
              f"{row['cpu_ms_per_listener']:>9.2f} {row['wrong']:>6} {row['peak_channels'] if row['peak_channels'] is not None else '-':>8}")
    ratio = summary['jump']['listeners_per_s'] / summary['direct']['listeners_per_s']
    print(f'through the jump host: {ratio:.2f}x the direct rate')
    jump = summary['jump']
    verdicts = [
        benchlib.verdict(f'jump >= {TARGET_LISTENERS_PER_S:g} listeners/s',
                         None if arguments.smoke else jump['listeners_per_s'] >= TARGET_LISTENERS_PER_S,
                         f"{jump['listeners_per_s']:.1f} listeners/s ({ratio:.2f}x direct)"),
        benchlib.verdict(f'channels <= MaxSessions {arguments.max_sessions}',
                         0 < jump['peak_channels'] <= arguments.max_sessions,
                         f"peak {jump['peak_channels']} open at once"),
        benchlib.verdict('every result right', jump['wrong'] == 0 and summary['direct']['wrong'] == 0,
                         f"wrong: jump {jump['wrong']}, direct {summary['direct']['wrong']}; "
                         f"errors seen: {sorted({e for item in runs['jump'] for e in item['errors']})[:3]}"),
    ]
    payload = {'summary': summary, 'runs': runs, 'where': where, 'n': arguments.n,
               'max_sessions': arguments.max_sessions}
    return benchlib.finish(verdicts, arguments, 'jump', payload)


if __name__ == '__main__':
    sys.exit(main())
