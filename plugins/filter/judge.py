# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side judgement and reporting as filters (documentation: the .yml files beside this one).

- findings: listeners + probes -> findings (docs/findings.md)
- waive: findings + starttls_waivers -> findings with waiver state
- report: listeners + probes (+ options, waivers, fail_when, meta) -> the report dict (docs/reports.md)
- report_junit, report_markdown, report_html: report -> text, for ansible.builtin.copy
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.mailsec.starttls.plugins.module_utils import _host_result, _verdict
from ansible_collections.mailsec.starttls.plugins.plugin_utils import _policy, _report_html, _report_junit, _report_markdown, _reports


def _guard(function, *args, **kwargs):
    try:
        return function(*args, **kwargs)
    except (_verdict.VerdictError, _policy.PolicyError, _reports.ReportError) as exc:
        raise AnsibleFilterError(str(exc))


def _require_list(value, what: str) -> list:
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    if not isinstance(value, (list, tuple)):
        raise AnsibleFilterError(f'{what} must be a list, not {type(value).__name__}')
    return list(value)


def findings(listeners, probes=None, options=None):
    listeners = [_host_result.expand(item) for item in _require_list(listeners, 'listeners')]
    probes = _require_list(probes, 'probes')
    flat_listeners, flat_probes, judge_options = _reports.collect_inputs(listeners, probes, options)
    return _guard(_verdict.judge, flat_listeners, flat_probes, judge_options)


def waive(finding_list, waivers=None, today=None):
    finding_list = _require_list(finding_list, 'findings')
    for index, finding in enumerate(finding_list):
        if not isinstance(finding, dict):
            raise AnsibleFilterError(f'findings[{index}] is a {type(finding).__name__}, not a finding '
                                     '(the output of mailsec.starttls.findings)')
    result = _guard(_policy.apply_waivers, finding_list, waivers, today)
    if result['unusable']:
        # Only the findings come back from this filter: a waiver that waives nothing must say so.
        raise AnsibleFilterError('; '.join(error['error'] for error in result['unusable']))
    return result['findings']


def report(listeners, probes=None, options=None, waivers=None, fail_when=None, meta=None, previous=None):
    listeners = [_host_result.expand(item) for item in _require_list(listeners, 'listeners')]
    probes = _require_list(probes, 'probes')
    if meta is not None and not isinstance(meta, dict):
        raise AnsibleFilterError('meta must be a dictionary')
    if previous is not None and not (isinstance(previous, dict) and isinstance(previous.get('findings'), list)):
        raise AnsibleFilterError('previous must be a report (a dictionary with findings)')
    return _guard(_reports.audit, listeners, probes, options, waivers, fail_when, meta, previous=previous)


def _report_text(renderer, value):
    if not isinstance(value, dict) or value.get('schema_version') != _reports.SCHEMA_VERSION:
        raise AnsibleFilterError(f'expected a report of schema_version {_reports.SCHEMA_VERSION} '
                                 '(the output of mailsec.starttls.report)')
    return renderer(value)


def report_junit(value):
    return _report_text(_report_junit.render_junit, value)


def report_markdown(value):
    return _report_text(_report_markdown.render_markdown, value)


def report_html(value):
    return _report_text(_report_html.render_html, value)


class FilterModule:
    def filters(self):
        return {
            'findings': findings,
            'waive': waive,
            'report': report,
            'report_junit': report_junit,
            'report_markdown': report_markdown,
            'report_html': report_html,
        }
