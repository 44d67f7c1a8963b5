# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The opt-in DNS step of fleet_assess (option `dns_checks`): read what the mail domains publish
(_mail_dns), judge it against the fleet (_dane), and keep the MTA-STS state between audits so
that a policy changed under an unchanged id is seen."""

from __future__ import annotations

import ipaddress
import json
import os

from ansible_collections.mailsec.starttls.plugins.plugin_utils import _dane, _mail_dns

DNS_CHECKS_SPEC = {
    'enabled': {'type': 'bool', 'default': True},
    'domains': {'type': 'list', 'elements': 'str', 'default': []},
    'mx_names': {'type': 'list', 'elements': 'str', 'default': []},
    'resolvers': {'type': 'list', 'elements': 'str', 'default': []},
    'ca_file': {'type': 'path'},
    'port': {'type': 'int', 'default': 25},
    'https_port': {'type': 'int', 'default': 443},
    'timeout': {'type': 'float', 'default': 5.0},
    'state_file': {'type': 'path'},
}


def _is_dns_name(name) -> bool:
    if not isinstance(name, str) or '.' not in name:
        return False
    try:
        ipaddress.ip_address(name)
        return False
    except ValueError:
        return True


def mx_names_of_fleet(hosts: list, hostvars: dict) -> list:
    """Without domains or MX names: the fleet's hosts by the DNS names they are known by."""
    names = []
    for host in hosts:
        for name in (host, (hostvars.get(host) or {}).get('ansible_host')):
            if _is_dns_name(name) and name.lower() not in names:
                names.append(name.lower())
    return names


def read_state(path: str | None) -> dict:
    if not path or not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding='utf-8') as handle:
            state = json.load(handle)
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def write_state(path: str | None, domains: list) -> None:
    if not path:
        return
    state = read_state(path)
    for domain in domains:
        if domain.get('policy_sha256'):
            state[domain['domain']] = domain
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temporary = f'{path}.tmp'
    with open(temporary, 'w', encoding='utf-8') as handle:
        json.dump(state, handle, indent=2, sort_keys=True)
    os.replace(temporary, path)


class DnsStep:
    """Gathers once, then judges as the report pipeline's `extra_findings` hook."""

    def __init__(self, options: dict, hosts: list, hostvars: dict, host_results: list, host_addresses: dict,
                 severity: dict):
        self.options = options
        mx_names = list(options['mx_names'])
        if not options['domains'] and not mx_names:
            mx_names = mx_names_of_fleet(hosts, hostvars)
        self.gathered = _mail_dns.gather(options['domains'], mx_names, options['resolvers'] or None,
                                         ca_file=options['ca_file'], port=options['port'],
                                         https_port=options['https_port'], timeout=options['timeout'])
        self.judge_options = {
            'severity': severity, 'host_addresses': host_addresses,
            'next_keys': {result.get('host'): result.get('next_keys') or [] for result in host_results},
            'previous': read_state(options['state_file']),
        }
        self.outcome: dict = {}

    def __call__(self, listeners: list, probes: list, findings: list) -> list:
        self.outcome = _dane.judge(self.gathered, listeners, probes, self.judge_options)
        write_state(self.options['state_file'], self.outcome['domains'])
        return _dane.merge(findings, self.outcome['findings'])

    def result(self) -> dict:
        """What the task returns under `dns`: the answers, the judgement summary and the zone lines."""
        return {
            'resolvers': self.gathered['resolvers'],
            'domains': [dict(domain, policy={key: item for key, item in domain['policy'].items() if key != 'body'}
                             if domain.get('policy') else None)
                        for domain in self.gathered['domains']],
            'mx_hosts': self.gathered['mx_hosts'],
            'mta_sts': self.outcome.get('domains', []),
            'tlsa': self.outcome.get('mx', []),
            'tlsa_publish': _dane.publish_lines(self.outcome.get('mx', [])),
            'queries': len(self.gathered['asked']),
            'asked': self.gathered['asked'],
        }
