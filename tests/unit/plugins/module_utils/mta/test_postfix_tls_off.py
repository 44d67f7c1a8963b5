# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Postfix services whose TLS master.cf switches off carry no certificate binding."""

from __future__ import annotations

MAIN = ('inet_interfaces = 127.0.10.1\ninet_protocols = ipv4\nsmtpd_tls_security_level = may\n'
        'smtpd_tls_cert_file = /etc/ssl/mail.pem\nsmtpd_tls_key_file = /etc/ssl/mail.key\n')
# A content filter's re-injection port and two legacy switches, written for this test.
MASTER = """
smtp      inet  n       -       y       -       -       smtpd
127.0.10.1:10025 inet n -       n       -       -       smtpd
  -o content_filter=
  -o smtpd_tls_security_level=none
  -o smtpd_use_tls=no
127.0.10.1:10026 inet n -       n       -       -       smtpd
  -o smtpd_tls_security_level=
  -o smtpd_use_tls=no
127.0.10.1:10027 inet n -       n       -       -       smtpd
  -o smtpd_discard_ehlo_keywords=starttls
127.0.10.1:10028 inet n -       n       -       -       smtpd
  -o smtpd_tls_security_level=bogus
"""


def test_service_with_tls_off_has_no_binding(host):
    host.files({'/etc/postfix/main.cf': MAIN, '/etc/postfix/master.cf': MASTER})
    listeners = host.by_endpoint(host.gather(mtas=['postfix']))
    assert listeners['127.0.10.1:25']['binding']['certificate'] == '/etc/ssl/mail.pem'
    for key in ('127.0.10.1:10025', '127.0.10.1:10026'):
        off = listeners[key]
        assert (off['offers_starttls'], off['tls_mode']) == (False, 'none')
        assert off['binding']['certificate'] is None
        assert 'TLS is switched off for this service' in off['binding']['source']
        assert any('/etc/ssl/mail.pem does not apply here' in note for note in off['notes'])
    # STARTTLS only hidden from EHLO: TLS is on, the certificate is loaded and held.
    hidden = listeners['127.0.10.1:10027']
    assert hidden['offers_starttls'] is False
    assert hidden['binding']['certificate'] == '/etc/ssl/mail.pem'
    unknown = listeners['127.0.10.1:10028']
    assert unknown['offers_starttls'] is None
    assert unknown['uncertain'][0]['what'] == 'offers_starttls'
    assert unknown['uncertain'][0]['where'] == '/etc/postfix/master.cf:12 -o'


def test_tls_off_everywhere_keeps_the_held_certificate(host):
    host.files({'/etc/postfix/main.cf': MAIN.replace('= may', '= none'),
                '/etc/postfix/master.cf': 'smtp inet n - y - - smtpd\n  -o smtpd_tls_security_level=none\n'})
    listener = host.gather(mtas=['postfix'])['listeners'][0]
    # main.cf already says none: the certificate configured there is held by the instance and reported,
    # so that the audit can say starttls-not-offered.
    assert listener['binding']['certificate'] == '/etc/ssl/mail.pem'
