# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The DANE TLSA records to publish, in zone-file form (documentation: tlsa_records.yml)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.mailsec.starttls.plugins.module_utils import _host_result, _tlsa


def tlsa_records(evidence, mx_name=None, port=25, ttl=None, next_keys=True):
    """Zone lines for the keys bound on a host and staged for its next renewal (an mta_tls_info
    result and the MX name), or the lines fleet_assess computed (its `dns` result)."""
    if not isinstance(evidence, dict):
        raise AnsibleFilterError('tlsa_records: expects an mta_tls_info result or the dns result of fleet_assess')
    if 'tlsa_publish' in evidence:
        return list(evidence['tlsa_publish'])
    if not mx_name:
        raise AnsibleFilterError('tlsa_records: an mta_tls_info result needs the MX name')
    owner = _tlsa.tlsa_owner(str(mx_name), int(port))
    lines: list = []

    def add(digests, comment):
        for line in _tlsa.zone_lines(owner, digests or {}, ttl=ttl, comment=comment):
            if line.startswith(';') or line not in lines:
                lines.append(line)

    seen = set()
    for listener in _host_result.listeners_of(evidence):
        store = (listener.get('binding') or {}).get('store') or listener.get('store') or {}
        for part in store if isinstance(store, list) else [store]:
            key = ((part or {}).get('tlsa') or {}).get('key') or {}
            if key.get('spki_sha256') and key['spki_sha256'] not in seen and int(listener.get('port') or 0) == int(port):
                seen.add(key['spki_sha256'])
                add(key, f"current key: {(listener.get('binding') or {}).get('key')}")
    if next_keys:
        for key in evidence.get('next_keys') or []:
            if key.get('spki_sha256') and key['spki_sha256'] not in seen:
                seen.add(key['spki_sha256'])
                add(key, f"next key: {key.get('path')} ({key.get('source')})")
    return lines


class FilterModule:
    def filters(self):
        return {'tlsa_records': tlsa_records}
