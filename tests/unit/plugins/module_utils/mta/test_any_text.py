# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Property: any text given as any MTA's configuration yields listeners or warnings, never an
exception (neither out of gather_host nor caught by its guard), and the audit judges the result."""

from __future__ import annotations

import os
import shutil
import tempfile

from hypothesis import HealthCheck, given, settings, strategies as st

from ansible_collections.mailsec.starttls.plugins.module_utils._host import gather_host
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict import judge

# Where each MTA's configuration goes in the fixture root, and the config_paths entry naming it.
TARGETS = {
    'postfix': ('/etc/postfix/main.cf', '/etc/postfix'),
    'exim': ('/etc/exim4/exim4.conf', '/etc/exim4/exim4.conf'),
    'dovecot': ('/etc/dovecot/dovecot.conf', '/etc/dovecot/dovecot.conf'),
    'opensmtpd': ('/etc/smtpd.conf', '/etc/smtpd.conf'),
    'sendmail': ('/etc/mail/sendmail.mc', '/etc/mail/sendmail.mc'),
}
# Pieces of every grammar, so that generated text reaches deep into the parsers.
FRAGMENTS = [
    'listen on', 'listen on lo', 'listen on 127.0.0.9 port', 'tls', 'smtps', 'secure', 'tls-require verify',
    'pki', 'pki x cert "/x.crt"', 'pki x certificate', 'hostname x', 'filter {', '}', '{', 'family inet6',
    'include "/etc/smtpd.conf"', 'macro = "127.0.0.1"', '$macro', 'DAEMON_OPTIONS(`Port=', "')", '`', "'", 'dnl',
    "define(`confSERVER_CERT', `", "FEATURE(`no_default_msa')", "ifdef(`X', `", 'include(`/etc/mail/sendmail.mc',
    'M=S', 'M=s', 'Addr=', 'Family=inet6', 'O DaemonPortOptions=Port=smtp', 'smtp inet n - n - - smtpd',
    '127.0.0.9:2525 inet n - n - - smtpd', '-o smtpd_tls_security_level=none', '  -o smtpd_use_tls=',
    'smtpd_tls_cert_file = $x', 'inet_interfaces = [::1]', '${', 'local_interfaces = <; ::1 ; 127.0.0.2',
    'daemon_smtp_ports = 25 : 465', 'tls_on_connect_ports =',
    'tls_advertise_hosts = ${if eq{$received_port}{25}{*}{}}',
    '.include /etc/exim4/exim4.conf', '.ifdef X', '.endif', 'tls_certificate = ${tls_sni}', 'begin routers',
    'service imap-login {', 'inet_listener imaps {', 'port = 993', 'ssl = yes', 'ssl_cert = </x.pem',
    '!include /etc/dovecot/dovecot.conf', 'local 127.0.0.1 {', 'protocols = imap pop3', '{{ var }}', '<%= x %>',
    'PH_HOSTNAME', '@@CERT@@', 'pwcheck_method: saslauthd', '\\', '"', '#', '=', ':', ',', '\x00', '\ufeff', '\udcff',
]
pieces = st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=12))
config_text = st.one_of(
    st.text(max_size=300),
    st.lists(st.lists(pieces, max_size=8).map(' '.join), max_size=12).map('\n'.join),
)


# More examples for a deeper search: MAILSEC_PROPERTY_EXAMPLES=1500; MAILSEC_PROPERTY_DEADLINE_MS=1500
# turns a slow input (an include blow-up, say) into a failure that names it.
EXAMPLES = int(os.environ.get('MAILSEC_PROPERTY_EXAMPLES', '40'))
DEADLINE_MS = int(os.environ.get('MAILSEC_PROPERTY_DEADLINE_MS', '0')) or None


@settings(max_examples=EXAMPLES, deadline=DEADLINE_MS, suppress_health_check=[HealthCheck.too_slow])
@given(mta=st.sampled_from(sorted(TARGETS)), text=config_text)
def test_any_text_as_any_mta_configuration(mta, text):
    root = tempfile.mkdtemp(prefix='mailsec-any-text-')
    try:
        file_path, given_path = TARGETS[mta]
        real = os.path.join(root, file_path.lstrip('/'))
        os.makedirs(os.path.dirname(real), exist_ok=True)
        with open(real, 'w', encoding='utf-8', errors='surrogatepass') as handle:
            handle.write(text)
        if mta == 'postfix':
            with open(os.path.join(os.path.dirname(real), 'master.cf'), 'w', encoding='utf-8',
                      errors='surrogatepass') as handle:
                handle.write(text)
        os.makedirs(os.path.join(root, 'proc', 'net'), exist_ok=True)
        result = gather_host({'root': root, 'use_tools': 'never', 'mtas': [mta],
                              'config_paths': {mta: [given_path]}, 'host': 'h'})
        crashes = [item['message'] for item in result['warnings']
                   if 'failed: ' in item['message'] and ('listeners failed' in item['message']
                                                         or 'detection failed' in item['message'])]
        assert crashes == []
        assert result['listeners'] or result['warnings']
        for listener in result['listeners']:
            assert listener['mta'] == mta
            assert listener['offers_starttls'] in (True, False, None)
            if listener['offers_starttls'] is None or listener['address'] == 'unknown':
                # Unsure is said out loud: either the reason or an uncertain entry.
                assert listener['offers_starttls_reason'] or listener['uncertain']
        findings = judge(result['listeners'], [], {'now': '2026-01-01T00:00:00Z'})
        assert [finding for finding in findings if finding['id'] == 'judgement-error'] == []
    finally:
        shutil.rmtree(root)
