# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""OpenSMTPD and Sendmail adapters over fixture configurations."""

from __future__ import annotations

SMTPD_CONF = """
    # macros, includes and continuation lines
    lab_addr = "127.0.40.1"
    include "/etc/smtpd/pki.conf"
    table aliases file:/etc/aliases

    listen on $lab_addr port 25 tls pki mail.lab.test   # STARTTLS
    listen on $lab_addr smtps pki mail.lab.test
    listen on 127.0.40.2 port submission tls-require \\
        pki mail.lab.test pki other.lab.test auth
    listen on 127.0.40.3
    listen on 127.0.40.4 tls pki missing.lab.test
    listen on lo family inet4 port 2525 tls hostname mail.lab.test
    listen on socket
    action "local" maildir alias <aliases>
    match for local action "local"
"""
PKI_CONF = """
    pki mail.lab.test cert "/etc/ssl/mail.crt"
    pki mail.lab.test key "/etc/ssl/private/mail.key"
    pki other.lab.test cert "/etc/ssl/other.crt"
    pki other.lab.test key "/etc/ssl/private/other.key"
"""


def test_opensmtpd_listen_lines(host):
    host.files({'/etc/smtpd.conf': SMTPD_CONF, '/etc/smtpd/pki.conf': PKI_CONF})
    result = host.gather(mtas=['opensmtpd'])
    listeners = host.by_endpoint(result)
    assert sorted(listeners) == ['127.0.0.1:2525', '127.0.40.1:25', '127.0.40.1:465', '127.0.40.2:587',
                                 '127.0.40.3:25', '127.0.40.4:25']
    starttls, smtps = listeners['127.0.40.1:25'], listeners['127.0.40.1:465']
    assert (starttls['protocol'], starttls['offers_starttls']) == ('smtp', True)
    assert starttls['binding']['certificate'] == '/etc/ssl/mail.crt'
    assert starttls['binding']['key'] == '/etc/ssl/private/mail.key'
    assert starttls['binding']['source'] == '/etc/smtpd.conf:6 listen ... pki mail.lab.test'
    assert starttls['defined_at'] == '/etc/smtpd.conf:6'
    assert (smtps['protocol'], smtps['tls_mode'], smtps['offers_starttls']) == ('smtps', 'implicit', False)
    submission = listeners['127.0.40.2:587']
    assert (submission['protocol'], submission['offers_starttls']) == ('submission', True)
    assert [entry['name'] for entry in submission['binding']['sni']] == ['mail.lab.test', 'other.lab.test']
    assert submission['binding']['sni'][1]['certificate'] == '/etc/ssl/other.crt'
    assert submission['binding']['sni'][1]['source'] == '/etc/smtpd/pki.conf:3 pki other.lab.test'
    plain = listeners['127.0.40.3:25']
    assert (plain['tls_mode'], plain['offers_starttls']) == ('none', False)
    missing = listeners['127.0.40.4:25']['binding']
    assert missing['resolved'] is False and 'pki missing.lab.test is not defined' in missing['source']
    # smtpd refuses the configuration for it ("pki name not found"): said, and that listener is uncertain.
    assert [item['what'] for item in listeners['127.0.40.4:25']['uncertain']] == ['configuration']
    # No pki on the line: the one named after the listener's hostname applies.
    by_hostname = listeners['127.0.0.1:2525']['binding']
    assert by_hostname['certificate'] == '/etc/ssl/mail.crt'
    assert 'named after the listener hostname' in by_hostname['source']
    assert any('0740' in note for note in starttls['notes'])
    assert result['mtas'][0]['reading_user'] == 'root'
    assert [item['message'] for item in result['warnings']] == [
        'pki \'missing.lab.test\' is not declared before this listen line: smtpd refuses the configuration '
        '("pki name not found")']


def test_opensmtpd_running_instance_and_odd_lines(host):
    host.files({'/srv/smtpd/smtpd.conf': 'listen on 127.0.40.9 tls frobnicate\nfly me to the moon\n'})
    host.process(500, 'smtpd', ['/usr/sbin/smtpd', '-d', '-f', '/srv/smtpd/smtpd.conf'])
    host.process(501, 'smtpd', ['smtpd:', 'klondike'], ppid=500)
    host.listen('127.0.40.9', 25, pid=501)
    result = host.gather(mtas=['opensmtpd'])
    assert [(item['instance'], item['running'], item['pid']) for item in result['mtas']] == [('opensmtpd', True, 500)]
    listener = result['listeners'][0]
    assert listener['listening'] is True
    assert 'default (none configured)' in listener['binding']['source']
    text = host.warnings_text(result)
    assert "/srv/smtpd/smtpd.conf:1: unknown listen option 'frobnicate'" in text
    assert listener['uncertain'] == [{'what': 'configuration', 'where': '/srv/smtpd/smtpd.conf:1',
                                      'reason': "listen option 'frobnicate' not understood (smtpd refuses a line it "
                                                'cannot parse)'}]
    assert "/srv/smtpd/smtpd.conf:2: unknown smtpd.conf statement 'fly'" in text


SENDMAIL_CF = """
    # sendmail.cf as m4 writes it
    D{tls}/etc/mail/tls
    O DaemonPortOptions=Port=smtp,Addr=127.0.50.1, Name=MTA
    O DaemonPortOptions=Port=submission, Addr=127.0.50.1, Name=MSA, M=Ea
    O DaemonPortOptions=Port=smtps, Addr=127.0.50.1, Name=TLSMTA, M=s
    O DaemonPortOptions=Port=2525, Addr=::1, Family=inet6, Name=NoTLS, M=S
    O ServerCertFile=${tls}/sendmail.crt
    O ServerKeyFile=${tls}/sendmail.key
    O CACertFile=/etc/mail/tls/ca.crt
"""


def test_sendmail_daemons_and_modifiers(host):
    host.write('/etc/mail/sendmail.cf', SENDMAIL_CF)
    host.process(600, 'sendmail', ['sendmail:', 'MTA:', 'accepting', 'connections'])
    result = host.gather(mtas=['sendmail'])
    listeners = host.by_endpoint(result)
    assert sorted(listeners) == ['127.0.50.1:25', '127.0.50.1:465', '127.0.50.1:587', '[::1]:2525']
    mta, msa, smtps, no_tls = (listeners[key] for key in ('127.0.50.1:25', '127.0.50.1:587', '127.0.50.1:465',
                                                          '[::1]:2525'))
    assert (mta['protocol'], mta['offers_starttls']) == ('smtp', True)
    assert mta['binding']['certificate'] == '/etc/mail/tls/sendmail.crt'
    assert mta['binding']['key'] == '/etc/mail/tls/sendmail.key'
    assert mta['binding']['source'] == '/etc/mail/sendmail.cf:7 ServerCertFile'
    assert msa['protocol'] == 'submission'
    assert (smtps['protocol'], smtps['tls_mode']) == ('smtps', 'implicit')
    assert (no_tls['offers_starttls'], no_tls['tls_mode']) == (False, 'none')
    assert 'M=S' in no_tls['offers_starttls_reason']
    assert result['mtas'][0]['running'] is True


def test_sendmail_without_certificates_or_daemon_options(host):
    host.write('/etc/mail/sendmail.cf', 'O QueueDirectory=/var/spool/mqueue\n')
    listener = host.gather(mtas=['sendmail'])['listeners'][0]
    assert (listener['address'], listener['port']) == ('0.0.0.0', 25)
    assert listener['offers_starttls'] is False
    assert 'no ServerCertFile' in listener['offers_starttls_reason']


def test_opensmtpd_listen_on_an_interface_name(host):
    """`listen on eth0` takes the interface's addresses (here its IPv6 address from /proc/net/if_inet6)."""
    host.files({'/etc/smtpd.conf': 'pki mail.lab.test cert "/etc/ssl/mail.crt"\n'
                                   'pki mail.lab.test key "/etc/ssl/private/mail.key"\n'
                                   'listen on eth0 family inet6 port 25 tls pki mail.lab.test\n'})
    result = host.gather(mtas=['opensmtpd'], use_tools='never')
    assert sorted(host.by_endpoint(result)) == ['[2001:db8::7]:25'], result['warnings']
