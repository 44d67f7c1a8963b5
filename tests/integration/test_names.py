# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Targets given as names (issue 12): resolved by the system resolver, every address probed, each
result naming its address, and never a DNS query. The test owns the hosts file: ansible runs in a
mount namespace of its own where /etc/hosts gives mx.lab.test two lab addresses and /etc/resolv.conf
points at a UDP sink on loopback that counts every query."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from conftest import ansible_bin, bind_udp_sink, drain

NAME = 'mx.lab.test'
# A compliant Postfix listener and the KB Q237327 one (STARTTLS advertised, certificate missing: 454).
ADDRESSES = ('127.0.10.1', '127.0.10.2')
# Not the lab's 127.0.99.53: test_lab_harness holds a sink there for the whole session.
RESOLVER = '127.0.99.54'

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: AUDIT | Probe the MX by name
      mailsec.starttls.listener_probe:
        targets: ['{name}:25/smtp', '127.0.10.1:587/submission']
        timeout: 5
      register: by_name
    - name: AUDIT | Judge the MX listed by name
      mailsec.starttls.fleet_assess:
        hosts: [localhost]
        report_dir: '{reports}'
        fail: false
        probe_options: {{timeout: 5}}
    - name: REPORT | Keep the probes
      ansible.builtin.copy:
        content: '{{{{ by_name.probes | to_json }}}}'
        dest: '{result}'
        mode: '0600'
"""


@pytest.fixture(scope='module')
def resolver_sink():
    sink = bind_udp_sink(RESOLVER)
    if sink is None:
        pytest.fail(f'{RESOLVER}:53 is taken: the test cannot count DNS queries')
    yield sink
    sink.close()


@pytest.fixture(scope='module')
def probed_by_name(lab, ansible_env, resolver_sink, tmp_path_factory):  # pylint: disable=unused-argument
    unshare = shutil.which('unshare')
    if unshare is None:
        pytest.skip('unshare (util-linux) is needed to give the test a hosts file of its own')
    work = tmp_path_factory.mktemp('names')
    hosts = work / 'hosts'
    hosts.write_text('127.0.0.1 localhost\n' + ''.join(f'{address} {NAME}\n' for address in ADDRESSES))
    resolv = work / 'resolv.conf'
    resolv.write_text(f'nameserver {RESOLVER}\noptions timeout:1 attempts:1\n')
    inventory = work / 'inventory.json'
    inventory.write_text(json.dumps({'all': {'hosts': {'localhost': {
        'ansible_connection': 'local', 'starttls_listeners': [f'{NAME}:25/smtp']}}}}))
    playbook = work / 'play.yml'
    result = work / 'probes.json'
    playbook.write_text(PLAYBOOK.format(name=NAME, reports=work / 'reports', result=result))
    script = (f'mount --bind {hosts} /etc/hosts && mount --bind {resolv} /etc/resolv.conf && '
              f'exec {ansible_bin("ansible-playbook")} -i {inventory} {playbook}')
    completed = subprocess.run([unshare, '--mount', '--propagation', 'private', 'sh', '-c', script],
                               env=ansible_env, capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]
    return {'probes': json.loads(result.read_text()),
            'report': json.loads((work / 'reports' / 'starttls-report.json').read_text()),
            'queries': drain(resolver_sink)}


def test_every_address_of_a_name_is_probed_and_says_which_it_was(probed_by_name):
    probes = probed_by_name['probes']
    by_name = [probe for probe in probes if probe['target']['name'] == NAME]
    assert [probe['target']['address'] for probe in by_name] == list(ADDRESSES)
    assert [probe['peer_address'] for probe in by_name] == list(ADDRESSES)
    assert by_name[0]['tls']['established'] is True
    assert by_name[1]['starttls_reply']['code'] == '454'
    literal = [probe for probe in probes if probe['target']['name'] is None]
    assert [probe['target']['address'] for probe in literal] == ['127.0.10.1']


def test_the_listener_listed_by_name_is_judged_with_the_evidence_of_each_address(probed_by_name):
    report = probed_by_name['report']
    found = [finding for finding in report['findings'] if finding['id'] == 'starttls-advertised-without-certificate']
    assert [finding["listener"]["address"] for finding in found] == [NAME], (report["findings"], report["listeners"])
    assert found[0]['evidence']['probe']['target'] == '127.0.10.2:25'
    assert found[0]['evidence']['probe']['name'] == NAME


def test_no_dns_query_was_made(probed_by_name):
    assert probed_by_name['queries'] == []
