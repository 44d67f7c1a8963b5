# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""OpenSMTPD grammars of 5.x/6.0 and 6.4+, interfaces absent from the host, files that are not
smtpd.conf, and the certificate held by a listener without `tls`."""

from __future__ import annotations

from ansible_collections.mailsec.starttls.plugins.module_utils._verdict import judge

# 5.x/6.0 grammar (Debian stretch/buster ship 6.0): `certificate`, `secure`, `mask-source`,
# `accept ... deliver to`.
OLD_GRAMMAR = """
    pki mx.lab.test certificate "/etc/ssl/mx.crt"
    pki mx.lab.test key "/etc/ssl/private/mx.key"
    pki mx.lab.test dhparams "/etc/ssl/dh.pem"
    table aliases file:/etc/aliases
    listen on 127.0.41.1 port 25 tls pki mx.lab.test mask-source tag MX
    listen on 127.0.41.2 secure pki mx.lab.test
    listen on 127.0.41.3 port 587 tls-require verify pki mx.lab.test auth <secrets> hostname mx.lab.test
    max-message-size 35M
    expire 4d
    accept from any for domain "lab.test" alias <aliases> deliver to mbox
    accept for any relay
"""
# 6.4+ grammar: `cert`, filters (a name or a chain) on listen lines, `mask-src`, `senders`.
NEW_GRAMMAR = """
    pki mx.lab.test cert "/etc/ssl/mx.crt"
    pki mx.lab.test key "/etc/ssl/private/mx.key"
    filter "rdns" phase connect match !rdns disconnect "550 no rDNS"
    filter "fcrdns" phase connect match !fcrdns disconnect "550 no FCrDNS"
    listen on 127.0.41.1 tls pki mx.lab.test filter { "rdns", "fcrdns" }
    listen on 127.0.41.1 port 465 smtps pki mx.lab.test filter "rdns" mask-src
    listen on 127.0.41.1 port submission tls-require pki mx.lab.test auth senders <users> masquerade tag SUB
    action "relay" relay
    match from any for any action "relay"
"""


def test_five_and_six_zero_grammar(host):
    host.write('/etc/smtpd.conf', OLD_GRAMMAR)
    result = host.gather(mtas=['opensmtpd'])
    listeners = host.by_endpoint(result)
    assert sorted(listeners) == ['127.0.41.1:25', '127.0.41.2:25', '127.0.41.2:465', '127.0.41.3:587']
    assert listeners['127.0.41.1:25']['binding']['certificate'] == '/etc/ssl/mx.crt'
    assert listeners['127.0.41.1:25']['binding']['key'] == '/etc/ssl/private/mx.key'
    assert (listeners['127.0.41.2:25']['offers_starttls'], listeners['127.0.41.2:465']['tls_mode']) == (True, 'implicit')
    assert listeners['127.0.41.3:587']['protocol'] == 'submission'
    assert result['warnings'] == []


def test_six_four_grammar_with_filter_chains(host):
    host.write('/etc/smtpd.conf', NEW_GRAMMAR)
    result = host.gather(mtas=['opensmtpd'])
    listeners = host.by_endpoint(result)
    assert sorted(listeners) == ['127.0.41.1:25', '127.0.41.1:465', '127.0.41.1:587']
    assert all(item['binding']['certificate'] == '/etc/ssl/mx.crt' for item in listeners.values())
    assert result['warnings'] == []


def test_interface_absent_from_host_is_kept_unknown(host):
    host.write('/etc/smtpd.conf', 'listen on wg7 port 25 tls\nlisten on 127.0.41.9\n')
    result = host.gather(mtas=['opensmtpd'])
    listeners = host.by_endpoint(result)
    assert sorted(listeners) == ['127.0.41.9:25', 'unknown:25']
    unknown = listeners['unknown:25']
    assert unknown['probe_address'] is None
    assert unknown['uncertain'][0]['what'] == 'address'
    assert unknown['uncertain'][0]['where'] == '/etc/smtpd.conf:1'
    assert 'wg7' in host.warnings_text(result)
    findings = judge([unknown], [], {'now': '2026-01-01T00:00:00Z'})
    uncertain = [finding for finding in findings if finding['id'] == 'inspection-uncertain']
    assert len(uncertain) == 1 and 'wg7' in uncertain[0]['summary']
    assert uncertain[0]['severity'] == 'medium'


def test_hostname_without_tls_carries_the_held_certificate(host):
    host.write('/etc/smtpd.conf', """
        pki mail.lab.test cert "/etc/ssl/mail.crt"
        pki mail.lab.test key "/etc/ssl/private/mail.key"
        listen on 127.0.41.5 hostname mail.lab.test
        listen on 127.0.41.6 hostname other.lab.test
    """)
    listeners = host.by_endpoint(host.gather(mtas=['opensmtpd']))
    held = listeners['127.0.41.5:25']
    assert (held['offers_starttls'], held['tls_mode']) == (False, 'none')
    assert held['binding']['certificate'] == '/etc/ssl/mail.crt'
    assert any('held but not used' in note for note in held['notes'])
    assert listeners['127.0.41.6:25']['binding']['certificate'] is None
    held['store'] = {'usable': True, 'problems': [], 'unknown': [],
                     'certificate': {'path': '/etc/ssl/mail.crt', 'sha256': 'ab' * 32}}
    held['host'] = 'mx'
    held['listening'] = True
    findings = judge([held], [], {'now': '2026-01-01T00:00:00Z'})
    assert [finding['id'] for finding in findings] == ['starttls-not-offered']


def test_cyrus_sasl_file_given_as_smtpd_conf(host):
    host.write('/etc/smtpd.conf', 'pwcheck_method: saslauthd\nmech_list: PLAIN LOGIN\n')
    result = host.gather(mtas=['opensmtpd'])
    text = host.warnings_text(result)
    assert result['listeners'] == []
    assert 'does not look like an OpenSMTPD smtpd.conf' in text
    assert 'Cyrus SASL' in text
    assert 'no listener found' in text


def test_smtpd_conf_without_listen_says_why(host):
    host.write('/etc/smtpd.conf', 'table aliases file:/etc/aliases\naction "local" mbox\nmatch for local action "local"\n')
    result = host.gather(mtas=['opensmtpd'])
    assert 'no `listen on` line' in host.warnings_text(result)


def test_pki_or_auth_without_tls_is_a_configuration_smtpd_refuses(host):
    host.write('/etc/smtpd.conf', """
        pki mx cert "/etc/ssl/mx.crt"
        pki mx key "/etc/ssl/mx.key"
        listen on 127.0.41.7 pki mx
        listen on 127.0.41.8 auth
        listen on 127.0.41.9 tls pki mx auth
    """)
    listeners = host.by_endpoint(host.gather(mtas=['opensmtpd']))
    for key, what in (('127.0.41.7:25', 'pki'), ('127.0.41.8:25', 'auth')):
        assert listeners[key]['uncertain'][0]['what'] == 'configuration'
        assert listeners[key]['uncertain'][0]['reason'].startswith(f'{what} without tls or smtps')
    assert listeners['127.0.41.9:25']['uncertain'] == []


def test_pki_options_on_one_line_inline_tables_and_undeclared_pki(host):
    # Seen in real smtpd.conf files and checked with smtpd -n (6.8.0p2): several pki options on one
    # line and an inline `hostnames { }` table are accepted; a listen line naming a pki that is not
    # declared before it is refused ("pki name not found"; names compare in lower case).
    host.write('/etc/smtpd.conf', """
        pki one cert "/etc/ssl/one.crt" key "/etc/ssl/one.key"
        listen on 127.0.41.1 tls pki ONE hostnames { 127.0.41.1 = mx.lab.test } senders { a@lab.test } masquerade
        listen on 127.0.41.2 tls pki later
        listen on 127.0.41.3 tls pki nosuch
        pki later cert "/etc/ssl/later.crt" key "/etc/ssl/later.key"
        action "l" mbox
        match from local for local action "l"
    """)
    result = host.gather(mtas=['opensmtpd'])
    listeners = host.by_endpoint(result)
    text = host.warnings_text(result)
    one = listeners['127.0.41.1:25']
    assert (one['binding']['certificate'], one['binding']['key']) == ('/etc/ssl/one.crt', '/etc/ssl/one.key')
    assert one['uncertain'] == [] and one['offers_starttls'] is True
    assert 'unknown listen option' not in text and 'unknown pki option' not in text
    for address, name in (('127.0.41.2', 'later'), ('127.0.41.3', 'nosuch')):
        record = listeners[f'{address}:25']
        assert [item['what'] for item in record['uncertain']] == ['configuration']
        assert f'pki name not found: {name}' in record['uncertain'][0]['reason']
        assert f"pki '{name}' is not declared before this listen line" in text
    findings = judge(list(listeners.values()), [], {'now': '2026-01-01T00:00:00Z'})
    assert {finding['listener']['address'] for finding in findings if finding['id'] == 'inspection-uncertain'} == {
        '127.0.41.2', '127.0.41.3'}


def test_interface_groups_on_linux_are_a_configuration_smtpd_refuses(host):
    # smtpd -n 6.8.0p2 on Linux: "invalid virtual ip or interface: all" (and egress): OpenBSD's groups.
    host.write('/etc/smtpd.conf', 'listen on all\nlisten on 127.0.41.5\naction "l" mbox\nmatch from local for local action "l"\n')
    result = host.gather(mtas=['opensmtpd'])
    by_line = {}
    for listener in result['listeners']:
        by_line.setdefault(listener['defined_at'], []).append(listener)
    assert by_line['/etc/smtpd.conf:1'] and all(
        item['uncertain'] and 'Linux has no interface groups' in item['uncertain'][0]['reason']
        for item in by_line['/etc/smtpd.conf:1'])
    assert [item['uncertain'] for item in by_line['/etc/smtpd.conf:2']] == [[]]
    assert 'invalid virtual ip or interface: all' in host.warnings_text(result)
