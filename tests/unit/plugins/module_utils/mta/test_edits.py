# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The adapters' edits for mta_tls_config on fixture configurations: Postfix through postconf on a
staged copy, Dovecot local blocks validated by doveconf, Sendmail as a manual change only."""

from __future__ import annotations

import os
import textwrap

import pytest

from ansible_collections.mailsec.starttls.plugins.module_utils import _transaction
from ansible_collections.mailsec.starttls.plugins.module_utils._mta import ADAPTERS
from ansible_collections.mailsec.starttls.plugins.module_utils._mta.dovecot_edit import dovecot_settings, edit_local_block
from ansible_collections.mailsec.starttls.plugins.module_utils._mta.postfix import Resolver
from ansible_collections.mailsec.starttls.plugins.module_utils._mta.postfix_edit import postfix_overrides
from ansible_collections.mailsec.starttls.tests.unit.plugins.mta_tools import (
    DOVECONF,
    EXIM,
    POSTCONF,
    gather_with_tools,
    need,
    postfix_directory,
)

MAIN_CF = """\
# site main.cf
compatibility_level = 3.6
inet_interfaces = loopback-only
inet_protocols = ipv4
smtpd_tls_security_level = may
smtpd_tls_cert_file = /nonexistent/absent.crt
"""
MASTER_CF = """\
# one service per listener; this comment stays
127.0.0.1:smtp inet n - n - - smtpd
127.0.0.1:submission inet n - n - - smtpd
  -o smtpd_tls_security_level=encrypt
smtp inet n - n - - smtpd
pickup unix n - y 60 1 pickup
"""


def plan_for(tmp_path, mta, paths, listener_id, desired):
    """`listener_id` without its MTA and instance part: SERVICE/ADDRESS:PORT."""
    ctx, result = gather_with_tools(tmp_path, {'mtas': [mta], 'config_paths': {mta: paths}, 'scan_sockets': False})
    service, endpoint = listener_id.rsplit('/', 1)
    listener = next(item for item in result['listeners']
                    if item['service'] == service and f"{item['address']}:{item['port']}" == endpoint)
    instance = next(item for item in result['mtas'] if item['instance'] == listener['instance'])
    others = [item for item in result['listeners'] if item['instance'] == listener['instance']]
    return ADAPTERS[mta]().plan_tls_change(ctx, instance, listener, desired, others)


# -- Postfix -----------------------------------------------------------------------------------

def test_postfix_withdraw_is_one_override_on_that_service():
    listener = {'tls_mode': 'starttls', 'offers_starttls': True}
    assert postfix_overrides(listener, {'starttls': 'withdrawn'}, Resolver({}, {})) == {
        'smtpd_tls_security_level': 'none'}


def test_postfix_bind_uses_chain_files_when_the_instance_does():
    listener = {'tls_mode': 'starttls', 'offers_starttls': True}
    main = {'smtpd_tls_chain_files': {'value': '/k.pem,/c.pem', 'where': 'main.cf:3'}}
    assert postfix_overrides(listener, {'starttls': 'offered', 'certificate': '/new.crt', 'private_key': '/new.key'},
                             Resolver(main, {})) == {'smtpd_tls_chain_files': '/new.key,/new.crt'}
    assert postfix_overrides(listener, {'starttls': 'offered', 'certificate': '/new.crt', 'private_key': '/new.key'},
                             Resolver({}, {})) == {'smtpd_tls_cert_file': '/new.crt', 'smtpd_tls_key_file': '/new.key'}


def test_postfix_offer_turns_tls_on_only_where_it_is_off():
    off = {'tls_mode': 'none', 'offers_starttls': False}
    assert postfix_overrides(off, {'starttls': 'offered'}, Resolver({}, {})) == {'smtpd_tls_security_level': 'may'}
    on = {'tls_mode': 'starttls', 'offers_starttls': True}
    assert postfix_overrides(on, {'starttls': 'offered'}, Resolver({}, {})) == {}


@pytest.mark.parametrize('path', ['/etc/ssl/a b.crt', '/etc/ssl/a,b.crt', '/etc/ssl/$x.crt', '/etc/ssl/{x}.crt',
                                  '/etc/ssl/x.crt\n-o smtpd_tls_security_level=none'])
def test_postfix_refuses_values_master_cf_would_misread(path):
    listener = {'tls_mode': 'starttls', 'offers_starttls': True}
    with pytest.raises(_transaction.EditError):
        postfix_overrides(listener, {'starttls': 'offered', 'certificate': path, 'private_key': '/k'},
                          Resolver({}, {}))


@pytest.fixture
def postfix_dir(tmp_path):
    need(POSTCONF, 'postconf')
    return postfix_directory(tmp_path / 'postfix', MAIN_CF, MASTER_CF)


def test_postfix_edit_through_postconf_touches_only_that_service(tmp_path, postfix_dir):
    plan = plan_for(tmp_path, 'postfix', [str(postfix_dir)], '127.0.0.1:smtp/127.0.0.1:25',
                    {'starttls': 'withdrawn'})
    master = str(postfix_dir / 'master.cf')
    new_text = plan['changes'][master]
    assert plan['changes'][str(postfix_dir / 'main.cf')] == MAIN_CF
    assert plan['actions'] == ['master.cf 127.0.0.1:smtp/inet: -o smtpd_tls_security_level=none']
    assert plan['affected'] == []
    assert '# one service per listener; this comment stays' in new_text
    assert '-o smtpd_tls_security_level=none' in new_text
    # The sibling service on the same address keeps its own override, and nothing else moved.
    assert '127.0.0.1:submission inet n - n - - smtpd\n  -o smtpd_tls_security_level=encrypt\n' in new_text
    assert new_text.count('security_level=none') == 1
    result = _transaction.apply(plan['changes'], plan['validate'])
    assert result['changed'] and len(result['validation']) == 3
    # Idempotent: the same request again plans no change.
    again = plan_for(tmp_path, 'postfix', [str(postfix_dir)], '127.0.0.1:smtp/127.0.0.1:25',
                     {'starttls': 'withdrawn'})
    assert _transaction.apply(again['changes'], again['validate'])['changed'] is False
    assert plan['reload_command'][-3:] == ['-c', str(postfix_dir), 'reload']


def test_postfix_candidate_that_postconf_rejects_changes_nothing(tmp_path, postfix_dir):
    broken = MASTER_CF + 'bogus inet maybe - n - - smtpd\n'
    (postfix_dir / 'master.cf').write_text(broken)
    plan = plan_for(tmp_path, 'postfix', [str(postfix_dir)], '127.0.0.1:smtp/127.0.0.1:25',
                    {'starttls': 'withdrawn'})
    before = sorted(os.listdir(postfix_dir))
    with pytest.raises(_transaction.EditError) as caught:
        _transaction.apply(plan['changes'], plan['validate'])
    assert caught.value.stage == 'validate' and 'Postfix rejects the candidate' in str(caught.value)
    assert (postfix_dir / 'master.cf').read_text() == broken
    assert sorted(os.listdir(postfix_dir)) == before


def test_postfix_service_whose_daemon_exits_is_not_edited(tmp_path, postfix_dir):
    # An -o appended after "-o name = value" would not be read: smtpd exits before it.
    broken = MASTER_CF + '127.0.0.2:smtp inet n - n - - smtpd\n  -o smtpd_sasl_type = dovecot\n'
    (postfix_dir / 'master.cf').write_text(broken)
    with pytest.raises(_transaction.EditError) as caught:
        plan_for(tmp_path, 'postfix', [str(postfix_dir)], '127.0.0.2:smtp/127.0.0.2:25', {'starttls': 'withdrawn'})
    assert caught.value.stage == 'plan'
    assert "missing '=' after attribute name" in str(caught.value) and 'by hand' in str(caught.value)
    assert (postfix_dir / 'master.cf').read_text() == broken


def test_postfix_shared_service_lists_its_other_addresses(tmp_path, postfix_dir):
    (postfix_dir / 'main.cf').write_text(MAIN_CF.replace('inet_interfaces = loopback-only',
                                                         'inet_interfaces = 127.0.0.1, 127.0.0.2'))
    plan = plan_for(tmp_path, 'postfix', [str(postfix_dir)], 'smtp/127.0.0.2:25',
                    {'starttls': 'withdrawn'})
    assert [item.split('/', 2)[2] for item in plan['affected']] == ['smtp/127.0.0.1:25']


# -- Dovecot -----------------------------------------------------------------------------------

DOVECOT_CONF = """\
# site dovecot.conf
ssl = yes
ssl_cert = </etc/ssl/global.crt
local 192.0.2.1 {
  # keep me
  ssl = yes
}
"""


def test_dovecot_existing_block_gets_the_setting_in_place():
    tree_block = {'type': 'local', 'name': '192.0.2.1', 'where': 'dovecot.conf:4'}
    text, actions = edit_local_block(DOVECOT_CONF, '192.0.2.1', tree_block, {'ssl': 'no'}, 'id')
    assert text == DOVECOT_CONF.replace('  ssl = yes\n}', '  ssl = no\n}')
    assert actions == ['local 192.0.2.1: ssl = no (was yes)']
    text, actions = edit_local_block(DOVECOT_CONF, '192.0.2.1', tree_block,
                                     {'ssl_cert': '</c.pem', 'ssl_key': '</k.pem'}, 'id')
    assert text.endswith('  ssl = yes\n  ssl_cert = </c.pem\n  ssl_key = </k.pem\n}\n')
    assert '# keep me' in text


def test_dovecot_new_block_is_appended():
    text, actions = edit_local_block(DOVECOT_CONF, '192.0.2.9', None, {'ssl': 'no'}, 'dovecot/x/imap/192.0.2.9:143')
    assert text.startswith(DOVECOT_CONF)
    assert text.endswith('local 192.0.2.9 {\n  ssl = no\n}\n')
    assert actions == ['add local 192.0.2.9 { ssl = no }']


def test_dovecot_settings_refuse_chain_and_odd_values():
    listener = {'tls_mode': 'starttls', 'offers_starttls': True}
    with pytest.raises(_transaction.EditError, match='chain'):
        dovecot_settings(listener, {'starttls': 'offered', 'certificate': '/c', 'private_key': '/k', 'chain': ['/i']})
    with pytest.raises(_transaction.EditError):
        dovecot_settings(listener, {'starttls': 'offered', 'certificate': '/c#x', 'private_key': '/k'})
    assert dovecot_settings({'tls_mode': 'starttls', 'offers_starttls': False}, {'starttls': 'offered'}) == {
        'ssl': 'yes'}


@pytest.fixture
def dovecot_conf(tmp_path):
    need(DOVECONF, 'doveconf')
    base = tmp_path / 'run'
    base.mkdir()
    path = tmp_path / 'dovecot.conf'
    path.write_text(textwrap.dedent(f"""\
        # fixture
        base_dir = {base}
        protocols = imap
        ssl = yes
        ssl_cert = <{tmp_path}/c.pem
        ssl_key = <{tmp_path}/k.pem
        service imap-login {{
          inet_listener imap {{
            address = 127.0.0.1
            port = 143
          }}
          inet_listener imaps {{
            address = 127.0.0.1
            port = 993
            ssl = yes
          }}
        }}
        """))
    for name in ('c.pem', 'k.pem'):
        (tmp_path / name).write_text('not checked by doveconf -n beyond being readable\n')
    return path


def test_dovecot_withdraw_validates_with_doveconf_and_lists_the_address_siblings(tmp_path, dovecot_conf):
    plan = plan_for(tmp_path, 'dovecot', [str(dovecot_conf)], 'imap-login/imap/127.0.0.1:143', {'starttls': 'withdrawn'})
    assert [item.rsplit('/', 3)[1:] for item in plan['affected']] == [['imap-login', 'imaps', '127.0.0.1:993']]
    result = _transaction.apply(plan['changes'], plan['validate'])
    assert result['changed'] and result['validation'][0]['rc'] == 0
    assert dovecot_conf.read_text().endswith('local 127.0.0.1 {\n  ssl = no\n}\n')


def test_dovecot_candidate_that_doveconf_rejects_changes_nothing(tmp_path, dovecot_conf):
    broken = dovecot_conf.read_text() + 'ssl_no_such_setting = 1\n'
    dovecot_conf.write_text(broken)
    plan = plan_for(tmp_path, 'dovecot', [str(dovecot_conf)], 'imap-login/imap/127.0.0.1:143', {'starttls': 'withdrawn'})
    with pytest.raises(_transaction.EditError) as caught:
        _transaction.apply(plan['changes'], plan['validate'])
    assert 'Dovecot rejects the candidate' in str(caught.value)
    assert dovecot_conf.read_text() == broken


# -- Sendmail ----------------------------------------------------------------------------------

def test_sendmail_is_a_manual_change_never_an_edit():
    listener = {'id': 'sendmail/sendmail/MTA/0.0.0.0:25', 'service': 'MTA', 'address': '0.0.0.0', 'port': 25,
                'binding': {}}
    plan = ADAPTERS['sendmail']().plan_tls_change(None, {'config_path': '/etc/mail/sendmail.cf'}, listener,
                                                  {'starttls': 'withdrawn'}, [listener])
    assert plan['changes'] == {} and plan['reload_command'] is None
    assert any("DAEMON_OPTIONS(`Port=25, Name=MTA, M=S')" in line for line in plan['manual'])
    assert any('/etc/mail/sendmail.mc' in line for line in plan['manual'])


# -- Exim --------------------------------------------------------------------------------------

def test_exim_guard_keeps_the_old_value_for_every_other_listener():
    from ansible_collections.mailsec.starttls.plugins.module_utils._mta.exim import guard_option
    text = 'primary_hostname = x\ntls_advertise_hosts = *\n\nbegin acl\n'
    once, action = guard_option(text, 'tls_advertise_hosts', '*', '192.0.2.2:25', '')
    assert action and once.endswith('\nbegin acl\n') and once.startswith('primary_hostname = x\n# mailsec.starttls')
    assert ('tls_advertise_hosts = ${if and{{eq{$received_ip_address}{192.0.2.2}}{eq{$received_port}{25}}}{}{*}}\n'
            in once)
    assert guard_option(once, 'tls_advertise_hosts', '*', '192.0.2.2:25', '') == (once, None)
    twice, _action = guard_option(once, 'tls_advertise_hosts', '*', '192.0.2.3:587', '')
    assert twice.count('tls_advertise_hosts = ') == 1 and '{192.0.2.3}' in twice and '{192.0.2.2}' in twice
    assert twice.count('# mailsec.starttls managed') == 1
    # An option that is not set yet goes at the end of the main section, before the first "begin".
    added, _action = guard_option('primary_hostname = x\nbegin acl\n', 'tls_certificate', '', '192.0.2.2:25', '/c.pem')
    assert added.index('tls_certificate = ') < added.index('begin acl')


@pytest.fixture
def exim_conf(tmp_path):
    need(EXIM, 'exim')
    spool = tmp_path / 'spool'
    spool.mkdir()
    path = tmp_path / 'exim4.conf'
    path.write_text(f'primary_hostname = exim.test\nlocal_interfaces = <; 127.0.0.2.25 ; 127.0.0.3.25\n'
                    f'spool_directory = {spool}\ntls_advertise_hosts = *\n\nbegin acl\n')
    return path


def test_exim_withdraw_is_validated_by_exim_and_lists_no_sibling(tmp_path, exim_conf):
    options = {'mtas': ['exim'], 'config_paths': {'exim': [str(exim_conf)]}, 'scan_sockets': False}
    ctx, result = gather_with_tools(tmp_path, dict(options, binaries={'exim': EXIM}))
    listener = next(item for item in result['listeners'] if item['address'] == '127.0.0.2')
    instance = result['mtas'][0]
    plan = ADAPTERS['exim']().plan_tls_change(ctx, instance, listener, {'starttls': 'withdrawn'}, result['listeners'])
    assert plan['affected'] == []
    outcome = _transaction.apply(plan['changes'], plan['validate'])
    assert outcome['changed'] and [run['argv'][3] for run in outcome['validation']] == ['-bV', '-be']
    # The audit's own reading of the edited file: .2 no longer offers STARTTLS, .3 still does.
    _ctx, after = gather_with_tools(tmp_path, options, use_tools='never')
    offers = {item['address']: item['offers_starttls'] for item in after['listeners']}
    assert offers == {'127.0.0.2': False, '127.0.0.3': True}


def test_exim_rejected_candidate_changes_nothing(tmp_path, exim_conf):
    from ansible_collections.mailsec.starttls.plugins.module_utils._mta.exim import validate_exim
    candidate = tmp_path / 'candidate.conf'
    candidate.write_text(exim_conf.read_text())
    with pytest.raises(_transaction.EditError, match='Exim rejects'):
        validate_exim(EXIM, {str(exim_conf): str(candidate)}, ['${if and{{eq{a}{b}}{}{*}}'])


def test_postfix_implicit_listener_is_commented_out_only_when_asked(tmp_path, postfix_dir):
    (postfix_dir / 'master.cf').write_text(MASTER_CF + '127.0.0.1:smtps inet n - n - - smtpd\n'
                                           '  -o smtpd_tls_wrappermode=yes\n')
    plan = plan_for(tmp_path, 'postfix', [str(postfix_dir)], '127.0.0.1:smtps/127.0.0.1:465',
                    {'implicit_tls': 'disabled'})
    new_text = plan['changes'][str(postfix_dir / 'master.cf')]
    assert '#127.0.0.1:smtps inet' in new_text and '127.0.0.1:submission inet n - n - - smtpd' in new_text
    assert plan['actions'] == ['master.cf 127.0.0.1:smtps/inet: comment the service out (postconf -M#)']


def test_postfix_global_default_is_changed_in_main_cf(tmp_path, postfix_dir):
    (postfix_dir / 'master.cf').write_text('# stock\nsmtp inet n - y - - smtpd\npickup unix n - y 60 1 pickup\n')
    plan = plan_for(tmp_path, 'postfix', [str(postfix_dir)], 'smtp/127.0.0.1:25', {'starttls': 'withdrawn'})
    assert plan['actions'] == ['main.cf: smtpd_tls_security_level = none']
    assert plan['changes'][str(postfix_dir / 'master.cf')] == '# stock\nsmtp inet n - y - - smtpd\npickup unix n - y 60 1 pickup\n'
    main = plan['changes'][str(postfix_dir / 'main.cf')]
    assert 'smtpd_tls_security_level = none' in main and 'smtpd_tls_security_level = may' not in main
    assert main.startswith('# site main.cf\n')
    _transaction.apply(plan['changes'], plan['validate'])
    again = plan_for(tmp_path, 'postfix', [str(postfix_dir)], 'smtp/127.0.0.1:25', {'starttls': 'withdrawn'})
    assert again['actions'] == [] and _transaction.apply(again['changes'], again['validate'])['changed'] is False
