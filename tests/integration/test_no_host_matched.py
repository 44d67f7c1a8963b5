# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The audit playbook with a host pattern that matches nothing (docs/ci.md): exit status 2 with its own message,
and the reports of an earlier run set aside as the role's first task sets them aside (the JSON kept as
starttls-report.previous.json), never deleted and never left looking current."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import ansible_bin

EARLIER = {'starttls-report.json': json.dumps({'schema_version': 1, 'generated_at': '2026-11-30T05:17:00Z',
                                               'summary': {'failed': False}, 'findings': []}),
           'starttls-report.junit.xml': '<testsuites/>\n', 'starttls-report.md': '# earlier\n',
           'starttls-report.html': '<html>earlier</html>\n'}


@pytest.fixture
def report_dir(tmp_path):
    directory = tmp_path / 'reports'
    directory.mkdir()
    for name, content in EARLIER.items():
        (directory / name).write_text(content)
    return directory


def audit_nothing(ansible_env, tmp_path, report_dir, extra: dict | None = None) -> subprocess.CompletedProcess:
    inventory = tmp_path / 'inventory.json'
    inventory.write_text(json.dumps({'all': {'children': {'mail': {'hosts': {'mx1': {'ansible_connection': 'local'}}}}}}))
    variables = dict({'starttls_target': 'no_such_group', 'starttls_report_dir': str(report_dir)}, **(extra or {}))
    return subprocess.run([ansible_bin('ansible-playbook'), '-i', str(inventory), 'mailsec.starttls.audit',
                           '-e', json.dumps(variables)], env=ansible_env, capture_output=True, text=True,
                          timeout=300, check=False)


def test_no_host_matched_sets_the_earlier_reports_aside(ansible_env, tmp_path, report_dir):
    completed = audit_nothing(ansible_env, tmp_path, report_dir)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 2, output[-4000:]
    assert "STARTTLS audit error (nothing audited): the host pattern 'no_such_group' matches no host" in output, output
    # Nothing looks current; the fleet JSON is kept, unchanged, for the next run's comparison.
    assert sorted(path.name for path in report_dir.iterdir()) == ['starttls-report.previous.json'], \
        sorted(path.name for path in report_dir.iterdir())
    assert (report_dir / 'starttls-report.previous.json').read_text() == EARLIER['starttls-report.json']


def test_no_host_matched_in_a_slice_leaves_the_fleet_reports_to_the_merge(ansible_env, tmp_path, report_dir):
    """A slice (starttls_partial) never touches the fleet reports, as the role's first task does not."""
    completed = audit_nothing(ansible_env, tmp_path, report_dir, {'starttls_partial': True})
    assert completed.returncode == 2, (completed.stdout + completed.stderr)[-4000:]
    assert {path.name: path.read_text() for path in report_dir.iterdir()} == EARLIER
