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
from ansible.utils.display import Display

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
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict import normalise_options as normalise_judge_options
from ansible_collections.mailsec.starttls.plugins.plugin_utils import _policy, _reports

display = Display()

JUMP_HOST_SPEC = dict(JUMP_HOST_ARGUMENT_SPEC, name={'type': 'str'})
WAIVER_SPEC = {
    'query': {'type': 'str', 'required': True},
    'reason': {'type': 'str', 'required': True},
    # A YAML date (expires: 2027-03-31 unquoted) arrives as a date; _policy reads both.
    'expires': {'type': 'raw'},
    'ticket': {'type': 'str'},
}

# How a run ends (result key `outcome`, and the start of `msg` when the task fails), so that CI can tell
# a policy failure from a broken input and from an audit that looked at nothing. docs/ci.md.
OUTCOME_MESSAGES = {
    'passed': 'STARTTLS audit passed',
    'policy-failed': 'STARTTLS audit failed (policy)',
    'invalid-input': 'STARTTLS audit error (invalid input)',
    'nothing-audited': 'STARTTLS audit error (nothing audited)',
    'unreachable': 'STARTTLS audit error (fleet unreachable)',
}
# Probes are made in batches of this many targets (at least the probe concurrency), so that a long
# controller phase reports its progress at the default verbosity.
PROGRESS_BATCH = 250

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
    'waivers': {'type': 'list', 'elements': 'dict', 'default': [], 'options': WAIVER_SPEC},
    'fail_when': {'type': 'str'},
    'fail': {'type': 'bool', 'default': True},
    'report_dir': {'type': 'path'},
    'report_formats': {'type': 'list', 'elements': 'str', 'default': list(_reports.FORMATS),
                       'choices': list(_reports.FORMATS)},
    'report_basename': {'type': 'str', 'default': _reports.DEFAULT_BASENAME},
    'validate_only': {'type': 'bool', 'default': False},
    'require_audited': {'type': 'bool', 'default': True},
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
        task_vars = task_vars or {}
        # Reports of an earlier run must never pass for this run's: they go before anything else happens,
        # so that a run that fails from here on, even for broken input, leaves no report at all (docs/ci.md).
        try:
            removed = self._remove_stale_reports({
                'report_dir': self._task.args.get('report_dir'),
                'report_basename': self._task.args.get('report_basename') or _reports.DEFAULT_BASENAME})
            args, hosts, probe_options, jump_hosts, policy_problems = self._checked_input(task_vars)
        except AnsibleActionFail as exc:
            return self._error(result, 'invalid-input', exc.message)
        if args['validate_only']:
            result.update(changed=False, outcome='validated', hosts=len(hosts), stale_reports_removed=removed,
                          msg=f'input checked for {len(hosts)} host(s): {len(args["waivers"])} waiver(s), failure rule '
                              f'{"default" if not args["fail_when"] else repr(args["fail_when"])}, probe options'
                              + (f'; removed {len(removed)} report(s) of an earlier run' if removed else ''))
            return result
        try:
            return self._assess(result, {'args': args, 'hosts': hosts, 'probe_options': probe_options,
                                         'jump_hosts': jump_hosts, 'policy_problems': policy_problems}, task_vars)
        except AnsibleActionFail as exc:
            if exc.result.get('outcome'):
                raise
            return self._error(result, 'invalid-input', exc.message)

    def _checked_input(self, task_vars: dict) -> tuple:
        """Every argument and every per-host input the audit will use, checked before anything is
        inspected or probed; AnsibleActionFail names the first problem."""
        validation = ArgumentSpecValidator(ARGUMENT_SPEC).validate(self._task.args)
        if validation.error_messages:
            raise AnsibleActionFail(f'fleet_assess: {"; ".join(validation.error_messages)}')
        args = validation.validated_parameters
        hostvars = task_vars.get('hostvars', {})
        hosts = args['hosts'] or task_vars.get('ansible_play_hosts_all') or []
        try:
            # A syntax error fails at once; an expression beyond the evaluator's limits is named in the
            # reports, which are still written, and fails the run there.
            policy_problems = _policy.check_policy(args['waivers'], args['fail_when'], tolerate_limits=True)
            probe_options = normalise_options(dict(args['probe_options']))
            jump_hosts = [dict(check_jump_host(jump, f'jump_hosts[{index}]'), name=jump.get('name'))
                          for index, jump in enumerate(args['jump_hosts'])]
            normalise_judge_options({'expiring_days': args['expiring_days'], 'severity': args['severity'],
                                     'starttls_not_offered_severity': args['starttls_not_offered_severity']})
        except (_policy.PolicyError, TargetError, VerdictError) as exc:
            raise AnsibleActionFail(str(exc))
        for host in hosts:
            try:
                for spec in hostvars.get(host, {}).get(args['listeners_var']) or []:
                    parse_target(spec)
            except TargetError as exc:
                raise AnsibleActionFail(f'{host}: {args["listeners_var"]}: {exc}')
        if args['report_dir'] and os.path.exists(args['report_dir']) and not os.path.isdir(args['report_dir']):
            raise AnsibleActionFail(f'report_dir {args["report_dir"]} exists and is not a directory')
        return args, hosts, probe_options, jump_hosts, policy_problems

    @staticmethod
    def _remove_stale_reports(args: dict) -> list:
        if not isinstance(args['report_dir'], str) or not args['report_dir'] \
                or not isinstance(args['report_basename'], str) or os.sep in args['report_basename']:
            return []
        removed = []
        for suffix in _reports.FILE_SUFFIXES.values():
            path = os.path.join(os.path.expanduser(os.path.expandvars(args['report_dir'])), args['report_basename'] + suffix)
            if os.path.lexists(path):
                try:
                    os.unlink(path)
                except OSError as exc:
                    raise AnsibleActionFail(f'cannot remove the report of an earlier run {path}: {exc.strerror or exc}')
                removed.append(path)
        return removed

    @staticmethod
    def _error(result: dict, outcome: str, detail: str) -> dict:
        message = f'{OUTCOME_MESSAGES[outcome]}: {detail}'
        if outcome != 'unreachable':
            raise AnsibleActionFail(message, result=dict(result, changed=False, outcome=outcome))
        # Like a host Ansible cannot log in to: ansible-playbook then exits 4, not 2 (docs/ci.md).
        result.update(changed=False, outcome=outcome, msg=message, unreachable=True)
        return result

    def _assess(self, result: dict, checked: dict, task_vars: dict) -> dict:
        args, hosts, probe_options = checked['args'], checked['hosts'], checked['probe_options']
        jump_hosts, policy_problems = checked['jump_hosts'], checked['policy_problems']
        hostvars = task_vars.get('hostvars', {})
        listeners, host_results, host_addresses, warnings = [], [], {}, []
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
                records = [_inventory_listener(host, spec) for spec in variables.get(args['listeners_var']) or []]
                listeners.extend(records)
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
        display.display(f'fleet_assess: {len(hosts)} host(s), {len(host_results)} inspected, '
                        f'{len(target_list)} endpoint(s) to probe from {1 if args["controller_probe"] else 0} '
                        f'controller and {len(jump_hosts)} jump host vantage(s)')
        batches = []
        if args['controller_probe'] and target_list:
            batches.append(self._probe_in_batches('controller', target_list, dict(probe_options, vantage='controller')))
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
        try:
            report = _reports.audit(host_results + listeners, probes, judge_options, args['waivers'],
                                    args['fail_when'], meta)
        except (VerdictError, _policy.PolicyError, _reports.ReportError) as exc:
            return self._error(result, 'invalid-input', str(exc))
        looked_at_nothing = self._nothing_audited(report, hosts, host_results) if args['require_audited'] else None
        if looked_at_nothing:
            result.update(probes=len(probes), summary=report['summary'])
            if warnings:
                result['warnings'] = warnings
            return self._error(result, *looked_at_nothing)
        written = {}
        if args['report_dir']:
            try:
                written = _reports.write_reports(report, args['report_dir'], args['report_formats'],
                                                 args['report_basename'])
            except _reports.ReportError as exc:
                return self._error(result, 'invalid-input', str(exc))

        summary = report['summary']
        outcome = 'policy-failed' if summary['failed'] else 'passed'
        result.update(changed=False, summary=summary, findings=report['findings'], reports=written,
                      waivers_expired=report['waivers_expired'], probes=len(probes), outcome=outcome)
        warnings.extend(f'policy: {problem}' for problem in policy_problems)
        if warnings:
            result['warnings'] = [visible(warning) for warning in warnings]
        counts = ', '.join(f'{count} {severity}' for severity, count in summary['by_severity'].items() if count)
        display.display(visible(f"fleet_assess: {summary['findings']} finding(s) ({counts or 'none'}), "
                                f"{summary['unwaived']} unwaived, on {summary['listeners']} listener(s) of "
                                f"{summary['hosts']} host(s), {summary['probes']} probe(s)"
                                + (f"; reports: {', '.join(written.values())}" if written else '')))
        if summary['failed'] and args['fail']:
            # Ansible prints a failed result whole: the findings are in the reports and would bury the message.
            del result['findings']
            result['failed'] = True
            result['msg'] = f"{OUTCOME_MESSAGES[outcome]}: {summary['fail_reason']}" + (
                f" (reports: {', '.join(written.values())})" if written else '')
        else:
            if summary['failed']:
                display.display(f"fleet_assess: the failure rule is true ({summary['fail_reason']}); not failing (fail=false)")
            result['msg'] = (f"{summary['findings']} finding(s), {summary['unwaived']} unwaived, on "
                             f"{summary['listeners']} listener(s) of {summary['hosts']} host(s)")
        return result

    @staticmethod
    def _nothing_audited(report: dict, hosts: list, host_results: list) -> tuple | None:
        """(outcome, message) when the run looked at nothing: no host, no listener, or no probe that got
        past the TCP connection; a report would then show passing tests that never ran."""
        if not hosts:
            return 'nothing-audited', 'no host to audit (the play has no hosts)'
        if any(finding.get('id') == 'judgement-error' for finding in report['findings']):
            return None  # evidence a host sent could not be read: that is a result, and the reports show it
        listeners = report['listeners']
        if not listeners:
            return 'nothing-audited', (f'no listener found on {len(hosts)} host(s) ({len(host_results)} inspected on the '
                                       'host; no MTA configuration found there and no starttls_listeners given)')
        probes = [probe for entry in listeners for probe in entry.get('probes') or []]
        completed = [probe for probe in probes if probe.get('outcome') not in ('unreachable', 'incomplete')]
        if completed:
            return None
        if not probes:
            return 'nothing-audited', (f'no probe was made of {len(listeners)} listener(s): enable starttls_host_probe '
                                       'or starttls_controller_probe')
        failed = '; '.join(f"{probe.get('vantage')} -> {probe.get('target')}: {probe.get('error') or probe.get('outcome')}"
                           for probe in probes[:3])
        return 'unreachable', (f'none of {len(probes)} probe(s) of {len(listeners)} listener(s) got an answer '
                               f'({failed}{"; ..." if len(probes) > 3 else ""})')

    @staticmethod
    def _probe_in_batches(vantage: str, targets: list, options: dict, connect=None) -> list:
        batch = max(PROGRESS_BATCH, int(options.get('concurrency') or 1))
        probes: list = []
        for start in range(0, len(targets), batch):
            probes.extend(probe_many(targets[start:start + batch], options, connect=connect))
            if len(targets) > batch:
                display.display(f'fleet_assess: {vantage}: probed {len(probes)}/{len(targets)} endpoint(s)')
        return probes

    @staticmethod
    def _probe_through(jump: dict, targets: list, probe_options: dict) -> list:
        connect, through = jump_connector(jump, probe_options['timeout'])
        try:
            vantage = f"jump:{jump['name'] or jump['host']}"
            return ActionModule._probe_in_batches(vantage, targets, dict(probe_options, vantage=vantage), connect=connect)
        finally:
            if through is not None:
                through.close()
