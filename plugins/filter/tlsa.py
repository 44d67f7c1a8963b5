# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The DANE TLSA records to publish, in zone-file form (documentation: tlsa_records.yml)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.mailsec.starttls.plugins.module_utils import _host_result
from ansible_collections.mailsec.starttls.plugins.plugin_utils import _dane


def tlsa_records(evidence, mx_name=None, port=25, ttl=None, next_keys=True, dns=None, host=None, mx_names=None,
                 detail=None):
    """Zone lines for the keys bound on a host and staged for its next renewal (an mta_tls_info
    result and the MX name, or its host name and the DNS step's result), or the lines fleet_assess
    computed (its `dns` result)."""
    if not isinstance(evidence, dict):
        raise AnsibleFilterError('tlsa_records: expects an mta_tls_info result or the dns result of fleet_assess')
    if 'tlsa_publish' in evidence:
        return list(evidence['tlsa_publish'])
    if dns is not None and not isinstance(dns, dict):
        raise AnsibleFilterError('tlsa_records: dns must be the dns result of fleet_assess (or its .dns.json)')
    names = [mx_name] if mx_name else list(mx_names or [])
    if not names and not host:
        raise AnsibleFilterError('tlsa_records: an mta_tls_info result needs the MX name (or host)')
    evidence = _host_result.expand(evidence)
    try:
        groups = _dane.publish_plan(evidence, host=host, mx_names=names, dns=dns or None, port=int(port),
                                    include_next=bool(next_keys))
    except (TypeError, ValueError, AttributeError) as exc:
        raise AnsibleFilterError(f'tlsa_records: {exc}')
    return _dane.plan_lines(groups, ttl=ttl, detail=bool(detail) if detail is not None else bool(dns is not None or host))


class FilterModule:
    def filters(self):
        return {'tlsa_records': tlsa_records}
