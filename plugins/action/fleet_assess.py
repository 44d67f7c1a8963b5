# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller half of the audit: probe the fleet once, judge once, report once.

Documentation: plugins/modules/fleet_assess.py. Everything runs on the controller; no module
is sent anywhere.
"""

from __future__ import annotations

import ipaddress
import os

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

from ansible_collections.mailsec.starttls.plugins.module_utils._probe.engine import (
    TargetError,
    normalise_options,
    parse_target,
    probe_many,
)
from ansible_collections.mailsec.starttls.plugins.module_utils._probe.ssh import JUMP_HOST_ARGUMENT_SPEC, jump_connector
from ansible_collections.mailsec.starttls.plugins.module_utils import _verdict
from ansible_collections.mailsec.starttls.plugins.module_utils._text import visible
from ansible_collections.mailsec.starttls.plugins.module_utils._probe.validate import jump_host as check_jump_host
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict import VerdictError
from ansible_collections.mailsec.starttls.plugins.plugin_utils import _changes, _merge, _policy, _reports

JUMP_HOST_SPEC = dict(JUMP_HOST_ARGUMENT_SPEC, name={'type': 'str'})

ARGUMENT_SPEC = {
    'hosts': {'type': 'list', 'elements': 'str'},
    'host_evidence_var': {'type': 'str', 'default': 'starttls_host'},
    'listeners_var': {'type': 'str', 'default': 'starttls_listeners'},
    'addresses_var': {'type': 'str', 'default': 'starttls_addresses'},
    'controller_probe': {'type': 'bool', 'default': True},
    'jump_hosts': {'type': 'list', 'elements': 'dict', 'default': [], 'options': JUMP_HOST_SPEC},
    'probe_options': {'type': 'dict', 'default': {}},
    'expiring_days': {'type': 'int', 'default': 30},
    'starttls_not_offered_severity': {'type': 'str', 'default': 'medium',
                                      'choices': ['critical', 'high', 'medium', 'low', 'info']},
    'severity': {'type': 'dict', 'default': {}},
    'waivers': {'type': 'list', 'elements': 'dict', 'default': []},
    'fail_when': {'type': 'str'},
    'fail': {'type': 'bool', 'default': True},
    'report_dir': {'type': 'path'},
    'report_formats': {'type': 'list', 'elements': 'str', 'default': list(_reports.FORMATS),
                       'choices': list(_reports.FORMATS)},
    'report_basename': {'type': 'str', 'default': _reports.DEFAULT_BASENAME},
    'previous_report': {'type': 'path'},
    'compare_previous': {'type': 'bool', 'default': True},
    'partial': {'type': 'bool', 'default': False},
    'partial_name': {'type': 'str'},
}

WILDCARDS = ('0.0.0.0', '::', '*', None, '')


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == 'localhost'


def _inventory_listener(host: str, spec) -> dict:
    """A black-box listener from inventory: only what the network can tell about it."""
    target = parse_target(spec)
    record = {'host': host, 'address': target['address'], 'port': target['port'], 'protocol': target['protocol'],
              'sni': target['sni'], 'expected_names': target['expected_names'], 'mode': 'inventory'}
    if isinstance(spec, dict):
        # What the owner of a black box may know: the product (for the fixes) and certificate pins.
        record.update({key: spec[key] for key in ('mta', 'expected_certificates') if spec.get(key)})
    return record


def bind_evidence(host: str, evidence: dict) -> dict:
    """A host's inspection result bound to its inventory name: the host's own `host` fields are
    overwritten (a managed host is not trusted to say whose evidence it sends, docs/reports.md)."""
    bound = dict(evidence, host=host)
    bound['listeners'] = [dict(record, host=host) if isinstance(record, dict) else record
                          for record in evidence['listeners']]
    sockets = evidence.get('unmatched_sockets')
    bound['unmatched_sockets'] = [dict(item, host=host) for item in sockets if isinstance(item, dict)] \
        if isinstance(sockets, list) else []
    return bound


class ActionModule(ActionBase):

    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        validation = ArgumentSpecValidator(ARGUMENT_SPEC).validate(self._task.args)
        if validation.error_messages:
            raise AnsibleActionFail(f'fleet_assess: {"; ".join(validation.error_messages)}')
        args = validation.validated_parameters
        task_vars = task_vars or {}
        hostvars = task_vars.get('hostvars', {})
        hosts = args['hosts'] or task_vars.get('ansible_play_hosts_all') or []
        try:
            # A syntax error fails at once; an expression beyond the evaluator's limits is named in the
            # reports, which are still written, and fails the run there.
            policy_problems = _policy.check_policy(args['waivers'], args['fail_when'], tolerate_limits=True)
            probe_options = normalise_options(dict(args['probe_options']))
            jump_hosts = [dict(check_jump_host(jump, f'jump_hosts[{index}]'), name=jump.get('name'))
                          for index, jump in enumerate(args['jump_hosts'])]
        except (_policy.PolicyError, TargetError) as exc:
            raise AnsibleActionFail(str(exc))

        listeners, host_results, host_addresses, warnings, unassessed = [], [], {}, [], []
        targets: dict = {}
        target_hosts: dict = {}
        for host in hosts:
            variables = hostvars.get(host, {})
            evidence = variables.get(args['host_evidence_var'])
            reachable_via = variables.get('ansible_host') or host
            local = variables.get('ansible_connection') == 'local'
            declared = variables.get(args['addresses_var']) or []
            if isinstance(declared, str):
                declared = [declared]
            if not isinstance(declared, list):
                raise AnsibleActionFail(f'{host}: {args["addresses_var"]} must be a list of addresses')
            host_addresses[host] = [reachable_via] + [str(address) for address in declared]
            owned = {_verdict.canonical_address(address) for address in host_addresses[host]}
            from_host = False
            if isinstance(evidence, dict) and isinstance(evidence.get('listeners'), list) \
                    and not evidence.get('failed') and not evidence.get('skipped'):
                bound = bind_evidence(host, evidence)
                host_results.append(bound)
                records = bound['listeners']
                from_host = True
            else:
                if isinstance(evidence, dict) and evidence.get('failed'):
                    warnings.append(f'{host}: host inspection failed ({evidence.get("msg")}); judged from the network alone')
                try:
                    records = [_inventory_listener(host, spec) for spec in variables.get(args['listeners_var']) or []]
                except TargetError as exc:
                    raise AnsibleActionFail(f'{host}: {args["listeners_var"]}: {exc}')
                listeners.extend(records)
                if not records:
                    # Unreachable, or its inspection failed, and no listeners listed: nothing was judged, so
                    # its findings of the previous report are not resolved, only not assessed.
                    unassessed.append(host)
            for record in records:
                if _verdict.record_problem(record) is not None:
                    continue  # judged as one judgement-error for this host; never probed
                if record.get('listening') is False or not record.get('port'):
                    continue
                address = record.get('address')
                if address in WILDCARDS:
                    address = reachable_via
                elif from_host and _verdict.canonical_address(address) not in owned:
                    if _is_loopback(address) and local:
                        pass  # a local connection: the host is this machine, its loopback is its own
                    elif _is_loopback(address):
                        # Bound to the host's loopback: nothing but the host itself can reach it.
                        continue
                    else:
                        warnings.append(f'{host}: the listener on {_verdict.endpoint(address, record.get("port"))} '
                                        'was not probed from the controller: the address is not one of the '
                                        f'host\'s inventory addresses (ansible_host, {args["addresses_var"]})')
                        continue
                try:
                    target = parse_target({'address': address, 'port': record['port'], 'protocol': record.get('protocol'),
                                           'sni': record.get('sni'), 'expected_names': record.get('expected_names')})
                except TargetError as exc:
                    warnings.append(f'{host}: a listener was not probed from the controller: {exc}')
                    continue
                key = (target['address'], target['port'], target['protocol'])
                targets.setdefault(key, target)
                owners = target_hosts.setdefault(key, [])
                if host not in owners:
                    owners.append(host)

        probes = []
        target_keys = list(targets)
        target_list = [targets[key] for key in target_keys]
        batches = []
        if args['controller_probe'] and target_list:
            batches.append(probe_many(target_list, dict(probe_options, vantage='controller')))
        for jump in jump_hosts:
            batches.append(self._probe_through(jump, target_list, probe_options))
        for batch in batches:
            for key, probe in zip(target_keys, batch):
                # Evidence about the host it was made for, and no other (one copy per host sharing it).
                probes.extend(dict(probe, host=owner) for owner in target_hosts[key])

        judge_options = {'expiring_days': args['expiring_days'],
                         'starttls_not_offered_severity': args['starttls_not_offered_severity'],
                         'severity': args['severity'], 'host_addresses': host_addresses}
        meta = {'hosts': len(hosts), 'vantages': (['controller'] if args['controller_probe'] else [])
                + [f"jump:{jump['name'] or jump['host']}" for jump in jump_hosts],
                'check_mode': bool(self._task.check_mode)}
        if unassessed:
            meta['unassessed'] = sorted(unassessed)
            warnings.append(f'{len(unassessed)} host(s) without evidence or listeners were not assessed: '
                            f'{", ".join(sorted(unassessed)[:10])}' + (' ...' if len(unassessed) > 10 else ''))
        assessed = [host for host in hosts if host not in set(unassessed)]
        previous = None
        try:
            if args['partial']:
                # A slice or batch: the merge compares the fleet with the previous report, once.
                meta['partial'] = {'name': args['partial_name'] or _merge.partial_name(hosts), 'hosts': sorted(assessed)}
            elif args['compare_previous']:
                previous = _changes.load_previous(
                    args['previous_report'] or (os.path.join(args['report_dir'], args['report_basename'] + '.json')
                                                if args['report_dir'] else None),
                    required=bool(args['previous_report']))
        except (_changes.PreviousReportError, _merge.MergeError) as exc:
            raise AnsibleActionFail(str(exc))
        try:
            report = _reports.audit(host_results + listeners, probes, judge_options, args['waivers'],
                                    args['fail_when'], meta, previous=previous, assessed_hosts=assessed)
        except (VerdictError, _policy.PolicyError, _reports.ReportError) as exc:
            raise AnsibleActionFail(str(exc))
        written = {}
        if args['report_dir']:
            try:
                if args['partial']:
                    written = {'json': _merge.write_partial(report, args['report_dir'], args['report_basename'])}
                else:
                    written = _reports.write_reports(report, args['report_dir'], args['report_formats'],
                                                     args['report_basename'])
            except (_reports.ReportError, _merge.MergeError) as exc:
                raise AnsibleActionFail(str(exc))

        summary = report['summary']
        result.update(changed=False, summary=summary, findings=report['findings'], reports=written,
                      waivers_expired=report['waivers_expired'], probes=len(probes), changes=report['changes'])
        warnings.extend(f'policy: {problem}' for problem in policy_problems)
        if warnings:
            result['warnings'] = [visible(warning) for warning in warnings]
        if args['partial']:
            # The merge applies the failure rule to the whole fleet; one slice does not decide it.
            result['msg'] = (f"partial report {meta['partial']['name']}: {summary['findings']} finding(s) on "
                             f"{summary['hosts']} host(s); merge with mailsec.starttls.report_merge")
        elif summary['failed'] and args['fail']:
            # Ansible prints a failed result whole: the findings are in the reports and would bury the message.
            del result['findings']
            result['failed'] = True
            result['msg'] = f"STARTTLS audit failed: {summary['fail_reason']}" + (
                f" (reports: {', '.join(written.values())})" if written else '')
        else:
            result['msg'] = (f"{summary['findings']} finding(s), {summary['unwaived']} unwaived, on "
                             f"{summary['listeners']} listener(s) of {summary['hosts']} host(s)")
        return result

    @staticmethod
    def _probe_through(jump: dict, targets: list, probe_options: dict) -> list:
        connect, through = jump_connector(jump, probe_options['timeout'])
        try:
            return probe_many(targets, dict(probe_options, vantage=f"jump:{jump['name'] or jump['host']}"),
                              connect=connect)
        finally:
            if through is not None:
                through.close()
