# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Exim adapter over fixture configurations (files only; `exim -bP` in test_tools.py)."""

from __future__ import annotations

import os
import time

import pytest

from ansible_collections.mailsec.starttls.plugins.module_utils._mta.exim import Expander, Unresolved, exim_list


def exim_host(host, config: str, path: str = '/etc/exim/configure', **options):
    host.write(path, config)
    return host.gather(mtas=['exim'], config_paths={'exim': [path]}, **options)


def test_ports_interfaces_and_implicit_tls(host):
    result = exim_host(host, r"""
        # main section
        daemon_smtp_ports = 25 : 465 : submission
        local_interfaces = <; 127.0.20.1 ; [::1]:2525 ; 127.0.20.2.2626
        tls_on_connect_ports = 465
        tls_certificate = /etc/exim/exim.crt
        tls_privatekey = /etc/exim/exim.key
        exim_user = mailnull

        begin routers
        tls_certificate = /not/the/main/section.crt
    """)
    listeners = host.by_endpoint(result)
    assert sorted(listeners) == ['127.0.20.1:25', '127.0.20.1:465', '127.0.20.1:587', '127.0.20.2:2626',
                                 '[::1]:2525']
    smtp, smtps, submission = (listeners[key] for key in ('127.0.20.1:25', '127.0.20.1:465', '127.0.20.1:587'))
    assert (smtp['protocol'], smtp['offers_starttls']) == ('smtp', True)
    assert (smtps['protocol'], smtps['tls_mode'], smtps['offers_starttls']) == ('smtps', 'implicit', False)
    assert submission['protocol'] == 'submission'
    assert smtp['binding']['certificate'] == '/etc/exim/exim.crt'
    assert smtp['binding']['key'] == '/etc/exim/exim.key'
    assert smtp['binding']['source'] == '/etc/exim/configure:5 tls_certificate'
    assert smtp['reader_user'] == 'mailnull'
    assert result['mtas'][0]['reading_user_source'] == 'exim_user (/etc/exim/configure:7)'
    assert smtp['offers_starttls_reason'] == ("tls_advertise_hosts = '*' (default, assumed: \"*\" since Exim 4.87, "
                                              'version not established)')
    assert any('assumed the default of Exim 4.87' in note for note in smtp['notes'])
    assert smtp['defined_at'] == '/etc/exim/configure:3'
    assert result['warnings'] == []


def test_macros_conditionals_includes_and_continuations(host):
    host.write('/etc/exim/tls.conf', """
        .ifdef TLS_ON
        tls_certificate = CERTDIR/mail.crt
        .else
        tls_certificate = CERTDIR/wrong.crt
        .endif
    """)
    result = exim_host(host, r"""
        CERTDIR = /etc/exim/certs
        TLS_ON = yes
        .ifndef TLS_ON
        daemon_smtp_ports = 9999
        .elifdef CERTDIR
        daemon_smtp_ports = 25 : \
                            587
        .endif
        local_interfaces = 127.0.20.3
        .include /etc/exim/tls.conf
        .include_if_exists /etc/exim/not-there.conf
        # macros are substituted in values
        tls_privatekey = CERTDIR/mail.key
        CERTDIR == /etc/redefined
    """)
    listeners = host.by_endpoint(result)
    assert sorted(listeners) == ['127.0.20.3:25', '127.0.20.3:587']
    binding = listeners['127.0.20.3:25']['binding']
    assert binding['certificate'] == '/etc/exim/certs/mail.crt'
    assert binding['key'] == '/etc/exim/certs/mail.key'
    assert binding['source'] == '/etc/exim/tls.conf:2 tls_certificate'
    assert listeners['127.0.20.3:587']['tls_settings']['daemon_smtp_ports']['where'] == '/etc/exim/configure:6'
    assert result['warnings'] == []


def test_per_port_and_per_address_expansions(host):
    result = exim_host(host, r"""
        daemon_smtp_ports = 25 : 587
        local_interfaces = 127.0.20.4 : 127.0.20.5
        tls_certificate = ${if eq{$received_port}{587}{/etc/exim/sub.crt}\
            {${if match_ip{$received_ip_address}{127.0.20.5/32}{/etc/exim/five.crt}{/etc/exim/main.crt}}}}
        tls_privatekey = ${if and{{eq{$received_port}{25}}{!eq{$interface_address}{127.0.20.5}}}\
            {/etc/exim/main.key}{/etc/exim/other.key}}
    """)
    listeners = host.by_endpoint(result)
    assert listeners['127.0.20.4:587']['binding']['certificate'] == '/etc/exim/sub.crt'
    assert listeners['127.0.20.4:25']['binding']['certificate'] == '/etc/exim/main.crt'
    assert listeners['127.0.20.4:25']['binding']['key'] == '/etc/exim/main.key'
    assert listeners['127.0.20.5:25']['binding']['certificate'] == '/etc/exim/five.crt'
    assert listeners['127.0.20.5:25']['binding']['key'] == '/etc/exim/other.key'
    assert 'evaluated for 127.0.20.5 port 25' in listeners['127.0.20.5:25']['binding']['source']
    assert listeners['127.0.20.5:25']['binding']['resolved'] is True


def test_unresolvable_expansion_is_reported(host):
    result = exim_host(host, r"""
        local_interfaces = 127.0.20.6
        tls_certificate = ${lookup{$received_ip_address}lsearch{/etc/exim/certs.map}}
    """)
    binding = result['listeners'][0]['binding']
    assert binding['resolved'] is False
    assert binding['certificate'] is None
    assert binding['source'].startswith('unresolved: ${lookup')


def test_tls_advertise_hosts_variants(host):
    host.write('/etc/exim/present.key', 'not a key\n')
    cases = [
        ('tls_advertise_hosts =', False, 'none'),
        ('tls_advertise_hosts = ${if exists{/etc/exim/present.key}{*}{}}', True, 'starttls'),
        ('tls_advertise_hosts = ${if exists{/etc/exim/absent.key}{*}{}}', False, 'none'),
        ('tls_advertise_hosts = 192.0.2.0/24 : 127.0.0.1', None, 'starttls'),
        ('tls_advertise_hosts = ${if eq{$received_port}{25}{}{*}}', False, 'none'),
        ('tls_advertise_hosts = ${readfile{/x}}', None, 'starttls'),
    ]
    for line, offers, mode in cases:
        result = exim_host(host, f'local_interfaces = 127.0.20.7\ntls_certificate = /etc/exim/c.crt\n{line}\n')
        listener = result['listeners'][0]
        assert listener['offers_starttls'] is offers, (line, listener['offers_starttls_reason'])
        assert listener['tls_mode'] == mode, line
    assert 'depends' in exim_host(host, 'local_interfaces = 127.0.20.7\ntls_advertise_hosts = 198.51.100.0/24\n')[
        'listeners'][0]['offers_starttls_reason']


def test_no_certificate_means_self_signed_and_default_listeners(host):
    result = exim_host(host, 'primary_hostname = mx.example.test\n')
    listeners = host.by_endpoint(result)
    assert sorted(listeners) == ['0.0.0.0:25', '[::]:25']
    assert listeners['0.0.0.0:25']['offers_starttls'] is True
    assert 'self-signed' in listeners['0.0.0.0:25']['binding']['source']
    assert listeners['0.0.0.0:25']['binding']['certificate'] is None
    assert listeners['0.0.0.0:25']['probe_address'] == '127.0.0.1'
    # No exim_user and not a Debian host: the upstream default user, said to be assumed.
    assert result['mtas'][0]['reading_user'] == 'exim'
    assert 'disable_ipv6' not in listeners['0.0.0.0:25']['tls_settings']
    result = exim_host(host, 'disable_ipv6 = true\n')
    assert sorted(host.by_endpoint(result)) == ['0.0.0.0:25']


def test_wildcard_with_address_expansion_gets_derived_records(host):
    result = exim_host(host, r"""
        tls_certificate = ${if eq{$received_ip_address}{127.0.20.8}{/etc/exim/eight.crt}{/etc/exim/any.crt}}
    """)
    listeners = host.by_endpoint(result)
    assert listeners['0.0.0.0:25']['binding']['certificate'] == '/etc/exim/any.crt'
    assert any('evaluated for 127.0.0.1' in note for note in listeners['0.0.0.0:25']['notes'])
    derived = listeners['127.0.20.8:25']
    assert derived['derived_from'] == listeners['0.0.0.0:25']['id']
    assert derived['binding']['certificate'] == '/etc/exim/eight.crt'


def test_sni_dependent_certificate(host):
    result = exim_host(host, r"""
        local_interfaces = 127.0.20.9
        tls_certificate = ${if eq{$tls_in_sni}{mail.example.test}{/etc/exim/sni.crt}{/etc/exim/default.crt}}
    """)
    binding = result['listeners'][0]['binding']
    assert binding['certificate'] == '/etc/exim/default.crt'
    assert binding['sni'] == [{'name': 'mail.example.test', 'certificate': '/etc/exim/sni.crt',
                               'key': '/etc/exim/sni.crt', 'chain': [],
                               'source': '/etc/exim/configure:2 tls_certificate with $tls_in_sni = mail.example.test'}]


def test_running_daemon_with_c_option_d_macros_and_ox(host):
    host.write('/srv/exim/exim.conf', 'local_interfaces = 127.0.20.10\ntls_certificate = CERT\n')
    host.process(400, 'exim4', ['/usr/sbin/exim4', '-C', '/srv/exim/exim.conf', '-DCERT=/etc/exim/d.crt', '-bdf',
                                '-q30m', '-oX', '26:2525'])
    host.process(401, 'exim4', ['/usr/sbin/exim4', '-C', '/srv/exim/exim.conf', '-bdf'], ppid=400)
    host.listen('127.0.20.10', 26, pid=400)
    result = host.gather(mtas=['exim'])
    assert [(item['instance'], item['running'], item['pid']) for item in result['mtas']] == [('exim', True, 400)]
    listeners = host.by_endpoint(result)
    assert sorted(listeners) == ['127.0.20.10:2525', '127.0.20.10:26']
    assert listeners['127.0.20.10:26']['listening'] is True
    assert listeners['127.0.20.10:2525']['listening'] is False
    assert listeners['127.0.20.10:26']['binding']['certificate'] == '/etc/exim/d.crt'
    assert 'command line of pid 400 -oX' in listeners['127.0.20.10:26']['tls_settings']['daemon_smtp_ports']['where']


DEBIAN_MAIN = {
    '/etc/exim4/conf.d/main/01_exim4-config_listmacrosdefs': """
        exim_path = /usr/sbin/exim4
        .ifndef CONFDIR
        CONFDIR = /etc/exim4
        .endif
        UPEX4CmacrosUPEX4C = 1
        domainlist local_domains = MAIN_LOCAL_DOMAINS
        .ifdef MAIN_LOCAL_INTERFACES
        local_interfaces = MAIN_LOCAL_INTERFACES
        .endif
    """,
    '/etc/exim4/conf.d/main/000_localmacros': """
        MAIN_TLS_ENABLE = yes
    """,
    '/etc/exim4/conf.d/main/03_exim4-config_tlsoptions': """
        .ifdef MAIN_TLS_ENABLE
        .ifndef MAIN_TLS_ADVERTISE_HOSTS
        MAIN_TLS_ADVERTISE_HOSTS = *
        .endif
        tls_advertise_hosts = MAIN_TLS_ADVERTISE_HOSTS
        .ifndef MAIN_TLS_CERTIFICATE
        MAIN_TLS_CERTIFICATE = CONFDIR/exim.crt
        .endif
        tls_certificate = MAIN_TLS_CERTIFICATE
        .ifndef MAIN_TLS_PRIVATEKEY
        MAIN_TLS_PRIVATEKEY = CONFDIR/exim.key
        .endif
        tls_privatekey = MAIN_TLS_PRIVATEKEY
        .endif
    """,
    '/etc/exim4/conf.d/router/100_router': 'begin routers\n',
    '/etc/exim4/update-exim4.conf.conf': """
        dc_eximconfig_configtype='internet'
        dc_local_interfaces='127.0.20.11 ; ::1'
        dc_use_split_config='true'
    """,
    '/etc/debian_version': '12.11\n',
}


def test_debian_split_config_not_generated_yet(host):
    host.files(DEBIAN_MAIN)
    host.write('/usr/sbin/exim4', '')
    result = host.gather(mtas=['exim'])
    instance = result['mtas'][0]
    assert instance['config_files'] == ['/var/lib/exim4/config.autogenerated']
    assert 'not generated yet' in instance['notes'][0]
    assert instance['reading_user'] == 'Debian-exim'
    listeners = host.by_endpoint(result)
    assert sorted(listeners) == ['127.0.20.11:25', '[::1]:25']
    binding = listeners['127.0.20.11:25']['binding']
    assert binding['certificate'] == '/etc/exim4/exim.crt'
    assert binding['key'] == '/etc/exim4/exim.key'
    assert binding['source'] == '/etc/exim4/conf.d/main/03_exim4-config_tlsoptions:9 tls_certificate'
    assert listeners['127.0.20.11:25']['reader_user'] == 'Debian-exim'
    assert listeners['127.0.20.11:25']['offers_starttls'] is True


def test_debian_generated_config_with_sources_and_staleness(host):
    host.files(DEBIAN_MAIN)
    old = time.time() - 3600
    host.write('/var/lib/exim4/config.autogenerated', """
        exim_path = /usr/sbin/exim4
        CONFDIR = /etc/exim4
        MAIN_LOCAL_INTERFACES = <; 127.0.20.12
        local_interfaces = MAIN_LOCAL_INTERFACES
        tls_advertise_hosts = *
        tls_certificate = CONFDIR/exim.crt
        tls_privatekey = CONFDIR/exim.key
        begin routers
    """, mtime=old)
    for name in DEBIAN_MAIN:
        if name.startswith('/etc/exim4/conf.d/'):
            os.utime(host.path(name), (old - 60, old - 60))
    result = host.gather(mtas=['exim'])
    listener = host.by_endpoint(result)['127.0.20.12:25']
    assert listener['binding']['source'] == '/var/lib/exim4/config.autogenerated:6 tls_certificate'
    assert listener['tls_settings']['tls_certificate']['source_where'] == \
        '/etc/exim4/conf.d/main/03_exim4-config_tlsoptions:9'
    assert 'update-exim4.conf has not been run' not in host.warnings_text(result)
    os.utime(host.path('/etc/exim4/conf.d/main/03_exim4-config_tlsoptions'), None)
    result = host.gather(mtas=['exim'])
    assert 'update-exim4.conf has not been run' in host.warnings_text(result)


def test_debian_listener_options_when_not_running(host):
    host.files(DEBIAN_MAIN)
    host.write('/etc/default/exim4', "QUEUERUNNER='combined'\nSMTPLISTENEROPTIONS='-oX 25:587 -oP /run/exim4/exim.pid'\n")
    result = host.gather(mtas=['exim'])
    listeners = host.by_endpoint(result)
    assert sorted(listeners) == ['127.0.20.11:25', '127.0.20.11:587', '[::1]:25', '[::1]:587']
    assert listeners['[::1]:587']['tls_settings']['daemon_smtp_ports']['where'] == \
        '/etc/default/exim4:2 SMTPLISTENEROPTIONS -oX'


def test_odd_lines_are_warnings(host):
    result = exim_host(host, """
        local_interfaces = 127.0.20.13 : not-an-address
        Totally Odd line here
        .endif
        .frobnicate
        tls_certificate = /etc/exim/c.crt
    """)
    text = host.warnings_text(result)
    assert "/etc/exim/configure:2: cannot parse exim main option: 'Totally Odd line here'" in text
    assert '/etc/exim/configure:3: .endif without .ifdef' in text
    assert '/etc/exim/configure:4: unknown directive .frobnicate' in text
    assert "local_interfaces item 'not-an-address' is not an IP address" in text
    assert list(host.by_endpoint(result)) == ['127.0.20.13:25']


def test_exim_lists():
    assert exim_list('a : b::c : d') == ['a', 'b:c', 'd']
    assert exim_list('<; ::1 ; 127.0.0.1') == ['::1', '127.0.0.1']
    assert exim_list('') == []
    assert exim_list('::::1 : 127.0.0.1') == ['::1', '127.0.0.1']


def test_expander_subset():
    class Ctx:
        @staticmethod
        def exists(path):
            return path == '/yes'

    variables = {'received_port': '587', 'received_ip_address': '127.0.0.9', 'tls_in_sni': ''}
    expand = Expander(Ctx(), variables).expand
    assert expand('${if ==/{$received_port}{587}{a}{b}}'.replace('/', '')) == 'a'
    assert expand('${if or{{eq{1}{2}}{exists{/yes}}}{a}{b}}') == 'a'
    assert expand('${if !exists{/no}{a}}') == 'a'
    assert expand('${if inlist{$received_port}{25:587}{in}{out}}') == 'in'
    assert expand('${if def:tls_in_sni{sni}{none}}') == 'none'
    assert expand('${if isip{$received_ip_address}{ip}}') == 'ip'
    assert expand('a\\$b') == 'a$b'
    with pytest.raises(Unresolved):
        expand('${lookup{x}lsearch{/etc/map}}')
    with pytest.raises(Unresolved):
        expand('$unknown_variable')


def test_unset_tls_advertise_hosts_follows_the_binary_version(host, tmp_path):
    """The default of tls_advertise_hosts comes from the Exim that runs (exim -bV), here a stand-in."""
    import stat

    host.write('/etc/exim/exim.conf', 'local_interfaces = 127.0.20.9\nbegin routers\n')
    fake = tmp_path / 'exim'

    def answer(version_text: str) -> dict:
        fake.write_text('#!/bin/sh\ncase "$*" in *-bV*) printf \'%s\' "' + version_text + '";; esac\nexit 0\n')
        fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
        return host.gather(mtas=['exim'], use_tools='always', binaries={'exim': str(fake)},
                           config_paths={'exim': ['/etc/exim/exim.conf']})

    old = answer('Exim version 4.84 #1 built 01-Jan-2015\nSupport for: crypteq IPv6 OpenSSL\n')
    listener = old['listeners'][0]
    assert (listener['offers_starttls'], listener['tls_mode']) == (False, 'none')
    assert 'Exim 4.84' in listener['offers_starttls_reason'] and '4.87' in listener['offers_starttls_reason']
    assert old['mtas'][0]['version'] == '4.84'
    new = answer('Exim version 4.96 #2 built 01-Jan-2024\nSupport for: crypteq IPv6 GnuTLS\n')
    assert new['listeners'][0]['offers_starttls'] is True
    assert 'Exim 4.96' in new['listeners'][0]['offers_starttls_reason']
    without_tls = answer('Exim version 4.96 #2 built 01-Jan-2024\nSupport for: crypteq IPv6\n')
    assert without_tls['listeners'][0]['offers_starttls'] is False
    assert 'without TLS support' in without_tls['listeners'][0]['offers_starttls_reason']
