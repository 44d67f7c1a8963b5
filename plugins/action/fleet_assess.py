# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller half of the audit: probe the fleet once, judge once, report once.

Documentation: plugins/modules/fleet_assess.py. Everything runs on the controller; no module
is sent anywhere.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import socket
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.mailsec.starttls.plugins.module_utils._probe.engine import (
    TargetError,
    is_ip,
    normalise_options,
    parse_target,
    probe_many,
)
from ansible_collections.mailsec.starttls.plugins.module_utils._probe.ssh import JUMP_HOST_ARGUMENT_SPEC, jump_connector
from ansible_collections.mailsec.starttls.plugins.module_utils import _host_result
from ansible_collections.mailsec.starttls.plugins.module_utils import _verdict
from ansible_collections.mailsec.starttls.plugins.module_utils._model import ANY_ADDRESS
from ansible_collections.mailsec.starttls.plugins.module_utils._text import visible
from ansible_collections.mailsec.starttls.plugins.module_utils._probe.validate import address as validate_address
from ansible_collections.mailsec.starttls.plugins.module_utils._probe.validate import jump_host as check_jump_host
from ansible_collections.mailsec.starttls.plugins.module_utils._probe.validate import port as validate_port
from ansible_collections.mailsec.starttls.plugins.module_utils._probe.validate import text as check_text
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict import VerdictError
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict import normalise_options as normalise_judge_options
from ansible_collections.mailsec.starttls.plugins.plugin_utils import _changes, _dns_checks, _mail_dns, _merge, _policy, _reports
from ansible_collections.mailsec.starttls.plugins.plugin_utils import _role_arguments

JUMP_HOST_SPEC = dict(JUMP_HOST_ARGUMENT_SPEC, name={'type': 'str'})

display = Display()

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
# Where the fleet report of the run before goes when a run starts: no longer looking current, and
# still there for the comparison of what changed (_changes).
PREVIOUS_SUFFIX = '.previous.json'
# A failed task is printed with its whole result: the failure rule's reason in its message is cut to this
# many characters (summary.fail_reason and the reports hold all of it).
FAILURE_REASON_LIMIT = 240
# Probes are made in batches of this many targets (at least the probe concurrency), so that a long
# controller phase reports its progress at the default verbosity.
PROGRESS_BATCH = 250

ARGUMENT_SPEC = {
    'hosts': {'type': 'list', 'elements': 'str'},
    'host_evidence_var': {'type': 'str', 'default': 'starttls_host'},
    'listeners_var': {'type': 'str', 'default': 'starttls_listeners'},
    'addresses_var': {'type': 'str', 'default': 'starttls_addresses'},
    'address_map_var': {'type': 'str', 'default': 'starttls_address_map'},
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
    'dns_checks': {'type': 'dict', 'options': _dns_checks.DNS_CHECKS_SPEC},
    'vantages': {'type': 'list', 'elements': 'str', 'default': []},
    'vantage_probes': {'type': 'list', 'elements': 'raw', 'default': []},
    'plan_only': {'type': 'bool', 'default': False},
    'previous_report': {'type': 'path'},
    'compare_previous': {'type': 'bool', 'default': True},
    'partial': {'type': 'bool', 'default': False},
    'partial_name': {'type': 'str'},
    'validate_only': {'type': 'bool', 'default': False},
    'role_argument_spec': {'type': 'str'},
    'set_aside_only': {'type': 'bool', 'default': False},
    'require_audited': {'type': 'bool', 'default': True},
}


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


class AddressMapError(ValueError):
    """An address map entry that cannot be used; the message names the host and the entry."""


def _endpoint_spec(value, what: str) -> tuple:
    """'address:port', '[v6]:port', 'address', ':port' or a port number: (address or None, port or None)."""
    if isinstance(value, bool):
        raise AddressMapError(f'{what} must be address:port, not a boolean')
    if isinstance(value, int):
        return None, validate_port(value, what)
    if not isinstance(value, str) or not value.strip():
        raise AddressMapError(f'{what} must be a string address:port')
    text = value.strip()
    if text.startswith('['):
        address, _sep, rest = text[1:].partition(']')
        port = rest[1:] if rest.startswith(':') else None
    elif text.count(':') == 1:
        address, port = text.split(':')
    elif text.isdigit():
        address, port = '', text
    else:
        address, port = text, None
    address = address.strip() or None
    if address not in (None, '*'):
        address = validate_address(address, what)
    return address, (validate_port(port, what) if port not in (None, '') else None)


def parse_address_map(host: str, raw) -> list:
    """A host's address map: [{'listener': (address, port, service), 'default': reach, 'vantages': {...}}].

    A reach is (address, port), or None when the listener cannot be reached from that vantage, or
    the string 'own' when the listener's own address and port are used."""
    if raw in (None, '', []):
        return []
    if not isinstance(raw, list):
        raise AddressMapError(f'{host}: the address map must be a list of entries')
    entries = []
    for index, item in enumerate(raw):
        what = f'{host}: address map entry {index}'
        if not isinstance(item, dict) or 'listener' not in item:
            raise AddressMapError(f'{what} must be a dictionary with a listener key')
        unknown = sorted(set(item) - {'listener', 'default', 'vantages'})
        if unknown:
            raise AddressMapError(f'{what}: unknown key(s) {", ".join(map(str, unknown))}')
        spec = item['listener']
        if isinstance(spec, dict):
            if set(spec) - {'address', 'port', 'service'} or not spec:
                raise AddressMapError(f'{what}: listener takes address, port and service')
            address = spec.get('address')
            port = spec.get('port')
            listener = (None if address in (None, '*') else validate_address(str(address), what),
                        None if port is None else validate_port(port, what), spec.get('service'))
        else:
            address, port = _endpoint_spec(spec, f'{what}: listener')
            listener = (None if address == '*' else address, port, None)

        def reach(value, where):
            if value is False or value is None or (isinstance(value, str) and value.strip().lower() == 'none'):
                return None
            if isinstance(value, str) and value.strip().lower() == 'own':
                return 'own'
            return _endpoint_spec(value, where)
        vantages = item.get('vantages') or {}
        if not isinstance(vantages, dict):
            raise AddressMapError(f'{what}: vantages must map vantage names to address:port')
        entries.append({'listener': listener,
                        'default': reach(item['default'], f'{what}: default') if 'default' in item else 'own',
                        'vantages': {str(name): reach(value, f'{what}: vantages.{name}')
                                     for name, value in vantages.items()}})
    return entries


def map_entry_for(entries: list, record: dict):
    """The first entry whose listener matches the record (address, port and service where given)."""
    for entry in entries:
        address, port, service = entry['listener']
        if port is not None and _verdict.as_port(record.get('port')) != port:
            continue
        if address is not None and _verdict.canonical_address(address) != _verdict.canonical_address(record.get('address')):
            continue
        if service is not None and record.get('service') != service:
            continue
        return entry
    return None


def _vantage_name(entry: dict):
    """The inventory host a delegated listener_probe result (or its async_status) came from."""
    item = entry.get('item')
    while isinstance(item, dict):
        item = item.get('item')
    return item if isinstance(item, str) else None


def delegated_batches(names: list, results: list, plan: dict, warnings: list) -> list:
    """[(vantage, probes)] from the results of listener_probe delegated to inventory hosts (the
    registered loop results of the task and of its async_status). A vantage that gave no result
    costs only its own probes and is named in a warning. Its probes are bound to it: the vantage
    label is ours, and only probes of targets it was given are kept."""
    batches, answered, problems = [], set(), {}
    for entry in results or []:
        if not isinstance(entry, dict):
            continue
        name = _vantage_name(entry)
        if name not in names:
            continue
        vantage = f'inventory:{name}'
        if isinstance(entry.get('probes'), list):
            kept = []
            for probe in entry['probes']:
                if isinstance(probe, dict) and isinstance(probe.get('target'), dict) \
                        and _verdict.record_problem({'host': name, 'address': probe['target'].get('address'),
                                                     'port': probe['target'].get('port'), 'protocol': 'smtp'}) is None:
                    try:
                        key = _probe_key(probe)
                    except (KeyError, TypeError):
                        continue
                    if key in plan[vantage]:
                        kept.append(dict(probe, vantage=vantage))
            batches.append((vantage, kept))
            answered.add(name)
        elif entry.get('unreachable') or entry.get('failed'):
            problems[name] = str(entry.get('msg') or 'unreachable')[:200]
    for name in names:
        if name not in answered and plan[f'inventory:{name}']:
            warnings.append(f'vantage inventory:{name} gave no probes '
                            f'({problems.get(name, "it did not run")}); judged from the other vantages')
    return batches


def _probe_key(probe: dict) -> tuple:
    """The key of the target a probe was made for: the name it was given as, else its address."""
    target = probe['target']
    return (target.get('name') or target['address'], target['port'], target['protocol'])


def resolved_addresses(address: str) -> list:
    """An inventory address and, when it is a name, every address the system resolver gives for it
    (a host whose ansible_host is a name owns the addresses of that name). IP literals: no lookup."""
    if not address or is_ip(address.split('%', 1)[0]):
        return [address]
    try:
        return [address] + [info[4][0] for info in socket.getaddrinfo(address, None, 0, socket.SOCK_STREAM)]
    except (socket.gaierror, UnicodeError, OSError):
        return [address]


def failure_message(outcome: str, reason, written: dict) -> str:
    """The message of a run the failure rule fails: the outcome, its reason cut at a list separator,
    and the one report to open first."""
    text = ' '.join(str(reason or '').split())
    if len(text) > FAILURE_REASON_LIMIT:
        head = text[:FAILURE_REASON_LIMIT]
        cut = head.rfind(', ')
        text = (head[:cut] if cut > FAILURE_REASON_LIMIT // 2 else head.rstrip()) + ' ...'
    first = next((written[kind] for kind in ('html', 'markdown', 'json', 'junit') if kind in written), None)
    return f'{OUTCOME_MESSAGES[outcome]}: {text}' + (f' (report: {first})' if first else '')


def registered_result(hostvars, variables, host: str, name: str):
    """The value of a registered variable as Ansible keeps it, its data copied as plain JSON types.

    Reading it through hostvars templates it: ansible-core 2.19 walks and copies the whole result
    (40-60 KiB per mail host) checking every string for a template, which was half of this task's
    time at 100 hosts; a module's result is data, never a template. A value that is not a mapping
    (absent, or not a registered result) is read the usual way."""
    raw_get = getattr(hostvars, 'raw_get', None)
    raw = raw_get(host) if raw_get is not None else None
    value = raw.get(name) if isinstance(raw, Mapping) else None
    if not isinstance(value, Mapping):
        return variables.get(name)
    copied = {}
    for key, item in value.items():
        try:
            # A copy: the judgement must not reach into the host's registered variable.
            copied[key] = json.loads(json.dumps(item))
        except (TypeError, ValueError):
            # Ansible's own entries (2.19 keeps `warnings` as WarningSummary objects): as they are.
            copied[key] = item
    return copied


def bind_evidence(host: str, evidence: dict) -> dict:
    """A host's inspection result bound to its inventory name: the host's own `host` fields are
    overwritten (a managed host is not trusted to say whose evidence it sends, docs/reports.md).
    Certificates described once per host come back into each record (_host_result.expand)."""
    bound = dict(_host_result.expand(evidence), host=host)
    bound['listeners'] = [dict(record, host=host) if isinstance(record, dict) else record
                          for record in bound['listeners']]
    sockets = evidence.get('unmatched_sockets')
    bound['unmatched_sockets'] = [dict(item, host=host) for item in sockets if isinstance(item, dict)] \
        if isinstance(sockets, list) else []
    return bound


class ActionModule(ActionBase):

    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        # Reports of an earlier run must never pass for this run's: they go before anything else happens,
        # so that a run that fails from here on, even for broken input, leaves no report at all (docs/ci.md).
        # The fleet JSON is kept as BASENAME.previous.json for the comparison of what changed.
        try:
            removed = [] if boolean(self._task.args.get('partial', False), strict=False) else self._retire_reports(
                self._task.args.get('report_dir'), self._task.args.get('report_basename') or _reports.DEFAULT_BASENAME)
            return self._run(result, task_vars or {}, removed)
        except AnsibleActionFail as exc:
            if exc.result.get('outcome'):
                raise
            return self._error(result, 'invalid-input', exc.message)

    def _run(self, result: dict, task_vars: dict, removed: list) -> dict:
        if self._task.args.get('role_argument_spec'):
            # First: the role's own spec names the variable and the host; fleet_assess's options below
            # are only the first host's values of some of them.
            self._check_role_arguments(str(self._task.args['role_argument_spec']), task_vars or {})
        validation = ArgumentSpecValidator(ARGUMENT_SPEC).validate(self._task.args)
        if validation.error_messages:
            raise AnsibleActionFail(f'fleet_assess: {"; ".join(validation.error_messages)}')
        args = validation.validated_parameters
        if args['set_aside_only']:
            result.update(changed=bool(removed), outcome='set-aside', stale_reports_removed=removed,
                          msg=f'set aside {len(removed)} report(s) of an earlier run')
            return result
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
        if args['validate_only']:
            result.update(changed=False, outcome='validated', hosts=len(hosts), stale_reports_removed=removed,
                          msg=f'input checked for {len(hosts)} host(s): {len(args["waivers"])} waiver(s), failure rule '
                              f'{"default" if not args["fail_when"] else repr(args["fail_when"])}, probe options'
                              + (f'; set aside {len(removed)} report(s) of an earlier run' if removed else ''))
            return result

        listeners, host_results, host_addresses, warnings, unassessed = [], [], {}, [], []
        try:
            inventory_vantages = [check_text(name, 'vantages', 255, allow_none=False) for name in args['vantages']]
        except TargetError as exc:
            raise AnsibleActionFail(str(exc))
        vantages = (['controller'] if args['controller_probe'] else []) \
            + [f"jump:{jump['name'] or jump['host']}" for jump in jump_hosts] \
            + [f'inventory:{name}' for name in inventory_vantages]
        # Per vantage: the targets it probes, and for each target the hosts (and the listener as the
        # host binds it, when an address map sends the vantage elsewhere) the probe is evidence about.
        plan: dict = {vantage: {} for vantage in vantages}
        owners_of: dict = {vantage: {} for vantage in vantages}
        for host in hosts:
            variables = hostvars.get(host, {})
            evidence = registered_result(hostvars, variables, host, args['host_evidence_var'])
            local = variables.get('ansible_connection') == 'local'
            # A local connection is this machine: without ansible_host its name is no address to look up.
            reachable_via = variables.get('ansible_host') or ('127.0.0.1' if local else host)
            declared = variables.get(args['addresses_var']) or []
            if isinstance(declared, str):
                declared = [declared]
            if not isinstance(declared, list):
                raise AnsibleActionFail(f'{host}: {args["addresses_var"]} must be a list of addresses')
            host_addresses[host] = [resolved for address in [reachable_via] + [str(address) for address in declared]
                                    for resolved in resolved_addresses(address)]
            owned = {_verdict.canonical_address(address) for address in host_addresses[host]}
            try:
                address_map = parse_address_map(host, variables.get(args['address_map_var']))
            except (AddressMapError, TargetError) as exc:
                raise AnsibleActionFail(f'{args["address_map_var"]}: {exc}')
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
                entry = map_entry_for(address_map, record)
                own = self._own_target(host, record, reachable_via, owned, from_host, local, warnings,
                                       args['addresses_var'], announce=entry is None)
                reached_from = []
                for vantage in vantages:
                    where = 'own' if entry is None else entry['vantages'].get(vantage, entry['default'])
                    if where is None:
                        continue
                    if where == 'own':
                        target, mapped_from = own, None
                        if entry is not None and target is None:
                            continue
                    else:
                        try:
                            target = parse_target({
                                'address': where[0] or (own or {}).get('address') or record.get('address'),
                                'port': where[1] or record['port'], 'protocol': record.get('protocol'),
                                'sni': record.get('sni'), 'expected_names': record.get('expected_names')})
                        except TargetError as exc:
                            warnings.append(f'{host}: {args["address_map_var"]}: {exc}')
                            continue
                        mapped_from = {'address': record.get('address'), 'port': record.get('port')}
                    if target is None:
                        continue
                    key = (target['address'], target['port'], target['protocol'])
                    plan[vantage].setdefault(key, target)
                    owner = (host, json.dumps(mapped_from, sort_keys=True))
                    owners = owners_of[vantage].setdefault(key, [])
                    if owner not in owners:
                        owners.append(owner)
                    reached_from.append(vantage)
                if entry is not None and not reached_from:
                    warnings.append(f'{host}: the listener on {_verdict.endpoint(record.get("address"), record.get("port"))} '
                                    f'is reached from no vantage ({args["address_map_var"]} gives none of '
                                    f'{", ".join(vantages) or "no vantage configured"} an address for it)')

        if args['plan_only']:
            # The first half for vantages named in the inventory: what each must probe. The role runs
            # listener_probe there by delegation and calls again with the results (vantage_probes).
            result.update(changed=False, plan={name: list(plan[f'inventory:{name}'].values())
                                               for name in inventory_vantages})
            if warnings:
                result['warnings'] = [visible(warning) for warning in warnings]
            return result

        probes = []
        jobs = []
        if args['controller_probe'] and plan['controller']:
            jobs.append(('controller', lambda: self._probe_in_batches('controller', list(plan['controller'].values()),
                                                                      dict(probe_options, vantage='controller'))))
        for jump in jump_hosts:
            vantage = f"jump:{jump['name'] or jump['host']}"
            if plan[vantage]:
                jobs.append((vantage, functools.partial(self._probe_through, jump, list(plan[vantage].values()),
                                                        probe_options)))
        endpoints = {key for vantage in vantages for key in plan[vantage]}
        display.display(f'fleet_assess: {len(hosts)} host(s), {len(host_results)} inspected, {len(endpoints)} endpoint(s) '
                        f'to probe from {len(vantages)} vantage(s)'
                        + (' (' + ', '.join(f'{vantage}: {len(plan[vantage])}' for vantage in vantages) + ')' if vantages else ''))
        # The controller and every jump host probe at the same time; each keeps its own limits.
        batches = []
        if jobs:
            with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
                futures = [(vantage, pool.submit(job)) for vantage, job in jobs]
                batches = [(vantage, future.result()) for vantage, future in futures]
        batches.extend(delegated_batches(inventory_vantages, args['vantage_probes'], plan, warnings))
        probes_made = sum(len(batch) for _vantage, batch in batches)
        for vantage, batch in batches:
            for probe in batch:
                # Evidence about the host it was made for, and no other (one copy per host sharing it).
                # A target given as a name comes back once per address it resolved to.
                for owner, mapped in owners_of[vantage].get(_probe_key(probe), []):
                    copy = dict(probe, host=owner)
                    mapped_from = json.loads(mapped)
                    if mapped_from is not None:
                        # Reached elsewhere (NAT, port forward, load balancer): judged as this listener.
                        copy['mapped_from'] = mapped_from
                    probes.append(copy)

        judge_options = {'expiring_days': args['expiring_days'],
                         'starttls_not_offered_severity': args['starttls_not_offered_severity'],
                         'severity': args['severity'], 'host_addresses': host_addresses}
        meta = {'hosts': len(hosts), 'vantages': vantages,
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
            elif args['compare_previous'] and args['previous_report']:
                previous = _changes.load_previous(args['previous_report'], required=True)
            elif args['compare_previous']:
                try:
                    previous = _changes.load_previous(self._previous_path(args['report_dir'], args['report_basename']))
                except _changes.PreviousReportError as exc:
                    # Found, not named: a file that is no report is no comparison, and no reason to stop.
                    warnings.append(f'{exc}: this run is not compared with it')
        except (_changes.PreviousReportError, _merge.MergeError) as exc:
            raise AnsibleActionFail(str(exc))
        dns_step = None
        if args['dns_checks'] and args['dns_checks']['enabled']:
            dns_options = dict(args['dns_checks'])
            if not dns_options['state_file'] and args['report_dir']:
                dns_options['state_file'] = f"{args['report_dir']}/{args['report_basename']}.mta-sts-state.json"
            try:
                dns_step = _dns_checks.DnsStep(dns_options, hosts, hostvars, host_results, host_addresses,
                                               args['severity'])
            except (_mail_dns.MailDnsError, ValueError) as exc:
                raise AnsibleActionFail(f'dns_checks: {exc}')
        try:
            report = _reports.audit(host_results + listeners, probes, judge_options, args['waivers'],
                                    args['fail_when'], meta, extra_findings=dns_step, previous=previous,
                                    assessed_hosts=assessed)
        except (VerdictError, _policy.PolicyError, _reports.ReportError) as exc:
            raise AnsibleActionFail(str(exc))
        looked_at_nothing = self._nothing_audited(report, hosts, host_results) if args['require_audited'] else None
        if looked_at_nothing:
            result.update(probes=probes_made, summary=report['summary'])
            if warnings:
                result['warnings'] = [visible(warning) for warning in warnings]
            return self._error(result, *looked_at_nothing)
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

        if dns_step is not None and args['report_dir']:
            # The DNS answers and the TLSA lines to publish, beside the reports (docs/dane-mta-sts.md).
            path = f"{args['report_dir']}/{args['report_basename']}.dns.json"
            _reports.atomic_write(path, json.dumps(dns_step.result(), indent=2, sort_keys=True, default=str) + '\n')
            written['dns'] = path
        summary = report['summary']
        outcome = 'policy-failed' if summary['failed'] and not args['partial'] else 'passed'
        result.update(changed=False, summary=summary, findings=report['findings'], reports=written,
                      waivers_expired=report['waivers_expired'], probes=probes_made, changes=report['changes'],
                      outcome=outcome)
        counts = ', '.join(f'{count} {severity}' for severity, count in summary['by_severity'].items() if count)
        display.display(visible(f"fleet_assess: {summary['findings']} finding(s) ({counts or 'none'}), "
                                f"{summary['unwaived']} unwaived, on {summary['listeners']} listener(s) of "
                                f"{summary['hosts']} host(s), {summary['probes']} probe(s)"
                                + (f"; reports: {', '.join(written.values())}" if written else '')))
        warnings.extend(f'policy: {problem}' for problem in policy_problems)
        if dns_step is not None:
            result['dns'] = dns_step.result()
        if warnings:
            result['warnings'] = [visible(warning) for warning in warnings]
        if args['partial']:
            # The merge applies the failure rule to the whole fleet; one slice does not decide it.
            result['msg'] = (f"partial report {meta['partial']['name']}: {summary['findings']} finding(s) on "
                             f"{summary['hosts']} host(s); merge with mailsec.starttls.report_merge")
        elif summary['failed'] and args['fail']:
            # Ansible prints a failed result whole: the findings, the resolved ones and the DNS answers are in
            # the reports and would bury the message, which says what failed and where to read on.
            del result['findings']
            result['changes'] = {key: value for key, value in report['changes'].items() if key != 'resolved_findings'}
            if 'dns' in written:
                del result['dns']
            result['failed'] = True
            result['msg'] = failure_message(outcome, summary['fail_reason'], written)
        else:
            result['msg'] = (f"{summary['findings']} finding(s), {summary['unwaived']} unwaived, on "
                             f"{summary['listeners']} listener(s) of {summary['hosts']} host(s)")
            if summary['failed'] and not args['partial']:
                display.display(f"fleet_assess: the failure rule is true ({summary['fail_reason']}); not failing (fail=false)")
        return result

    @staticmethod
    def _retire_reports(report_dir, basename) -> list:
        """Removes the reports of an earlier run, the fleet JSON moved to BASENAME.previous.json."""
        if not isinstance(report_dir, str) or not report_dir or not isinstance(basename, str) or os.sep in basename:
            return []
        directory = os.path.expanduser(os.path.expandvars(report_dir))
        retired = []
        for kind, suffix in _reports.FILE_SUFFIXES.items():
            path = os.path.join(directory, basename + suffix)
            if not os.path.lexists(path):
                continue
            try:
                if kind == 'json' and os.path.isfile(path) and not os.path.islink(path):
                    os.replace(path, os.path.join(directory, basename + PREVIOUS_SUFFIX))
                else:
                    os.unlink(path)
            except OSError as exc:
                raise AnsibleActionFail(f'cannot set aside the report of an earlier run {path}: {exc.strerror or exc}')
            retired.append(path)
        return retired

    @staticmethod
    def _previous_path(report_dir, basename) -> str | None:
        if not report_dir:
            return None
        for suffix in ('.json', PREVIOUS_SUFFIX):
            path = os.path.join(report_dir, basename + suffix)
            if os.path.exists(path):
                return path
        return None

    def _check_role_arguments(self, entry_point: str, task_vars: dict) -> None:
        """Every play host's variables against the calling role's argument spec (_role_arguments)."""
        role_path = task_vars.get('role_path')
        path = _role_arguments.spec_path(role_path) if role_path else None
        if path is None:
            raise AnsibleActionFail(f'role_argument_spec: the task runs in no role with a meta/argument_specs.yml '
                                    f'(role_path {role_path!r})')
        try:
            options = _role_arguments.entry_point_options(self._loader.load_from_file(path), entry_point, path)
        except _role_arguments.RoleSpecError as exc:
            raise AnsibleActionFail(f'role_argument_spec: {exc}')
        hosts = task_vars.get('ansible_play_batch') or task_vars.get('ansible_play_hosts_all') or []
        failing = _role_arguments.check_hosts(options, ((host, self._role_values(options, host, task_vars))
                                                        for host in hosts))
        if failing:
            role = task_vars.get('ansible_role_name') or task_vars.get('role_name') or os.path.basename(role_path)
            raise AnsibleActionFail(_role_arguments.describe(failing, role, entry_point))

    def _role_values(self, options: dict, host: str, task_vars: dict) -> dict:
        """The spec's variables as the role's tasks on `host` see them, templated."""
        variables = task_vars if host == task_vars.get('inventory_hostname') else self._variables_of(
            options, host, task_vars)
        templar = self._templar if variables is task_vars else self._templar.copy_with_new_env(
            available_variables=variables)
        return templar.template(_role_arguments.provided(options, variables))

    def _variables_of(self, options: dict, host: str, task_vars: dict):
        """Another host's variables for this task, as Ansible would give them to its worker: the play's and
        the role's (defaults, vars, play vars and vars files) with the host's own over them. Through the
        variable manager behind `hostvars` (not public API; checked with ansible-core 2.19 and 2.21); without it,
        the host's own variables (`hostvars`) over this host's."""
        hostvars = task_vars.get('hostvars')
        manager = getattr(hostvars, '_variable_manager', None)
        inventory = getattr(hostvars, '_inventory', None)
        target = inventory.get_host(host) if inventory is not None else None
        if manager is not None and target is not None:
            return manager.get_vars(play=self._task.get_play(), host=target, task=self._task,
                                    _hosts=task_vars.get('ansible_play_hosts'),
                                    _hosts_all=task_vars.get('ansible_play_hosts_all'))
        own = (hostvars or {}).get(host) or {}
        return dict(task_vars, **{name: own[name] for name in options if name in own})

    @staticmethod
    def _error(result: dict, outcome: str, detail: str) -> dict:
        message = f'{OUTCOME_MESSAGES[outcome]}: {detail}'
        if outcome != 'unreachable':
            raise AnsibleActionFail(message, result=dict(result, changed=False, outcome=outcome))
        # Like a host Ansible cannot log in to: ansible-playbook then exits 4, not 2 (docs/ci.md).
        result.update(changed=False, outcome=outcome, msg=message, unreachable=True)
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
    def _probe_in_batches(vantage: str, targets: list, options: dict, connect=None, max_parallel=None) -> list:
        """probe_many in batches of PROGRESS_BATCH targets (at least the concurrency), so that a long
        controller phase shows its progress at the default verbosity."""
        batch = max(PROGRESS_BATCH, int(options.get('concurrency') or 1))
        probes: list = []
        for start in range(0, len(targets), batch):
            probes.extend(probe_many(targets[start:start + batch], options, connect=connect, max_parallel=max_parallel))
            if len(targets) > batch:
                display.display(f'fleet_assess: {vantage}: probed {len(probes)}/{len(targets)} endpoint(s)')
        return probes

    @staticmethod
    def _own_target(host, record, reachable_via, owned, from_host, local, warnings, addresses_var, announce=True):
        """The target at the listener's own address (a wildcard at the host's inventory address), or
        None when the controller must not or cannot probe it there."""
        address = record.get('address')
        if address in ANY_ADDRESS:
            address = reachable_via
        elif from_host and _verdict.canonical_address(address) not in owned:
            if _is_loopback(address) and local:
                pass  # a local connection: the host is this machine, its loopback is its own
            elif _is_loopback(address):
                # Bound to the host's loopback: nothing but the host itself can reach it.
                return None
            else:
                if announce:
                    warnings.append(f'{host}: the listener on {_verdict.endpoint(address, record.get("port"))} '
                                    'was not probed from the controller: the address is not one of the '
                                    f'host\'s inventory addresses (ansible_host, {addresses_var})')
                return None
        try:
            return parse_target({'address': address, 'port': record['port'], 'protocol': record.get('protocol'),
                                 'sni': record.get('sni'), 'expected_names': record.get('expected_names')})
        except TargetError as exc:
            if announce:
                warnings.append(f'{host}: a listener was not probed from the controller: {exc}')
            return None

    @staticmethod
    def _probe_through(jump: dict, targets: list, probe_options: dict) -> list:
        connect, through = jump_connector(jump, probe_options['timeout'])
        try:
            vantage = f"jump:{jump['name'] or jump['host']}"
            return ActionModule._probe_in_batches(vantage, targets, dict(probe_options, vantage=vantage), connect=connect,
                                                  max_parallel=through.max_channels if through is not None else None)
        finally:
            if through is not None:
                through.close()
