# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The audit playbook (mailsec.starttls.audit) over the real-MTA lab: findings from every side, policy, reports."""

from __future__ import annotations

import json
import os
import subprocess
import xml.etree.ElementTree as ET

import pytest

from conftest import ansible_bin

BLACKBOX_LISTENERS = ['127.0.20.6:25/smtp', '127.0.40.1:25/smtp', '127.0.10.2:25/smtp']


def write_inventory(path, lab, sshd=None) -> str:
    config_paths = {}
    for daemon in lab['daemons']:
        if not daemon['started'] and daemon.get('config_file'):
            config_paths.setdefault(daemon['mta'], []).append(daemon['config_file'])
    inventory = {'all': {
        'vars': {'ansible_python_interpreter': os.environ.get('MAILSEC_IT_PYTHON') or __import__('sys').executable,
                 'starttls_ca_file': f"{lab['root']}/certs/lab-ca.crt",
                 'starttls_probe_options': {'timeout': 5, 'deadline': 20}},
        'hosts': {
            'lab-host': {'ansible_connection': 'local', 'starttls_config_paths': config_paths},
            'partner-mx': {'ansible_connection': 'local', 'starttls_host_inspection': False,
                           'starttls_listeners': BLACKBOX_LISTENERS},
        }}}
    if sshd:
        inventory['all']['vars']['starttls_jump_hosts'] = [dict(sshd, name='bastion')]
    path.write_text(json.dumps(inventory))
    return str(path)


def run_audit(ansible_env, inventory: str, report_dir, extra: dict | None = None, args=()) -> subprocess.CompletedProcess:
    variables = dict({'starttls_report_dir': str(report_dir)}, **(extra or {}))
    return subprocess.run([ansible_bin('ansible-playbook'), '-i', inventory, 'mailsec.starttls.audit',
                           '-e', json.dumps(variables), *args],
                          env=ansible_env, capture_output=True, text=True, timeout=900, check=False)


@pytest.fixture(scope='module')
def audited(lab, sshd, ansible_env, tmp_path_factory):
    work = tmp_path_factory.mktemp('audit')
    inventory = write_inventory(work / 'inventory.json', lab, sshd)
    completed = run_audit(ansible_env, inventory, work / 'reports', args=('--check',))
    report_path = work / 'reports' / 'starttls-report.json'
    assert report_path.exists(), completed.stdout[-5000:] + completed.stderr[-3000:]
    return {'completed': completed, 'report': json.loads(report_path.read_text()), 'work': work,
            'inventory': inventory}


def ids_at(report, host, address, port, vantage='any'):
    return {f['id'] for f in report['findings'] if f['host'] == host and f['listener']['address'] == address
            and f['listener']['port'] == port and (vantage == 'any' or vantage in f['vantages'])}


def test_default_policy_fails_the_run_after_writing_the_reports(audited):
    completed, report = audited['completed'], audited['report']
    assert completed.returncode == 2, (report['summary'], report['hosts'], completed.stdout[-3000:])
    assert 'STARTTLS audit failed' in completed.stdout
    assert report['summary']['failed'] is True
    assert report['schema_version'] == 1
    assert report['meta']['check_mode'] is True


@pytest.mark.parametrize('address, port, vantage', [
    ('127.0.10.2', 25, 'host'), ('127.0.10.2', 25, 'controller'), ('127.0.10.2', 25, 'jump:bastion'),  # Postfix, 454
    ('127.0.20.2', 25, 'host'),    # Exim, certificate file missing: 454
    ('127.0.30.3', 143, 'host'),   # Dovecot, key mismatch: OK, then BYE
    ('127.0.40.1', 25, 'host'),    # OpenSMTPD: valid configuration, handshake never completes
    ('127.0.10.6', 25, 'controller'),  # Postfix: certificate bound to a sibling only
])
def test_advertised_without_a_usable_certificate_is_caught_from_every_side(audited, address, port, vantage):
    assert 'starttls-advertised-without-certificate' in ids_at(audited['report'], 'lab-host', address, port, vantage)


def test_one_missing_file_is_one_finding_per_rule_with_every_vantage(audited):
    report = audited['report']
    at_kb = [f for f in report['findings'] if f['host'] == 'lab-host'
             and (f['listener']['address'], f['listener']['port']) == ('127.0.10.2', 25)]
    rules = [f['id'] for f in at_kb]
    assert len(rules) == len(set(rules)), rules
    advertised = next(f for f in at_kb if f['id'] == 'starttls-advertised-without-certificate')
    assert {'host', 'controller', 'jump:bastion'} <= set(advertised['vantages'])
    assert len(advertised['sightings']) == len(advertised['vantages'])
    # Faults, not sightings, are what the summary counts.
    assert report['summary']['findings'] == len(report['findings'])
    assert len({f['key'] for f in report['findings']}) == len(report['findings'])


def test_exim_self_made_certificate_is_caught(audited):
    found = ids_at(audited['report'], 'lab-host', '127.0.20.6', 25)
    assert found & {'presented-certificate-differs', 'tls-terminated-elsewhere', 'validation-failure'}, found


def test_tls_off_with_a_valid_certificate_is_starttls_not_offered(audited):
    assert 'starttls-not-offered' in ids_at(audited['report'], 'lab-host', '127.0.10.4', 25)


def test_implicit_tls_without_certificate(audited):
    assert 'implicit-tls-without-certificate' in ids_at(audited['report'], 'lab-host', '127.0.10.7', 465)


def test_broken_stores_are_findings_of_their_own(audited):
    report = audited['report']
    assert 'certificate-key-mismatch' in ids_at(report, 'lab-host', '127.0.10.3', 25)
    assert 'certificate-expired' in ids_at(report, 'lab-host', '127.0.11.2', 25)


def test_compliant_listeners_have_no_finding_that_matters(audited):
    report = audited['report']
    for address, port in (('127.0.10.1', 25), ('127.0.20.1', 25), ('127.0.30.1', 143), ('127.0.30.1', 993)):
        serious = [f['id'] for f in report['findings'] if f['host'] == 'lab-host'
                   and (f['listener']['address'], f['listener']['port']) == (address, port)
                   and f['severity'] in ('critical', 'high', 'medium')]
        assert serious == [], (address, port, serious)


def test_black_box_host_is_judged_from_the_network_alone(audited):
    report = audited['report']
    host = next(item for item in report['hosts'] if item['host'] == 'partner-mx')
    assert host['mode'] in ('black-box', 'inventory', 'probe')
    assert 'starttls-advertised-without-certificate' in ids_at(report, 'partner-mx', '127.0.10.2', 25, 'controller')
    assert 'starttls-advertised-without-certificate' in ids_at(report, 'partner-mx', '127.0.40.1', 25, 'controller')


def test_each_endpoint_is_probed_once_per_vantage(audited):
    report = audited['report']
    seen = {}
    for listener in report['listeners']:
        for probe in listener.get('probes') or []:
            if probe.get('vantage') == 'controller':
                key = (probe.get('target'), listener['host'])
                seen[key] = seen.get(key, 0) + 1
    assert seen and max(seen.values()) == 1


def test_reports_for_people_and_machines(audited):
    work, report = audited['work'], audited['report']
    junit = ET.parse(work / 'reports' / 'starttls-report.junit.xml').getroot()
    cases = junit.findall('.//testcase')
    failures = [case for case in cases if case.find('failure') is not None]
    assert cases and len(failures) >= 1
    assert sum(1 for f in report['findings'] if not f['waived']) >= len(failures) > 0
    markdown = (work / 'reports' / 'starttls-report.md').read_text()
    assert 'starttls-advertised-without-certificate' in markdown
    html = (work / 'reports' / 'starttls-report.html').read_text()
    assert '<script' not in html.lower() and '<svg' in html


def test_waivers_and_fail_when(lab, ansible_env, audited, tmp_path):
    waivers = [
        {'query': "id == 'starttls-advertised-without-certificate' && listener.address == '127.0.10.2'",
         'reason': 'ticket MAIL-1, replacement certificate ordered', 'expires': '2099-12-31'},
        {'query': "id == 'starttls-not-offered'", 'reason': 'expired on purpose', 'expires': '2001-01-01'},
    ]
    completed = run_audit(ansible_env, audited['inventory'], tmp_path / 'reports',
                          {'starttls_waivers': waivers, 'starttls_fail_when': "summary.unwaived > `1000`"})
    assert completed.returncode == 0, completed.stdout[-3000:]
    report = json.loads((tmp_path / 'reports' / 'starttls-report.json').read_text())
    waived = [f for f in report['findings'] if f['waived']]
    assert waived and all(f['listener']['address'] == '127.0.10.2' for f in waived)
    assert all(f['waiver']['reason'].startswith('ticket MAIL-1') for f in waived)
    assert [w['query'] for w in report['waivers_expired']] == ["id == 'starttls-not-offered'"]
    assert any(f['id'] == 'starttls-not-offered' and not f['waived'] for f in report['findings'])
    assert report['summary']['failed'] is False


def test_an_invalid_expression_fails_early_and_clearly(audited, ansible_env, tmp_path):
    completed = run_audit(ansible_env, audited['inventory'], tmp_path / 'reports',
                          {'starttls_waivers': [{'query': "id == 'x' &&", 'reason': 'broken'}]})
    assert completed.returncode == 2
    assert 'waiver' in completed.stdout and 'JMESPath' in completed.stdout, completed.stdout[-2000:]
    assert not (tmp_path / 'reports' / 'starttls-report.json').exists()
