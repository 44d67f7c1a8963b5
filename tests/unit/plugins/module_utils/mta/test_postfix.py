# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Postfix adapter over fixture configurations (files only; postconf itself in test_tools.py)."""

from __future__ import annotations

from ansible_collections.mailsec.starttls.plugins.module_utils._mta.postfix import Resolver, logical_lines

MASTER_BASIC = """
# service type  private unpriv  chroot  wakeup  maxproc command + args
smtp      inet  n       -       y       -       -       smtpd
submission inet n       -       y       -       -       smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
smtps     inet  n       -       y       -       -       smtpd
  -o smtpd_tls_wrappermode=yes
pickup    unix  n       -       y       60      1       pickup
"""


def basic_main(**extra) -> str:
    lines = ['inet_interfaces = 127.0.10.1', 'inet_protocols = ipv4', 'smtpd_tls_security_level = may',
             'smtpd_tls_cert_file = /etc/ssl/mail.pem', 'smtpd_tls_key_file = /etc/ssl/mail.key']
    lines += [f'{name} = {value}' for name, value in extra.items()]
    return '\n'.join(lines) + '\n'


def test_services_protocols_and_main_cf_binding(host):
    host.files({'/etc/postfix/main.cf': basic_main(), '/etc/postfix/master.cf': MASTER_BASIC})
    result = host.gather(mtas=['postfix'])
    listeners = host.by_endpoint(result)
    assert sorted(listeners) == ['127.0.10.1:25', '127.0.10.1:465', '127.0.10.1:587']
    smtp, smtps, submission = listeners['127.0.10.1:25'], listeners['127.0.10.1:465'], listeners['127.0.10.1:587']
    assert (smtp['protocol'], smtp['tls_mode'], smtp['offers_starttls']) == ('smtp', 'starttls', True)
    assert (submission['protocol'], submission['offers_starttls']) == ('submission', True)
    assert 'encrypt' in submission['offers_starttls_reason']
    assert (smtps['protocol'], smtps['tls_mode'], smtps['offers_starttls']) == ('smtps', 'implicit', False)
    assert smtp['binding']['certificate'] == '/etc/ssl/mail.pem'
    assert smtp['binding']['key'] == '/etc/ssl/mail.key'
    assert smtp['binding']['source'] == '/etc/postfix/main.cf:4 smtpd_tls_cert_file'
    assert smtp['defined_at'] == '/etc/postfix/master.cf:2'
    assert submission['defined_at'] == '/etc/postfix/master.cf:3'
    assert smtp['reader_user'] == 'root'
    assert smtp['probe_address'] == '127.0.10.1'
    assert smtp['tls_settings']['smtpd_tls_security_level'] == {'value': 'may', 'where': '/etc/postfix/main.cf:3'}
    assert smtp['tls_settings']['listen_address']['where'] == '/etc/postfix/main.cf:1 inet_interfaces'
    assert result['mtas'][0]['instance'] == 'postfix'
    assert result['mtas'][0]['running'] is False
    assert result['warnings'] == []


def test_master_cf_override_beats_main_cf_and_key_follows(host):
    master = """
    smtp      inet  n       -       y       -       -       smtpd
    127.0.10.5:smtp inet n  -       y       -       -       smtpd
      -o smtpd_tls_cert_file=/etc/ssl/bound.pem
    """
    main = ('inet_interfaces = 127.0.10.1\ninet_protocols = ipv4\nsmtpd_tls_security_level = may\n'
            'smtpd_tls_cert_file = /etc/ssl/global.pem\n')
    host.files({'/etc/postfix/main.cf': main, '/etc/postfix/master.cf': master})
    listeners = host.by_endpoint(host.gather(mtas=['postfix']))
    bound = listeners['127.0.10.5:25']
    assert bound['binding']['certificate'] == '/etc/ssl/bound.pem'
    # smtpd_tls_key_file defaults to $smtpd_tls_cert_file, expanded inside the service.
    assert bound['binding']['key'] == '/etc/ssl/bound.pem'
    assert bound['binding']['source'] == '/etc/postfix/master.cf:3 -o smtpd_tls_cert_file'
    assert bound['tls_settings']['smtpd_tls_cert_file']['where'] == '/etc/postfix/master.cf:3 -o'
    assert listeners['127.0.10.1:25']['binding']['source'] == '/etc/postfix/main.cf:4 smtpd_tls_cert_file'
    assert bound['defined_at'] == '/etc/postfix/master.cf:2'


def test_chain_files_beat_cert_file_and_roles_come_from_pem_labels(host):
    host.pem('/etc/ssl/mail-key.pem', 'PRIVATE KEY')
    host.pem('/etc/ssl/fullchain.pem', 'CERTIFICATE', 'CERTIFICATE')
    host.pem('/etc/ssl/ec.pem', 'EC PRIVATE KEY', 'CERTIFICATE')
    host.pem('/etc/ssl/ec-intermediate.pem', 'CERTIFICATE')
    main = basic_main(smtpd_tls_chain_files='/etc/ssl/mail-key.pem, /etc/ssl/fullchain.pem,\n'
                                            '    /etc/ssl/ec.pem /etc/ssl/ec-intermediate.pem')
    host.files({'/etc/postfix/main.cf': main, '/etc/postfix/master.cf': MASTER_BASIC})
    smtp = host.by_endpoint(host.gather(mtas=['postfix']))['127.0.10.1:25']
    binding = smtp['binding']
    assert binding['source'] == '/etc/postfix/main.cf:6 smtpd_tls_chain_files'
    assert (binding['key'], binding['certificate'], binding['chain']) == (
        '/etc/ssl/mail-key.pem', '/etc/ssl/fullchain.pem', [])
    assert binding['alternates'] == [{'certificate': '/etc/ssl/ec.pem', 'key': '/etc/ssl/ec.pem',
                                      'chain': ['/etc/ssl/ec-intermediate.pem']}]
    assert any('smtpd_tls_cert_file' in note and 'ignored' in note for note in binding['notes'])


def test_chain_files_in_master_cf_beat_cert_file_in_master_cf(host):
    host.pem('/etc/ssl/all-in-one.pem', 'PRIVATE KEY', 'CERTIFICATE', 'CERTIFICATE')
    master = """
    submission inet n - y - - smtpd
      -o smtpd_tls_cert_file=/etc/ssl/legacy.pem
      -o smtpd_tls_chain_files=/etc/ssl/all-in-one.pem
    """
    host.files({'/etc/postfix/main.cf': basic_main(), '/etc/postfix/master.cf': master})
    listener = host.gather(mtas=['postfix'])['listeners'][0]
    assert listener['binding']['source'] == '/etc/postfix/master.cf:3 -o smtpd_tls_chain_files'
    assert listener['binding']['certificate'] == listener['binding']['key'] == '/etc/ssl/all-in-one.pem'


def test_cert_file_none_means_no_certificate(host):
    host.files({'/etc/postfix/main.cf': basic_main(smtpd_tls_cert_file='none'),
                '/etc/postfix/master.cf': 'smtp inet n - y - - smtpd\n'})
    listener = host.gather(mtas=['postfix'])['listeners'][0]
    assert listener['binding']['certificate'] is None
    assert 'none (no certificate' in listener['binding']['source']


def test_no_certificate_configured_but_tls_on(host):
    host.files({'/etc/postfix/main.cf': 'inet_interfaces = loopback-only\ninet_protocols = ipv4\n'
                                        'smtpd_tls_security_level = may\n',
                '/etc/postfix/master.cf': 'smtp inet n - y - - smtpd\n'})
    listener = host.gather(mtas=['postfix'])['listeners'][0]
    assert listener['address'] == '127.0.0.1'
    assert listener['offers_starttls'] is True
    assert listener['binding']['certificate'] is None
    assert listener['binding']['source'] == 'default (none configured)'


def test_legacy_tls_switches(host):
    cases = {
        'smtpd_use_tls = yes\n': (True, 'smtpd_use_tls = yes'),
        'smtpd_enforce_tls = yes\n': (True, 'smtpd_enforce_tls = yes'),
        'smtpd_use_tls = no\n': (False, 'TLS off'),
        '': (False, 'TLS off'),
        'smtpd_use_tls = yes\nsmtpd_tls_security_level = none\n': (False, 'smtpd_tls_security_level = none'),
        'smtpd_tls_security_level = verify\n': (True, 'uses encrypt'),
    }
    for index, (extra, (offers, reason)) in enumerate(cases.items()):
        directory = f'/etc/postfix-{index}'
        host.files({f'{directory}/main.cf': 'inet_interfaces = 127.0.10.1\ninet_protocols = ipv4\n' + extra,
                    f'{directory}/master.cf': 'smtp inet n - y - - smtpd\n'})
        result = host.gather(mtas=['postfix'], config_paths={'postfix': [directory]})
        listener = [item for item in result['listeners'] if item['instance'] == f'postfix-{index}'][0]
        assert listener['offers_starttls'] is offers, (extra, listener['offers_starttls_reason'])
        assert reason in listener['offers_starttls_reason'], (extra, listener['offers_starttls_reason'])
        assert listener['tls_mode'] == ('starttls' if offers else 'none')


def test_discarded_starttls_keyword(host):
    host.files({'/etc/postfix/main.cf': basic_main(smtpd_discard_ehlo_keywords='silent-discard, STARTTLS'),
                '/etc/postfix/master.cf': MASTER_BASIC})
    smtp = host.by_endpoint(host.gather(mtas=['postfix']))['127.0.10.1:25']
    assert smtp['offers_starttls'] is False
    assert smtp['tls_mode'] == 'none'  # Postfix 3.7 answers STARTTLS with 502 then
    assert 'smtpd_discard_ehlo_keywords' in smtp['offers_starttls_reason']


def test_discard_map_mentioning_starttls_makes_it_depend_on_the_client(host):
    host.write('/etc/postfix/discard.cidr', '192.0.2.0/24 starttls\n')
    host.files({'/etc/postfix/main.cf': basic_main(
        smtpd_discard_ehlo_keyword_address_maps='cidr:/etc/postfix/discard.cidr'),
        '/etc/postfix/master.cf': MASTER_BASIC})
    smtp = host.by_endpoint(host.gather(mtas=['postfix']))['127.0.10.1:25']
    assert smtp['offers_starttls'] is None
    assert 'some clients' in smtp['offers_starttls_reason']


def test_continuations_comments_braces_and_glued_options(host):
    main = """
    # comment
    inet_interfaces =
        127.0.10.1,
    # a comment line inside a continued value does not end it
        127.0.10.2
    inet_protocols = ipv4
    smtpd_tls_security_level = may
    """
    master = """
    smtp      inet  n       -       y       -       -       smtpd
    # a comment between an entry and its options
      -o { smtpd_tls_cert_file = /etc/ssl/with space.pem }
      -osmtpd_tls_key_file=/etc/ssl/glued.key
    """
    host.files({'/etc/postfix/main.cf': main, '/etc/postfix/master.cf': master})
    result = host.gather(mtas=['postfix'])
    listeners = host.by_endpoint(result)
    assert sorted(listeners) == ['127.0.10.1:25', '127.0.10.2:25']
    binding = listeners['127.0.10.2:25']['binding']
    assert binding['certificate'] == '/etc/ssl/with space.pem'
    assert binding['key'] == '/etc/ssl/glued.key'
    assert binding['source'] == '/etc/postfix/master.cf:3 -o smtpd_tls_cert_file'
    assert listeners['127.0.10.1:25']['tls_settings']['smtpd_tls_key_file']['where'] == '/etc/postfix/master.cf:4 -o'


def test_master_cf_arguments_are_read_as_the_daemon_reads_them(host):
    # The daemons read master.cf arguments with getopt (glibc "+": stop at the first non-option) and
    # split each -o with split_nameval (src/master/single_server.c, src/util/split_nameval.c).
    master = """
    127.0.10.1:25 inet n - y - - smtpd
      -o smtpd_sasl_type = dovecot
      -o smtpd_tls_security_level=none
    127.0.10.1:587 inet n - y - - smtpd
      -o { smtpd_sasl_type = dovecot }
      -vo smtpd_tls_security_level=encrypt
    127.0.10.1:2525 inet n - y - - smtpd
      -o smtpd_tls_security_level=encrypt stray -o smtpd_tls_security_level=none
    127.0.10.1:2526 inet n - y - - smtpd -x
    127.0.10.1:2527 inet n - y - - smtpd -o
    dovecot unix - n n - - pipe
      flags=DRhu user=vmail argv=/usr/lib/dovecot/deliver -oi -f ${sender}
    """
    host.files({'/etc/postfix/main.cf': basic_main(), '/etc/postfix/master.cf': master})
    result = host.gather(mtas=['postfix'])
    listeners = host.by_endpoint(result)
    text = host.warnings_text(result)
    # "-o name = value": optarg "smtpd_sasl_type" has no "=", so smtpd exits at start; nothing after it
    # applies (main.cf's may would have, had it started), and nothing is advertised.
    spaced = listeners['127.0.10.1:25']
    assert spaced['offers_starttls'] is None
    assert 'missing \'=\' after attribute name' in spaced['offers_starttls_reason']
    assert spaced['uncertain'][0]['where'] == '/etc/postfix/master.cf:1'
    assert 'smtpd_tls_security_level' not in spaced['tls_settings'] or \
        spaced['tls_settings']['smtpd_tls_security_level']['value'] == 'may'
    assert 'smtpd exits as soon as master(8) starts it ("invalid "-o smtpd_sasl_type" option value' in text
    # Braces keep spaces in one value; flags cluster with -o.
    braced = listeners['127.0.10.1:587']
    assert (braced['offers_starttls'], braced['uncertain']) == (True, [])
    assert 'encrypt' in braced['offers_starttls_reason']
    # A word that is not an option ends the options: the -o after it is not read, and smtpd refuses it.
    stray = listeners['127.0.10.1:2525']
    assert stray['offers_starttls'] is None
    assert 'unexpected command-line argument: stray' in stray['offers_starttls_reason']
    assert stray['tls_settings']['smtpd_tls_security_level']['value'] == 'encrypt'
    assert "'stray' ends the daemon's options" in text
    assert 'invalid option: x' in listeners['127.0.10.1:2526']['offers_starttls_reason']
    assert 'invalid option: o' in listeners['127.0.10.1:2527']['offers_starttls_reason']
    # A pipe's own arguments (argv=... -oi) are not daemon options and warn of nothing.
    assert 'deliver' not in text and "'i'" not in text
    assert len([line for line in text.splitlines() if 'master.cf' in line]) == 4


def test_variable_expansion_forms():
    main = {name: {'value': value, 'where': f'main.cf:{index}'} for index, (name, value) in enumerate({
        'cert_dir': '/etc/ssl/postfix',
        'plain': '$cert_dir/a.pem',
        'braced': '${cert_dir}/b.pem',
        'paren': '$(cert_dir)/c.pem',
        'if_set': '${cert_dir?/set.pem}',
        'if_set_braces': '${cert_dir?{/yes.pem}:{/no.pem}}',
        'if_empty': '${empty_one:/fallback.pem}',
        'empty_one': '',
        'dollar': '$$literal',
        'unknown': '$not_a_parameter/x.pem',
    }.items(), 1)}
    resolver = Resolver(main, None, config_dir='/etc/postfix')
    assert resolver.value('plain')[0] == '/etc/ssl/postfix/a.pem'
    assert resolver.value('braced')[0] == '/etc/ssl/postfix/b.pem'
    assert resolver.value('paren')[0] == '/etc/ssl/postfix/c.pem'
    assert resolver.value('if_set')[0] == '/set.pem'
    assert resolver.value('if_set_braces')[0] == '/yes.pem'
    assert resolver.value('if_empty')[0] == '/fallback.pem'
    assert resolver.value('dollar')[0] == '$literal'
    value, _where, unresolved = resolver.value('unknown')
    assert value == '/x.pem' and unresolved == ['$not_a_parameter']
    assert Resolver(main, None, config_dir='/etc/pf').value('config_directory')[0] == '/etc/pf'


def test_variable_in_certificate_path_and_unresolved_source(host):
    main = basic_main(cert_dir='/etc/ssl/pf', smtpd_tls_cert_file='${cert_dir}/mail.pem',
                      smtpd_tls_key_file='$unknown_dir/mail.key')
    host.files({'/etc/postfix/main.cf': main, '/etc/postfix/master.cf': 'smtp inet n - y - - smtpd\n'})
    listener = host.gather(mtas=['postfix'])['listeners'][0]
    assert listener['binding']['certificate'] == '/etc/ssl/pf/mail.pem'
    assert listener['binding']['resolved'] is False
    assert listener['binding']['source'].startswith('unresolved: $unknown_dir')
    assert listener['tls_settings']['smtpd_tls_cert_file']['raw'] == '${cert_dir}/mail.pem'


def test_ipv6_brackets_hostnames_and_wildcards(host):
    host.write('/etc/hosts', '127.0.10.9 mailhost.test mailhost\n')
    master = """
    smtp        inet n - y - - smtpd
    [::1]:2525  inet n - y - - smtpd
    [127.0.10.3]:2526 inet n - y - - smtpd
    mailhost:2527 inet n - y - - smtpd
    """
    host.files({'/etc/postfix/main.cf': 'inet_interfaces = all\ninet_protocols = all\n'
                                        'smtpd_tls_security_level = may\n',
                '/etc/postfix/master.cf': master})
    result = host.gather(mtas=['postfix'])
    listeners = host.by_endpoint(result)
    assert sorted(listeners) == ['0.0.0.0:25', '127.0.10.3:2526', '127.0.10.9:2527', '[::1]:2525', '[::]:25']
    assert listeners['0.0.0.0:25']['probe_address'] == '127.0.0.1'
    assert listeners['[::]:25']['probe_address'] == '::1'
    assert listeners['0.0.0.0:25']['wildcard'] is True
    assert any('wildcard' in note for note in listeners['[::]:25']['notes'])
    assert listeners['[::1]:2525']['protocol'] == 'smtp'


def test_inet_interfaces_list_with_brackets_and_loopback_only(host):
    host.files({'/etc/postfix/main.cf': 'inet_interfaces = 127.0.10.1, [::1]\ninet_protocols = ipv4, ipv6\n',
                '/etc/postfix/master.cf': 'smtp inet n - y - - smtpd\n'})
    assert sorted(host.by_endpoint(host.gather(mtas=['postfix']))) == ['127.0.10.1:25', '[::1]:25']
    host.files({'/etc/postfix/main.cf': 'inet_interfaces = loopback-only\ninet_protocols = all\n'})
    assert sorted(host.by_endpoint(host.gather(mtas=['postfix']))) == ['127.0.0.1:25', '[::1]:25']


def test_multiple_instances_and_running_masters(host):
    host.files({
        '/etc/postfix/main.cf': basic_main(multi_instance_directories='/etc/postfix-b /etc/postfix-c',
                                           multi_instance_enable='yes'),
        '/etc/postfix/master.cf': 'smtp inet n - y - - smtpd\n',
        '/etc/postfix-b/main.cf': 'multi_instance_name = postfix-b\nmulti_instance_enable = yes\n'
                                  'inet_interfaces = 127.0.11.1\ninet_protocols = ipv4\n'
                                  'smtpd_tls_security_level = none\n',
        '/etc/postfix-b/master.cf': 'smtp inet n - y - - smtpd\n',
        '/etc/postfix-c/main.cf': 'inet_interfaces = 127.0.12.1\ninet_protocols = ipv4\n',
        '/etc/postfix-c/master.cf': 'smtp inet n - y - - smtpd\n',
    })
    host.process(100, 'master', ['/usr/lib/postfix/sbin/master', '-w'], environ={'MAIL_CONFIG': '/etc/postfix-b'})
    host.process(200, 'master', ['/usr/lib/postfix/sbin/master', '-c', '/etc/postfix'])
    host.process(101, 'smtpd', ['smtpd', '-n', 'smtp', '-t', 'inet', '-u'], ppid=100)
    host.listen('127.0.11.1', 25, pid=100)
    host.listen('127.0.10.1', 25, pid=200)
    result = host.gather(mtas=['postfix'])
    instances = {instance['instance']: instance for instance in result['mtas']}
    assert sorted(instances) == ['postfix', 'postfix-b', 'postfix-c']
    assert instances['postfix-b']['running'] is True and instances['postfix-b']['pid'] == 100
    assert instances['postfix']['running'] is True and instances['postfix']['pid'] == 200
    assert instances['postfix-c']['running'] is False
    assert 'multi_instance_directories' in instances['postfix-b']['config_source']
    listeners = host.by_endpoint(result)
    assert listeners['127.0.11.1:25']['instance'] == 'postfix-b'
    assert listeners['127.0.11.1:25']['offers_starttls'] is False
    assert listeners['127.0.11.1:25']['listening'] is True
    assert listeners['127.0.11.1:25']['owner']['pid'] == 100
    assert listeners['127.0.12.1:25']['listening'] is False
    # Postfix's own smtpd(8) is no OpenSMTPD.
    assert not [process for process in result['mtas'] if process['mta'] == 'opensmtpd']


def test_postscreen_uses_the_smtpd_pass_service(host):
    master = """
    smtp      inet  n       -       y       -       1       postscreen
    smtpd     pass  -       -       y       -       -       smtpd
      -o smtpd_tls_cert_file=/etc/ssl/pass.pem
    dnsblog   unix  -       -       y       -       0       dnsblog
    """
    host.files({'/etc/postfix/main.cf': basic_main(postscreen_pipelining_enable='yes'),
                '/etc/postfix/master.cf': master})
    listener = host.gather(mtas=['postfix'])['listeners'][0]
    assert listener['service'] == 'smtp'
    assert listener['binding']['certificate'] == '/etc/ssl/pass.pem'
    assert listener['binding']['source'] == '/etc/postfix/master.cf:3 -o smtpd_tls_cert_file'
    assert any('pass service' in note for note in listener['notes'])
    assert any('deep protocol tests' in note for note in listener['notes'])


def test_sni_maps_from_the_table_source(host):
    host.pem('/etc/ssl/a.key', 'PRIVATE KEY')
    host.pem('/etc/ssl/a.crt', 'CERTIFICATE')
    host.write('/etc/postfix/sni', """
    # name        chain files
    mail.a.test   /etc/ssl/a.key /etc/ssl/a.crt
    .b.test       /etc/ssl/b.pem
    """)
    host.files({'/etc/postfix/main.cf': basic_main(tls_server_sni_maps='hash:/etc/postfix/sni, pcre:/etc/x.pcre'),
                '/etc/postfix/master.cf': 'smtp inet n - y - - smtpd\n'})
    sni = host.gather(mtas=['postfix'])['listeners'][0]['binding']['sni']
    assert len(sni) == 3
    named = {entry['name']: entry for entry in sni if entry['name']}
    assert named['mail.a.test']['certificate'] == '/etc/ssl/a.crt'
    assert named['mail.a.test']['key'] == '/etc/ssl/a.key'
    assert named['mail.a.test']['source'] == '/etc/postfix/sni:2 (tls_server_sni_maps)'
    assert '.b.test' in named
    assert [entry for entry in sni if entry['name'] is None][0]['source'].startswith('unresolved: pcre:/etc/x.pcre')


def test_odd_lines_become_warnings_and_the_rest_still_works(host):
    main = basic_main() + 'this line has no equals sign\n'
    master = MASTER_BASIC + 'broken inet n -\n' + '127.0.0.1:10023 inet n - n - - spawn user=nobody argv=/bin/true\n'
    host.files({'/etc/postfix/main.cf': main, '/etc/postfix/master.cf': master})
    host.listen('127.0.0.1', 10023)
    result = host.gather(mtas=['postfix'])
    text = host.warnings_text(result)
    assert '/etc/postfix/main.cf:6: cannot parse main.cf line' in text
    assert '/etc/postfix/master.cf:9: master.cf entry has 4 fields' in text
    assert len(result['listeners']) == 3
    # A policy service on inet is known, so its socket is not "unmatched".
    assert result['unmatched_sockets'] == []
    assert result['mtas'][0]['other_listeners'][0]['command'] == 'spawn'


def test_unknown_port_name_is_a_warning(host):
    host.files({'/etc/postfix/main.cf': basic_main(),
                '/etc/postfix/master.cf': 'no-such-service inet n - y - - smtpd\nsmtp inet n - y - - smtpd\n'})
    result = host.gather(mtas=['postfix'])
    assert len(result['listeners']) == 1
    assert "unknown port 'no-such-service'" in host.warnings_text(result)


def test_logical_lines_numbers():
    text = 'a = 1\n  continued\n# comment\n\nb = 2\n'
    assert [(number, line) for number, line, _where in logical_lines(text)] == [(1, 'a = 1 continued'), (5, 'b = 2')]
