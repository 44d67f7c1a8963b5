# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Remediation choices and their verification as filters for the remediate role
(documentation: the remediation_*.yml files beside this one)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.mailsec.starttls.plugins.plugin_utils import _remediation


def remediation_plan(findings, records=None, host=None, certificates=None, policy='auto', current=None,
                     disable_implicit=False, names=None, allow_shared=False, only=None):
    if not host:
        raise AnsibleFilterError('remediation_plan: host is required')
    try:
        return _remediation.plan(findings, records or [], str(host), certificates or [], str(policy), current,
                                 bool(disable_implicit), list(names or []), bool(allow_shared), list(only or []))
    except _remediation.RemediationError as exc:
        raise AnsibleFilterError(f'remediation_plan: {exc}')


def remediation_outcome(actions, before=None, after=None, host=None):
    if not host:
        raise AnsibleFilterError('remediation_outcome: host is required')
    try:
        return _remediation.outcome(actions or [], before or [], after or [], str(host))
    except _remediation.RemediationError as exc:
        raise AnsibleFilterError(f'remediation_outcome: {exc}')


def remediation_record(actions, patch_results=None, host=None, before=None, after=None, meta=None):
    if not host:
        raise AnsibleFilterError('remediation_record: host is required')
    if meta is not None and not isinstance(meta, dict):
        raise AnsibleFilterError('remediation_record: meta must be a dictionary')
    try:
        return _remediation.record(actions or [], patch_results or [], str(host), before or [], after, meta or {})
    except _remediation.RemediationError as exc:
        raise AnsibleFilterError(f'remediation_record: {exc}')


class FilterModule:
    def filters(self):
        return {
            'remediation_plan': remediation_plan,
            'remediation_outcome': remediation_outcome,
            'remediation_record': remediation_record,
        }
