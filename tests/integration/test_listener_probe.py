# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""listener_probe through real ansible runs against the real MTAs of the lab, directly and via a jump host."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import ansible_bin

PROBE_PLAY = """
- name: Probe the lab
  hosts: localhost
  gather_facts: false
  tasks:
    - name: AUDIT | Probe every listener
      mailsec.starttls.listener_probe:
        targets: "{{ targets }}"
        vantage: "{{ vantage | default(omit) }}"
        try_starttls_when_not_advertised: "{{ try_starttls | default(false) }}"
        jump_host: "{{ jump_host | default(omit) }}"
        processes: "{{ processes | default(omit) }}"
        timeout: 5
        deadline: 20
      register: starttls_probe
    - name: REPORT | Keep the result for the test
      ansible.builtin.copy:
        content: "{{ starttls_probe | to_json }}"
        dest: "{{ result_file }}"
        mode: '0600'
      check_mode: false
"""


def running_listeners(manifest: dict) -> list:
    return [listener for listener in manifest['listeners'] if listener['expect'].get('starts', True)]


def targets_of(listeners: list) -> list:
    return [{'address': item['address'], 'port': item['port'], 'protocol': item['protocol']} for item in listeners]


def mismatches(listeners: list, probes: list, tried_anyway: bool = False) -> list:
    """Every difference between what the real server is known to do and what the probe saw.

    The lab records the reply to STARTTLS also where it is not advertised; the probe only asks
    there when told to try anyway.
    """
    found = []
    for listener, probe in zip(listeners, probes):
        expect, name = listener['expect'], listener['id']
        tls = probe['tls'] or {}
        checks = [
            ('connected', True, probe['connected']),
            ('handshake', expect.get('handshake'), tls.get('established') if tls else (False if expect.get('handshake') is False else None)),
            ('cert_sha256', expect.get('cert_sha256'), (probe['certificate'] or {}).get('sha256')),
        ]
        if listener['protocol'] not in ('smtps', 'imaps', 'pop3s'):
            checks.append(('advertised', expect.get('advertised'), probe['starttls_advertised']))
            if expect.get('advertised') or tried_anyway:
                checks.append(('starttls_code', expect.get('starttls_code'),
                               (probe['starttls_reply'] or {}).get('code')))
        for what, wanted, seen in checks:
            if wanted is not None and wanted != seen:
                found.append(f'{name}: {what} expected {wanted!r}, probe saw {seen!r} (error: {probe["error"]})')
    return found


def test_playbook_probe_matches_what_each_real_server_does(lab, run_playbook):
    listeners = running_listeners(lab)
    assert len(listeners) >= 10, 'the lab should offer many listeners'
    outcome = run_playbook(PROBE_PLAY, {'targets': targets_of(listeners), 'vantage': 'controller',
                                        'try_starttls': True})
    probes = outcome['result']['probes']
    assert len(probes) == len(listeners)
    assert [p['target']['port'] for p in probes] == [item['port'] for item in listeners]
    assert mismatches(listeners, probes, tried_anyway=True) == []
    assert all(p['vantage'] == 'controller' for p in probes)
    assert outcome['result']['changed'] is False
    # The KB Q237327 state exists in the lab and is seen as such: advertised, then refused.
    kb_state = [p for p in probes if p['starttls_advertised'] and (p['starttls_reply'] or {}).get('code') == '454']
    assert kb_state, 'no listener advertised STARTTLS and answered 454'


def test_several_processes_see_what_one_process_sees(lab, run_playbook):
    """Three forked processes, each with its own addresses of the lab, give the same answers in the
    order of the targets."""
    listeners = running_listeners(lab)
    assert len({item['address'] for item in listeners}) >= 3
    outcome = run_playbook(PROBE_PLAY, {'targets': targets_of(listeners), 'try_starttls': True, 'processes': 3})
    probes = outcome['result']['probes']
    assert [(p['target']['address'], p['target']['port']) for p in probes] == [
        (item['address'], item['port']) for item in listeners]
    assert mismatches(listeners, probes, tried_anyway=True) == []
    # Our own defects say 'internal error: ...' (a TLS alert from a server may say 'internal error' too).
    assert not [(p['target'], p['error']) for p in probes
                if ((p['error'] or {}).get('message') or '').startswith('internal error:')]


def test_check_mode_probes_too(lab, run_playbook):
    listeners = running_listeners(lab)[:3]
    outcome = run_playbook(PROBE_PLAY, {'targets': targets_of(listeners)}, args=('--check',))
    assert mismatches(listeners, outcome['result']['probes']) == []


def test_adhoc_command(lab, ansible_env):
    listener = next(item for item in running_listeners(lab) if item['expect'].get('handshake'))
    arguments = json.dumps({'targets': [f"{listener['address']}:{listener['port']}/{listener['protocol']}"]})
    completed = subprocess.run([ansible_bin('ansible'), 'localhost', '-c', 'local', '-i', 'localhost,',
                                '-m', 'mailsec.starttls.listener_probe', '-a', arguments],
                               env=ansible_env, capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    payload = json.loads(completed.stdout.split('=>', 1)[1])
    assert payload['probes'][0]['tls']['established'] is True
    assert payload['summary']['tls_established'] == 1


def test_bad_target_fails_the_task_with_a_clear_message(run_playbook):
    outcome = run_playbook(PROBE_PLAY, {'targets': ['127.0.0.1:2525']}, expect_rc=2)
    assert 'give a protocol' in outcome['stdout']


def test_jump_host_sees_the_same(lab, sshd, run_playbook):
    listeners = running_listeners(lab)
    jump = {key: sshd[key] for key in ('host', 'port', 'user', 'private_key_file', 'known_hosts_file')}
    outcome = run_playbook(PROBE_PLAY, {'targets': targets_of(listeners), 'jump_host': jump})
    probes = outcome['result']['probes']
    assert mismatches(listeners, probes) == []
    assert {p['vantage'] for p in probes} == {f"jump:{sshd['host']}"}


def test_jump_host_with_unknown_host_key_is_refused_per_probe(lab, sshd, run_playbook):
    listeners = running_listeners(lab)[:2]
    jump = {key: sshd[key] for key in ('host', 'port', 'user', 'private_key_file')}
    outcome = run_playbook(PROBE_PLAY, {'targets': targets_of(listeners), 'jump_host': jump})
    probes = outcome['result']['probes']
    assert [p['connected'] for p in probes] == [False, False]
    assert all(p['error']['stage'] == 'connect' and 'not found in known_hosts' in p['error']['message']
               for p in probes), [p['error'] for p in probes]


@pytest.mark.parametrize('protocol', ['smtp', 'imap', 'pop3', 'sieve'])
def test_every_protocol_is_represented(lab, protocol):
    assert any(item['protocol'] == protocol for item in running_listeners(lab)), f'the lab has no {protocol} listener'
