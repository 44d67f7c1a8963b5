# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the remediation tests share (test_remediate.py, test_remediate_opensmtpd.py): the playbook run on
the lab host, the lab's configuration files, the change record of one listener, a plain SMTP client, and the
lab's own restart of an instance."""

from __future__ import annotations

import json
import os
import smtplib
import subprocess
import sys
from pathlib import Path

from conftest import ansible_bin

LAB_SCRIPT = Path(__file__).resolve().parents[1] / 'lab' / 'mta_lab.py'
# The MTAs the inventory names; a test gives others with `starttls_mtas` in its variables.
MTAS = ['postfix', 'dovecot']


def inventory(work: Path, lab: dict) -> str:
    path = work / 'inventory.json'
    path.write_text(json.dumps({'all': {'children': {'mail': {'hosts': {'lab-host': {
        'ansible_connection': 'local',
        'ansible_python_interpreter': os.environ.get('MAILSEC_IT_PYTHON') or sys.executable,
        'starttls_ca_file': f"{lab['root']}/certs/lab-ca.crt",
        'starttls_mtas': MTAS,
        'starttls_probe_options': {'timeout': 5, 'deadline': 20},
    }}}}}}))
    return str(path)


def remediate(ansible_env, work, lab, extra: dict, args=(), expect_rc=0) -> dict:
    """`ansible-playbook mailsec.starttls.remediate` on the lab host: its output, and the remediation
    record it wrote (taken away, so that the next run's is its own)."""
    report_dir = work / 'reports'
    variables = dict({'starttls_report_dir': str(report_dir)}, **extra)
    completed = subprocess.run([ansible_bin('ansible-playbook'), '-i', inventory(work, lab), 'mailsec.starttls.remediate',
                                '-e', json.dumps(variables), *args],
                               env=ansible_env, capture_output=True, text=True, timeout=900, check=False)
    output = completed.stdout + completed.stderr
    assert completed.returncode == expect_rc, output[-8000:]
    record_path = report_dir / 'starttls-remediation-lab-host.json'
    record = json.loads(record_path.read_text()) if record_path.exists() else None
    if record_path.exists():
        record_path.unlink()
    return {'output': output, 'record': record}


def snapshot(root: str) -> dict:
    """Every configuration file of every lab instance, and each directory's listing."""
    files = {}
    for directory, _dirs, names in os.walk(root):
        if '/certs' in directory or '/queue' in directory or '/run' in directory or '/state' in directory:
            continue
        for name in names:
            if name.endswith(('.cf', '.conf')) or name.endswith('~'):
                path = os.path.join(directory, name)
                files[path] = Path(path).read_bytes()
    return files


def change_for(record: dict, address: str, port: int) -> dict:
    found = [change for change in record['changes']
             if change['listener']['address'] == address and change['listener']['port'] == port]
    assert len(found) == 1, record['changes']
    return found[0]


def ehlo(address: str, port: int = 25) -> tuple:
    """(STARTTLS advertised, reply code to STARTTLS) from a plain client."""
    with smtplib.SMTP(address, port, timeout=10) as client:
        client.ehlo('probe.lab.test')
        advertised = client.has_extn('starttls')
        code, _text = client.docmd('STARTTLS')
        return advertised, code


def lab_restart_argv(lab: dict, instance: str) -> list:
    """The lab's restart of one instance, as a reload command: the lab runs Exim with -C, which a SIGHUP
    re-exec does not survive, and OpenSMTPD cannot re-read its configuration."""
    return [sys.executable, str(LAB_SCRIPT), 'reload', instance, '--root', lab['root']]
