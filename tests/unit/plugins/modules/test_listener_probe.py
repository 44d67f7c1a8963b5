# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The listener_probe module as Ansible calls it: arguments in, one JSON result out."""

from __future__ import annotations

import socket

import pytest

from ansible_collections.mailsec.starttls.plugins.modules import listener_probe
from ansible_collections.mailsec.starttls.tests.unit.plugins.scripted_server import smtp_starttls_refused


@pytest.fixture
def smtp_server(scripted):
    """The port of a scripted SMTP listener that refuses STARTTLS like a Postfix without certificate."""
    return scripted(smtp_starttls_refused()).port


def test_module_returns_probes_and_summary(run_module, smtp_server):
    result = run_module(listener_probe, {'targets': [f'127.0.0.1:{smtp_server}/smtp'], 'vantage': 'unit', 'timeout': 3})
    assert result['changed'] is False
    assert result.get('failed') is not True
    probe = result['probes'][0]
    assert probe['vantage'] == 'unit'
    assert probe['starttls_advertised'] is True
    assert probe['starttls_reply']['code'] == '454'
    assert result['summary'] == {'targets': 1, 'connected': 1, 'starttls_advertised': 1, 'tls_established': 0,
                                 'errors': 0}


def test_module_returns_compact_records_by_default(run_module, smtp_server):
    result = run_module(listener_probe, {'targets': [f'127.0.0.1:{smtp_server}/smtp'], 'vantage': 'unit', 'timeout': 3})
    assert result['detail'] == 'compact'
    probe = result['probes'][0]
    assert 'capabilities' not in probe and 'capabilities_after_tls' not in probe
    assert probe['target'] == {'address': '127.0.0.1', 'port': smtp_server, 'protocol': 'smtp', 'sni': None,
                               'name': None}
    assert set(probe['timings_ms']) == {'total'}
    assert probe['tls'] is None and probe['certificate'] is None


def test_module_returns_full_records_when_asked(run_module, smtp_server):
    result = run_module(listener_probe, {'targets': [f'127.0.0.1:{smtp_server}/smtp'], 'timeout': 3, 'detail': 'full'})
    assert result['detail'] == 'full'
    probe = result['probes'][0]
    assert 'STARTTLS' in probe['capabilities']
    assert probe['capabilities_reply']['code'] == '250' and 'STARTTLS' in probe['capabilities_reply']['text']
    assert probe['target']['sni'] is None and probe['target']['name'] is None
    assert {'connect', 'greeting', 'capabilities', 'starttls', 'total'} <= set(probe['timings_ms'])


def test_module_refuses_an_unknown_detail(run_module):
    result = run_module(listener_probe, {'targets': ['127.0.0.1:25'], 'detail': 'everything'})
    assert result['failed'] is True and 'detail' in result['msg']


def test_module_runs_in_check_mode(run_module, smtp_server):
    result = run_module(listener_probe, {'targets': [f'127.0.0.1:{smtp_server}/smtp'], '_ansible_check_mode': True})
    assert result['probes'][0]['starttls_reply']['code'] == '454'


def test_module_fails_on_a_target_it_cannot_use(run_module):
    result = run_module(listener_probe, {'targets': ['127.0.0.1:2525']})
    assert result['failed'] is True
    assert 'targets[0]' in result['msg'] and 'give a protocol' in result['msg']


def test_unreachable_jump_host_is_reported_per_probe(run_module):
    pytest.importorskip('paramiko')
    result = run_module(listener_probe, {'targets': ['127.0.0.1:25', '127.0.0.1:143'],
                                         'jump_host': {'host': '127.0.0.1', 'port': 1}, 'timeout': 2})
    assert result.get('failed') is not True
    assert [p['connected'] for p in result['probes']] == [False, False]
    assert all(p['error']['stage'] == 'connect' and 'jump host 127.0.0.1' in p['error']['message']
               for p in result['probes'])
    assert {p['vantage'] for p in result['probes']} == {'jump:127.0.0.1'}


@pytest.mark.parametrize('arguments, message', [
    ({'ehlo_name': 'probe.example\r\nMAIL FROM:<a@example.org>'}, 'ehlo_name contains the control character \\x0d'),
    ({'ehlo_name': 'pr\u00f6be.example'}, 'ehlo_name contains the non-ASCII character'),
    ({'timeout': float('nan')}, 'timeout must be a finite number'),
    ({'deadline': 'inf'}, 'deadline must be a finite number'),
    ({'jump_host': {'host': '127.0.0.1', 'port': 70000}}, 'jump_host.port 70000 is out of range'),
    ({'targets': [{'address': '127.0.0.1', 'port': 25.9, 'protocol': 'smtp'}]}, 'targets[0]: target 127.0.0.1: port'),
    ({'targets': [{'address': '127.0.0.1', 'port': 25, 'sni': 'a\x00b'}]}, 'sni contains the control character \\x00'),
])
def test_hostile_options_fail_the_module_before_any_connection(run_module, arguments, message):
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(4)
    listener.settimeout(0.2)
    try:
        arguments = dict({'targets': [f'127.0.0.1:{listener.getsockname()[1]}/smtp']}, **arguments)
        result = run_module(listener_probe, arguments)
        with pytest.raises(socket.timeout):
            listener.accept()
    finally:
        listener.close()
    assert result['failed'] is True
    assert message in result['msg']
    assert 'internal error' not in result['msg']


def test_paramiko_is_imported_only_for_a_jump_host():
    """Importing paramiko costs every module run 0.1-0.2 s; only a probe through a jump host needs it."""
    import os  # pylint: disable=import-outside-toplevel
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel
    code = ('import sys\n'
            'from ansible_collections.mailsec.starttls.plugins.modules import listener_probe\n'
            'print("paramiko" in sys.modules)\n')
    completed = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                               env=dict(os.environ, PYTHONPATH=os.pathsep.join(path for path in sys.path if path)))
    assert completed.stdout.strip() == 'False'
