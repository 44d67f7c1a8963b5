# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The platform tools against the built collection: galaxy-importer (Galaxy's upload check),
ansible-builder (execution environment), ansible-runner (how AWX runs the audit) and antsibull-docs (the
docsite). They live in the test environment "tools" (tests/lib/venv-tools.txt, made by tests/setup.sh)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, ansible_bin
from test_packaging import black_box_inventory, built, fixture_listeners, installed, tracked_files, user_env  # noqa: F401 pylint: disable=unused-import


def tools_bin(name: str) -> str:
    venv = os.environ.get('MAILSEC_TOOLS_VENV') or os.path.join(
        os.environ.get('MAILSEC_CACHE') or os.path.expanduser('~/.cache/mailsec-starttls'), 'venv-tools')
    path = Path(venv) / 'bin' / name
    if not path.exists():
        pytest.fail(f'{path} is missing: run "bash tests/setup.sh" (environment "tools", tests/lib/venv-tools.txt)')
    return str(path)


def tools_env(**extra) -> dict:
    """The tested ansible-core first on PATH (ansible-playbook and ansible-doc, as the tools call them), then the
    tools' own commands (ansible-lint for galaxy-importer)."""
    env = {key: value for key, value in os.environ.items() if key not in ('PYTHONPATH', 'ANSIBLE_COLLECTIONS_PATH')}
    # Not the test runner's built tree (PYTHONPATH, ANSIBLE_COLLECTIONS_PATH): only what each test installs.
    env.update(ANSIBLE_NOCOLOR='1', **extra)
    env['PATH'] = os.pathsep.join([str(Path(sys.executable).parent), str(Path(tools_bin('python')).parent), env['PATH']])
    return env


def copy_tree(destination: Path) -> Path:
    for path in tracked_files():
        if (REPO / path).is_dir():
            continue
        target = destination / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / path, target)
    return destination


def run_importer(tarball: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([tools_bin('python'), '-m', 'galaxy_importer.main', str(tarball)], cwd=cwd,
                          env=tools_env(), capture_output=True, text=True, timeout=1200, check=False)


def test_galaxy_importer_fails_only_for_the_repository_url(built):
    completed = run_importer(built['tarball'], built['work'])
    text = completed.stdout + completed.stderr
    errors = [line for line in text.splitlines() if 'ERROR' in line]
    assert errors == ["ERROR: The import failed for the following reason: Invalid collection metadata. "
                      "'repository' is required"], text[-4000:]


def test_galaxy_importer_passes_once_the_repository_url_is_set(tmp_path):
    source = copy_tree(tmp_path / 'source')
    galaxy = (source / 'galaxy.yml').read_text()
    assert '# repository: https://PROJECT-URL' in galaxy
    (source / 'galaxy.yml').write_text(galaxy.replace('# repository: https://PROJECT-URL',
                                                      'repository: https://example.org/mailsec-starttls'))
    subprocess.run([ansible_bin('ansible-galaxy'), 'collection', 'build', '--output-path', str(tmp_path), str(source)],
                   env=user_env(tmp_path), check=True, capture_output=True)
    completed = run_importer(next(tmp_path.glob('mailsec-starttls-*.tar.gz')), tmp_path)
    text = completed.stdout + completed.stderr
    assert completed.returncode == 0 and 'Importer processing completed successfully' in text, text[-4000:]
    assert 'ERROR' not in text and 'WARNING' not in text.replace('WARNING: ansible-doc', ''), text[-4000:]


def test_the_execution_environment_definition(installed, tmp_path):
    """ansible-builder reads the installed collection's requirements, and builds a context with them."""
    introspected = subprocess.run([tools_bin('ansible-builder'), 'introspect', '--sanitize', str(installed)],
                                  env=tools_env(), capture_output=True, text=True, check=False)
    assert introspected.returncode == 0, introspected.stdout + introspected.stderr
    assert 'jmespath' in introspected.stdout and 'paramiko' in introspected.stdout, introspected.stdout
    assert 'openssl' in introspected.stdout and 'mailsec.starttls' in introspected.stdout, introspected.stdout
    definition = tmp_path / 'execution-environment.yml'
    (tmp_path / 'requirements.yml').write_text(yaml.safe_dump({'collections': [
        {'name': str(next((installed.parent).glob('**/mailsec-starttls-*.tar.gz'), 'mailsec.starttls')), 'type': 'file'}]}))
    definition.write_text(yaml.safe_dump({
        'version': 3,
        'images': {'base_image': {'name': 'quay.io/ansible/awx-ee:latest'}},
        'dependencies': {'galaxy': 'requirements.yml', 'python': str(REPO / 'meta' / 'ee-requirements.txt'),
                         'system': str(REPO / 'meta' / 'ee-bindep.txt')},
    }))
    created = subprocess.run([tools_bin('ansible-builder'), 'create', '-f', str(definition), '-c', str(tmp_path / 'context'),
                              '--output-filename', 'Containerfile'], env=tools_env(), capture_output=True, text=True,
                             check=False)
    assert created.returncode == 0, created.stdout + created.stderr
    assert (tmp_path / 'context' / 'Containerfile').is_file()
    build_files = tmp_path / 'context' / '_build'
    assert 'jmespath' in (build_files / 'requirements.txt').read_text()
    assert 'openssl' in (build_files / 'bindep.txt').read_text()


def test_ansible_runner_runs_the_audit_as_awx_does(installed, fixture_listeners, tmp_path):
    """A private data directory as AWX prepares it: a project playbook that imports the collection's audit,
    the inventory, extra vars; the result is read from runner's artifacts (rc, status, events)."""
    private = tmp_path / 'runner'
    (private / 'project').mkdir(parents=True)
    (private / 'inventory').mkdir()
    (private / 'env').mkdir()
    (private / 'project' / 'audit.yml').write_text(
        '---\n- name: STARTTLS audit\n  ansible.builtin.import_playbook: mailsec.starttls.audit\n')
    black_box_inventory(private / 'inventory' / 'hosts.json', fixture_listeners)
    reports = tmp_path / 'reports'
    extravars = {'starttls_report_dir': str(reports), 'starttls_fail_when': 'summary.unwaived > `100`'}
    envvars = {'ANSIBLE_COLLECTIONS_PATH': str(installed), 'ANSIBLE_PYTHON_INTERPRETER': sys.executable,
               'ANSIBLE_LOCALHOST_WARNING': '0'}
    (private / 'env' / 'extravars').write_text(json.dumps(extravars))
    (private / 'env' / 'envvars').write_text(json.dumps(envvars))
    completed = subprocess.run([tools_bin('ansible-runner'), 'run', str(private), '-p', 'audit.yml', '--ident', 'audit'],
                               env=tools_env(), capture_output=True, text=True, timeout=600, check=False)
    artifacts = private / 'artifacts' / 'audit'
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]
    assert (artifacts / 'rc').read_text().strip() == '0'
    assert (artifacts / 'status').read_text().strip() == 'successful'
    events = [json.loads(path.read_text()) for path in (artifacts / 'job_events').glob('*.json')]
    assessed = [event for event in events if event.get('event') == 'runner_on_ok'
                and event['event_data'].get('task_action') == 'mailsec.starttls.fleet_assess'
                and event['event_data'].get('res', {}).get('outcome') == 'passed']
    assert len(assessed) == 1, [event.get('event') for event in events]
    assert json.loads((reports / 'starttls-report.json').read_text())['summary']['listeners'] == 10


def test_the_docsite_builds_without_a_warning(installed, tmp_path):
    """antsibull-docs lint-collection-docs, sphinx-init, collection and sphinx-build -W (tests/lib/docsite.py): the
    plugin and role docs, docs/docsite's extra docs and the Markdown guides of docs/."""
    completed = subprocess.run([tools_bin('python'), str(REPO / 'tests' / 'lib' / 'docsite.py'),
                                '--collections-path', str(installed), '--dest', str(tmp_path / 'site')],
                               env=tools_env(), capture_output=True, text=True, timeout=900, check=False)
    assert completed.returncode == 0, completed.stdout[-6000:] + completed.stderr[-3000:]
    html = tmp_path / 'site' / 'build' / 'html' / 'collections' / 'mailsec' / 'starttls'
    for page in ('fleet_assess_module', 'listener_probe_module', 'mta_tls_info_module', 'audit_role', 'report_filter',
                 'docsite/guide_audit', 'docsite/guides/quickstart', 'docsite/guides/ci', 'docsite/guides/findings'):
        assert (html / f'{page}.html').is_file(), page
    fail_when = (html / 'fleet_assess_module.html').read_text()
    assert 'The default fails on any unwaived finding of severity' in fail_when
