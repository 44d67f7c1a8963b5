# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The MTAs' own tools (postconf, doveconf, exim -bP) against the file parsers, where installed.

Each test runs the same configuration with tools and without and expects the same listeners
and bindings: the tools are the authority, the parsers must agree with them.
"""

from __future__ import annotations

import pytest

from ansible_collections.mailsec.starttls.plugins.module_utils import _command
from ansible_collections.mailsec.starttls.tests.unit.plugins.mta_tools import (
    DOVECONF,
    EXIM,
    POSTCONF,
    gather_with_tools,
    postfix_directory,
)


def summary(result: dict) -> dict:
    return {listener['id']: (listener['protocol'], listener['tls_mode'], listener['offers_starttls'],
                             listener['binding']['certificate'], listener['binding']['key'],
                             listener['binding']['source'], listener['defined_at'])
            for listener in result['listeners']}


def run_both(tmp_path, options: dict) -> tuple:
    """The gather with tools and without, on this machine's paths but no process table."""
    results = []
    for use_tools in ('always', 'never'):
        results.append(gather_with_tools(tmp_path, options, use_tools)[1])
    return results[0], results[1]


def only_instance(result: dict, predicate) -> dict:
    keep = {(item['mta'], item['instance']) for item in result['mtas'] if predicate(item)}
    result = dict(result)
    result['listeners'] = [item for item in result['listeners'] if (item['mta'], item['instance']) in keep]
    return result


def both_for(tmp_path, mta: str, path: str) -> tuple:
    """run_both for one configuration of `mta`, each result kept to the instance it makes."""
    key = 'config_dir' if mta == 'postfix' else 'config_path'
    with_tools, without = run_both(tmp_path, {'mtas': [mta], 'config_paths': {mta: [path]}})
    return tuple(only_instance(result, lambda item: item[key] == path) for result in (with_tools, without))


@pytest.mark.skipif(POSTCONF is None, reason='postconf is not installed')
def test_postconf_agrees_with_the_parser(tmp_path):
    directory = postfix_directory(
        tmp_path / 'postfix-t',
        'inet_interfaces = loopback-only\ninet_protocols = ipv4\ncert_dir = /etc/ssl/t\n'
        'smtpd_tls_security_level = may\nsmtpd_tls_cert_file = ${cert_dir}/a.pem\n'
        'smtpd_tls_key_file =\n    $cert_dir/a.key\n',
        '127.0.11.250:smtp inet n - n - - smtpd\n'
        '127.0.11.250:submission inet n - n - - smtpd\n  -o { smtpd_tls_security_level = encrypt }\n'
        '  -o smtpd_tls_cert_file=$cert_dir/sub.pem\n'
        '[127.0.11.251]:2525 inet n - n - - smtpd -o smtpd_tls_wrappermode=yes\n')
    with_tools, without = both_for(tmp_path, 'postfix', str(directory))
    assert summary(with_tools) == summary(without)
    assert len(with_tools['listeners']) == 3
    instance = [item for item in with_tools['mtas'] if item['config_dir'] == str(directory)][0]
    assert instance['tools_used'] == ['postconf', 'postconf -P']
    assert instance['version']
    assert [item for item in with_tools['warnings'] if item['mta'] == 'postfix' and str(directory) in
            (item['where'] or '')] == []
    sub = [item for item in with_tools['listeners'] if item['port'] == 587][0]
    assert sub['binding']['certificate'] == '/etc/ssl/t/sub.pem'
    assert sub['binding']['key'] == '/etc/ssl/t/a.key'


@pytest.mark.skipif(POSTCONF is None, reason='postconf is not installed')
def test_postconf_disagreement_is_a_warning(tmp_path):
    # master(8) hands "-osmtpd_tls_wrappermode=yes" to getopt in smtpd, which accepts it;
    # postconf -P (3.7) splits it differently. The gather says so instead of hiding it.
    directory = postfix_directory(tmp_path / 'postfix-g', 'inet_interfaces = loopback-only\ninet_protocols = ipv4\n',
                                  '127.0.11.252:2525 inet n - n - - smtpd -osmtpd_tls_wrappermode=yes\n')
    with_tools, _without = run_both(tmp_path, {'mtas': ['postfix'], 'config_paths': {'postfix': [str(directory)]}})
    listener = [item for item in with_tools['listeners'] if item['port'] == 2525][0]
    assert listener['tls_mode'] == 'implicit'
    messages = [item['message'] for item in with_tools['warnings'] if str(directory) in (item['where'] or '')]
    assert any('postconf -P' in message for message in messages), with_tools['warnings']


@pytest.mark.skipif(POSTCONF is None, reason='postconf is not installed')
def test_postconf_printing_is_not_taken_for_a_disagreement(tmp_path):
    # postconf prints "name =" for an empty value and normalizes whitespace in every value it prints
    # (pcf_print_line); neither is a different reading, and the file's text is what the daemons use.
    directory = postfix_directory(
        tmp_path / 'postfix-p',
        'inet_interfaces = loopback-only\ninet_protocols = ipv4\nsmtpd_tls_security_level = may\n'
        'smtpd_client_restrictions = permit_mynetworks,\treject\n'
        'smtpd_tls_cert_file = /etc/ssl/two  spaces.pem\n',
        '127.0.11.253:10025 inet n - n - - smtpd\n  -o content_filter=\n  -o smtpd_tls_security_level=none\n'
        '127.0.11.253:10026 inet n - n - - smtpd\n  -o { smtpd_client_restrictions = permit_mynetworks,  reject }\n')
    with_tools, without = both_for(tmp_path, 'postfix', str(directory))
    assert summary(with_tools) == summary(without)
    assert [item['message'] for item in with_tools['warnings'] if item['mta'] == 'postfix'
            and str(directory) in (item['where'] or '')] == []
    listener = [item for item in with_tools['listeners'] if item['port'] == 10026][0]
    assert listener['binding']['certificate'] == '/etc/ssl/two  spaces.pem'


@pytest.mark.skipif(POSTCONF is None, reason='postconf is not installed')
def test_an_option_the_daemon_rejects_is_said_with_postconf_too(tmp_path):
    directory = postfix_directory(
        tmp_path / 'postfix-o', 'inet_interfaces = loopback-only\ninet_protocols = ipv4\nsmtpd_tls_security_level = may\n',
        '127.0.11.254:587 inet n - n - - smtpd\n  -o smtpd_sasl_type = dovecot\n  -o smtpd_tls_security_level=none\n')
    with_tools, without = run_both(tmp_path, {'mtas': ['postfix'], 'config_paths': {'postfix': [str(directory)]}})
    for result in (with_tools, without):
        listener = [item for item in result['listeners'] if item['port'] == 587][0]
        assert listener['offers_starttls'] is None
        assert "missing '=' after attribute name" in listener['offers_starttls_reason']
    messages = [item['message'] for item in with_tools['warnings'] if str(directory) in (item['where'] or '')]
    assert not any('all the same' in message for message in messages), messages


@pytest.mark.skipif(DOVECONF is None, reason='doveconf is not installed')
def test_doveconf_agrees_with_the_parser_and_keeps_file_lines(tmp_path):
    directory = tmp_path / 'dovecot-t'
    directory.mkdir()
    for name in ('global', 'bound'):
        for suffix in ('pem', 'key'):
            (directory / f'{name}.{suffix}').write_text('placeholder\n')
    (directory / 'ssl.conf').write_text(
        f'ssl = yes\nssl_cert = <{directory}/global.pem\nssl_key = <{directory}/global.key\n')
    (directory / 'dovecot.conf').write_text(
        'protocols = imap pop3\nlisten = 127.0.30.250\n!include ssl.conf\n'
        f'base_dir = {directory}/run\n'
        'service pop3-login {\n  inet_listener pop3 {\n    port = 0\n  }\n}\n'
        f'local 127.0.30.250 {{\n  protocol imap {{\n    ssl_cert = <{directory}/bound.pem\n'
        f'    ssl_key = <{directory}/bound.key\n  }}\n}}\n')
    config = str(directory / 'dovecot.conf')
    with_tools, without = both_for(tmp_path, 'dovecot', config)
    assert summary(with_tools) == summary(without)
    listeners = {item['port']: item for item in with_tools['listeners']}
    assert sorted(listeners) == [143, 993, 995]
    assert listeners[143]['binding']['key'] == f'{directory}/bound.key'
    assert listeners[143]['binding']['source'] == f'{config}:12 local 127.0.30.250 protocol imap ssl_cert'
    assert listeners[995]['binding']['source'] == f'{directory}/ssl.conf:2 ssl_cert'
    assert listeners[995]['binding']['key'] == f'{directory}/global.key'
    instance = [item for item in with_tools['mtas'] if item['config_path'] == config][0]
    assert instance['tools_used'] == ['doveconf -n'] and instance['version']


# Dovecot 1.x settings that Dovecot 2.3 still reads (src/config/old-set-parser.c): the parser translates
# them as doveconf does, and the listeners and bindings agree.
OLD_SETTINGS = {
    'certificate files': ('protocols = imap\nssl_cert_file = {d}/c.pem\nssl_key_file = {d}/c.key\n',
                          {143: ('starttls', True), 993: ('implicit', False)}),
    'imaps alone': ('protocols = imaps\nssl_cert = <{d}/c.pem\nssl_key = <{d}/c.key\n',
                    {993: ('implicit', False)}),
    'ssl_disable': ('protocols = imap pop3\nssl_disable = yes\nssl_cert = <{d}/c.pem\nssl_key = <{d}/c.key\n',
                    {143: ('none', False), 110: ('none', False), 993: ('none', False), 995: ('none', False)}),
    'listen with ports': ('protocols = imap\nssl_cert_file = {d}/c.pem\nssl_key_file = {d}/c.key\n'
                          'protocol imap {{\n  listen = 127.0.30.248:10143\n  ssl_listen = 127.0.30.248:10993\n}}\n',
                          {10143: ('starttls', True), 10993: ('implicit', False)}),
    'listen list with ports': ('protocols = imap\nssl_cert_file = {d}/c.pem\nssl_key_file = {d}/c.key\n'
                               'listen = 127.0.30.248:10143, 127.0.30.247:10143\n',
                               {10143: ('starttls', True), 993: ('implicit', False)}),
}


@pytest.mark.skipif(DOVECONF is None, reason='doveconf is not installed')
@pytest.mark.parametrize('case', sorted(OLD_SETTINGS))
def test_dovecot_1x_settings_are_read_as_dovecot_2_3_reads_them(tmp_path, case):
    directory = tmp_path / 'dovecot-old'
    directory.mkdir()
    for suffix in ('pem', 'key'):
        (directory / f'c.{suffix}').write_text('placeholder\n')
    text, expected = OLD_SETTINGS[case]
    (directory / 'dovecot.conf').write_text(f'listen = 127.0.30.248\nbase_dir = {directory}/run\n'
                                            + text.format(d=directory))
    config = str(directory / 'dovecot.conf')
    with_tools, without = both_for(tmp_path, 'dovecot', config)
    instance = [item for item in with_tools['mtas'] if item['config_path'] == config][0]
    assert instance['tools_used'] == ['doveconf -n']
    assert summary(with_tools) == summary(without)
    got = {item['port']: (item['tls_mode'], item['offers_starttls']) for item in without['listeners']}
    assert got == expected
    for listener in with_tools['listeners']:
        assert listener['binding']['certificate'] == f'{directory}/c.pem'
        assert listener['binding']['key'] == f'{directory}/c.key'
    assert any('obsolete Dovecot 1.x setting' in item['message'] for item in without['warnings'])


@pytest.mark.skipif(DOVECONF is None, reason='doveconf is not installed')
def test_doveconf_runs_without_the_managesieve_capability_dump(tmp_path, monkeypatch):
    """doveconf -n runs once per configuration, without Pigeonhole's capability dump (DUMP_CAPABILITY),
    and what it says about the listeners, ManageSieve's included, is what the files say."""
    directory = tmp_path / 'dovecot-s'
    directory.mkdir()
    for suffix in ('pem', 'key'):
        (directory / f'global.{suffix}').write_text('placeholder\n')
    (directory / 'dovecot.conf').write_text(
        f'protocols = imap sieve\nlisten = 127.0.30.251\nbase_dir = {directory}/run\nssl = yes\n'
        f'ssl_cert = <{directory}/global.pem\nssl_key = <{directory}/global.key\n')
    config = str(directory / 'dovecot.conf')
    calls = []
    real_run = _command.run

    def recording_run(argv, input_bytes=None, env=None, timeout=30.0):
        calls.append((list(argv), dict(env or {})))
        return real_run(argv, input_bytes=input_bytes, env=env, timeout=timeout)

    monkeypatch.setattr(_command, 'run', recording_run)
    with_tools, without = run_both(tmp_path, {'mtas': ['dovecot'], 'config_paths': {'dovecot': [config]}})
    doveconf_runs = [env for argv, env in calls if argv[:3] == [DOVECONF, '-c', config]]
    assert len(doveconf_runs) == 1 and doveconf_runs[0].get('DUMP_CAPABILITY') == '1', calls
    with_tools = only_instance(with_tools, lambda item: item['config_path'] == config)
    without = only_instance(without, lambda item: item['config_path'] == config)
    assert summary(with_tools) == summary(without)
    assert 4190 in {item['port'] for item in with_tools['listeners']}
    instance = [item for item in with_tools['mtas'] if item['config_path'] == config][0]
    assert instance['tools_used'] == ['doveconf -n'] and instance['version']


@pytest.mark.skipif(EXIM is None, reason='no exim binary')
def test_exim_bp_agrees_with_the_parser(tmp_path):
    config = tmp_path / 'exim.conf'
    config.write_text('CERTS = /etc/exim/t\ndaemon_smtp_ports = 25 : 465\ntls_on_connect_ports = 465\n'
                      'local_interfaces = <; 127.0.20.250 ; [::1]:2525\n'
                      'tls_certificate = ${if eq{$received_port}{465}{CERTS/implicit.crt}{CERTS/main.crt}}\n'
                      'tls_privatekey = CERTS/main.key\nexim_user = mail\nbegin routers\n')
    options = {'mtas': ['exim'], 'config_paths': {'exim': [str(config)]}, 'binaries': {'exim': EXIM}}
    with_tools, without = run_both(tmp_path, options)
    with_tools = only_instance(with_tools, lambda item: item['config_path'] == str(config))
    without = only_instance(without, lambda item: item['config_path'] == str(config))
    assert summary(with_tools) == summary(without)
    listeners = {(item['address'], item['port']): item for item in with_tools['listeners']}
    assert listeners[('127.0.20.250', 465)]['binding']['certificate'] == '/etc/exim/t/implicit.crt'
    assert listeners[('::1', 2525)]['reader_user'] == 'mail'
    instance = [item for item in with_tools['mtas'] if item['config_path'] == str(config)][0]
    assert 'exim -bP' in instance['tools_used']


@pytest.mark.skipif(POSTCONF is None, reason='postconf is not installed')
def test_postconf_not_run_for_an_address_no_interface_has(tmp_path):
    directory = postfix_directory(tmp_path / 'postfix-n', 'inet_interfaces = 127.0.11.253\ninet_protocols = ipv4\n',
                                  'smtp inet n - n - - smtpd\n')
    _ctx, result = gather_with_tools(tmp_path, {'mtas': ['postfix'], 'config_paths': {'postfix': [str(directory)]}},
                                     fib_trie='Local:\n  |-- 127.0.0.1\n     /32 host LOCAL\n')
    assert [item['argv'][0] for item in result['commands'] if str(directory) in ' '.join(item['argv'])] == []
    assert any('127.0.11.253, which no network interface has' in item['message'] for item in result['warnings'])
    assert [(item['address'], item['port']) for item in result['listeners']
            if str(directory) in item['defined_at']] == [('127.0.11.253', 25)]
