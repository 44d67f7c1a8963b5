# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Remediation choices and their verification, from the audit's own findings (never a second judgement).

- plan(): the findings of one host (from an audit in the same play, a saved report, or a fresh
  judgement) + that host's listener records (mta_tls_info) + the user's certificates + the
  policy -> one action per listener: bind, withdraw, offer, disable, reload, or guidance.
- outcome(): the actions + the findings before and after (both from the same judgement) ->
  whether every targeted finding is gone and no listener gained a finding.
"""

from __future__ import annotations

import fnmatch

from ansible_collections.mailsec.starttls.plugins.module_utils import _host_result, _verdict

POLICIES = ('auto', 'withdraw', 'bind')
EDITABLE_MTAS = ('postfix', 'exim', 'dovecot', 'opensmtpd', 'sendmail')

# The rules each action resolves; anything else on the listener keeps its guidance.
BIND_RESOLVES = ('starttls-advertised-without-certificate', 'implicit-tls-without-certificate',
                 'certificate-unreadable', 'certificate-key-mismatch', 'certificate-expired')
WITHDRAW_RESOLVES = ('starttls-advertised-without-certificate',)
OFFER_RESOLVES = ('starttls-not-offered',)
RELOAD_RESOLVES = ('presented-certificate-differs',)
# A supplied certificate replaces a bound one with these findings.
REPLACE_RESOLVES = ('certificate-unreadable', 'certificate-key-mismatch', 'certificate-expired', 'certificate-expiring',
                    'certificate-host-mismatch', 'validation-failure')


class RemediationError(Exception):
    """Input the plan cannot use (a malformed report or certificate list)."""


def _key(host, address, port) -> tuple:
    return (host, _verdict.canonical_address(address), _verdict.as_port(port))


def _finding_key(finding: dict) -> tuple:
    listener = finding.get('listener') or {}
    return _key(finding.get('host'), listener.get('address'), listener.get('port'))


def _listener_key(host: str, record: dict) -> tuple:
    return _key(host, record.get('address'), record.get('port'))


def findings_of(report_or_findings, host: str) -> list:
    """The findings of one host from a report dict, a list of findings, or None."""
    if report_or_findings is None:
        return []
    if isinstance(report_or_findings, dict):
        if 'findings' not in report_or_findings:
            raise RemediationError('the report has no "findings" (expected a mailsec.starttls audit report)')
        report_or_findings = report_or_findings['findings']
    if not isinstance(report_or_findings, list):
        raise RemediationError('findings must be a list')
    return [finding for finding in report_or_findings
            if isinstance(finding, dict) and finding.get('host') == host and not finding.get('waived')]


def _selected(listener: dict, only: list) -> bool:
    for selector in only:
        if not isinstance(selector, dict):
            raise RemediationError('each starttls_remediate_listeners entry is a dict of mta, instance, address, '
                                   'port, service')
        if all(_verdict.canonical_address(listener.get(key)) == _verdict.canonical_address(value)
               if key == 'address' else
               (_verdict.as_port(listener.get(key)) == _verdict.as_port(value) if key == 'port'
                else listener.get(key) == value)
               for key, value in selector.items() if value is not None):
            return True
    return False


def _user_certificate(certificates: list, host: str, record: dict) -> dict | None:
    """The most specific entry of starttls_certificates for this listener (host, address, port)."""
    best, best_score = None, -1
    for entry in certificates or []:
        if not isinstance(entry, dict) or not entry.get('certificate'):
            raise RemediationError('every starttls_certificates entry needs "certificate" (and "private_key")')
        score = 0
        if entry.get('host') is not None:
            if not fnmatch.fnmatchcase(host, str(entry['host'])):
                continue
            score += 1
        if entry.get('address') is not None:
            if _verdict.canonical_address(entry['address']) != _verdict.canonical_address(record.get('address')):
                continue
            score += 2
        if entry.get('port') is not None:
            if _verdict.as_port(entry['port']) != _verdict.as_port(record.get('port')):
                continue
            score += 4
        if score > best_score:
            best, best_score = entry, score
    if best is None:
        return None
    return {'certificate': best['certificate'], 'private_key': best.get('private_key'),
            'chain': list(best.get('chain') or []), 'source': 'starttls_certificates',
            'expected_names': list(best.get('expected_names') or [])}


def _names_fit(store: dict, record: dict, serving: dict, names: list) -> bool:
    """A certificate fits another listener when that listener has the same address (clients reach
    both by one name), or the certificate covers the listener's address or one of `names`."""
    if _verdict.canonical_address(serving.get('address')) == _verdict.canonical_address(record.get('address')):
        return True
    describe = ((store or {}).get('certificate') or {}).get('describe') or {}
    sans = [str(item) for item in describe.get('sans') or []]
    if f'IP:{record.get("address")}' in sans:
        return True
    dns = [item[4:].lower() for item in sans if item.startswith('DNS:')]
    for name in names or []:
        name = str(name).lower()
        for pattern in dns:
            if pattern == name or (pattern.startswith('*.') and name.split('.', 1)[-1] == pattern[2:]
                                   and name.count('.') == pattern.count('.')):
                return True
    return False


def _served_elsewhere(records: list, record: dict, names: list) -> dict | None:
    """A usable certificate the same instance already serves on another listener, when its names fit."""
    for other in records:
        if other is record or other.get('mta') != record.get('mta') or other.get('instance') != record.get('instance'):
            continue
        binding = other.get('binding') or {}
        store = other.get('store') or {}
        if not binding.get('certificate') or store.get('usable') is not True:
            continue
        if any(problem.get('id') != 'certificate-expiring' for problem in store.get('problems') or []):
            continue
        if _names_fit(store, record, other, names):
            return {'certificate': binding['certificate'], 'private_key': binding.get('key'),
                    'chain': list(binding.get('chain') or []), 'source': f'served by {other.get("id")}',
                    'expected_names': []}
    return None


def _module_args(record: dict, **state) -> dict:
    args = {'mta': record.get('mta'), 'instance': record.get('instance'), 'address': record.get('address'),
            'port': record.get('port'), 'service': record.get('service')}
    args.update({key: value for key, value in state.items() if value not in (None, [], '')})
    return args


def plan(findings: list, records, host: str, certificates: list | None = None, policy: str = 'auto',
         current: list | None = None, disable_implicit: bool = False, names: list | None = None,
         allow_shared: bool = False, only: list | None = None) -> list:
    """One action per listener with findings. `findings`: the input findings of this host;
    `current`: this host's findings now (a finding the input has but the judgement no longer
    shows is left alone: resolved since the report); `records`: the host's mta_tls_info result (or
    its listener records, as gather_host makes them);
    `only`: selectors ({mta, instance, address, port, service}, each key optional) that limit the
    listeners remediated (none: all)."""
    if policy not in POLICIES:
        raise RemediationError(f'policy must be one of {", ".join(POLICIES)}, not {policy!r}')
    wanted = findings_of(findings, host)
    if current is not None:
        present = {(finding.get('id'), _finding_key(finding)) for finding in findings_of(current, host)}
        wanted = [finding for finding in wanted if (finding.get('id'), _finding_key(finding)) in present]
    if only:
        wanted = [finding for finding in wanted if _selected(finding.get('listener') or {}, only)]
    by_listener: dict = {}
    for finding in wanted:
        by_listener.setdefault(_finding_key(finding), []).append(finding)
    records = _host_result.listeners_of(records)
    record_by_key = {}
    for record in records:
        record_by_key.setdefault(_listener_key(host, record), record)
    actions = []
    for key, group in by_listener.items():
        rules = []
        for finding in group:
            if finding['id'] not in rules:
                rules.append(finding['id'])
        record = record_by_key.get(key)
        fixes = []
        for finding in group:
            if finding.get('fix') and finding['fix'] not in fixes:
                fixes.append(finding['fix'])
        action = {'host': host, 'listener': dict(group[0].get('listener') or {}), 'rules': rules,
                  'action': 'guidance', 'module_args': None, 'reload': False, 'resolves': [], 'reason': '',
                  'guidance': fixes}
        if record is None:
            action['reason'] = 'no host record of this listener (black-box or not found by mta_tls_info): guidance only'
        elif record.get('mta') not in EDITABLE_MTAS:
            action['reason'] = f'{record.get("mta")} listeners are not edited by mta_tls_config: guidance only'
        else:
            action['listener'].update(id=record.get('id'), service=record.get('service'),
                                      instance=record.get('instance'), mta=record.get('mta'))
            _choose(action, rules, record, records, host, certificates, policy, disable_implicit, names or [],
                    allow_shared)
        actions.append(action)
    actions.sort(key=lambda item: (str(item['listener'].get('address')), str(item['listener'].get('port'))))
    return actions


def _choose(action, rules, record, records, host, certificates, policy, disable_implicit, names, allow_shared):
    implicit = record.get('tls_mode') == 'implicit'
    certificate = _user_certificate(certificates, host, record)
    if certificate is None and policy != 'withdraw':
        certificate = _served_elsewhere(records, record, names)

    def bind(reason, state_key, state_value):
        action['action'] = 'bind'
        action['certificate'] = certificate
        action['resolves'] = [rule for rule in rules if rule in BIND_RESOLVES]
        action['reason'] = reason
        action['module_args'] = _module_args(record, certificate=certificate['certificate'],
                                             private_key=certificate.get('private_key'),
                                             chain=certificate.get('chain'),
                                             expected_names=certificate.get('expected_names') or names,
                                             allow_shared=allow_shared, **{state_key: state_value})

    if 'starttls-advertised-without-certificate' in rules and not implicit:
        if policy == 'withdraw' or (policy == 'auto' and certificate is None):
            action['action'] = 'withdraw'
            action['resolves'] = list(WITHDRAW_RESOLVES)
            action['reason'] = ('policy withdraw' if policy == 'withdraw'
                                else 'no certificate supplied for this listener and none served by the instance '
                                     'fits it: stop advertising STARTTLS on this listener only')
            action['module_args'] = _module_args(record, starttls='withdrawn', allow_shared=allow_shared)
        elif certificate is not None:
            bind(f'bind the certificate ({certificate["source"]})', 'starttls', 'offered')
        else:
            action['action'] = 'unresolved'
            action['reason'] = 'policy bind, but no certificate is supplied for this listener (starttls_certificates)'
        return
    if 'implicit-tls-without-certificate' in rules and implicit:
        if certificate is not None and policy != 'withdraw':
            bind(f'bind the certificate ({certificate["source"]})', 'implicit_tls', 'bound')
        elif disable_implicit:
            action['action'] = 'disable'
            action['resolves'] = ['implicit-tls-without-certificate']
            action['reason'] = 'starttls_remediate_disable_implicit: take the listener out of service'
            action['module_args'] = _module_args(record, implicit_tls='disabled', allow_shared=allow_shared)
        else:
            action['reason'] = ('implicit-TLS listener without a certificate to bind; it is disabled only when '
                                'starttls_remediate_disable_implicit is true')
        return
    if 'starttls-not-offered' in rules:
        if policy == 'withdraw':
            action['reason'] = 'policy withdraw: STARTTLS is not turned on'
            return
        action['action'] = 'offer'
        action['resolves'] = list(OFFER_RESOLVES)
        action['reason'] = 'a usable certificate is bound: advertise STARTTLS'
        action['module_args'] = _module_args(record, starttls='offered', allow_shared=allow_shared)
        return
    if 'presented-certificate-differs' in rules:
        store = record.get('store') or {}
        if store.get('usable') is True:
            action['action'] = 'reload'
            action['reload'] = True
            action['resolves'] = list(RELOAD_RESOLVES)
            action['reason'] = 'the certificate on disk is valid and differs from the one served: reload'
            # No state declared: mta_tls_config changes nothing and names the instance's reload.
            action['module_args'] = _module_args(record)
        else:
            action['reason'] = 'the certificate on disk is not usable: reloading would not help'
        return
    supplied = _user_certificate(certificates, host, record)
    if supplied is not None and policy != 'withdraw' and set(rules) & set(REPLACE_RESOLVES):
        # The user names a certificate for a listener whose bound one is bad (expired, wrong names, ...).
        certificate = supplied
        if implicit:
            bind('replace the bound certificate with the one supplied (starttls_certificates)', 'implicit_tls', 'bound')
        else:
            bind('replace the bound certificate with the one supplied (starttls_certificates)', 'starttls', 'offered')
        action['resolves'] = [rule for rule in rules if rule in REPLACE_RESOLVES]
        return
    action['reason'] = 'no automatic change for these findings: guidance only'


def _rules_by_listener(findings: list, host: str) -> dict:
    rules: dict = {}
    for finding in findings_of(findings, host):
        rules.setdefault(_finding_key(finding), set()).add(finding['id'])
    return rules


def _worst_by_listener(findings: list, host: str) -> dict:
    """Listener key -> rank of its worst severity (0 = critical)."""
    worst: dict = {}
    for finding in findings_of(findings, host):
        rank = _verdict.SEVERITY_RANK.get(finding.get('severity'), len(_verdict.SEVERITIES))
        key = _finding_key(finding)
        worst[key] = min(rank, worst.get(key, rank))
    return worst


def outcome(actions: list, before: list, after: list, host: str) -> dict:
    """Whether the change did what it was for: every resolved rule gone from its listener, and no
    listener of a changed instance (the changed ones included) worse than before."""
    before_rules = _rules_by_listener(before, host)
    after_rules = _rules_by_listener(after, host)
    remaining, regressions = [], []
    for action in actions or []:
        if not action.get('resolves') or action.get('action') in ('guidance', 'unresolved'):
            continue
        listener = action.get('listener') or {}
        key = _key(host, listener.get('address'), listener.get('port'))
        still = sorted(set(action['resolves']) & after_rules.get(key, set()))
        if still:
            remaining.append({'listener': _verdict.endpoint(key[1], key[2]), 'rules': still})
    # Siblings: every listener of an instance that was changed or reloaded (other instances were not touched,
    # and their findings may come and go with timing: Dovecot's key-mismatch BYE races the handshake).
    touched = {((action.get('listener') or {}).get('mta'), (action.get('listener') or {}).get('instance'))
               for action in actions or [] if action.get('module_args') or action.get('reload')}
    instance_of = {}
    for finding in findings_of(after, host) + findings_of(before, host):
        listener = finding.get('listener') or {}
        instance_of.setdefault(_finding_key(finding), (listener.get('mta'), listener.get('instance')))
    # Worse: a listener that had no finding has one now, or its worst finding is more severe than before.
    # A listener already failing may show its one defect through another rule from one probe to the next
    # (Dovecot's BYE after a broken key arrives before or after the handshake starts): not worse.
    before_worst, after_worst = _worst_by_listener(before, host), _worst_by_listener(after, host)
    for key, rules in sorted(after_rules.items(), key=lambda item: str(item[0])):
        if instance_of.get(key) not in touched:
            continue
        new = sorted(rules - before_rules.get(key, set()))
        if new and (key not in before_worst or after_worst[key] < before_worst[key]):
            regressions.append({'listener': _verdict.endpoint(key[1], key[2]), 'rules': new})
    failing = {(item['listener'], rule) for item in remaining + regressions for rule in item['rules']}
    evidence = []
    for finding in findings_of(after, host):
        listener = finding.get('listener') or {}
        label = _verdict.endpoint(listener.get('address'), listener.get('port'))
        if (label, finding.get('id')) in failing:
            evidence.append({'id': finding.get('id'), 'vantage': finding.get('vantage'), 'listener': label,
                             'summary': finding.get('summary'), 'probe': (finding.get('evidence') or {}).get('probe')})
    ok = not remaining and not regressions
    parts = []
    if remaining:
        parts.append('still found: ' + '; '.join(f'{item["listener"]} {", ".join(item["rules"])}' for item in remaining))
    if regressions:
        parts.append('new on: ' + '; '.join(f'{item["listener"]} {", ".join(item["rules"])}' for item in regressions))
    return {'ok': ok, 'remaining': remaining, 'regressions': regressions, 'evidence': evidence,
            'message': 'every targeted finding is gone and no listener is worse' if ok else ' / '.join(parts)}


def _trim_result(result: dict) -> dict:
    """What a changes report keeps of one mta_tls_config result (no diff text, no certificate details)."""
    keys = ('changed', 'failed', 'msg', 'stage', 'actions', 'files', 'backups', 'affected_listeners', 'reload_command',
            'manual')
    kept = {key: result.get(key) for key in keys if result.get(key) not in (None, [], {})}
    check = result.get('certificate_check')
    if isinstance(check, dict):
        kept['certificate_check'] = {'usable': check.get('usable'),
                                     'problems': [problem.get('id') for problem in check.get('problems') or []]}
    return kept


def record(actions: list, patch_results: list, host: str, before: list, after: list | None, meta: dict) -> dict:
    """The changes report of one host: each action with what mta_tls_config did, the reloads, and
    the verification."""
    by_listener = {}
    for result in patch_results or []:
        item = result.get('item') or {}
        listener = item.get('listener') or {}
        by_listener[(listener.get('address'), listener.get('port'))] = _trim_result(result)
    entries = []
    for action in actions or []:
        listener = action.get('listener') or {}
        entry = {key: action.get(key) for key in ('listener', 'rules', 'action', 'resolves', 'reason')}
        if action.get('certificate'):
            entry['certificate'] = {key: action['certificate'].get(key)
                                    for key in ('certificate', 'private_key', 'chain', 'source')}
        if action.get('module_args') is None and action.get('guidance'):
            entry['guidance'] = action['guidance']
        entry['result'] = by_listener.get((listener.get('address'), listener.get('port')))
        entries.append(entry)
    report = {'host': host, 'changes': entries, 'findings_before': len(findings_of(before, host))}
    if after is not None:
        report['findings_after'] = len(findings_of(after, host))
        report['verification'] = outcome(actions, before, after, host)
    report.update(meta or {})
    return report
