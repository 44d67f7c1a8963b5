# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The mta_tls_config module as Ansible calls it, on a Postfix configuration directory of its own."""

from __future__ import annotations

import os

import pytest

from ansible_collections.mailsec.starttls.plugins.modules import mta_tls_config
from ansible_collections.mailsec.starttls.tests.unit.plugins.mta_tools import POSTCONF, need, postfix_directory

MAIN_CF = 'compatibility_level = 3.6\ninet_interfaces = loopback-only\ninet_protocols = ipv4\nsmtpd_tls_security_level = may\n'
MASTER_CF = '# kept\n127.0.0.1:smtp inet n - n - - smtpd\n127.0.0.1:submission inet n - n - - smtpd\n'


@pytest.fixture
def postfix_dir(tmp_path):
    need(POSTCONF, 'postconf')
    return postfix_directory(tmp_path / 'pf', MAIN_CF, MASTER_CF)


def arguments(directory, **extra) -> dict:
    return dict({'mta': 'postfix', 'instance': str(directory), 'config_paths': {'postfix': [str(directory)]},
                 'address': '127.0.0.1', 'port': 25}, **extra)


@pytest.mark.parametrize('name, value', [('certificate', '/etc/ssl/a.crt\n-o smtpd_tls_security_level=none'),
                                         ('address', '127.0.0.1\r'), ('private_key', '/k\x00')])
def test_control_characters_are_refused_before_anything_is_read(run_module, name, value):
    result = run_module(mta_tls_config, {'mta': 'postfix', 'port': 25, 'starttls': 'offered', name: value})
    assert result['failed'] is True
    if 'stage' not in result:
        # ansible-core 2.21 itself refuses a NUL in a path argument, before the module's own check.
        assert '\x00' in value and result['msg']
        return
    assert result['stage'] == 'arguments'
    assert 'control characters' in result['msg']


def test_check_mode_shows_the_diff_and_changes_nothing(run_module, postfix_dir):
    before = sorted(os.listdir(postfix_dir))
    result = run_module(mta_tls_config, arguments(postfix_dir, starttls='withdrawn'), check_mode=True, diff=True)
    assert result['changed'] is True, result
    assert '-o smtpd_tls_security_level=none' in result['diff'][0]['after']
    assert (postfix_dir / 'master.cf').read_text() == MASTER_CF
    assert sorted(os.listdir(postfix_dir)) == before
    assert result['reload_command'][-3:] == ['-c', str(postfix_dir), 'reload']


def test_run_backs_up_and_a_second_run_changes_nothing(run_module, postfix_dir):
    result = run_module(mta_tls_config, arguments(postfix_dir, starttls='withdrawn'))
    assert result['changed'] is True and result['affected_listeners'] == []
    backup = result['backups'][str(postfix_dir / 'master.cf')]
    assert open(backup).read() == MASTER_CF
    assert 'smtpd_tls_security_level=none' in (postfix_dir / 'master.cf').read_text()
    again = run_module(mta_tls_config, arguments(postfix_dir, starttls='withdrawn'))
    assert again['changed'] is False and again['actions'] == []


def test_a_certificate_that_cannot_be_used_is_refused(run_module, postfix_dir, tmp_path):
    result = run_module(mta_tls_config, arguments(postfix_dir, starttls='offered', certificate=str(tmp_path / 'absent.crt'),
                                                  private_key=str(tmp_path / 'absent.key')))
    assert result['failed'] is True and 'certificate-missing' in result['msg']
    assert (postfix_dir / 'master.cf').read_text() == MASTER_CF


def test_an_unknown_listener_lists_the_instance_listeners(run_module, postfix_dir):
    result = run_module(mta_tls_config, dict(arguments(postfix_dir, starttls='withdrawn'), port=2525))
    assert result['failed'] is True and '127.0.0.1:smtp' in result['msg']


def two_instances(tmp_path) -> tuple:
    need(POSTCONF, 'postconf')
    first = postfix_directory(tmp_path / 'one', MAIN_CF, '127.0.0.1:2626 inet n - n - - smtpd\n')
    second = postfix_directory(tmp_path / 'two', MAIN_CF, '127.0.0.2:2626 inet n - n - - smtpd\n')
    return first, second, {'mta': 'postfix', 'config_paths': {'postfix': [str(first), str(second)]},
                           'port': 2626, 'starttls': 'withdrawn'}


def test_without_instance_the_listener_selection_names_the_instance(run_module, tmp_path):
    second, args = two_instances(tmp_path)[1:]
    result = run_module(mta_tls_config, dict(args, address='127.0.0.2'), check_mode=True)
    assert result['changed'] is True, result
    assert result['listener']['address'] == '127.0.0.2'
    assert str(second) in ' '.join(result['reload_command'])


def test_a_selection_that_matches_listeners_of_several_instances_is_refused(run_module, tmp_path):
    args = two_instances(tmp_path)[2]
    result = run_module(mta_tls_config, args, check_mode=True)
    assert result['failed'] is True and 'several instances' in result['msg'], result
    assert result['msg'].endswith('choose one with instance: one, two')


def test_a_change_that_nothing_can_restart_is_shown_in_check_mode_and_refused_for_real(run_module, tmp_path):
    # An OpenSMTPD file that no running daemon, systemd unit or init script belongs to: no restart is known.
    conf = tmp_path / 'smtpd.conf'
    text = 'listen on 127.0.0.2 port 25 tls hostname mx.lab.test\nmatch from any for any reject\n'
    conf.write_text(text)
    args = {'mta': 'opensmtpd', 'config_paths': {'opensmtpd': [str(conf)]}, 'binaries': {'smtpd': '/bin/true'},
            'address': '127.0.0.2', 'port': 25, 'starttls': 'withdrawn'}
    checked = run_module(mta_tls_config, args, check_mode=True, diff=True)
    assert checked['changed'] is True and checked['reload_command'] is None, checked
    # strings, or warning records in ansible-core 2.19+, or displayed at once when controller code is loaded (2.19+)
    assert 'give reload_command' in str(checked.get('warnings')) + run_module.errors, checked
    assert 'listen on 127.0.0.2 port 25 hostname mx.lab.test' in checked['diff'][0]['after']
    refused = run_module(mta_tls_config, args)
    assert refused['failed'] is True and refused['stage'] == 'plan' and 'give reload_command' in refused['msg']
    assert conf.read_text() == text
    given = run_module(mta_tls_config, dict(args, reload_command=['/bin/true']))
    assert given['changed'] is True and given['reload_command'] == ['/bin/true']
    assert 'tls' not in conf.read_text().splitlines()[0]


@pytest.mark.parametrize('port, request_args, message', [
    (465, {'starttls': 'withdrawn'}, 'is an implicit-TLS listener: it has no STARTTLS to offer or withdraw'),
    (25, {'implicit_tls': 'disabled'}, 'implicit_tls applies to implicit-TLS listeners only'),
])
def test_a_request_that_does_not_fit_the_listener_is_refused_first(run_module, tmp_path, port, request_args, message):
    # The same refusal for every MTA, from the module, before any certificate check or plan.
    conf = tmp_path / 'smtpd.conf'
    text = ('listen on 127.0.0.2 port 25 tls hostname mx.lab.test\nlisten on 127.0.0.2 port 465 smtps hostname '
            'mx.lab.test\nmatch from any for any reject\n')
    conf.write_text(text)
    args = dict({'mta': 'opensmtpd', 'config_paths': {'opensmtpd': [str(conf)]}, 'binaries': {'smtpd': '/bin/true'},
                 'address': '127.0.0.2', 'port': port, 'reload_command': ['/bin/true']}, **request_args)
    refused = run_module(mta_tls_config, args)
    assert refused['failed'] is True and refused['stage'] == 'arguments' and message in refused['msg'], refused
    assert conf.read_text() == text
