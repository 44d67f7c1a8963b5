# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection as a user gets it: built with ansible-galaxy, installed into a clean collections path,
run from there against simulated listeners on loopback (bench/fixture.py, black-box mode); and the exit
statuses and messages CI relies on (docs/ci.md)."""

from __future__ import annotations

import fnmatch
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, ansible_bin

FIXTURE_ADDRESS = '127.0.90.1'
FIXTURE_PORT = 2600
REPORT_FILES = ('starttls-report.json', 'starttls-report.junit.xml', 'starttls-report.md', 'starttls-report.html')

# Generated, private or machine-local data that must never reach the tarball, planted in a copy of the
# tree before the build (paths from the collection root).
PLANTED = [
    'reports/starttls-report.json',
    'starttls-reports/starttls-report.html',
    'playbooks/starttls-reports/starttls-report.md',
    '.ansible/collections/x.json',
    'roles/audit/.ansible/facts.json',
    'venv/bin/python',
    '.venv-dev/bin/python',
    'build/lib/x.py',
    'tests/output/junit/x.xml',
    'bench/results/probe.json',
    'plugins/module_utils/__pycache__/_model.cpython-311.pyc',
    'plugins/filter/judge.pyc',
    '.pytest_cache/v/cache/nodeids',
    'mailsec-starttls-0.0.9.tar.gz',
    '.git/HEAD',
]
# What the documentation and the demo's fallback need from the tarball.
REQUIRED = ['README.md', 'LICENSE', 'roles/audit/README.md', 'roles/remediate/README.md', 'bench/fixture.py', 'bench/README.md',
            'docs/quickstart.md', 'docs/ci.md', 'playbooks/audit.yml', 'meta/runtime.yml']


def tracked_files() -> list:
    listing = subprocess.run(['git', '-C', str(REPO), 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
                             capture_output=True, check=True).stdout.decode()
    return [path for path in listing.split('\0') if path and os.path.lexists(REPO / path)]


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    """A copy of the working tree with generated data planted in it, built with ansible-galaxy."""
    work = tmp_path_factory.mktemp('build')
    source = work / 'source'
    for path in tracked_files():
        target = source / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if not (REPO / path).is_dir():
            target.write_bytes((REPO / path).read_bytes())
            target.chmod((REPO / path).stat().st_mode & 0o777)
    for path in PLANTED:
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        (source / path).write_text('generated or private data\n')
    completed = subprocess.run([ansible_bin('ansible-galaxy'), 'collection', 'build', '--output-path', str(work),
                                str(source)], env=user_env(work), capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    tarballs = list(work.glob('mailsec-starttls-*.tar.gz'))
    assert len(tarballs) == 1, tarballs
    with tarfile.open(tarballs[0]) as archive:
        names = [member.name for member in archive.getmembers()]
    return {'tarball': tarballs[0], 'names': names, 'work': work}


def test_the_tarball_holds_no_generated_or_private_data(built):
    names = built['names']
    private_top = ('reports', 'starttls-reports', '.ansible', 'venv', '.venv-dev', 'build', '.pytest_cache', '.git')
    leaked = [name for name in names if name in PLANTED or name.split('/', maxsplit=1)[0] in private_top]
    leaked += [name for name in names if '__pycache__' in name or name.endswith(('.pyc', '.tar.gz'))
               or name.startswith(('tests/output', 'bench/results', '.ci'))
               or '/starttls-reports' in name or '/.ansible' in name]
    assert not leaked, leaked


def test_the_tarball_holds_what_the_docs_and_the_demo_need(built):
    missing = [name for name in REQUIRED if name not in built['names']]
    assert not missing, missing
    roles = {name.split('/')[1] for name in built['names'] if name.startswith('roles/') and name.count('/') >= 2}
    assert roles and all(f'roles/{role}/README.md' in built['names'] for role in roles), roles


def test_build_ignore_covers_gitignore():
    """Every .gitignore pattern has a build_ignore pattern that matches the same paths."""
    ignored = yaml.safe_load((REPO / 'galaxy.yml').read_text())['build_ignore']
    samples = {
        '__pycache__/': 'plugins/__pycache__', '*.py[cod]': 'plugins/x.pyc', 'tests/output/': 'tests/output',
        '.ansible/': '.ansible', '.venv*/': '.venv-x', 'venv/': 'venv', '/build/': 'build', '*.tar.gz': 'x.tar.gz',
        'bench/results/': 'bench/results', '/reports/': 'reports', '/starttls-reports/': 'starttls-reports',
        'starttls-reports/': 'playbooks/starttls-reports',
    }
    patterns = [line.strip() for line in (REPO / '.gitignore').read_text().splitlines()
                if line.strip() and not line.startswith('#')]
    unknown = [pattern for pattern in patterns if pattern not in samples]
    assert not unknown, f'.gitignore patterns without a sample path here: {unknown}'
    uncovered = [pattern for pattern in patterns
                 if not any(fnmatch.fnmatch(samples[pattern], rule) for rule in ignored)
                 and pattern != '__pycache__/']  # ansible-galaxy skips __pycache__ directories on its own
    assert not uncovered, uncovered


def user_env(collections_path) -> dict:
    """The environment of a user who installed the collection: no trace of this checkout (the test runner puts
    the built tree on PYTHONPATH, where ansible-galaxy and ansible would find it first)."""
    env = {key: value for key, value in os.environ.items() if key not in ('PYTHONPATH', 'ANSIBLE_COLLECTIONS_PATH')}
    env['ANSIBLE_COLLECTIONS_PATH'] = str(collections_path)
    return env


@pytest.fixture(scope='module')
def installed(built, tmp_path_factory):
    """The tarball installed with ansible-galaxy into an empty collections path."""
    path = tmp_path_factory.mktemp('installed')
    completed = subprocess.run([ansible_bin('ansible-galaxy'), 'collection', 'install', '--offline', '-p', str(path),
                                str(built['tarball'])], env=user_env(path), capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    root = path / 'ansible_collections' / 'mailsec' / 'starttls'
    assert (root / 'MANIFEST.json').is_file() and not (root / '.git').exists()
    return path


@pytest.fixture(scope='module')
def fixture_listeners(installed, tmp_path_factory):
    """bench/fixture.py from the installed collection: ten SMTP listeners on loopback (8 good, 1 without
    STARTTLS, 1 answering 454)."""
    work = tmp_path_factory.mktemp('fixture')
    script = installed / 'ansible_collections' / 'mailsec' / 'starttls' / 'bench' / 'fixture.py'
    manifest = work / 'fixture.json'
    process = subprocess.Popen([sys.executable, str(script), '--n', '10', '--address', FIXTURE_ADDRESS,
                                '--base-port', str(FIXTURE_PORT), '--manifest', str(manifest), '--max-lifetime', '900'],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not (manifest.exists() and manifest.stat().st_size):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f'bench/fixture.py did not start: {process.stderr.read().decode()[-2000:]}')
        time.sleep(0.1)
    time.sleep(0.2)  # the manifest is written once every listener is bound
    try:
        yield json.loads(manifest.read_text())
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def black_box_inventory(path: Path, fixture: dict, listeners=None) -> str:
    if listeners is None:
        listeners = [f"{item['address']}:{item['port']}/smtp" for item in fixture['listeners']]
    inventory = {'all': {'hosts': {'simulated-mx': {
        'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable,
        'starttls_host_inspection': False, 'starttls_listeners': listeners,
        'starttls_ca_file': fixture['ca_file'], 'starttls_probe_options': {'timeout': 3, 'deadline': 10}}}}}
    path.write_text(json.dumps(inventory))
    return str(path)


def run_installed(installed, inventory: str, extra: dict, args=(), cwd=None) -> subprocess.CompletedProcess:
    env = dict(user_env(installed), ANSIBLE_NOCOLOR='1', ANSIBLE_RETRY_FILES_ENABLED='0', ANSIBLE_LOCALHOST_WARNING='0',
               ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    return subprocess.run([ansible_bin('ansible-playbook'), '-i', inventory, 'mailsec.starttls.audit',
                           '-e', json.dumps(extra), *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=600, check=False)


def output(completed) -> str:
    return completed.stdout[-5000:] + completed.stderr[-2000:]


def test_the_installed_collection_audits_and_fails_by_policy(installed, fixture_listeners, tmp_path):
    inventory = black_box_inventory(tmp_path / 'inventory.json', fixture_listeners)
    completed = run_installed(installed, inventory, {'starttls_report_dir': str(tmp_path / 'reports')})
    assert completed.returncode == 2, output(completed)
    assert 'STARTTLS audit failed (policy)' in completed.stdout, output(completed)
    # Progress and the summary at the default verbosity.
    assert 'fleet_assess: 1 host(s), 0 inspected, 10 endpoint(s) to probe' in completed.stdout, output(completed)
    assert 'fleet_assess: ' in completed.stdout and 'unwaived, on 10 listener(s) of 1 host(s)' in completed.stdout
    report = json.loads((tmp_path / 'reports' / 'starttls-report.json').read_text())
    assert report['summary']['listeners'] == 10 and report['summary']['failed'] is True
    assert {f['id'] for f in report['findings']} >= {'starttls-advertised-without-certificate', 'starttls-not-offered'}
    assert sorted(os.listdir(tmp_path / 'reports')) == sorted(REPORT_FILES)


def test_a_passing_audit_exits_0(installed, fixture_listeners, tmp_path):
    inventory = black_box_inventory(tmp_path / 'inventory.json', fixture_listeners)
    completed = run_installed(installed, inventory, {'starttls_report_dir': str(tmp_path / 'reports'),
                                                     'starttls_fail_when': 'summary.unwaived > `100`'})
    assert completed.returncode == 0, output(completed)
    assert json.loads((tmp_path / 'reports' / 'starttls-report.json').read_text())['summary']['failed'] is False


def plant_stale_reports(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in REPORT_FILES:
        (directory / name).write_text('a report of an earlier run\n')


def test_a_pattern_that_matches_no_host_is_an_error_and_removes_earlier_reports(installed, fixture_listeners, tmp_path):
    inventory = black_box_inventory(tmp_path / 'inventory.json', fixture_listeners)
    plant_stale_reports(tmp_path / 'reports')
    completed = run_installed(installed, inventory, {'starttls_report_dir': str(tmp_path / 'reports'),
                                                     'starttls_target': 'no-such-group'})
    assert completed.returncode == 2, output(completed)
    assert 'STARTTLS audit error (nothing audited)' in completed.stdout, output(completed)
    assert "'no-such-group' matches no host" in completed.stdout
    assert not [name for name in REPORT_FILES if (tmp_path / 'reports' / name).exists()]


def test_a_limit_that_leaves_no_target_host_is_an_error(installed, fixture_listeners, tmp_path):
    inventory = json.loads(Path(black_box_inventory(tmp_path / 'inventory.json', fixture_listeners)).read_text())
    inventory['all']['hosts']['other-host'] = {'ansible_connection': 'local'}
    (tmp_path / 'inventory.json').write_text(json.dumps(inventory))
    completed = run_installed(installed, str(tmp_path / 'inventory.json'),
                              {'starttls_report_dir': str(tmp_path / 'reports'), 'starttls_target': 'simulated-mx'},
                              args=('--limit', 'other-host'))
    assert completed.returncode == 2, output(completed)
    assert 'STARTTLS audit error (nothing audited)' in completed.stdout and 'within --limit other-host' in completed.stdout


def test_no_listener_is_an_error(installed, fixture_listeners, tmp_path):
    inventory = black_box_inventory(tmp_path / 'inventory.json', fixture_listeners, listeners=[])
    plant_stale_reports(tmp_path / 'reports')
    completed = run_installed(installed, inventory, {'starttls_report_dir': str(tmp_path / 'reports')})
    assert completed.returncode == 2, output(completed)
    assert 'STARTTLS audit error (nothing audited): no listener found' in completed.stdout, output(completed)
    assert not [path for path in (tmp_path / 'reports').iterdir() if path.name != 'starttls-report.previous.json']


def test_no_probe_is_an_error(installed, fixture_listeners, tmp_path):
    inventory = black_box_inventory(tmp_path / 'inventory.json', fixture_listeners)
    completed = run_installed(installed, inventory, {'starttls_report_dir': str(tmp_path / 'reports'),
                                                     'starttls_controller_probe': False})
    assert completed.returncode == 2, output(completed)
    assert 'STARTTLS audit error (nothing audited): no probe was made' in completed.stdout, output(completed)
    assert not (tmp_path / 'reports' / 'starttls-report.json').exists()


def test_an_unreachable_fleet_is_an_error(installed, fixture_listeners, tmp_path):
    # Nothing listens on these ports: every connection is refused.
    closed = [f'{FIXTURE_ADDRESS}:{port}/smtp' for port in (2590, 2591)]
    inventory = black_box_inventory(tmp_path / 'inventory.json', fixture_listeners, listeners=closed)
    plant_stale_reports(tmp_path / 'reports')
    completed = run_installed(installed, inventory, {'starttls_report_dir': str(tmp_path / 'reports')})
    assert completed.returncode == 4, output(completed)  # as for hosts Ansible cannot reach
    assert 'UNREACHABLE' in completed.stdout
    assert 'STARTTLS audit error (fleet unreachable): none of 2 probe(s)' in completed.stdout, output(completed)
    assert not [path for path in (tmp_path / 'reports').iterdir() if path.name != 'starttls-report.previous.json']


@pytest.mark.parametrize('extra, message', [
    ({'starttls_waivers': [{'query': "id == 'x' &&", 'reason': 'broken'}]}, 'starttls_waivers[0].query: invalid JMESPath'),
    ({'starttls_fail_when': 'length(findings[?'}, 'starttls_fail_when: invalid JMESPath'),
    ({'starttls_probe_options': {'timeout': 0}}, 'timeout must be greater than 0'),
    ({'starttls_severity': {'no-such-finding': 'high'}}, "severity: unknown finding ID 'no-such-finding'"),
])
def test_broken_input_fails_in_the_first_task(installed, fixture_listeners, tmp_path, extra, message):
    inventory = black_box_inventory(tmp_path / 'inventory.json', fixture_listeners)
    plant_stale_reports(tmp_path / 'reports')
    completed = run_installed(installed, inventory, dict(extra, starttls_report_dir=str(tmp_path / 'reports')))
    assert completed.returncode == 2, output(completed)
    assert 'STARTTLS audit error (invalid input)' in completed.stdout and message in completed.stdout, output(completed)
    # Before any host is inspected or probed.
    assert 'Inspect mail listeners' not in completed.stdout and 'fleet_assess: 1 host(s)' not in completed.stdout
    assert not [path for path in (tmp_path / 'reports').iterdir() if path.name != 'starttls-report.previous.json']


@pytest.mark.parametrize('waivers, message', [
    ([{'query': "id == 'x'"}], 'reason'),
    ([{'query': "id == 'x'", 'reason': 'r', 'until': '2027-01-01'}], 'until'),
])
def test_the_argument_spec_checks_each_waiver(installed, fixture_listeners, tmp_path, waivers, message):
    inventory = black_box_inventory(tmp_path / 'inventory.json', fixture_listeners)
    completed = run_installed(installed, inventory, {'starttls_report_dir': str(tmp_path / 'reports'),
                                                     'starttls_waivers': waivers})
    assert completed.returncode == 2, output(completed)
    # Checked once for the fleet by the role's first task (the playbook turns Ansible's per-host task off),
    # with Ansible's own messages and the host named.
    assert 'Validating arguments against arg spec' not in completed.stdout, output(completed)
    assert ('STARTTLS audit error (invalid input): the variables of 1 host(s) do not match the argument spec of '
            'role mailsec.starttls.audit') in completed.stdout, output(completed)
    assert 'simulated-mx: ' in completed.stdout and message in completed.stdout, output(completed)
    # Before any host is inspected or probed.
    assert 'Inspect mail listeners' not in completed.stdout and 'fleet_assess: 1 host(s)' not in completed.stdout


def test_an_unquoted_yaml_date_is_a_valid_expiry(installed, fixture_listeners, tmp_path):
    inventory = tmp_path / 'inventory.yml'
    listeners = [f"{item['address']}:{item['port']}/smtp" for item in fixture_listeners['listeners']]
    inventory.write_text(yaml.safe_dump({'all': {'hosts': {'simulated-mx': {
        'ansible_connection': 'local', 'starttls_host_inspection': False, 'starttls_listeners': listeners,
        'starttls_ca_file': fixture_listeners['ca_file']}}}}) + '')
    playbook_vars = tmp_path / 'vars.yml'
    playbook_vars.write_text("starttls_waivers:\n  - query: \"id == 'starttls-not-offered'\"\n"
                             "    reason: accepted\n    expires: 2099-12-31\n")
    completed = run_installed(installed, str(inventory), {'starttls_report_dir': str(tmp_path / 'reports')},
                              args=('-e', f'@{playbook_vars}'))
    assert completed.returncode == 2, output(completed)  # the 454 listener still fails the run
    report = json.loads((tmp_path / 'reports' / 'starttls-report.json').read_text())
    assert any(f['waived'] and f['id'] == 'starttls-not-offered' for f in report['findings'])


@pytest.mark.parametrize('role', ['audit', 'remediate'])
def test_the_role_readme_is_in_step_with_the_argument_spec(role):
    completed = subprocess.run([sys.executable, str(REPO / 'tests' / 'lib' / 'role_readme.py'), '--check',
                                str(REPO / 'roles' / role)], capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr
