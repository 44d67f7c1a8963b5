# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Dovecot adapter over fixture configurations laid out like Debian's (files only)."""

from __future__ import annotations

from ansible_collections.mailsec.starttls.plugins.module_utils._mta.dovecot import binding_for, filter_scopes, parse_config

DEBIAN_LIKE = {
    '/etc/dovecot/dovecot.conf': """
        # Protocols come from the packages that are installed.
        !include_try /usr/share/dovecot/protocols.d/*.protocol
        listen = 127.0.30.1, ::1
        !include conf.d/*.conf
        !include_try local.conf
    """,
    '/usr/share/dovecot/protocols.d/imapd.protocol': 'protocols = $protocols imap\n',
    '/usr/share/dovecot/protocols.d/pop3d.protocol': 'protocols = $protocols pop3\n',
    '/usr/share/dovecot/protocols.d/managesieved.protocol': 'protocols = $protocols sieve\n',
    '/etc/dovecot/conf.d/10-master.conf': """
        service imap-login {
          inet_listener imap {
            #port = 143
          }
          inet_listener imaps {
            port = 993
            ssl = yes
          }
        }
        service pop3-login {
          inet_listener pop3 {
            port = 0   # disabled
          }
        }
    """,
    '/etc/dovecot/conf.d/10-ssl.conf': """
        ssl = yes
        ssl_cert = </etc/dovecot/private/dovecot.pem
        ssl_key = </etc/dovecot/private/dovecot.key
    """,
}


def test_debian_layout_includes_protocols_and_listeners(host):
    host.files(DEBIAN_LIKE)
    result = host.gather(mtas=['dovecot'])
    listeners = host.by_endpoint(result)
    assert sorted(listeners) == ['127.0.30.1:143', '127.0.30.1:4190', '127.0.30.1:993', '127.0.30.1:995',
                                 '[::1]:143', '[::1]:4190', '[::1]:993', '[::1]:995']
    imap, imaps = listeners['127.0.30.1:143'], listeners['127.0.30.1:993']
    assert (imap['protocol'], imap['tls_mode'], imap['offers_starttls']) == ('imap', 'starttls', True)
    assert (imaps['protocol'], imaps['tls_mode'], imaps['offers_starttls']) == ('imaps', 'implicit', False)
    assert listeners['127.0.30.1:995']['protocol'] == 'pop3s'
    assert listeners['127.0.30.1:4190']['protocol'] == 'sieve'
    assert imap['binding']['certificate'] == '/etc/dovecot/private/dovecot.pem'
    assert imap['binding']['key'] == '/etc/dovecot/private/dovecot.key'
    assert imap['binding']['source'] == '/etc/dovecot/conf.d/10-ssl.conf:2 ssl_cert'
    assert imap['offers_starttls_reason'] == 'ssl = yes (/etc/dovecot/conf.d/10-ssl.conf:1)'
    assert imap['defined_at'] == '/etc/dovecot/conf.d/10-master.conf:2'
    assert imaps['defined_at'] == '/etc/dovecot/conf.d/10-master.conf:5'
    assert listeners['[::1]:4190']['defined_at'] == 'built-in default of service managesieve-login'
    assert imap['tls_settings']['protocols']['value'].split() == ['imap', 'sieve', 'pop3']
    assert imap['tls_settings']['listen_address']['where'] == '/etc/dovecot/dovecot.conf:3'
    assert result['mtas'][0]['instance'] == 'dovecot'
    assert result['warnings'] == []


def test_local_protocol_and_local_name_blocks(host):
    host.files({'/etc/dovecot/dovecot.conf': """
        protocols = imap pop3 lmtp submission
        listen = 127.0.30.5, 127.0.30.6
        ssl_cert = </etc/ssl/global.pem
        ssl_key = </etc/ssl/global.key
        service lmtp {
          inet_listener lmtp {
            port = 24
          }
        }
        local 127.0.30.5 {
          ssl_cert = </etc/ssl/bound.pem   # bound to one address
          ssl_key = </etc/ssl/bound.key
          protocol pop3 {
            ssl_cert = </etc/ssl/bound-pop3.pem
          }
        }
        protocol imap {
          ssl_cert = "</etc/ssl/imap.pem"
        }
        local_name mail.example.test {
          ssl_cert = </etc/ssl/sni.pem
          ssl_key = </etc/ssl/sni.key
        }
    """})
    listeners = host.by_endpoint(host.gather(mtas=['dovecot']))
    bound_imap, other_imap = listeners['127.0.30.5:143'], listeners['127.0.30.6:143']
    # local (per address) beats protocol beats global.
    assert bound_imap['binding']['certificate'] == '/etc/ssl/bound.pem'
    assert bound_imap['binding']['source'] == '/etc/dovecot/dovecot.conf:11 local 127.0.30.5 ssl_cert'
    assert other_imap['binding']['certificate'] == '/etc/ssl/imap.pem'
    assert other_imap['binding']['key'] == '/etc/ssl/global.key'
    assert other_imap['binding']['source'] == '/etc/dovecot/dovecot.conf:18 protocol imap ssl_cert'
    assert listeners['127.0.30.6:110']['binding']['source'] == '/etc/dovecot/dovecot.conf:3 ssl_cert'
    bound_pop3 = listeners['127.0.30.5:110']['binding']
    assert bound_pop3['certificate'] == '/etc/ssl/bound-pop3.pem'
    assert bound_pop3['key'] == '/etc/ssl/bound.key'
    assert 'local 127.0.30.5 protocol pop3' in bound_pop3['source']
    assert listeners['127.0.30.5:24']['protocol'] == 'lmtp'
    assert listeners['127.0.30.5:587']['protocol'] == 'submission'
    sni = other_imap['binding']['sni']
    assert [entry['name'] for entry in sni] == ['mail.example.test']
    assert sni[0]['certificate'] == '/etc/ssl/sni.pem' and sni[0]['key'] == '/etc/ssl/sni.key'
    assert 'local_name mail.example.test' in sni[0]['source']


def test_wildcard_listen_with_local_block_gets_a_record_per_address(host):
    host.files({'/etc/dovecot/dovecot.conf': """
        protocols = imap
        listen = *
        ssl_cert = </etc/ssl/global.pem
        ssl_key = </etc/ssl/global.key
        local 127.0.30.5 {
          ssl_cert = </etc/ssl/bound.pem
          ssl_key = </etc/ssl/bound.key
        }
        local 192.0.2.77 {
          ssl = no
        }
    """})
    result = host.gather(mtas=['dovecot'])
    listeners = host.by_endpoint(result)
    assert sorted(listeners) == ['0.0.0.0:143', '0.0.0.0:993', '127.0.30.5:143', '127.0.30.5:993']
    wildcard, derived = listeners['0.0.0.0:143'], listeners['127.0.30.5:143']
    assert wildcard['probe_address'] == '127.0.0.1'
    assert wildcard['binding']['certificate'] == '/etc/ssl/global.pem'
    assert derived['derived_from'] == wildcard['id']
    assert derived['binding']['certificate'] == '/etc/ssl/bound.pem'
    assert derived['probe_address'] == '127.0.30.5'


def test_ssl_no_required_and_unknown(host):
    for value, offers, mode in (('no', False, 'none'), ('required', True, 'starttls'), ('maybe', None, 'starttls')):
        host.files({'/etc/dovecot/dovecot.conf': f'protocols = pop3\nlisten = 127.0.30.1\nssl = {value}\n'})
        result = host.gather(mtas=['dovecot'])
        pop3 = host.by_endpoint(result)['127.0.30.1:110']
        assert pop3['offers_starttls'] is offers, value
        assert pop3['tls_mode'] == mode, value
        assert value in pop3['offers_starttls_reason']
    assert "unknown ssl value 'maybe'" in host.warnings_text(result)


def test_dovecot_24_setting_names_quotes_continuations_and_haproxy(host):
    host.files({'/etc/dovecot/dovecot.conf': """
        protocols = "imap"
        listen = 127.0.30.2
        ssl_server_cert_file = /etc/ssl/d24.pem
        ssl_server_key_file = \\
            /etc/ssl/d24.key
        service imap-login {
          inet_listener imap {
            haproxy = yes
          }
          inet_listener "imaps" {
            port = 10993
          }
        }
        userdb static {
          fields {
            uid:default = vmail
          }
        }
    """})
    result = host.gather(mtas=['dovecot'])
    assert result['warnings'] == []
    listeners = host.by_endpoint(result)
    imap = listeners['127.0.30.2:143']
    assert imap['binding']['certificate'] == '/etc/ssl/d24.pem'
    assert imap['binding']['key'] == '/etc/ssl/d24.key'
    assert any('PROXY' in note for note in imap['notes'])
    assert listeners['127.0.30.2:10993']['tls_mode'] == 'implicit'


def test_odd_syntax_is_reported_with_file_and_line(host):
    host.files({'/etc/dovecot/dovecot.conf': """
        protocols = imap
        listen = 127.0.30.1
        this is not dovecot syntax
        !include missing.conf
        !include conf.d/*.conf
        !include_try conf.d/*.conf
        !bogus directive
        service imap-login {
          inet_listener imap {
            port = one-four-three
          }
        }
        }
        plugin {
    """})
    result = host.gather(mtas=['dovecot'])
    text = host.warnings_text(result)
    assert "/etc/dovecot/dovecot.conf:3: cannot parse dovecot line: 'this is not dovecot syntax'" in text
    assert '/etc/dovecot/dovecot.conf:4: !include /etc/dovecot/missing.conf: no such file' in text
    # A pattern that matches nothing stops Dovecot too ("No matches"); !include_try does not.
    assert '/etc/dovecot/dovecot.conf:5: !include /etc/dovecot/conf.d/*.conf: matches no file' in text
    assert ':6:' not in text
    assert "/etc/dovecot/dovecot.conf:7: unknown directive '!bogus directive'" in text
    assert "/etc/dovecot/dovecot.conf:10: inet_listener imap: port 'one-four-three' is not a number" in text
    assert '/etc/dovecot/dovecot.conf:13: "}" without an open section' in text
    assert 'is never closed' in text
    # The rest still yields listeners: imaps keeps its built-in port.
    assert list(host.by_endpoint(result)) == ['127.0.30.1:993']


def test_running_instance_with_its_own_config(host):
    host.files({'/srv/dovecot-b/dovecot.conf': 'instance_name = dovecot-b\nprotocols = imap\nlisten = 127.0.30.9\n'})
    host.process(300, 'dovecot', ['/usr/sbin/dovecot', '-F', '-c', '/srv/dovecot-b/dovecot.conf'])
    host.process(301, 'imap-login', ['dovecot/imap-login'], ppid=300)
    host.listen('127.0.30.9', 143, pid=300)
    result = host.gather(mtas=['dovecot'])
    assert [(item['instance'], item['running'], item['pid']) for item in result['mtas']] == [('dovecot-b', True, 300)]
    listeners = host.by_endpoint(result)
    assert listeners['127.0.30.9:143']['listening'] is True
    assert listeners['127.0.30.9:993']['listening'] is False


def test_lmtp_and_managesieve_quirks_seen_on_real_dovecot(host):
    """LMTP ignores local {} blocks; ManageSieve advertises STARTTLS under a local ssl = no."""
    host.files({'/etc/dovecot/dovecot.conf': """
        protocols = lmtp sieve
        listen = 127.0.30.3, 127.0.30.4
        ssl_cert = </etc/ssl/global.pem
        ssl_key = </etc/ssl/global.key
        service lmtp {
          inet_listener lmtp {
            port = 24
          }
        }
        local 127.0.30.3 {
          ssl_key = </etc/ssl/unrelated.key
        }
        local 127.0.30.4 {
          ssl = no
        }
    """})
    listeners = host.by_endpoint(host.gather(mtas=['dovecot']))
    assert listeners['127.0.30.3:24']['binding']['key'] == '/etc/ssl/global.key'
    assert any('LMTP ignores local 127.0.30.3' in note for note in listeners['127.0.30.3:24']['notes'])
    assert listeners['127.0.30.4:24']['offers_starttls'] is True
    sieve = listeners['127.0.30.4:4190']
    assert (sieve['offers_starttls'], sieve['tls_mode']) == (True, 'none')
    assert listeners['127.0.30.3:4190']['binding']['key'] == '/etc/ssl/unrelated.key'


def test_lmtp_without_a_global_certificate_offers_nothing(host):
    host.files({'/etc/dovecot/dovecot.conf': """
        protocols = lmtp imap
        listen = 127.0.30.5
        service lmtp {
          inet_listener lmtp {
            port = 24
          }
        }
        local 127.0.30.5 {
          ssl_cert = </etc/ssl/bound.pem
          ssl_key = </etc/ssl/bound.key
        }
    """})
    listeners = host.by_endpoint(host.gather(mtas=['dovecot']))
    assert (listeners['127.0.30.5:24']['offers_starttls'], listeners['127.0.30.5:24']['tls_mode']) == (False, 'none')
    assert listeners['127.0.30.5:143']['offers_starttls'] is True
    assert listeners['127.0.30.5:143']['binding']['certificate'] == '/etc/ssl/bound.pem'


def test_a_key_doveconf_masks_is_no_file_name(host):
    # doveconf -n prints "ssl_key = # hidden, use -P to show it"; when the files do not name the key
    # either, the binding says it is not found instead of naming a file "# hidden".
    tree = parse_config(host.context(), '/etc/dovecot/dovecot.conf', label='doveconf -n',
                        text='ssl_cert = </etc/ssl/c.pem\nssl_key = # hidden, use -P to show it\n'
                             'ssl_alt_cert = </etc/ssl/e.pem\nssl_alt_key = # hidden, use -P to show it\n')
    binding = binding_for(tree, filter_scopes(tree, '127.0.30.1', 'imap'))
    assert binding['certificate'] == '/etc/ssl/c.pem'
    assert binding['key'] is None and binding['resolved'] is False
    assert binding['notes'] == ['ssl_key hidden by doveconf and not found in the files']
    assert binding['alternates'][0]['key'] is None


def test_a_1x_setting_is_quoted_in_a_warning_only_as_an_excerpt(host):
    text = 'protocols = imap\nlisten = 127.0.30.3\nssl_cert_file = /etc/ssl/' + 'x' * 5000 + '\x1b[31m.pem\n'
    host.files({'/etc/dovecot/dovecot.conf': text})
    result = host.gather(mtas=['dovecot'])
    messages = [item['message'] for item in result['warnings'] if 'obsolete Dovecot 1.x setting' in item['message']]
    assert len(messages) == 1 and len(messages[0]) < 300 and '\x1b' not in messages[0]
    assert host.by_endpoint(result)['127.0.30.3:143']['binding']['certificate'].startswith('/etc/ssl/xxx')
