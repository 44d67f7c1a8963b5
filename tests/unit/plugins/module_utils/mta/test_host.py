# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""gather_host: processes, sockets, matching, hooks, guards and cost, over a fixture host."""

from __future__ import annotations

import json
import resource

import pytest

from ansible_collections.mailsec.starttls.plugins.module_utils import _host
from ansible_collections.mailsec.starttls.plugins.module_utils._host import classify_process
from ansible_collections.mailsec.starttls.plugins.module_utils._mta import ADAPTERS
from ansible_collections.mailsec.starttls.plugins.module_utils._mta.base import MtaAdapter
from ansible_collections.mailsec.starttls.plugins.module_utils._procnet import decode_address, decode_endpoint

POSTFIX = {
    '/etc/postfix/main.cf': 'inet_interfaces = 127.0.10.1\ninet_protocols = ipv4\nsmtpd_tls_security_level = may\n'
                            'smtpd_tls_cert_file = /etc/ssl/mail.pem\nsmtpd_tls_key_file = /etc/ssl/mail.key\n',
    '/etc/postfix/master.cf': 'smtp inet n - y - - smtpd\nsubmission inet n - y - - smtpd\n',
}


def test_decode_address():
    assert decode_address('0100007F') == '127.0.0.1'
    assert decode_address('00000000000000000000000001000000') == '::1'
    assert decode_address('0000000000000000FFFF00000A00007F') == '127.0.0.10'
    assert decode_address('00000000000000000000000000000000') == '::'


@pytest.mark.parametrize('address, port', [
    ('127.0.0.1', 25), ('127.0.10.1', 587), ('0.0.0.0', 0), ('255.255.255.255', 65535),
    ('::1', 143), ('::', 993), ('2001:db8::7', 4190), ('fe80::1:2:3:4', 24),
])
def test_fixture_encoder_is_the_inverse_of_the_decoder(host, address, port):
    # The fixture host writes /proc/net tables with tcp_hex; the lab and _host read them with
    # decode_endpoint: both directions of one format, held together here.
    assert decode_endpoint(host.tcp_hex(address, port)) == (address, port)


def test_ipv4_mapped_sockets_decode_as_ipv4(host):
    assert decode_endpoint(host.tcp_hex('::ffff:127.0.0.10', 25)) == ('127.0.0.10', 25)


@pytest.mark.parametrize('column', ['0100007F', '0100007F:', 'XYZ:0019', '0100:0019'])
def test_malformed_columns_are_value_errors(column):
    with pytest.raises(ValueError):
        decode_endpoint(column)


def test_classify_process():
    table = {1: {'comm': 'systemd'}, 10: {'comm': 'master'}, 20: {'comm': 'smtpd'}}

    def classify(comm, argv, ppid=1):
        return classify_process({'comm': comm, 'argv': argv, 'ppid': ppid}, table)

    assert classify('master', ['/usr/lib/postfix/sbin/master', '-w']) == ('postfix', 'master')
    assert classify('master', ['/usr/bin/some-other-master']) == (None, None)
    assert classify('smtpd', ['smtpd', '-n', 'smtp', '-t', 'inet'], ppid=10) == (None, None)
    assert classify('smtpd', ['/usr/sbin/smtpd', '-f', '/etc/smtpd.conf']) == ('opensmtpd', 'master')
    assert classify('smtpd', ['smtpd:', 'klondike'], ppid=20) == ('opensmtpd', 'child')
    assert classify('exim4', ['/usr/sbin/exim4', '-bdf', '-q30m']) == ('exim', 'master')
    assert classify('exim4', ['/usr/sbin/exim4', '-Mc', 'id']) == (None, None)
    assert classify('sendmail', ['sendmail:', 'MTA:', 'accepting', 'connections']) == ('sendmail', 'master')
    assert classify('sendmail', ['/usr/sbin/sendmail', '-t']) == (None, None)
    assert classify('dovecot', ['/usr/sbin/dovecot']) == ('dovecot', 'master')


def test_configured_but_not_listening_and_listening_but_not_configured(host):
    host.files(POSTFIX)
    host.process(100, 'master', ['/usr/lib/postfix/sbin/master', '-w'], environ={})
    host.process(101, 'smtpd', ['smtpd', '-n', 'smtp', '-t', 'inet'], ppid=100)
    host.listen('127.0.10.1', 25, pid=100)        # configured and open
    host.listen('127.0.10.1', 2525, pid=100)      # open by the master, not in master.cf
    host.listen('0.0.0.0', 465, pid=None)         # a mail port, owner unknown
    host.listen('127.0.0.1', 8080, pid=None)      # not mail: ignored
    host.process(700, 'sshd', ['/usr/sbin/sshd'])
    host.listen('0.0.0.0', 22, pid=700)           # not mail: ignored
    result = host.gather(mtas=['postfix'])
    listeners = host.by_endpoint(result)
    assert listeners['127.0.10.1:25']['listening'] is True
    assert listeners['127.0.10.1:25']['owner'] == {'pid': 100, 'process': 'master', 'socket': '127.0.10.1:25'}
    assert listeners['127.0.10.1:587']['listening'] is False
    unmatched = {(item['address'], item['port']): item for item in result['unmatched_sockets']}
    assert sorted(unmatched) == [('0.0.0.0', 465), ('127.0.10.1', 2525)]
    assert unmatched[('127.0.10.1', 2525)]['mta'] == 'postfix'
    assert unmatched[('127.0.10.1', 2525)]['pid'] == 100
    assert unmatched[('0.0.0.0', 465)]['protocol_guess'] == 'smtps'
    assert result['mtas'][0]['running'] is True
    json.dumps(result)  # the result travels as module output: plain JSON only


def test_specific_listener_served_by_own_wildcard_socket(host):
    host.files(POSTFIX)
    host.process(100, 'master', ['/usr/lib/postfix/sbin/master'], environ={})
    host.listen('0.0.0.0', 25, pid=100)
    host.listen('::', 587, pid=None)
    listeners = host.by_endpoint(host.gather(mtas=['postfix']))
    assert listeners['127.0.10.1:25']['listening'] is True
    assert any('wildcard socket' in note for note in listeners['127.0.10.1:25']['notes'])
    # A wildcard socket of someone else does not count, but is mentioned.
    assert listeners['127.0.10.1:587']['listening'] is False
    assert any('is open' in note for note in listeners['127.0.10.1:587']['notes'])


def test_hooks_store_inspector_once_per_binding_and_probe(host):
    host.files(POSTFIX)
    calls = []

    class Inspector:
        def inspect(self, cert_path, key_path, chain_paths, reader_user, expected_names):
            calls.append((cert_path, key_path, tuple(chain_paths), reader_user))
            return {'usable': True}

    def probe(listeners):
        return {listener['id']: {'target': listener['probe_address']} for listener in listeners}

    result = host.gather(mtas=['postfix'], store_inspector=Inspector(), probe=probe)
    assert calls == [('/etc/ssl/mail.pem', '/etc/ssl/mail.key', (), 'root')]
    for listener in result['listeners']:
        assert listener['store'] == {'usable': True}
        assert listener['probe'] == {'target': '127.0.10.1'}


def test_hook_failures_are_values(host):
    host.files(POSTFIX)

    class Broken:
        def inspect(self, *args):
            raise ValueError('bad file')

    def probe(listeners):
        raise RuntimeError('engine down')

    result = host.gather(mtas=['postfix'], store_inspector=Broken(), probe=probe)
    assert result['listeners'][0]['store']['error'] == 'ValueError: bad file'
    assert 'probe hook failed: RuntimeError: engine down' in host.warnings_text(result)


def test_a_failing_adapter_does_not_hide_the_others(host, monkeypatch):
    class Exploding(MtaAdapter):
        name = 'exploding'

        def detect(self, ctx):
            raise KeyError('surprise')

    class ExplodingListeners(MtaAdapter):
        name = 'half'

        def detect(self, ctx):
            return [{'mta': 'half', 'instance': 'half'}]

        def listeners(self, ctx, instance):
            raise ZeroDivisionError('division by zero')

    monkeypatch.setitem(ADAPTERS, 'exploding', Exploding)
    monkeypatch.setitem(ADAPTERS, 'half', ExplodingListeners)
    host.files(POSTFIX)
    result = host.gather(mtas=['exploding', 'half', 'postfix', 'nonesuch'])
    text = host.warnings_text(result)
    assert "exploding detection failed: KeyError: 'surprise'" in text
    assert 'half listeners failed: ZeroDivisionError: division by zero' in text
    assert "unknown MTA 'nonesuch'" in text
    assert len(result['listeners']) == 2


def test_unreadable_environment_is_reported(host, monkeypatch):
    host.files(POSTFIX)
    host.process(100, 'master', ['/usr/lib/postfix/sbin/master', '-w'])
    real_open = open

    def guarded_open(path, *args, **kwargs):
        if str(path).endswith('/100/environ'):
            raise PermissionError(13, 'Permission denied')
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(_host, 'open', guarded_open, raising=False)
    result = host.gather(mtas=['postfix'])
    assert result['mtas'][0]['running'] is None
    seen = ' '.join(item['what'] for item in result['not_visible'])
    assert 'environ' in seen and 'cannot tell which instance' in seen


def test_no_socket_table_means_unknown(host):
    import os
    os.remove(host.path('/proc/net/tcp'))
    os.remove(host.path('/proc/net/tcp6'))
    host.files(POSTFIX)
    result = host.gather(mtas=['postfix'])
    assert {listener['listening'] for listener in result['listeners']} == {None}
    assert any('tcp' in item['what'] for item in result['not_visible'])


def test_nothing_installed(host):
    result = host.gather()
    assert result['mtas'] == [] and result['listeners'] == [] and result['unmatched_sockets'] == []


def test_cost_three_mtas_twenty_listeners(host):
    """The gather's own CPU for 3 MTAs and 20+ listeners stays far below the 0.3 s budget."""
    host.files(POSTFIX)
    host.write('/etc/postfix/master.cf', ''.join(f'127.0.10.{index}:smtp inet n - y - - smtpd\n'
                                                 for index in range(1, 9)))
    host.write('/etc/dovecot/dovecot.conf', 'protocols = imap pop3\nlisten = 127.0.30.1, 127.0.30.2\n'
                                            'ssl_cert = </etc/ssl/d.pem\nssl_key = </etc/ssl/d.key\n')
    host.write('/etc/exim/configure', 'daemon_smtp_ports = 25 : 465 : 587\ntls_on_connect_ports = 465\n'
                                      'local_interfaces = 127.0.20.1 : 127.0.20.2\n'
                                      'tls_certificate = ${if eq{$received_port}{587}{/a.crt}{/b.crt}}\n')
    for index in range(1, 9):
        host.listen(f'127.0.10.{index}', 25)
    before = resource.getrusage(resource.RUSAGE_SELF)
    result = host.gather(config_paths={'exim': ['/etc/exim/configure']})
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert len(result['listeners']) >= 20
    assert {item['mta'] for item in result['mtas']} == {'postfix', 'dovecot', 'exim'}
    assert cpu < 0.3, cpu
    assert result['cost']['cpu_seconds'] < 0.3


def test_daemon_in_another_network_namespace(host):
    host.files(POSTFIX)
    host.namespaces('self', 'net:[1]')
    host.process(100, 'master', ['/usr/lib/postfix/sbin/master', '-w'], environ={})
    host.namespaces(100, 'net:[2]', 'mnt:[2]')
    host.listen_in_namespace(100, '127.0.10.1', 25)
    host.listen('127.0.10.1', 587)  # same address in this namespace: someone else's socket
    result = host.gather(mtas=['postfix'], network_namespaces='all')
    listeners = host.by_endpoint(result)
    assert listeners['127.0.10.1:25']['listening'] is True
    assert any('network namespace net:[2]' in note for note in listeners['127.0.10.1:25']['notes'])
    assert listeners['127.0.10.1:587']['listening'] is False
    assert result['mtas'][0]['net_namespace'] == 'net:[2]'
    assert any('mount namespace mnt:[2]' in note for note in result['mtas'][0]['notes'])
    assert [(item['port'], item['net_namespace']) for item in result['unmatched_sockets']] == [(587, None)]


def test_daemon_in_another_network_namespace_is_named_not_inspected_by_default(host):
    host.namespaces('self', 'net:[1]')
    host.process(100, 'master', ['/usr/lib/postfix/sbin/master', '-c', '/srv/container/postfix'], environ={})
    host.namespaces(100, 'net:[2]', 'mnt:[2]')
    host.listen_in_namespace(100, '127.0.10.1', 25)
    result = host.gather(mtas=['postfix'])
    assert result['listeners'] == []
    assert result['unmatched_sockets'] == []
    warnings = [warning['message'] for warning in result['warnings']]
    assert any('master process(es) 100 run in another network namespace (net:[2]' in text for text in warnings), warnings


def test_hidden_namespace_without_root_means_unknown(host):
    host.files(POSTFIX)
    host.namespaces('self', 'net:[1]')
    host.process(100, 'master', ['/usr/lib/postfix/sbin/master', '-w'], environ={})  # no ns links: hidden
    result = host.gather(mtas=['postfix'])
    assert {listener['listening'] for listener in result['listeners']} == {None}
