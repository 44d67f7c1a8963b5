# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""OpenSMTPD edits for mta_tls_config on recorded smtpd.conf texts: `tls pki NAME` on exactly the
listener's `listen on` line, a pki declaration to bind through, withdrawal, and validation by the
real `smtpd -n -f CANDIDATE` when the lab's unpacked OpenSMTPD (or an installed one) is there."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from ansible_collections.mailsec.starttls.plugins.module_utils import _transaction
from ansible_collections.mailsec.starttls.plugins.module_utils._host import gather_host
from ansible_collections.mailsec.starttls.plugins.module_utils._mta import ADAPTERS
from ansible_collections.mailsec.starttls.plugins.module_utils._mta.context import HostContext
from ansible_collections.mailsec.starttls.plugins.module_utils._mta.opensmtpd import (
    SmtpdConfEdit,
    opensmtpd_line_state,
    systemd_unit,
)

LAB_SMTPD = os.path.join(os.environ.get('MAILSEC_LAB_PKGROOT', '/opt/mailsec-lab/root'), 'usr/sbin/smtpd')
SMTPD = next((path for path in (LAB_SMTPD, shutil.which('smtpd', path='/usr/sbin:/usr/local/sbin') or '')
              if path and os.access(path, os.X_OK)), None)
RESTART = ['/bin/true']

# The recorded configuration: one pki in use, a listener with `tls` but no pki (the KB Q237327 case),
# one with neither, one implicit-TLS listener without a pki, and comments that must stay.
SMTPD_CONF = """\
# site smtpd.conf; this comment stays
pki mail cert "{cert}"
pki mail key "{key}"

listen on 127.0.0.1 port 25 tls pki mail hostname mx.lab.test   # the good one
listen on 127.0.0.2 port 25 tls hostname mx.lab.test
listen on 127.0.0.3 port 25 hostname mx.lab.test
listen on 127.0.0.4 port 465 smtps hostname mx.lab.test
listen on 127.0.0.5 port 587 tls-require pki mail auth hostname mx.lab.test
match from any for any reject
"""


@pytest.fixture
def pair(tmp_path):
    """A certificate and key that smtpd accepts (root-owned key, mode 0600)."""
    if shutil.which('openssl') is None:
        pytest.skip('openssl is not installed')
    directory = tmp_path / 'certs'
    directory.mkdir()
    cert, key = directory / 'mx.crt', directory / 'mx.key'
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', str(key), '-out',
                    str(cert), '-subj', '/CN=mx.lab.test', '-days', '30'], check=True, capture_output=True)
    key.chmod(0o600)
    other_cert, other_key = directory / 'other.crt', directory / 'other.key'
    shutil.copy(cert, other_cert)
    shutil.copy(key, other_key)
    other_key.chmod(0o600)
    return {'cert': str(cert), 'key': str(key), 'other_cert': str(other_cert), 'other_key': str(other_key)}


@pytest.fixture
def conf(tmp_path, pair):
    path = tmp_path / 'smtpd.conf'
    path.write_text(SMTPD_CONF.format(**pair))
    return path


def plan_for(tmp_path, path, address, port, desired, binaries=None):
    fake_proc = tmp_path / 'proc'
    (fake_proc / 'net').mkdir(parents=True, exist_ok=True)
    ctx = HostContext(root='/', use_tools='always', proc_root=str(fake_proc))
    result = gather_host({'mtas': ['opensmtpd'], 'config_paths': {'opensmtpd': [str(path)]}, 'scan_sockets': False,
                          'use_tools': 'always', 'binaries': binaries or {'smtpd': SMTPD or '/bin/true'}}, ctx=ctx)
    listener = next(item for item in result['listeners'] if (item['address'], item['port']) == (address, port))
    instance = next(item for item in result['mtas'] if item['instance'] == listener['instance'])
    others = [item for item in result['listeners'] if item['instance'] == listener['instance']]
    desired = dict({'reload_command': RESTART}, **desired)
    return ADAPTERS['opensmtpd']().plan_tls_change(ctx, instance, listener, desired, others), listener


def changed_lines(before: str, after: str) -> tuple:
    old, new = before.splitlines(), after.splitlines()
    return [line for line in old if line not in new], [line for line in new if line not in old]


def test_withdraw_removes_tls_from_that_line_only(tmp_path, conf):
    original = conf.read_text()
    plan, _listener = plan_for(tmp_path, conf, '127.0.0.2', 25, {'starttls': 'withdrawn'})
    removed, added = changed_lines(original, plan['changes'][str(conf)])
    assert removed == ['listen on 127.0.0.2 port 25 tls hostname mx.lab.test']
    assert added == ['listen on 127.0.0.2 port 25 hostname mx.lab.test']
    assert plan['affected'] == [] and plan['reload_command'] == RESTART
    assert plan['actions'] == [f'{conf}:6: remove tls']


def test_withdraw_drops_the_pki_too_and_keeps_the_comment(tmp_path, conf):
    original = conf.read_text()
    plan, _listener = plan_for(tmp_path, conf, '127.0.0.1', 25, {'starttls': 'withdrawn'})
    removed, added = changed_lines(original, plan['changes'][str(conf)])
    # smtpd refuses `pki` without tls ("invalid listen option: pki requires tls/smtps").
    assert added == ['listen on 127.0.0.1 port 25 hostname mx.lab.test   # the good one']
    assert len(removed) == 1


def test_withdraw_with_auth_is_refused(tmp_path, conf):
    with pytest.raises(_transaction.EditError, match='auth'):
        plan_for(tmp_path, conf, '127.0.0.5', 587, {'starttls': 'withdrawn'})


def test_bind_reuses_the_pki_that_holds_the_same_pair(tmp_path, conf, pair):
    original = conf.read_text()
    plan, _listener = plan_for(tmp_path, conf, '127.0.0.2', 25, {'starttls': 'offered', 'certificate': pair['cert'],
                                                                 'private_key': pair['key']})
    removed, added = changed_lines(original, plan['changes'][str(conf)])
    assert added == ['listen on 127.0.0.2 port 25 tls pki mail hostname mx.lab.test']
    assert removed == ['listen on 127.0.0.2 port 25 tls hostname mx.lab.test']


def test_bind_of_another_pair_declares_a_mailsec_pki_before_the_listen_lines(tmp_path, conf, pair):
    original = conf.read_text()
    plan, _listener = plan_for(tmp_path, conf, '127.0.0.2', 25, {
        'starttls': 'offered', 'certificate': pair['other_cert'], 'private_key': pair['other_key']})
    new_text = plan['changes'][str(conf)]
    _removed, added = changed_lines(original, new_text)
    assert added == ['# mailsec.starttls: certificate of opensmtpd/opensmtpd/listen on 127.0.0.2/127.0.0.2:25',
                     f'pki mailsec-other cert "{pair["other_cert"]}"', f'pki mailsec-other key "{pair["other_key"]}"',
                     'listen on 127.0.0.2 port 25 tls pki mailsec-other hostname mx.lab.test']
    lines = new_text.splitlines()
    assert lines.index(f'pki mailsec-other key "{pair["other_key"]}"') < lines.index(
        'listen on 127.0.0.1 port 25 tls pki mail hostname mx.lab.test   # the good one')
    # Applied, a second plan changes nothing (the pki is found by its files, the line already names it).
    conf.write_text(new_text)
    again, _listener = plan_for(tmp_path, conf, '127.0.0.2', 25, {
        'starttls': 'offered', 'certificate': pair['other_cert'], 'private_key': pair['other_key']})
    assert again['changes'] == {}


def test_bind_repoints_a_pki_that_only_this_line_uses(tmp_path, pair):
    path = tmp_path / 'smtpd.conf'
    path.write_text('pki lonely cert "/nonexistent/old.crt"\npki lonely key "/nonexistent/old.key"\n'
                    'listen on 127.0.0.9 port 25 tls pki lonely\nmatch from any for any reject\n')
    plan, _listener = plan_for(tmp_path, path, '127.0.0.9', 25, {'starttls': 'offered', 'certificate': pair['cert'],
                                                                 'private_key': pair['key']})
    assert plan['changes'][str(path)] == (f'pki lonely cert "{pair["cert"]}"\npki lonely key "{pair["key"]}"\n'
                                          'listen on 127.0.0.9 port 25 tls pki lonely\n'
                                          'match from any for any reject\n')


def test_offer_on_a_line_without_tls_names_the_pki_that_applies(tmp_path, pair):
    # The pki named after the listener's hostname is held but unused until `tls` is on the line.
    path = tmp_path / 'smtpd.conf'
    path.write_text(f'pki mx.lab.test cert "{pair["cert"]}"\npki mx.lab.test key "{pair["key"]}"\n'
                    'listen on 127.0.0.8 port 25 hostname mx.lab.test\nmatch from any for any reject\n')
    plan, _listener = plan_for(tmp_path, path, '127.0.0.8', 25, {'starttls': 'offered'})
    assert plan['changes'][str(path)].splitlines()[2] == ('listen on 127.0.0.8 port 25 hostname mx.lab.test tls pki '
                                                          'mx.lab.test')


def test_implicit_listener_binds_and_disables_only_when_asked(tmp_path, conf, pair):
    # (STARTTLS asked of it is refused by mta_tls_config for every MTA: test_mta_tls_config.py.)
    original = conf.read_text()
    plan, _listener = plan_for(tmp_path, conf, '127.0.0.4', 465, {'implicit_tls': 'bound', 'certificate': pair['cert'],
                                                                  'private_key': pair['key']})
    assert changed_lines(original, plan['changes'][str(conf)])[1] == [
        'listen on 127.0.0.4 port 465 smtps pki mail hostname mx.lab.test']
    plan, _listener = plan_for(tmp_path, conf, '127.0.0.4', 465, {'implicit_tls': 'disabled'})
    assert changed_lines(original, plan['changes'][str(conf)])[1] == [
        '# mailsec.starttls disabled: listen on 127.0.0.4 port 465 smtps hostname mx.lab.test']


def test_a_line_for_several_listeners_lists_the_others(tmp_path, pair):
    path = tmp_path / 'smtpd.conf'
    path.write_text('listen on lo port 25 tls\nmatch from any for any reject\n')
    plan, listener = plan_for(tmp_path, path, '127.0.0.1', 25, {'starttls': 'withdrawn'})
    assert plan['affected'] == ['opensmtpd/opensmtpd/listen on lo/[::1]:25']
    assert plan['changes'][str(path)].splitlines()[0] == 'listen on lo port 25'
    assert listener['defined_at'] == f'{path}:1'


@pytest.mark.parametrize('value', ['/etc/ssl/a"b.crt', '/etc/ssl/$cert.crt', '/etc/ssl/x.crt\nlisten on 0.0.0.0',
                                   '/etc/ssl/a\\b.crt', ' /etc/ssl/x.crt'])
def test_values_that_smtpd_conf_would_misread_are_refused(value):
    listener = {'tls_mode': 'starttls', 'offers_starttls': True}
    with pytest.raises(_transaction.EditError) as caught:
        opensmtpd_line_state(listener, {'starttls': 'offered', 'certificate': value, 'private_key': '/k.key'})
    assert caught.value.stage == 'arguments'


def test_chain_and_a_missing_key_are_refused():
    listener = {'tls_mode': 'starttls', 'offers_starttls': True}
    with pytest.raises(_transaction.EditError, match='chain'):
        opensmtpd_line_state(listener, {'starttls': 'offered', 'certificate': '/c', 'private_key': '/k',
                                        'chain': ['/i']})
    with pytest.raises(_transaction.EditError, match='private_key'):
        opensmtpd_line_state(listener, {'starttls': 'offered', 'certificate': '/c'})


def test_macro_and_continued_lines_are_left_for_a_manual_change():
    edit = SmtpdConfEdit('if = "127.0.0.1"\nlisten on $if port 25 tls\nlisten on 127.0.0.2 \\\n  tls\n')
    with pytest.raises(_transaction.EditError, match='macros'):
        edit.set_listen(1, 'none', None, 'smtpd.conf')
    with pytest.raises(_transaction.EditError, match='continues'):
        edit.set_listen(2, 'none', None, 'smtpd.conf')


def test_restart_through_the_systemd_unit_of_the_running_daemon(tmp_path):
    proc = tmp_path / 'proc'
    (proc / '4242').mkdir(parents=True)
    (proc / '4242' / 'cgroup').write_text('0::/system.slice/opensmtpd.service\n')
    ctx = HostContext(root='/', use_tools='always', proc_root=str(proc))
    assert systemd_unit(ctx, 4242) == 'opensmtpd.service'
    assert systemd_unit(ctx, None) is None


def test_no_known_restart_leaves_the_decision_to_the_module(tmp_path, conf):
    # The plan says that nothing restarts this instance; mta_tls_config refuses such a change outside check mode.
    plan, _listener = plan_for(tmp_path, conf, '127.0.0.2', 25, {'starttls': 'withdrawn', 'reload_command': None})
    assert plan['changes'] and plan['reload_command'] is None
    # Nothing to change (STARTTLS is not on 127.0.0.3): no restart needed.
    plan, _listener = plan_for(tmp_path, conf, '127.0.0.3', 25, {'starttls': 'withdrawn', 'reload_command': None})
    assert plan['changes'] == {} and plan['reload_command'] is None


def test_postfixs_smtpd_daemon_is_never_taken_for_opensmtpd():
    # Postfix's daemon directory holds an `smtpd` too (another program, which rejects `-n -f` silently). On the tool
    # PATH it was found first wherever OpenSMTPD's own smtpd was not installed, and every OpenSMTPD change failed
    # its validation with "exit 1: no message", the unchanged configuration included.
    ctx = HostContext()
    assert not {'/usr/lib/postfix/sbin', '/usr/libexec/postfix'} & set(ctx.tool_path)
    found = ctx.tool('smtpd')
    assert found is None or not found.startswith(('/usr/lib/postfix/', '/usr/libexec/postfix/')), found


@pytest.fixture
def smtpd():
    if SMTPD is None:
        pytest.skip('no smtpd binary (tests/lab/install.sh unpacks one)')
    return SMTPD


def test_candidate_validated_by_smtpd_and_swapped_in(tmp_path, conf, pair, smtpd):
    plan, _listener = plan_for(tmp_path, conf, '127.0.0.2', 25, {
        'starttls': 'offered', 'certificate': pair['other_cert'], 'private_key': pair['other_key']})
    outcome = _transaction.apply(plan['changes'], plan['validate'], backup=True)
    assert outcome['changed'] and outcome['validation'][0]['argv'] == ['smtpd', '-n', '-f', '<candidate>']
    assert 'pki mailsec-other' in conf.read_text()


def test_candidate_that_smtpd_rejects_changes_nothing(tmp_path, conf, pair, smtpd):
    os.chmod(pair['other_key'], 0o644)   # smtpd: "insecure permissions: must be at most rwxr-----"
    original = conf.read_bytes()
    plan, _listener = plan_for(tmp_path, conf, '127.0.0.2', 25, {
        'starttls': 'offered', 'certificate': pair['other_cert'], 'private_key': pair['other_key']})
    with pytest.raises(_transaction.EditError, match='OpenSMTPD rejects the candidate') as caught:
        _transaction.apply(plan['changes'], plan['validate'], backup=True)
    assert caught.value.stage == 'validate' and 'load_pki_keys' in str(caught.value)
    assert conf.read_bytes() == original
    assert sorted(os.listdir(conf.parent)) == sorted(['smtpd.conf', 'certs', 'proc'])
