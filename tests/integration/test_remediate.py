# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The remediation playbook (mailsec.starttls.remediate) on the real-MTA lab: Postfix (two instances) and
Dovecot, from the finding to a listener that the wire shows compliant, and the ways it must refuse or roll back.

Run in a private network and PID namespace (unshare --net --pid --fork --mount-proc): host inspection finds
MTAs by their processes, and another lab's daemons would otherwise be inspected too.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import ansible_bin
from remediation import change_for, ehlo, inventory, lab_restart_argv, remediate, snapshot

# Every test changes the lab's configuration: the lab is started afresh after this module.
pytestmark = pytest.mark.changes_lab


def test_postfix_withdraw_check_mode_then_run_then_no_change(ansible_env, work, lab):
    selector = {'starttls_remediate_listeners': [{'instance': 'postfix-a', 'address': '127.0.10.2', 'port': 25}],
                'starttls_remediate_policy': 'withdraw'}
    before = snapshot(lab['root'])
    assert ehlo('127.0.10.2') == (True, 454)

    checked = remediate(ansible_env, work, lab, selector, args=('--check', '--diff'))
    assert snapshot(lab['root']) == before, 'check mode changed a file'
    assert '+    -o smtpd_tls_security_level=none' in checked['output']
    change = change_for(checked['record'], '127.0.10.2', 25)
    assert 'starttls-advertised-without-certificate' in change['rules']   # the audit's judgement shows it
    assert change['action'] == 'withdraw' and change['result']['changed'] is True
    assert checked['record']['check_mode'] is True and 'verification' not in checked['record']

    done = remediate(ansible_env, work, lab, selector)
    record = done['record']
    assert record['verification']['ok'] is True, record['verification']
    assert record['reloads'] and record['reloads'][0][-1] == 'reload'
    master = f"{lab['root']}/postfix-a/conf/master.cf"
    after = snapshot(lab['root'])
    changed = {path for path in after if after[path] != before.get(path)}
    backup = change_for(record, '127.0.10.2', 25)['result']['backups'][master]
    assert changed == {master, backup}, changed
    assert after[backup] == before[master]
    # The wire: the listener no longer advertises STARTTLS; its siblings in the instance are as they were.
    assert ehlo('127.0.10.2') == (False, 502)
    assert ehlo('127.0.10.1') == (True, 220)
    assert ehlo('127.0.10.6') == (True, 454)
    # Only that service's entry in master.cf changed.
    old_lines, new_lines = before[master].decode().splitlines(), after[master].decode().splitlines()
    assert [line for line in new_lines if line not in old_lines] == [
        line for line in new_lines if line.startswith(('127.0.10.2:smtp', '    -o'))]

    again = remediate(ansible_env, work, lab, selector)
    assert 'changed=0' in again['output']
    assert snapshot(lab['root']) == after


def test_postfix_second_instance_binds_a_supplied_certificate(ansible_env, work, lab):
    # postfix-b serves an expired certificate on 127.0.11.2 through -o smtpd_tls_chain_files.
    certificates = [{'address': '127.0.11.2', 'port': 25, 'certificate': f"{lab['root']}/certs/postfix-b.crt",
                     'private_key': f"{lab['root']}/certs/postfix-b.key"}]
    done = remediate(ansible_env, work, lab, {
        'starttls_remediate_listeners': [{'instance': 'postfix-b', 'address': '127.0.11.2'}],
        'starttls_certificates': certificates})
    change = change_for(done['record'], '127.0.11.2', 25)
    assert 'certificate-expired' in change['rules'] and change['action'] == 'bind'
    assert any('smtpd_tls_chain_files' in line for line in change['result']['actions'])
    assert done['record']['verification']['ok'] is True
    master = Path(f"{lab['root']}/postfix-b/conf/master.cf").read_text()
    assert f"{lab['root']}/certs/postfix-b.key,{lab['root']}/certs/postfix-b.crt" in master


def test_postfix_candidate_rejected_by_postconf_leaves_the_file_byte_identical(ansible_env, work, lab):
    master = Path(f"{lab['root']}/postfix-a/conf/master.cf")
    original = master.read_bytes()
    broken = original + b'bogus-service inet maybe - n - - smtpd\n'
    master.write_bytes(broken)
    try:
        before = snapshot(lab['root'])
        failed = remediate(ansible_env, work, lab, {
            'starttls_remediate_listeners': [{'instance': 'postfix-a', 'address': '127.0.10.6'}],
            'starttls_remediate_policy': 'withdraw'}, expect_rc=2)
        assert 'Postfix rejects the candidate configuration' in failed['output']
        assert 'rolled back' in failed['output']
        assert master.read_bytes() == broken
        assert snapshot(lab['root']) == before
        assert failed['record']['rolled_back'] is True
    finally:
        master.write_bytes(original)


def test_postfix_failing_reload_is_rolled_back(ansible_env, work, lab):
    master = Path(f"{lab['root']}/postfix-a/conf/master.cf")
    original = master.read_bytes()
    assert ehlo('127.0.10.6') == (True, 454)
    failed = remediate(ansible_env, work, lab, {
        'starttls_remediate_listeners': [{'instance': 'postfix-a', 'address': '127.0.10.6'}],
        'starttls_remediate_policy': 'withdraw', 'starttls_binaries': {'postfix': '/bin/false'}}, expect_rc=2)
    assert 'failed and was rolled back (1 file(s) restored' in failed['output']
    assert master.read_bytes() == original
    assert failed['record']['rolled_back'] is True
    assert ehlo('127.0.10.6') == (True, 454)   # the server serves as before


def test_renewed_not_reloaded_and_the_demo_host_becomes_compliant(ansible_env, work, lab, lab_instance):
    """The demo's second act: the certificate was renewed on disk but not loaded, and port 25 advertises
    STARTTLS without one. One run reloads Postfix and Dovecot and binds 587's certificate to 25."""
    lab_instance.renew_certificate('demo')
    done = remediate(ansible_env, work, lab, {'starttls_remediate_listeners': [{'address': '127.0.60.1'}]})
    record = done['record']
    actions = {(change['listener']['port'], change['action']) for change in record['changes']}
    assert (25, 'bind') in actions
    assert {(587, 'reload'), (143, 'reload'), (993, 'reload')} <= actions
    assert record['verification'] == {'ok': True, 'remaining': [], 'regressions': [], 'evidence': [],
                                      'message': 'every targeted finding is gone and no listener is worse'}
    assert {tuple(argv[-3:]) for argv in record['reloads']} == {
        ('-c', f"{lab['root']}/postfix-demo/conf", 'reload'), ('-c', f"{lab['root']}/dovecot-demo/dovecot.conf", 'reload')}
    assert ehlo('127.0.60.1') == (True, 220)


def test_dovecot_binds_a_fitting_certificate_to_an_unbound_address(ansible_env, work, lab):
    # dovecot-bound: 127.0.30.5 has a local block with a certificate, 127.0.30.6 none (OK, then BYE).
    conf = Path(f"{lab['root']}/dovecot-bound/dovecot.conf")
    original = conf.read_text()
    selector = {'starttls_remediate_listeners': [{'instance': 'mailsec-lab-dovecot-bound', 'address': '127.0.30.6',
                                                  'port': 143}],
                'starttls_remediate_names': ['imap.lab.test'], 'starttls_remediate_allow_shared': True}
    checked = remediate(ansible_env, work, lab, selector, args=('--check', '--diff'))
    assert conf.read_text() == original
    assert '+local 127.0.30.6 {' in checked['output']
    done = remediate(ansible_env, work, lab, selector)
    change = change_for(done['record'], '127.0.30.6', 143)
    assert change['action'] == 'bind' and 'starttls-advertised-without-certificate' in change['rules']
    assert {item.rsplit('/', 1)[1] for item in change['result']['affected_listeners']} == {
        '127.0.30.6:110', '127.0.30.6:993', '127.0.30.6:995', '127.0.30.6:4190'}
    assert done['record']['verification']['ok'] is True
    text = conf.read_text()
    assert text.startswith(original)
    assert f"local 127.0.30.6 {{\n  ssl_cert = <{lab['root']}/certs/dovecot.crt\n" in text
    again = remediate(ansible_env, work, lab, selector)
    assert 'changed=0' in again['output'] and conf.read_text() == text


def test_dovecot_tls_off_with_certificate_is_turned_on_in_its_local_block(ansible_env, work, lab):
    conf = Path(f"{lab['root']}/dovecot-main/dovecot.conf")
    original = conf.read_text()
    assert 'local 127.0.30.4 {\n  ssl = no\n}' in original
    done = remediate(ansible_env, work, lab, {
        'starttls_remediate_listeners': [{'instance': 'mailsec-lab-dovecot-main', 'address': '127.0.30.4', 'port': 143}],
        'starttls_remediate_allow_shared': True})
    change = change_for(done['record'], '127.0.30.4', 143)
    assert change['action'] == 'offer' and 'starttls-not-offered' in change['rules']
    assert done['record']['verification']['ok'] is True
    assert conf.read_text() == original.replace('local 127.0.30.4 {\n  ssl = no\n}', 'local 127.0.30.4 {\n  ssl = yes\n}')


def test_dovecot_shared_change_is_refused_without_allow_shared(ansible_env, work, lab):
    conf = Path(f"{lab['root']}/dovecot-bound/dovecot.conf")
    original = conf.read_bytes()
    failed = remediate(ansible_env, work, lab, {
        'starttls_remediate_listeners': [{'instance': 'mailsec-lab-dovecot-bound', 'address': '127.0.30.7'}],
        'starttls_remediate_names': ['imap.lab.test'], 'starttls_remediate_disable_implicit': False,
        'starttls_certificates': [{'address': '127.0.30.7', 'certificate': f"{lab['root']}/certs/dovecot.crt",
                                   'private_key': f"{lab['root']}/certs/dovecot.key"}]}, expect_rc=2)
    assert 'the change also affects' in failed['output']
    assert conf.read_bytes() == original


def test_dovecot_candidate_rejected_by_doveconf_leaves_the_file_byte_identical(ansible_env, work, lab):
    conf = Path(f"{lab['root']}/dovecot-main/dovecot.conf")
    original = conf.read_bytes()
    broken = original + b'ssl_no_such_setting = 1\n'
    conf.write_bytes(broken)
    try:
        failed = remediate(ansible_env, work, lab, {
            'starttls_remediate_listeners': [{'instance': 'mailsec-lab-dovecot-main', 'address': '127.0.30.3',
                                              'port': 143}],
            'starttls_remediate_policy': 'withdraw', 'starttls_remediate_allow_shared': True}, expect_rc=2)
        assert 'Dovecot rejects the candidate configuration' in failed['output']
        assert conf.read_bytes() == broken
        assert not [name for name in os.listdir(conf.parent) if 'candidate' in name]
    finally:
        conf.write_bytes(original)


def test_exim_withdraws_on_one_listener_with_a_guarded_expansion(ansible_env, work, lab):
    # exim-cert-missing: 127.0.20.2:25 advertises STARTTLS and answers 454 (the certificate file is gone).
    conf = Path(f"{lab['root']}/exim-cert-missing/exim4.conf")
    original = conf.read_text()
    exim = f"{lab.get('pkgroot') or '/opt/mailsec-lab/root'}/usr/sbin/exim4"
    assert ehlo('127.0.20.2') == (True, 454)
    # The lab runs Exim with -C, which a SIGHUP re-exec does not survive: the lab restarts it instead.
    restart = lab_restart_argv(lab, 'exim-cert-missing')
    done = remediate(ansible_env, work, lab, {
        'starttls_mtas': ['exim'], 'starttls_binaries': {'exim': exim}, 'starttls_reload_commands': {'exim': restart},
        'starttls_remediate_listeners': [{'mta': 'exim', 'address': '127.0.20.2', 'port': 25}]})
    change = change_for(done['record'], '127.0.20.2', 25)
    assert change['action'] == 'withdraw' and change['result']['changed'] is True
    assert done['record']['verification']['ok'] is True, done['record']['verification']
    assert done['record']['reloads'] == [restart]
    text = conf.read_text()
    assert ('tls_advertise_hosts = ${if and{{eq{$received_ip_address}{127.0.20.2}}{eq{$received_port}{25}}}{}{*}}'
            in text)
    assert [line for line in text.splitlines() if line not in original.splitlines()][0].startswith(
        '# mailsec.starttls managed tls_advertise_hosts ')
    assert ehlo('127.0.20.2')[0] is False


def test_findings_of_a_saved_audit_report_are_remediated(ansible_env, work, lab):
    """The audit playbook writes its report; the remediation reads it (starttls_remediate_report)."""
    report_dir = work / 'audit-reports'
    audit = subprocess.run([ansible_bin('ansible-playbook'), '-i', inventory(work, lab), 'mailsec.starttls.audit',
                            '-e', json.dumps({'starttls_report_dir': str(report_dir), 'starttls_fail': False,
                                              'starttls_report_formats': ['json']})],
                           env=ansible_env, capture_output=True, text=True, timeout=900, check=False)
    assert audit.returncode == 0, audit.stdout[-4000:]
    report = report_dir / 'starttls-report.json'
    saved = json.loads(report.read_text())
    assert any(item['id'] == 'certificate-key-mismatch' and item['listener']['address'] == '127.0.10.3'
               for item in saved['findings'])
    done = remediate(ansible_env, work, lab, {
        'starttls_remediate_report': str(report),
        'starttls_remediate_listeners': [{'instance': 'postfix-a', 'address': '127.0.10.3'}],
        'starttls_certificates': [{'host': 'lab-*', 'address': '127.0.10.3',
                                   'certificate': f"{lab['root']}/certs/postfix-a.crt",
                                   'private_key': f"{lab['root']}/certs/postfix-a.key"}]})
    record = done['record']
    assert record['input'] == str(report)
    change = change_for(record, '127.0.10.3', 25)
    assert change['action'] == 'bind' and 'certificate-key-mismatch' in change['rules']
    assert change['certificate']['source'] == 'starttls_certificates'
    assert record['verification']['ok'] is True
    assert ehlo('127.0.10.3') == (True, 220)
