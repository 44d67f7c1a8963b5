# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Integration fixtures: the real-MTA lab, a real sshd as jump host, and real ansible runs."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / 'tests' / 'lab'))

CLONE_NEWNET = 0x40000000


def enter_private_network() -> str | None:
    """Moves this test process (and so every server and client it starts) into a network namespace
    of its own, with only loopback up: the suite's servers can never clash with anything else on the
    machine (the demo host on 127.0.60.1, another checkout's test run, a real MTA), and nothing the
    tests start can reach beyond the machine. Returns why it could not, or None.

    MAILSEC_SHARED_NETWORK=1 keeps the machine's network (to debug a lab from outside)."""
    if os.environ.get('MAILSEC_SHARED_NETWORK') == '1':
        return 'MAILSEC_SHARED_NETWORK=1'
    if os.geteuid() != 0:
        return 'not root'
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        return f'unshare(CLONE_NEWNET) failed: {os.strerror(ctypes.get_errno())}'
    ip_command = shutil.which('ip') or '/usr/sbin/ip'
    subprocess.run([ip_command, 'link', 'set', 'lo', 'up'], check=True)
    return None


PRIVATE_NETWORK_PROBLEM = enter_private_network()

# One lab root per test run: two runs (two checkouts, CI beside a developer) never share a lab.
# Under /tmp because Exim reads the lab's certificates as Debian-exim (every parent searchable).
RUN_ROOT_PREFIX = '/tmp/mailsec-lab-it-'


def reap_abandoned_lab_roots() -> None:
    """Stops the daemons of test runs that were killed before their clean-up (their network is gone
    with them, but the daemons would live on) and removes their roots."""
    from mta_lab import Lab  # pylint: disable=import-error,import-outside-toplevel
    # Each run's root has an owner file beside it (inside, the lab would refuse a non-empty root).
    for owner_file in Path('/tmp').glob(f'{Path(RUN_ROOT_PREFIX).name}*.owner'):
        try:
            owner = int(owner_file.read_text().strip())
        except (OSError, ValueError):
            continue
        if owner != os.getpid() and Path(f'/proc/{owner}').exists():
            continue
        root = owner_file.with_suffix('')
        for lab_root in (root, Path(f'{root}-scratch')):
            if lab_root.exists():
                try:
                    Lab(lab_root).stop()
                except Exception:  # pylint: disable=broad-exception-caught
                    pass  # best effort: a root that cannot be stopped is left for inspection
                shutil.rmtree(lab_root, ignore_errors=True)
        owner_file.unlink(missing_ok=True)


if os.geteuid() == 0 and not os.environ.get('MAILSEC_LAB_ROOT'):
    reap_abandoned_lab_roots()
    os.environ['MAILSEC_LAB_ROOT'] = tempfile.mkdtemp(prefix=Path(RUN_ROOT_PREFIX).name, dir='/tmp')
    os.chmod(os.environ['MAILSEC_LAB_ROOT'], 0o755)
    Path(os.environ['MAILSEC_LAB_ROOT'] + '.owner').write_text(f'{os.getpid()}\n')
    CREATED_LAB_ROOT: str | None = os.environ['MAILSEC_LAB_ROOT']
else:
    CREATED_LAB_ROOT = None


def pytest_configure(config):
    config.addinivalue_line('markers', 'changes_lab: the tests of this module change the lab\'s configuration; '
                                       'the lab is started afresh after them')


def pytest_report_header(config):  # pylint: disable=unused-argument
    where = 'the machine\'s network' if PRIVATE_NETWORK_PROBLEM else 'a private network namespace (loopback only)'
    note = f' ({PRIVATE_NETWORK_PROBLEM})' if PRIVATE_NETWORK_PROBLEM else ''
    return f'mailsec integration: servers run in {where}{note}; lab root {os.environ.get("MAILSEC_LAB_ROOT")}'


def pytest_sessionfinish(session, exitstatus):  # pylint: disable=unused-argument
    if CREATED_LAB_ROOT:
        for root in (CREATED_LAB_ROOT, CREATED_LAB_ROOT + '-scratch'):
            shutil.rmtree(root, ignore_errors=True)
        Path(CREATED_LAB_ROOT + '.owner').unlink(missing_ok=True)


JUMP_ADDRESS = '127.0.80.1'
JUMP_PORT = 2222


def need_root():
    if os.geteuid() != 0:
        pytest.skip('the lab starts real MTAs on loopback and needs root')


@pytest.fixture(scope='session')
def collections_path(tmp_path_factory) -> str:
    """A collections tree whose mailsec/starttls is this checkout, so ansible runs the code under test."""
    root = tmp_path_factory.mktemp('collections')
    target = root / 'ansible_collections' / 'mailsec'
    target.mkdir(parents=True)
    (target / 'starttls').symlink_to(REPO)
    return str(root)


@pytest.fixture(scope='session')
def ansible_env(collections_path, tmp_path_factory) -> dict:
    env = dict(os.environ)
    env.update({
        'ANSIBLE_COLLECTIONS_PATH': collections_path,
        'ANSIBLE_LOCAL_TEMP': str(tmp_path_factory.mktemp('ansible-local')),
        'ANSIBLE_NOCOLOR': '1',
        'ANSIBLE_RETRY_FILES_ENABLED': '0',
        'ANSIBLE_PYTHON_INTERPRETER': sys.executable,
        'ANSIBLE_LOCALHOST_WARNING': '0',
        'ANSIBLE_INVENTORY_UNPARSED_WARNING': '0',
    })
    return env


def ansible_bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        pytest.fail(f'{name} not found next to {sys.executable} or on PATH')
    return found


@pytest.fixture(scope='session')
def run_playbook(ansible_env, tmp_path_factory):
    """Runs a real ansible-playbook; the play writes what it wants checked to {{ result_file }}."""
    workdir = tmp_path_factory.mktemp('playbooks')

    def run(playbook: str, extra_vars: dict | None = None, args: tuple = (), expect_rc: int = 0) -> dict:
        handle, name = tempfile.mkstemp(dir=workdir, suffix='.yml')
        with os.fdopen(handle, 'w') as out:
            out.write(playbook)
        result_file = f'{name}.result.json'
        variables = dict(extra_vars or {}, result_file=result_file)
        command = [ansible_bin('ansible-playbook'), '-i', 'localhost,', '-c', 'local', name,
                   '-e', json.dumps(variables), *args]
        completed = subprocess.run(command, env=ansible_env, capture_output=True, text=True, timeout=600, check=False)
        if completed.returncode != expect_rc:
            pytest.fail(f'ansible-playbook exited {completed.returncode}\n{completed.stdout[-6000:]}\n{completed.stderr[-3000:]}')
        result = {'stdout': completed.stdout, 'stderr': completed.stderr}
        if os.path.exists(result_file):
            with open(result_file) as handle_in:
                result['result'] = json.load(handle_in)
        return result

    return run


# mta_tls_info run by ansible-playbook on localhost with the options a test gives; the result is
# copied to {{ result_file }} (run_playbook reads it back), also under --check.
MTA_TLS_INFO_PLAY = """
- name: Inspect mail listeners and certificate stores
  hosts: localhost
  gather_facts: false
  tasks:
    - name: AUDIT | Inspect mail listeners and certificate stores
      mailsec.starttls.mta_tls_info: {options}
      register: starttls_host
    - name: REPORT | Keep the result for the test
      ansible.builtin.copy:
        content: "{{{{ starttls_host | to_json }}}}"
        dest: "{{{{ result_file }}}}"
        mode: '0600'
      check_mode: false
"""


@pytest.fixture(scope='session')
def run_mta_tls_info(run_playbook):
    """run(options, args=()): mta_tls_info with these module options in a real ansible-playbook run;
    returns what run_playbook returns (stdout, stderr and the module's result under 'result')."""
    def run(options: dict, args: tuple = ()) -> dict:
        # JSON is YAML: the options go into the play as one flow mapping, quoted as JSON quotes.
        return run_playbook(MTA_TLS_INFO_PLAY.format(options=json.dumps(options)), args=args)

    return run


def bind_udp_sink(address: str, port: int = 53) -> socket.socket | None:
    """A UDP socket on address:port that keeps whatever arrives (a resolver nobody should ask), or
    None when the address is taken."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sink.bind((address, port))
    except OSError:
        sink.close()
        return None
    sink.setblocking(False)
    return sink


def drain(sink: socket.socket) -> list[bytes]:
    """The datagrams that arrived at a sink since the last drain."""
    received = []
    while True:
        try:
            received.append(sink.recv(4096))
        except BlockingIOError:
            return received


@pytest.fixture(scope='session')
def lab_instance():
    """The real-MTA lab (tests/lab): started once per session, stopped at the end."""
    need_root()
    from mta_lab import Lab  # pylint: disable=import-error,import-outside-toplevel
    instance = Lab(os.environ['MAILSEC_LAB_ROOT'])
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope='module')
def lab(lab_instance, request):
    """The lab's manifest as it is now: the harness's own tests stop and restart the lab (with new
    certificates), so each test module reads it afresh; start() is a no-op on a healthy lab. A module
    marked `changes_lab` (pytestmark) leaves a changed configuration: the lab is started afresh after it."""
    manifest = lab_instance.start()
    yield manifest
    if request.node.get_closest_marker('changes_lab'):
        lab_instance.stop()
        lab_instance.start()


@pytest.fixture(scope='module')
def work(tmp_path_factory, request) -> Path:
    """A directory of the test module's own (inventories, reports, files a test makes)."""
    return tmp_path_factory.mktemp(request.module.__name__.rpartition('.')[2])


@pytest.fixture(scope='session')
def sshd(tmp_path_factory):
    """A real OpenSSH server on loopback, with its own host key and a client key for root."""
    need_root()
    binary = shutil.which('sshd') or '/usr/sbin/sshd'
    if not os.path.exists(binary):
        pytest.fail('sshd is not installed (tests/setup.sh installs openssh-server)')
    root = tmp_path_factory.mktemp('sshd')
    host_key, client_key = root / 'host_ed25519', root / 'client_ed25519'
    for key in (host_key, client_key):
        subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', str(key)], check=True)
    authorized = root / 'authorized_keys'
    authorized.write_text((root / 'client_ed25519.pub').read_text())
    authorized.chmod(0o600)
    known_hosts = root / 'known_hosts'
    known_hosts.write_text(f"[{JUMP_ADDRESS}]:{JUMP_PORT} {(root / 'host_ed25519.pub').read_text()}")
    config = root / 'sshd_config'
    config.write_text('\n'.join([
        f'ListenAddress {JUMP_ADDRESS}:{JUMP_PORT}',
        f'HostKey {host_key}',
        f'AuthorizedKeysFile {authorized}',
        f'PidFile {root}/sshd.pid',
        'PermitRootLogin prohibit-password',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'UsePAM no',
        'AllowTcpForwarding yes',
        'StrictModes no',
        'UseDNS no',
        '',
    ]))
    os.makedirs('/run/sshd', exist_ok=True)
    process = subprocess.Popen([binary, '-D', '-e', '-f', str(config)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    import socket  # pylint: disable=import-outside-toplevel
    while True:
        try:
            socket.create_connection((JUMP_ADDRESS, JUMP_PORT), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f'sshd did not start: {process.stderr.read().decode()[-2000:]}')
            time.sleep(0.1)
    try:
        yield {'host': JUMP_ADDRESS, 'port': JUMP_PORT, 'user': 'root', 'private_key_file': str(client_key),
               'known_hosts_file': str(known_hosts)}
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
