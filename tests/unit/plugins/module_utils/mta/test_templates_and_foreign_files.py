# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unrendered templates are named as templates and make their listeners uncertain; files of
another kind are named for what they look like; a configuration without listeners says why."""

from __future__ import annotations

import pytest

from ansible_collections.mailsec.starttls.plugins.module_utils._mta.sniff import guess_format, template_markers
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict import judge

MASTER = 'smtp inet n - y - - smtpd\n'


@pytest.mark.parametrize('line, kind', [
    ('smtpd_tls_cert_file = {{ postfix_cert }}', 'Jinja2/Go template expression'),
    ('{% if tls_enabled %}', 'Jinja2 statement'),
    ('{# managed by salt #}', 'Jinja2 comment'),
    ('ssl_cert = <<%= @cert_path %>', 'ERB/EPP tag'),
    ('myhostname = PH_HOSTNAME', 'PH_ placeholder'),
    ('tls_certificate = @@CERT_FILE@@', '@@VAR@@ placeholder'),
    ('listen on %%LISTEN_ADDR%%', '%%VAR%% placeholder'),
    ('tls_certificate = {{.CertFile}}', 'Jinja2/Go template expression'),
])
def test_template_markers(line, kind):
    assert template_markers(f'# header\n{line}\n') == [(2, kind)]


@pytest.mark.parametrize('line', [
    'tls_advertise_hosts = ${if eq{$received_port}{25}{*}{}}',
    "tls_certificate = ${if exists{/etc/x}{{/etc/x}}{/etc/y}}",
    'mail_location = maildir:~/Maildir:INDEX=%h/%%d',
    'smtpd_tls_cert_file = ${config_directory}/cert.pem',
    "define(`confSERVER_CERT', `CERT_DIR/host.cert')dnl",
    'ssl_cert = </etc/dovecot/private/dovecot.pem',
])
def test_real_configuration_syntax_is_no_template(line):
    assert template_markers(line + '\n') == []


def test_postfix_template_marks_listeners_uncertain(host):
    host.files({'/etc/postfix/main.cf': 'inet_interfaces = 127.0.10.1\ninet_protocols = ipv4\n'
                                        'smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {{ cert }}\n',
                '/etc/postfix/master.cf': MASTER})
    result = host.gather(mtas=['postfix'])
    assert "/etc/postfix/main.cf:4: /etc/postfix/main.cf is an unrendered template" in host.warnings_text(result)
    listener = result['listeners'][0]
    assert listener['uncertain'][0]['what'] == 'configuration'
    assert listener['uncertain'][0]['where'] == '/etc/postfix/main.cf:4 (Jinja2/Go template expression)'
    listener['listening'] = True
    ids = [finding['id'] for finding in judge([listener], [], {'now': '2026-01-01T00:00:00Z'})]
    assert 'inspection-uncertain' in ids


def test_dovecot_template_without_listeners_says_why(host):
    host.write('/etc/dovecot/dovecot.conf', '{% for proto in dovecot_protocols %}\nprotocols = {{ proto }}\n'
                                            '{% endfor %}\n')
    result = host.gather(mtas=['dovecot'], config_paths={'dovecot': ['/etc/dovecot/dovecot.conf']})
    text = host.warnings_text(result)
    assert 'is an unrendered template (Jinja2 statement, Jinja2/Go template expression at line 1, 2, 3)' in text
    # `protocols = {{ proto }}` names no protocol Dovecot knows: no listener, and the warning says why.
    assert result['listeners'] == []
    assert 'no listener found: it is an unrendered template' in text


def test_guess_format():
    assert 'Cyrus SASL' in guess_format('pwcheck_method: saslauthd\n')
    assert 'Postfix main.cf' in guess_format('myhostname = mx\n')
    assert guess_format('hello world\n') is None


@pytest.mark.parametrize('mta, path, option', [
    ('exim', '/etc/exim4/exim4.conf', '/etc/exim4/exim4.conf'),
    ('dovecot', '/etc/dovecot/dovecot.conf', '/etc/dovecot/dovecot.conf'),
    ('sendmail', '/etc/mail/sendmail.cf', '/etc/mail/sendmail.cf'),
])
def test_cyrus_sasl_file_given_as_another_mta_yields_no_listener(host, mta, path, option):
    host.write(path, 'pwcheck_method: saslauthd\nmech_list: PLAIN LOGIN\n')
    result = host.gather(mtas=[mta], config_paths={mta: [option]})
    text = host.warnings_text(result)
    assert result['listeners'] == []
    assert f'{path} does not look like' in text and 'Cyrus SASL' in text
    assert 'no listener found' in text


def test_a_private_key_given_as_configuration_is_named_not_quoted(host):
    host.write('/etc/smtpd.conf', '-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkq\n-----END PRIVATE KEY-----\n')
    result = host.gather(mtas=['opensmtpd'])
    text = host.warnings_text(result)
    assert 'holds PEM or private key material' in text and 'nothing of it quoted' in text
    assert 'MIIBVQ' not in text
