# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The remediation playbook on the lab's OpenSMTPD (6.8.0p2, as Debian 12 ships it): `tls pki` on one
listen line, validated by `smtpd -n -f CANDIDATE`, a restart (OpenSMTPD cannot re-read its configuration),
fresh probes, and rollback.

OpenSMTPD 6.8.0p2 with OpenSSL 3 aborts every TLS handshake after its `220` (`EVP lib`, upstream issues
#1171/#1239; research/MTA-BEHAVIOUR.md). So a listener that gets a certificate still fails on the wire:
binding or offering is verified, found not to help (or to make the listener worse), and rolled back. These
tests hold that behaviour as well as the edits that do make a listener compliant (withdrawal).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ansible_bin
from remediation import change_for, ehlo, lab_restart_argv, remediate, snapshot

# Every test changes the lab's configuration: the lab is started afresh after this module.
pytestmark = pytest.mark.changes_lab


def conf_path(lab: dict, instance: str) -> Path:
    return Path(lab['root']) / instance / 'smtpd.conf'


def settings(lab: dict, extra: dict | None = None, reload_commands: dict | None = None) -> dict:
    """The playbook variables for the lab's OpenSMTPD: its unpacked smtpd, and the lab's restart of each
    instance (the daemons run in private mount namespaces, outside systemd)."""
    smtpd = f"{lab.get('pkgroot') or '/opt/mailsec-lab/root'}/usr/sbin/smtpd"
    commands = {f'opensmtpd/opensmtpd:{conf_path(lab, name)}': lab_restart_argv(lab, name)
                for name in ('opensmtpd-main', 'opensmtpd-held')}
    commands.update(reload_commands or {})
    return dict({'starttls_mtas': ['opensmtpd'], 'starttls_binaries': {'smtpd': smtpd},
                 'starttls_reload_commands': commands}, **(extra or {}))


def only(address: str, port: int = 25) -> list:
    return [{'mta': 'opensmtpd', 'address': address, 'port': port}]


def test_withdraw_check_mode_then_run_then_no_change(ansible_env, work, lab):
    # 127.0.40.6: `listen on ... tls` without a pki advertises STARTTLS, says 220, then resets (KB Q237327).
    conf = conf_path(lab, 'opensmtpd-main')
    variables = settings(lab, {'starttls_remediate_listeners': only('127.0.40.6'),
                               'starttls_remediate_policy': 'withdraw'})
    before = snapshot(lab['root'])
    assert ehlo('127.0.40.6')[0] is True

    checked = remediate(ansible_env, work, lab, variables, args=('--check', '--diff'))
    assert snapshot(lab['root']) == before, 'check mode changed a file'
    assert '-listen on 127.0.40.6 port 25 tls hostname smtpd.lab.test' in checked['output']
    assert '+listen on 127.0.40.6 port 25 hostname smtpd.lab.test' in checked['output']
    change = change_for(checked['record'], '127.0.40.6', 25)
    assert 'starttls-advertised-without-certificate' in change['rules']   # the audit's finding
    assert change['action'] == 'withdraw' and change['result']['changed'] is True

    done = remediate(ansible_env, work, lab, variables)
    record = done['record']
    assert record['verification']['ok'] is True, record['verification']
    assert record['reloads'] == [lab_restart_argv(lab, 'opensmtpd-main')]
    after = snapshot(lab['root'])
    changed = {path for path in after if after[path] != before.get(path)}
    backup = change_for(record, '127.0.40.6', 25)['result']['backups'][str(conf)]
    assert changed == {str(conf), backup}, changed
    assert after[backup] == before[str(conf)]
    old_lines, new_lines = before[str(conf)].decode().splitlines(), after[str(conf)].decode().splitlines()
    assert [line for line in new_lines if line not in old_lines] == ['listen on 127.0.40.6 port 25 hostname smtpd.lab.test']
    # The wire after the restart: no STARTTLS on that listener; its siblings as they were.
    assert ehlo('127.0.40.6') == (False, 503)
    assert ehlo('127.0.40.5') == (True, 220)
    assert ehlo('127.0.40.4') == (False, 503)

    again = remediate(ansible_env, work, lab, variables)
    assert 'changed=0' in again['output']
    assert snapshot(lab['root']) == after


def test_per_listener_binding_is_verified_and_rolled_back_on_opensmtpd_6_8(ansible_env, work, lab):
    """127.0.40.3 names a pki whose key does not match; the supplied pair is bound to that line alone.
    smtpd 6.8 on OpenSSL 3 still aborts the handshake: the re-probe shows the finding, the change is undone."""
    conf = conf_path(lab, 'opensmtpd-main')
    original = conf.read_bytes()
    certificates = [{'address': '127.0.40.3', 'port': 25, 'certificate': f"{lab['root']}/certs/opensmtpd.crt",
                     'private_key': f"{lab['root']}/certs/opensmtpd.key"}]
    failed = remediate(ansible_env, work, lab, settings(lab, {
        'starttls_remediate_listeners': only('127.0.40.3'), 'starttls_certificates': certificates}), expect_rc=2)
    record = failed['record']
    change = change_for(record, '127.0.40.3', 25)
    assert change['action'] == 'bind' and 'certificate-key-mismatch' in change['rules']
    # The edit that was made: the line names the pki that holds the supplied pair (reused, not declared twice).
    assert [line.split(': ', 1)[1] for line in change['result']['actions']] == ['pki mismatch -> pki opensmtpd']
    assert change['result']['actions'][0].startswith(f'{conf}:')
    assert 'failed and was rolled back (1 file(s) restored' in failed['output']
    assert 'still found: 127.0.40.3:25' in failed['output']
    assert record['rolled_back'] is True
    assert conf.read_bytes() == original
    assert ehlo('127.0.40.3') == (True, 220)   # serves as before (and still aborts the handshake)


def test_tls_off_with_certificate_offer_is_worse_on_opensmtpd_6_8_and_rolled_back(ansible_env, work, lab):
    # opensmtpd-held 127.0.40.8: pki named after the listener's hostname, no `tls`: starttls-not-offered.
    conf = conf_path(lab, 'opensmtpd-held')
    original = conf.read_bytes()
    assert ehlo('127.0.40.8') == (False, 503)
    variables = settings(lab, {'starttls_remediate_listeners': only('127.0.40.8')})
    checked = remediate(ansible_env, work, lab, variables, args=('--check', '--diff'))
    assert conf.read_bytes() == original
    assert '+listen on 127.0.40.8 port 25 hostname smtpd.lab.test tls pki smtpd.lab.test' in checked['output']
    failed = remediate(ansible_env, work, lab, variables, expect_rc=2)
    change = change_for(failed['record'], '127.0.40.8', 25)
    assert change['action'] == 'offer' and 'starttls-not-offered' in change['rules']
    # Advertised now, and the handshake aborts: a critical finding instead of a medium one.
    regression = re.search(r'new on: 127\.0\.40\.8:25 ([a-z, -]+)', failed['output'])
    assert regression and 'starttls-advertised-without-certificate' in regression.group(1), failed['output'][-6000:]
    assert 'failed and was rolled back (1 file(s) restored' in failed['output']
    assert conf.read_bytes() == original
    assert ehlo('127.0.40.8') == (False, 503)


def test_candidate_rejected_by_smtpd_leaves_the_file_byte_identical(ansible_env, work, lab):
    # 127.0.40.7: smtps without a pki. The key supplied is one smtpd refuses to load (mode 0644: "insecure
    # permissions"), which only smtpd itself knows: the candidate fails smtpd -n.
    loose = work / 'loose'
    loose.mkdir(exist_ok=True)
    shutil.copy(f"{lab['root']}/certs/opensmtpd.crt", loose / 'loose.crt')
    shutil.copy(f"{lab['root']}/certs/opensmtpd.key", loose / 'loose.key')
    (loose / 'loose.key').chmod(0o644)
    conf = conf_path(lab, 'opensmtpd-main')
    before = snapshot(lab['root'])
    failed = remediate(ansible_env, work, lab, settings(lab, {
        'starttls_remediate_listeners': only('127.0.40.7', 465), 'starttls_remediate_policy': 'bind',
        'starttls_certificates': [{'address': '127.0.40.7', 'certificate': str(loose / 'loose.crt'),
                                   'private_key': str(loose / 'loose.key')}]}), expect_rc=2)
    assert 'OpenSMTPD rejects the candidate configuration (smtpd -n)' in failed['output']
    assert 'insecure permissions' in failed['output'], failed['output'][-6000:]
    assert snapshot(lab['root']) == before
    assert not [name for name in os.listdir(conf.parent) if 'candidate' in name]
    assert failed['record']['rolled_back'] is True


def test_failed_restart_is_rolled_back_and_the_mta_serves_as_before(ansible_env, work, lab):
    conf = conf_path(lab, 'opensmtpd-main')
    original = conf.read_bytes()
    # 127.0.40.1:25 advertises and aborts every handshake. The restart runs (with the new configuration) and
    # then reports failure; the rollback restores the file and runs it again: smtpd with the original file.
    failing = ['/bin/sh', '-c', '"$@"; exit 1', 'failing-restart', *lab_restart_argv(lab, 'opensmtpd-main')]
    failed = remediate(ansible_env, work, lab, settings(lab, {
        'starttls_remediate_listeners': only('127.0.40.1'), 'starttls_remediate_policy': 'withdraw'},
        {f"opensmtpd/opensmtpd:{conf}": failing}), expect_rc=2)
    assert 'failed and was rolled back (1 file(s) restored' in failed['output']
    assert conf.read_bytes() == original
    assert failed['record']['rolled_back'] is True
    assert ehlo('127.0.40.1')[0] is True   # advertised again: the original configuration is what runs


def test_renewed_certificate_restart_is_named_but_never_seen_on_the_wire(ansible_env, work, lab, lab_instance):
    """renewed-not-reloaded: the file on disk changes; OpenSMTPD 6.8 never completes a handshake, so no
    vantage sees the certificate it serves and the audit cannot find presented-certificate-differs. What
    the module gives for it is the restart of the instance that holds the listener."""
    lab_instance.renew_certificate('opensmtpd')
    conf = conf_path(lab, 'opensmtpd-main')
    smtpd = settings(lab)['starttls_binaries']['smtpd']
    result = run_module(ansible_env, {'mta': 'opensmtpd', 'instance': f'opensmtpd:{conf}', 'address': '127.0.40.1',
                                      'port': 25, 'binaries': {'smtpd': smtpd}})
    assert result['changed'] is False and result['listener']['binding_source'].endswith('pki opensmtpd')
    # No systemd unit runs the lab's smtpd and its file is not the default one: no restart is guessed.
    assert result['reload_command'] is None
    done = remediate(ansible_env, work, lab, settings(lab, {'starttls_remediate_listeners': only('127.0.40.1')}))
    assert not any('presented-certificate-differs' in change['rules'] for change in done['record']['changes'])


def test_missing_certificate_the_pki_is_repointed_and_smtpd_starts(ansible_env, work, lab, lab_instance):
    """opensmtpd-cert-missing: its one pki names files that do not exist, so smtpd refuses to start
    (`load_pki_tree: failed to load certificate file`). The audit sees a configured listener that does
    not listen (listener-drift): the role's policies give guidance for it, and mta_tls_config makes the
    change: the supplied pair re-points that pki (no other line uses it), smtpd -n accepts the candidate,
    and the restart brings the listener up."""
    conf = conf_path(lab, 'opensmtpd-cert-missing')
    original = conf.read_text()
    with pytest.raises(OSError):
        ehlo('127.0.40.2')
    variables = settings(lab, {'starttls_config_paths': {'opensmtpd': [str(conf)]},
                               'starttls_remediate_listeners': only('127.0.40.2')})
    audited = remediate(ansible_env, work, lab, variables, args=('--check',))
    change = change_for(audited['record'], '127.0.40.2', 25)
    assert change['rules'] == ['listener-drift'] and change['action'] == 'guidance', change
    assert conf.read_text() == original

    args = {'mta': 'opensmtpd', 'instance': f'opensmtpd:{conf}', 'address': '127.0.40.2', 'port': 25,
            'starttls': 'offered', 'certificate': f"{lab['root']}/certs/opensmtpd.crt",
            'private_key': f"{lab['root']}/certs/opensmtpd.key",
            'config_paths': {'opensmtpd': [str(conf)]}, 'reload_command': lab_restart_argv(lab, 'opensmtpd-cert-missing'),
            'binaries': settings(lab)['starttls_binaries']}
    checked = run_module(ansible_env, args, '--check', '--diff')
    assert checked['changed'] is True and conf.read_text() == original
    assert checked['validation'][0]['rc'] == 0
    done = run_module(ansible_env, args)
    assert done['changed'] is True and done['reload_command'] == lab_restart_argv(lab, 'opensmtpd-cert-missing')
    removed = [line for line in original.splitlines() if line not in conf.read_text().splitlines()]
    assert [line.split(' ', 3)[:3] for line in removed] == [['pki', 'opensmtpd', 'cert'], ['pki', 'opensmtpd', 'key']]
    assert [line.split(': ', 1)[1] for line in done['actions']] == [
        f'pki opensmtpd cert "{args["certificate"]}" (was {lab["root"]}/certs/absent/opensmtpd.crt)',
        f'pki opensmtpd key "{args["private_key"]}" (was {lab["root"]}/certs/absent/opensmtpd.key)']
    lab_instance.restart('opensmtpd-cert-missing')
    assert ehlo('127.0.40.2')[0] is True   # smtpd starts now, and advertises STARTTLS with a pki bound
    assert run_module(ansible_env, args)['changed'] is False


def run_module(ansible_env, args: dict, *options) -> dict:
    """mailsec.starttls.mta_tls_config run on this host by `ansible` (its JSON result)."""
    completed = subprocess.run(
        [ansible_bin('ansible'), 'all', '-i', 'localhost,', '-c', 'local', '-m', 'mailsec.starttls.mta_tls_config',
         '-a', json.dumps(args), *options],
        env=ansible_env, capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stdout[-4000:]
    text = completed.stdout.split('=>', 1)[1]
    return json.JSONDecoder().raw_decode(text.strip())[0]
