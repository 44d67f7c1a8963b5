# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sliced runs and their merge, with real ansible-playbook runs: a fleet of local-connection
hosts whose black-box listeners are served by a real SMTP server (bench/fixture.py: STARTTLS
working, STARTTLS refused with 454, STARTTLS not offered), audited in 4 `--limit` slices and
merged with mailsec.starttls.report_merge, must give the findings, summary and failure decision
of one unsliced run; that run, into the same directory, then compares itself with the merged report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ansible_bin

REPO = Path(__file__).resolve().parents[2]
HOSTS = 12
LISTENERS_PER_HOST = 2
ADDRESS = '127.0.71.1'
BASE_PORT = 21000


@pytest.fixture(scope='module')
def smtp_fixture(tmp_path_factory):
    """bench/fixture.py serving HOSTS x LISTENERS_PER_HOST SMTP listeners (80 % working, 10 % 454,
    10 % no STARTTLS)."""
    if os.geteuid() != 0:
        pytest.skip('needs the private network namespace of the integration suite (root)')
    work = tmp_path_factory.mktemp('merge-fixture')
    manifest = work / 'manifest.json'
    process = subprocess.Popen([sys.executable, str(REPO / 'bench' / 'fixture.py'), '--n', str(HOSTS * LISTENERS_PER_HOST),
                                '--address', ADDRESS, '--base-port', str(BASE_PORT), '--manifest', str(manifest),
                                '--workdir', str(work / 'certs'), '--max-lifetime', '900'],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        if not line.startswith('READY'):
            pytest.fail(f'fixture did not start: {line} {process.stderr.read()[-2000:]}')
        yield json.loads(manifest.read_text())
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def write_inventory(path: Path, manifest: dict) -> list:
    hosts = {}
    for number in range(HOSTS):
        ports = [BASE_PORT + number * LISTENERS_PER_HOST + index for index in range(LISTENERS_PER_HOST)]
        hosts[f'mx{number:02d}'] = {'ansible_connection': 'local', 'starttls_host_inspection': False,
                                    'starttls_listeners': [f'{ADDRESS}:{port}/smtp' for port in ports]}
    path.write_text(json.dumps({'all': {
        'vars': {'ansible_python_interpreter': sys.executable, 'starttls_ca_file': manifest['ca_file'],
                 'starttls_probe_options': {'timeout': 10, 'deadline': 30}},
        'hosts': hosts}}))
    return sorted(hosts)


def playbook(ansible_env, inventory, name, variables, *args):
    return subprocess.run([ansible_bin('ansible-playbook'), '-i', str(inventory), name, '-e', json.dumps(variables),
                           *args], env=ansible_env, capture_output=True, text=True, timeout=900, check=False)


def partials_archived(reports: Path) -> list:
    return sorted(reports.glob('starttls-report.merged/*/starttls-report.partial-*.json'))


def comparable(report: dict) -> dict:
    findings = [{key: value for key, value in finding.items() if key not in ('first_seen', 'change')}
                for finding in report['findings']]
    summary = dict(report['summary'])
    return {'findings': findings, 'summary': summary, 'hosts': report['hosts'], 'listeners': report['listeners']}


def test_four_slices_merged_equal_one_run(smtp_fixture, ansible_env, tmp_path):
    inventory = tmp_path / 'inventory.json'
    hosts = write_inventory(inventory, smtp_fixture)
    reports = tmp_path / 'reports'
    common = {'starttls_report_dir': str(reports),
              # The bench certificates live two days; one of the two 454 hosts is accepted for now.
              'starttls_waivers': [{'query': "id=='certificate-expiring'", 'reason': 'bench certificates'},
                                   {'query': "host=='mx04' && id=='starttls-advertised-without-certificate'",
                                    'reason': 'ticket MAIL-4'}]}

    slices = [hosts[index::4] for index in range(4)]
    for part in slices:
        completed = playbook(ansible_env, inventory, 'mailsec.starttls.audit', dict(common, starttls_partial=True),
                             '--limit', ','.join(part))
        # A slice does not decide for the fleet: it reports and succeeds.
        assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]
    partials = sorted(reports.glob('starttls-report.partial-*.json'))
    assert len(partials) == 4, 'two slices must never share a partial report'
    assert not (reports / 'starttls-report.json').exists()
    assert sorted(sorted(json.loads(path.read_text())['meta']['partial']['hosts']) for path in partials) == \
        sorted(sorted(part) for part in slices)

    merged_run = playbook(ansible_env, inventory, 'mailsec.starttls.report_merge', common)
    merged = json.loads((reports / 'starttls-report.json').read_text())
    for suffix in ('.junit.xml', '.md', '.html'):
        assert (reports / f'starttls-report{suffix}').stat().st_size > 0
    assert list(reports.glob('starttls-report.partial-*.json')) == []
    assert len(partials_archived(reports)) == 4
    assert len(merged['meta']['merged_from']) == 4 and merged['meta']['hosts'] == HOSTS
    assert merged['changes']['previous'] is None

    # The unsliced run, into the same directory: the merged report is its previous report.
    whole_run = playbook(ansible_env, inventory, 'mailsec.starttls.audit', common)
    whole = json.loads((reports / 'starttls-report.json').read_text())

    # The fleet has faults that fail the default rule: 454 on every tenth listener.
    assert whole['summary']['failed'] is True and whole['summary']['by_severity']['critical'] > 0
    assert whole['summary']['waived'] > 0 and whole['summary']['unwaived_by_severity']['critical'] == 1
    assert whole_run.returncode == merged_run.returncode == 2, merged_run.stdout[-3000:]
    assert 'STARTTLS audit failed' in merged_run.stdout
    assert comparable(merged) == comparable(whole)
    assert whole['summary']['hosts'] == HOSTS and whole['summary']['listeners'] == HOSTS * LISTENERS_PER_HOST

    changes = whole['changes']
    assert changes['previous']['generated_at'] == merged['generated_at']
    assert (changes['new'], changes['resolved'], changes['persisting']) == (0, 0, len(whole['findings']))
    # First seen by the slice that found it, and carried over.
    first_seen = {finding['key']: finding['first_seen'] for finding in merged['findings']}
    slice_times = {json.loads(path.read_text())['generated_at'] for path in partials_archived(reports)}
    assert all(finding['change'] == 'persisting' and finding['first_seen'] == first_seen[finding['key']]
               and finding['first_seen'] in slice_times for finding in whole['findings'])
    assert f"0 new, 0 resolved, {len(whole['findings'])} persisting" in (reports / 'starttls-report.md').read_text()
