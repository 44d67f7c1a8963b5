# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The domain's promise held against the fleet: DANE TLSA and MTA-STS judged against what every
vantage was served, the certificate and key bound on disk, and the key staged for renewal.

Pure functions over plain records (what _mail_dns.gather read, the listeners and probes the
audit judged): no I/O. The findings have the shape of _verdict's and go through the same
waivers and reports; docs/findings.md documents each ID, docs/dane-mta-sts.md the whole check.
"""

from __future__ import annotations

import re

from ansible_collections.mailsec.starttls.plugins.module_utils import _tlsa, _verdict, _x509
from ansible_collections.mailsec.starttls.plugins.module_utils._model import ANY_ADDRESS, WILDCARD_ADDRESSES
from ansible_collections.mailsec.starttls.plugins.plugin_utils import _mail_dns

DANE_PORT = 25
MAX_AGE_FLOOR = 86400
ENFORCE_FAILURES = ('starttls-refused', 'starttls-dropped', 'handshake-failed', 'no-certificate', 'not-advertised')


# -- the findings ----------------------------------------------------------------------------

def _stand_in(address: str, port, protocol: str) -> dict:
    return {'host': address, 'address': address, 'port': port, 'protocol': protocol, 'mode': 'probe'}


class _Findings:
    def __init__(self, severity_policy: dict | None):
        self.policy = severity_policy or {}
        self.findings: list = []
        self.keys: set = set()

    def add(self, rule: str, listener: dict, vantage, summary: str, evidence: dict, fix: str,
            severity: str | None = None) -> None:
        key = _verdict.finding_key(rule, listener, vantage)
        if key in self.keys:
            return
        self.keys.add(key)
        self.findings.append({
            'id': rule,
            'severity': self.policy.get(rule) or severity or _verdict.RULES[rule]['severity'],
            'title': _verdict.RULES[rule]['title'],
            'host': listener.get('host'),
            'listener': {'address': listener.get('address'), 'port': _verdict.as_port(listener.get('port')),
                         'protocol': listener.get('protocol'), 'mta': listener.get('mta'),
                         'service': listener.get('service'), 'instance': listener.get('instance'),
                         'defined_at': listener.get('defined_at')},
            'vantage': vantage,
            'summary': _verdict.one_line(summary, 300),
            'evidence': evidence,
            'fix': fix,
            'waived': False,
            'waiver': None,
            'key': key,
        })


def merge(core: list, extra: list) -> list:
    """One finding per fault: an extra finding with the key of a core one raises the core one's
    severity and adds its evidence instead of standing beside it."""
    by_key = {finding.get('key'): finding for finding in core}
    merged = list(core)
    for finding in extra:
        existing = by_key.get(finding['key'])
        if existing is None:
            merged.append(finding)
            by_key[finding['key']] = finding
            continue
        if _verdict.SEVERITY_RANK[finding['severity']] < _verdict.SEVERITY_RANK.get(existing['severity'], 9):
            existing['severity'] = finding['severity']
        existing['evidence'] = dict(existing.get('evidence') or {}, domain_policy=finding['evidence'])
        existing['summary'] = _verdict.one_line(f"{existing['summary']}; {finding['summary']}", 300)
        existing['fix'] = f"{existing.get('fix') or ''} {finding['fix']}".strip()
    return merged


# -- fixes -------------------------------------------------------------------------------------

RELOAD_AFTER_RENEWAL = {
    'postfix': 'Postfix: make the renewal hook run `postfix reload`.',
    'exim': 'Exim: make the renewal hook restart Exim.',
    'opensmtpd': 'OpenSMTPD: make the renewal hook restart smtpd.',
    'sendmail': 'Sendmail: make the renewal hook restart sendmail.',
}


def _tlsa_fix(mx_name: str, digests: dict | None, mta: str | None, what: str) -> str:
    lines = _tlsa.zone_lines(_tlsa.tlsa_owner(mx_name, DANE_PORT), digests or {}) if digests else []
    text = (f'Publish a TLSA record that pins {what} before serving it, keep the old record until no '
            'resolver caches it (two TTLs), then remove it. ')
    if lines:
        text += f'For the key served now: `{lines[-1]}`. '
    text += ('BIND, Knot, NSD: add the line to the zone and re-sign it (inline signing does that); a hosted DNS '
             'provider: add a TLSA record with usage 3, selector 1, matching type 1. ')
    text += RELOAD_AFTER_RENEWAL.get((mta or '').lower(), '')
    return text.strip()


NEXT_KEY_FIX = ('Pin the next key before the renewal: publish `3 1 1` for it beside the current record '
                '(`ansible-playbook` with the filter mailsec.starttls.tlsa_records prints both), or keep the key '
                'across renewals: certbot `--reuse-key` (renewal/NAME.conf `reuse_key = True`), acme.sh without '
                '`--always-force-new-domain-key`; or publish a DANE-TA `2 1 1` record for the issuing CA instead.')
DNSSEC_FIX = ('Sign the zone and publish its DS record at the parent (BIND `dnssec-policy default;` with '
              '`inline-signing yes;`, Knot `dnssec-signing: on`, or the DNS provider\'s DNSSEC switch); check it '
              'with `delv` or `kdig +dnssec`. A bogus answer usually means an expired signature or a DS that no '
              'longer matches a key: re-sign, or roll the DS.')
STS_POLICY_FIX = ('Serve a policy at https://mta-sts.DOMAIN/.well-known/mta-sts.txt with `version: STSv1`, '
                  '`mode`, one `mx:` line per MX name (or a `*.` pattern) and `max_age` between 86400 and '
                  '31557600; change the `id=` of the `_mta-sts` TXT record whenever the policy changes.')
STS_WEBPKI_FIX = ('Serve mta-sts.DOMAIN over HTTPS with a certificate from a CA that senders trust, that names '
                  'mta-sts.DOMAIN and is complete (leaf and intermediates); senders ignore a policy they cannot '
                  'fetch this way and keep the cached one until max_age ends.')


def _tlsrpt_fix(domain: str) -> str:
    return (f'Publish one TXT record: `_smtp._tls.{domain}. 3600 IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@{domain}"` '
            '(or `rua=https://...` to receive the reports over HTTPS; several destinations separated by commas), '
            'remove any other record there that starts with `v=TLSRPTv1`, and make the mailbox accept the daily '
            'reports (RFC 8460 3). Senders then tell you when DANE or MTA-STS made them fail to deliver.')


def _enforce_fix(listener: dict) -> str:
    return ('The domain\'s MTA-STS policy is in enforce mode, so senders that honour it refuse to deliver here. '
            + _verdict.fix_for('starttls-advertised-without-certificate', listener, {})
            + ' Until it is fixed, switch the policy to `mode: testing` (and change the TXT id) or remove the MX '
              'from the policy.')


# -- matching the fleet to MX names -------------------------------------------------------------

def _listeners_of(addresses: list, entries: list, host_addresses: dict, port: int) -> list:
    """The fleet's listeners that answer for an MX: on its port and one of its addresses
    (a wildcard listener through its host's addresses)."""
    wanted = {_verdict.canonical_address(address) for address in addresses}
    found = []
    for entry in entries:
        listener = entry['listener']
        if _verdict.as_port(listener.get('port')) != port:
            continue
        own = {_verdict.canonical_address(listener.get(key)) for key in ('address', 'probe_address')}
        if _verdict.canonical_address(listener.get('address')) in WILDCARD_ADDRESSES or listener.get('address') in ANY_ADDRESS:
            own |= {_verdict.canonical_address(address) for address in host_addresses.get(listener.get('host')) or []}
        if own & wanted:
            found.append(entry)
    return found


def mx_pattern_matches(pattern: str, name: str) -> bool:
    """RFC 8461 4.1: a leading `*.` matches exactly one label."""
    pattern, name = pattern.lower().rstrip('.'), name.lower().rstrip('.')
    if pattern.startswith('*.'):
        head, _dot, tail = name.partition('.')
        return bool(head) and tail == pattern[2:]
    return pattern == name


def _dns_evidence(answer: dict) -> dict:
    return {key: answer.get(key) for key in ('name', 'type', 'status', 'records', 'secure', 'bogus', 'resolver', 'error')}


def _common_name(subject: str | None) -> str | None:
    match = re.search(r'(?:^|,)\s*CN=([^,]+)', subject or '')
    return match.group(1).strip() if match else None


def _served_digests(probe: dict) -> list:
    return list((probe.get('certificate') or {}).get('tlsa_chain') or [])


def _store_digests(listener: dict) -> list:
    store = _verdict.store_of(listener) or {}
    return list((store.get('tlsa') or {}).get('chain') or [])


def _store_key(listener: dict) -> dict:
    store = _verdict.store_of(listener) or {}
    return (store.get('tlsa') or {}).get('key') or {}


# -- TLSA ----------------------------------------------------------------------------------------

def judge_tlsa(mx: dict, entries: list, next_keys: dict, findings: _Findings, host_addresses: dict) -> dict:
    """One MX name: its TLSA records against every listener that answers for it."""
    name, answer = mx['name'], mx['tlsa']
    owner = _tlsa.tlsa_owner(name, mx['port'])
    served = _listeners_of(mx['addresses'], entries, host_addresses, mx['port'])
    dns_ev = _dns_evidence(answer)
    summary = {'mx': name, 'tlsa_owner': owner, 'dnssec': answer.get('secure'), 'records': answer.get('records'),
               'listeners': [_verdict.listener_key(entry['listener']) for entry in served], 'publish': []}
    stand_in = _stand_in(name, mx['port'], 'smtp')
    if answer.get('bogus'):
        findings.add('dnssec-invalid', stand_in, None,
                     f'{owner} TLSA: the validating resolver answers SERVFAIL (bogus DNSSEC): DANE senders defer mail '
                     f'to {name}', {'dns': dns_ev}, DNSSEC_FIX, severity='high')
        return summary
    if answer.get('status') in ('TIMEOUT', 'SERVFAIL', 'REFUSED'):
        findings.add('dnssec-invalid', stand_in, None,
                     f'{owner} TLSA: no answer from the resolver ({answer.get("status")}: '
                     f'{_verdict.one_line(answer.get("error") or "", 80)}): DANE senders defer mail to {name}',
                     {'dns': dns_ev}, DNSSEC_FIX, severity='medium')
        return summary
    records = [_tlsa.parse_record(text) for text in answer.get('records') or []]
    for entry in served:
        # The records to publish: for the key on disk and for every staged next key.
        listener = entry['listener']
        for digests, comment in [(_store_key(listener), f'{listener.get("host")}: key bound on disk')] + [
                (key, f'{listener.get("host")}: next key {key.get("path")} ({key.get("source")})')
                for key in next_keys.get(listener.get('host'), []) if key.get('spki_sha256')]:
            for line in _tlsa.zone_lines(owner, digests, comment=comment):
                if line not in summary['publish']:
                    summary['publish'].append(line)
    if not records:
        return summary
    usable = [record for record in records if not record['problem']]
    record_ev = [{'record': _tlsa.presentation(record), 'problem': record['problem']} for record in records]
    if not answer.get('secure'):
        findings.add('dnssec-invalid', stand_in, None,
                     f'{owner} publishes TLSA records but the answer is not DNSSEC-validated (AD not set): senders '
                     'ignore them, so DANE is not in effect', {'dns': dns_ev, 'tlsa': record_ev}, DNSSEC_FIX,
                     severity='medium')
    if not usable:
        findings.add('tlsa-invalid', stand_in, None,
                     f'{owner}: none of the {len(records)} TLSA record(s) is usable for SMTP '
                     f'({_verdict.one_line(records[0]["problem"], 100)})',
                     {'dns': dns_ev, 'tlsa': record_ev},
                     'Publish DANE-EE `3 1 1` (or DANE-TA `2 1 1`) records; RFC 7672 makes PKIX usages 0 and 1 '
                     'unusable for SMTP.', severity='high' if answer.get('secure') else 'medium')
        return summary
    # A mismatch breaks delivery only when senders trust the records (a secure answer).
    mismatch_severity = 'critical' if answer.get('secure') else 'medium'
    ta_covers_current = False
    for entry in served:
        listener = entry['listener']
        mta = listener.get('mta')
        key_digests = _store_key(listener)
        for probe in entry['probes']:
            status = _verdict.classify_probe(probe)
            vantage = probe.get('vantage')
            chain = _served_digests(probe)
            if status == 'not-advertised':
                findings.add('tlsa-invalid', listener, vantage,
                             f'{_verdict.listener_label(listener)} does not offer STARTTLS (seen from {vantage}) '
                             f'although {owner} publishes TLSA: DANE senders defer mail',
                             {'dns': dns_ev, 'tlsa': record_ev, 'probe': _verdict.probe_evidence(probe)},
                             _verdict.fix_for('starttls-not-offered', listener, {}), severity=mismatch_severity)
                continue
            if status != 'tls' or not chain:
                continue
            matched = _tlsa.match_chain(usable, chain)
            if any(record['usage'] == 2 for record in matched):
                ta_covers_current = True
            if not matched:
                findings.add('tlsa-invalid', listener, vantage,
                             f'{_verdict.listener_label(listener)} serves a chain that no TLSA record at {owner} pins '
                             f'(seen from {vantage}; leaf key sha256 {str(chain[0].get("spki_sha256"))[:16]}...)',
                             {'dns': dns_ev, 'tlsa': record_ev, 'served': chain[:4],
                              'probe': _verdict.probe_evidence(probe)},
                             _tlsa_fix(name, chain[0], mta, 'the key this listener serves'),
                             severity=mismatch_severity)
        disk = _store_digests(listener)
        if disk:
            matched = _tlsa.match_chain(usable, disk)
            if any(record['usage'] == 2 for record in matched):
                ta_covers_current = True
            if not matched:
                served_now = [_served_digests(probe)[:1] for probe in entry['probes'] if _served_digests(probe)]
                differs = any(first and first[0].get('cert_sha256') != disk[0].get('cert_sha256')
                              for first in served_now)
                what = ('the certificate on disk, which the next reload will serve,' if differs
                        else 'the certificate and key bound on disk')
                findings.add('tlsa-invalid', listener, None,
                             f'{_verdict.listener_label(listener)}: no TLSA record at {owner} pins {what} '
                             f'({(_verdict.store_certificate(_verdict.store_of(listener)).get("path") or "?")})',
                             {'dns': dns_ev, 'tlsa': record_ev, 'on_disk': disk[:4]},
                             _tlsa_fix(name, dict(disk[0], **{key: value for key, value in key_digests.items() if value}),
                                       mta, 'the key bound on disk'),
                             severity=mismatch_severity)
    for entry in served:
        listener = entry['listener']
        bound = (listener.get('binding') or {}).get('certificate')
        for key in next_keys.get(listener.get('host'), []):
            if key.get('for_certificate') not in (None, bound):
                continue
            if ta_covers_current:
                continue
            if key.get('unknown_next_key'):
                findings.add('dane-next-key-unpublished', listener, None,
                             f'{_verdict.listener_label(listener)}: {key.get("source")} lineage {key.get("lineage")} '
                             f'makes a new key at the next renewal and none is staged, so no TLSA record at {owner} '
                             'can pin it in advance', {'next_key': key, 'tlsa': record_ev, 'dns': dns_ev},
                             NEXT_KEY_FIX, severity='medium')
                continue
            if key.get('error') or not key.get('spki_sha256'):
                continue
            if not _tlsa.match_key(usable, key):
                findings.add('dane-next-key-unpublished', listener, None,
                             f'{_verdict.listener_label(listener)}: the key staged for the next renewal '
                             f'({key.get("path")}, {key.get("source")}) is not pinned by any TLSA record at {owner}: '
                             'the renewal will break DANE delivery',
                             {'next_key': key, 'tlsa': record_ev, 'dns': dns_ev},
                             NEXT_KEY_FIX + ' Record for it: `'
                             + (_tlsa.zone_lines(owner, key) or ['?'])[-1] + '`.',
                             severity='high' if answer.get('secure') else 'medium')
    return summary


# -- MTA-STS ---------------------------------------------------------------------------------------

def judge_sts(domain: dict, mx_hosts: dict, entries: list, findings: _Findings, host_addresses: dict,
              previous: dict) -> dict:
    name = domain['domain']
    state = {'domain': name, 'sts_id': None, 'policy_sha256': None, 'mode': None,
             'tlsrpt': bool(domain.get('tlsrpt'))}
    if not domain.get('sts_records') and not domain['sts_txt'].get('bogus'):
        return state
    policy_host = _stand_in(f'mta-sts.{name}', 443, 'https')
    sts_dns = _dns_evidence(domain['sts_txt'])
    if domain['sts_txt'].get('bogus'):
        findings.add('dnssec-invalid', _stand_in(f'_mta-sts.{name}', 53, 'dns'), None,
                     f'_mta-sts.{name} TXT: the validating resolver answers SERVFAIL (bogus DNSSEC)',
                     {'dns': sts_dns}, DNSSEC_FIX, severity='medium')
        return state
    if len(domain['sts_records']) > 1:
        findings.add('sts-policy-invalid', policy_host, None,
                     f'_mta-sts.{name} has {len(domain["sts_records"])} v=STSv1 TXT records; senders ignore them all',
                     {'dns': sts_dns}, STS_POLICY_FIX, severity='high')
        return state
    tags = _parse_tags(domain['sts_records'][0])
    state['sts_id'] = tags.get('id')
    if not re.match(r'^[A-Za-z0-9]{1,32}$', tags.get('id') or ''):
        findings.add('sts-policy-invalid', policy_host, None,
                     f'_mta-sts.{name}: id {tags.get("id")!r} is not 1 to 32 letters and digits (RFC 8461 3.1)',
                     {'dns': sts_dns}, STS_POLICY_FIX, severity='high')
    policy = domain.get('policy') or {}
    fetch_keys = ('url', 'address', 'dns', 'status', 'content_type', 'stage', 'error', 'webpki', 'ca_file', 'sha256')
    fetch_ev = {key: policy.get(key) for key in fetch_keys}
    if policy.get('webpki') is False or (policy.get('stage') == 'tls'):
        findings.add('sts-webpki-invalid', policy_host, None,
                     f'mta-sts.{name}: the policy host\'s certificate does not validate: '
                     f'{_verdict.one_line(policy.get("error"), 120)}',
                     {'dns': sts_dns, 'fetch': fetch_ev}, STS_WEBPKI_FIX, severity='high')
        return state
    if policy.get('body') is None:
        findings.add('sts-policy-invalid', policy_host, None,
                     f'mta-sts.{name}: the policy could not be fetched ({policy.get("stage")}: '
                     f'{_verdict.one_line(policy.get("error"), 120)})',
                     {'dns': sts_dns, 'fetch': fetch_ev}, STS_POLICY_FIX, severity='high')
        return state
    parsed = policy.get('parsed') or {}
    state.update(policy_sha256=policy.get('sha256'), mode=parsed.get('mode'))
    evidence = {'dns': sts_dns, 'fetch': fetch_ev,
                'policy': {key: parsed.get(key) for key in ('version', 'mode', 'mx', 'max_age', 'problems')}}
    enforce = parsed.get('mode') == 'enforce'
    if parsed.get('problems'):
        findings.add('sts-policy-invalid', policy_host, None,
                     f'mta-sts.{name}: the policy is invalid: {"; ".join(parsed["problems"])[:200]}', evidence,
                     STS_POLICY_FIX, severity='high')
    elif isinstance(parsed.get('max_age'), int) and parsed['max_age'] < MAX_AGE_FLOOR and parsed.get('mode') != 'none':
        findings.add('sts-policy-invalid', policy_host, 'max_age',
                     f'mta-sts.{name}: max_age {parsed["max_age"]} s is under a day: the policy protects little '
                     'between fetches (RFC 8461 3.2 suggests weeks)', evidence, STS_POLICY_FIX, severity='low')
    before = previous.get(name) or {}
    if (before.get('policy_sha256') and policy.get('sha256') and before.get('policy_sha256') != policy['sha256']
            and before.get('sts_id') == state['sts_id']):
        findings.add('sts-policy-invalid', policy_host, 'id',
                     f'mta-sts.{name}: the policy changed since the previous audit but the TXT id stayed '
                     f'{state["sts_id"]!r}: senders keep the cached policy', dict(evidence, previous=before),
                     STS_POLICY_FIX, severity='medium')
    patterns = parsed.get('mx') or []
    exchanges = [exchange['name'] for exchange in domain.get('exchanges') or []]
    for exchange in exchanges:
        if not any(mx_pattern_matches(pattern, exchange) for pattern in patterns):
            findings.add('sts-policy-invalid', _stand_in(exchange, DANE_PORT, 'smtp'), f'mta-sts:{name}',
                         f'MX {exchange} of {name} is not listed in the MTA-STS policy'
                         + (': in enforce mode senders refuse to deliver to it' if enforce else ''),
                         dict(evidence, mx=exchanges), STS_POLICY_FIX, severity='high' if enforce else 'low')
    for pattern in patterns:
        if not any(mx_pattern_matches(pattern, exchange) for exchange in exchanges):
            findings.add('sts-policy-invalid', policy_host, f'mx:{pattern}',
                         f'mta-sts.{name}: the policy lists mx {pattern}, which is none of the domain\'s MX records',
                         dict(evidence, mx=exchanges), STS_POLICY_FIX, severity='low')
    if not enforce:
        return state
    for exchange in exchanges:
        if not any(mx_pattern_matches(pattern, exchange) for pattern in patterns):
            continue
        mx = mx_hosts.get(exchange) or {'addresses': []}
        for entry in _listeners_of(mx.get('addresses') or [], entries, host_addresses, DANE_PORT):
            listener = entry['listener']
            for probe in entry['probes']:
                status = _verdict.classify_probe(probe)
                vantage = probe.get('vantage')
                probe_ev = dict(evidence, mx=exchange, probe=_verdict.probe_evidence(probe))
                if status in ENFORCE_FAILURES:
                    findings.add('mta-sts-enforce-without-tls', listener, vantage,
                                 f'{_verdict.listener_label(listener)} (MX {exchange} of {name}, MTA-STS enforce) '
                                 f'gives no usable TLS ({status}, seen from {vantage}): senders bounce mail',
                                 probe_ev, _enforce_fix(listener), severity='critical')
                    continue
                certificate = probe.get('certificate') or {}
                if status != 'tls' or not certificate:
                    continue
                names_ok = _x509.hostname_matches(list(certificate.get('sans') or []),
                                                  _common_name(certificate.get('subject')), exchange)
                if certificate.get('verified') is False or not names_ok or certificate.get('expired'):
                    reason = []
                    if not names_ok:
                        reason.append(f'does not name {exchange}')
                    if certificate.get('verified') is False:
                        reason.append(f'does not verify ({_verdict.one_line(certificate.get("verify_error"), 80)})')
                    if certificate.get('expired'):
                        reason.append('has expired')
                    findings.add('validation-failure', listener, vantage,
                                 f'{_verdict.listener_label(listener)}: the certificate {", ".join(reason)}, and '
                                 f'{name}\'s MTA-STS policy enforces validation for MX {exchange} (seen from {vantage}): '
                                 'senders bounce mail', probe_ev,
                                 f'Serve a certificate from a public CA that names {exchange}. '
                                 + _verdict.fix_for('validation-failure', listener, {}), severity='critical')
    return state


# -- TLS-RPT ---------------------------------------------------------------------------------------

TLSRPT_VERSION = 'v=TLSRPTv1'
_TLSRPT_EXTENSION = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$')
_TLSRPT_URI = re.compile(r'^(?:mailto:[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+|https://[^\s,;/]+\.[^\s,;]+)$', re.I)


def tlsrpt_problems(text: str) -> list:
    """What makes one TLS-RPT TXT record unusable (RFC 8460 3: `v=TLSRPTv1; rua=URI[,URI]`, the URIs
    `mailto:` or `https:`, other fields NAME=VALUE); empty when senders can use it."""
    fields = [field.strip() for field in str(text).split(';')]
    problems = []
    if fields[0] != TLSRPT_VERSION:
        problems.append(f'it does not start with `{TLSRPT_VERSION};` but with {fields[0][:40]!r}')
    if fields and fields[-1] == '':
        fields = fields[:-1]
    rua = None
    for field in fields[1:]:
        name, equals, value = field.partition('=')
        name, value = name.strip(), value.strip()
        if not equals or not value:
            problems.append(f'field {field[:40]!r} is not NAME=VALUE')
        elif name == 'rua':
            rua = value
        elif not _TLSRPT_EXTENSION.match(name):
            problems.append(f'field name {name[:40]!r} is not valid')
    if rua is None:
        problems.append('it has no `rua=` field (where the reports go)')
    else:
        for uri in re.split(r'\s*,\s*', rua):
            if not _TLSRPT_URI.match(uri):
                problems.append(f'rua destination {uri[:60]!r} is neither `mailto:ADDRESS` nor `https://HOST/...`')
    return problems


def judge_tlsrpt(domain: dict, mx_hosts: dict, findings: _Findings) -> None:
    """A domain that publishes MTA-STS or DANE without a usable TLS-RPT record: senders that fail to
    deliver under the policy (the faults this collection looks for) tell nobody (RFC 8460)."""
    name = domain['domain']
    exchanges = [exchange['name'] for exchange in domain.get('exchanges') or []]
    sts = bool(domain.get('sts_records'))
    dane = [exchange for exchange in exchanges if ((mx_hosts.get(exchange) or {}).get('tlsa') or {}).get('records')]
    if not sts and not dane:
        return
    answer = domain.get('tlsrpt_txt')
    if answer is not None and (answer.get('bogus') or answer.get('status') in ('TIMEOUT', 'SERVFAIL', 'REFUSED')):
        return  # no answer is not an absent record; dnssec-invalid covers a bogus zone
    texts = ([_mail_dns.txt_text(record) for record in answer.get('records') or []] if answer is not None
             else list(domain.get('tlsrpt') or []))
    # Near misses (`v=tlsrptv1`, `v=TLSRPTv1 rua=`) count as the domain's attempt, so they are reported
    # as malformed rather than as missing; senders discard them either way (RFC 8460 3).
    candidates = [text for text in texts if text.lower().startswith('v=tlsrpt')]
    promise = ' and '.join(part for part in (
        'an MTA-STS policy' if sts else '', f'DANE TLSA records (MX {", ".join(dane[:3])})' if dane else '') if part)
    evidence = {'dns': _dns_evidence(answer) if answer is not None else {'records': texts},
                'mta_sts': sts, 'tlsa_mx': dane}
    stand_in = _stand_in(f'_smtp._tls.{name}', 53, 'dns')
    if not candidates:
        findings.add('tlsrpt-missing', stand_in, None,
                     f'{name} publishes {promise} but no TLS-RPT record at _smtp._tls.{name}: senders that cannot '
                     'deliver under it report to nobody', evidence, _tlsrpt_fix(name))
        return
    if len(candidates) > 1:
        problems = [f'{len(candidates)} TLS-RPT records: senders ignore them all']
    else:
        problems = tlsrpt_problems(candidates[0])
    if problems:
        findings.add('tlsrpt-invalid', stand_in, None,
                     f'_smtp._tls.{name}: the TLS-RPT record is malformed ({"; ".join(problems)[:160]}): senders '
                     'treat the domain as having none', dict(evidence, problems=problems), _tlsrpt_fix(name))


def _parse_tags(text: str) -> dict:
    tags = {}
    for part in str(text).split(';'):
        if '=' in part:
            key, value = part.split('=', 1)
            tags[key.strip()] = value.strip()
    return tags


def judge(gathered: dict, listeners: list, probes: list, options: dict | None = None) -> dict:
    """{findings, domains (per-domain state: sts id, policy digest, mode), mx (per MX: TLSA, DNSSEC,
    listeners, the zone lines to publish)}. options: severity, host_addresses, next_keys
    ({host: [entry]}), previous ({domain: state} of the previous audit)."""
    options = options or {}
    host_addresses = options.get('host_addresses') or {}
    findings = _Findings(options.get('severity'))
    entries = _verdict.join(listeners, probes, {'host_addresses': host_addresses})
    mx_summaries = []
    for mx in (gathered.get('mx_hosts') or {}).values():
        mx_summaries.append(judge_tlsa(mx, entries, options.get('next_keys') or {}, findings, host_addresses))
    domains = []
    for domain in gathered.get('domains') or []:
        domains.append(judge_sts(domain, gathered.get('mx_hosts') or {}, entries, findings, host_addresses,
                                 options.get('previous') or {}))
        judge_tlsrpt(domain, gathered.get('mx_hosts') or {}, findings)
    return {'findings': findings.findings, 'domains': domains, 'mx': mx_summaries}


def publish_lines(gathered_mx: list) -> list:
    """The zone lines of every MX summary, deduplicated, in order."""
    lines = []
    for summary in gathered_mx or []:
        for line in summary.get('publish') or []:
            if line not in lines:
                lines.append(line)
    return lines


# -- the records to publish, per MX of one host (printed by the remediation role, never applied) ----

_HEX = {'spki_sha256': re.compile(r'^[0-9a-f]{64}$'), 'spki_sha512': re.compile(r'^[0-9a-f]{128}$')}


def _spki(digests) -> dict:
    """The SPKI digests of a host's record, only when they are what they claim to be (hex of the
    right length): a managed host is not trusted, and these go into zone-file lines."""
    if not isinstance(digests, dict) or not _HEX['spki_sha256'].match(str(digests.get('spki_sha256') or '')):
        return {}
    return {name: digests.get(name) if pattern.match(str(digests.get(name) or '')) else None
            for name, pattern in _HEX.items()}


def _bound_listeners(host_result: dict, port: int) -> list:
    return [listener for listener in host_result.get('listeners') or []
            if isinstance(listener, dict) and isinstance(listener.get('binding') or {}, dict)
            and _verdict._as_port(listener.get('port')) == port
            and ((listener.get('binding') or {}).get('certificate') or _spki(_store_key(listener)))]


def _current_digests(listener: dict) -> dict:
    """The SPKI digests of the key a listener serves: from the bound certificate's public key, else
    from the public half of the bound key (both computed on the host; no key leaves it)."""
    chain = _store_digests(listener)
    return (_spki(chain[0]) if chain else {}) or _spki(_store_key(listener))


def _mx_answer(dns: dict, mx_name: str) -> dict | None:
    """The TLSA answer the DNS step read for an MX name ({records, secure, bogus, status}), if any."""
    answer = ((dns.get('mx_hosts') or {}).get(mx_name) or {}).get('tlsa')
    if answer is not None:
        return answer
    for summary in dns.get('tlsa') or []:
        if summary.get('mx') == mx_name:
            return {'records': summary.get('records') or [], 'secure': summary.get('dnssec'), 'status': None}
    return None


def publish_plan(host_result: dict, host: str | None = None, mx_names=None, dns: dict | None = None,
                 port: int = DANE_PORT, include_next: bool = True) -> list:
    """Per MX name that one host answers for: the keys to pin (current, next) with whether a TLSA
    record already pins each, the published records that pin none of them, and what is missing.

    The MX names: those the DNS step (`dns`, the `dns` result of fleet_assess or its .dns.json)
    matched to this host's listeners; else `mx_names`; else the host's name. Only public-key
    digests computed on the host are used."""
    port = int(port)
    listeners = _bound_listeners(host_result, port)
    if not listeners:
        return []
    dns = dns if isinstance(dns, dict) else {}
    groups = []
    for summary in dns.get('tlsa') or []:
        if not str(summary.get('tlsa_owner') or '').startswith(f'_{port}._tcp.'):
            continue
        covered = set(summary.get('listeners') or [])
        mine = [listener for listener in listeners if _verdict.listener_key(listener) in covered]
        if mine:
            groups.append({'mx': summary['mx'], 'listeners': mine})
    if not groups:
        names = [name for name in (mx_names or [host]) if name]
        groups = [{'mx': str(name).rstrip('.').lower(), 'listeners': listeners} for name in names]
    return [_plan_group(group['mx'], group['listeners'], host_result, _mx_answer(dns, group['mx']) if dns else None,
                        port, include_next) for group in groups]


def _endpoint(listener: dict) -> str:
    address = str(listener.get('address'))
    return f"[{address}]:{listener.get('port')}" if ':' in address else f"{address}:{listener.get('port')}"


def _plan_group(mx_name: str, listeners: list, host_result: dict, answer: dict | None, port: int,
                include_next: bool) -> dict:
    group = {'mx': mx_name, 'owner': _tlsa.tlsa_owner(mx_name, port),
             'listeners': [_endpoint(listener) for listener in listeners],
             'dns': None, 'keys': [], 'stale': [], 'notes': []}
    records = []
    if answer is not None:
        group['dns'] = {'records': list(answer.get('records') or []), 'secure': answer.get('secure'),
                        'status': answer.get('status'), 'bogus': bool(answer.get('bogus'))}
        if not answer.get('bogus') and answer.get('status') not in ('TIMEOUT', 'SERVFAIL', 'REFUSED'):
            records = [_tlsa.parse_record(text) for text in answer.get('records') or []]
        else:
            group['notes'].append(f'the TLSA answer for {group["owner"]} was {answer.get("status") or "bogus"}: '
                                  'which records are published is not known')
            group['dns'] = None
    usable = [record for record in records if not record['problem']]
    pinned: list = []
    by_digest: dict = {}
    certificates = set()
    for listener in listeners:
        binding = listener.get('binding') or {}
        certificates.add(binding.get('certificate'))
        digests = _current_digests(listener)
        label = _endpoint(listener)
        if not digests:
            group['notes'].append(f'{label}: the bound certificate {binding.get("certificate")} could not be read, '
                                  'so no record can be computed for it')
            continue
        entry = by_digest.get(digests['spki_sha256'])
        if entry is None:
            matched = _tlsa.match_key(usable, digests) + list(_tlsa.match_chain(usable, _store_digests(listener)))
            entry = {'role': 'current', 'path': binding.get('key') or binding.get('certificate'),
                     'certificate': binding.get('certificate'), 'source': 'bound on disk', 'listeners': [],
                     'digests': digests, 'also_next': False, 'published': _published(matched, group)}
            pinned.extend(matched)
            by_digest[digests['spki_sha256']] = entry
            group['keys'].append(entry)
        entry['listeners'].append(label)
    # A DANE-TA record that authenticates the chain served now covers any next key the same CA certifies.
    ta_covers = any(record['usage'] == 2 for record in pinned)
    if include_next:
        _plan_next_keys(group, host_result, certificates, usable, pinned, by_digest, ta_covers)
    for record in records:
        if record['problem'] or not any(record is other for other in pinned):
            group['stale'].append({'record': _tlsa.presentation(record), 'problem': record['problem']})
    return group


def _published(matched: list, group: dict):
    """The published records that pin a key; None when there is no DNS data to tell."""
    if group['dns'] is None:
        return None
    seen = []
    for record in matched:
        text = _tlsa.presentation(record)
        if text not in seen:
            seen.append(text)
    return seen


def _plan_next_keys(group, host_result, certificates, usable, pinned, by_digest, ta_covers) -> None:
    if 'next_keys' not in host_result:
        group['notes'].append('next keys were not looked for (mta_tls_info without next_keys or next_key_layouts)')
        return
    found_any = False
    for key in host_result.get('next_keys') or []:
        if not isinstance(key, dict) or key.get('for_certificate') not in (None, *certificates):
            continue
        found_any = True
        if key.get('unknown_next_key'):
            group['notes'].append(
                f'NO NEXT KEY: the {key.get("source")} lineage {key.get("lineage")} makes a new key at each renewal and '
                'none is staged, so its record cannot be published in advance: stage the next key (certbot '
                '--reuse-key, acme.sh without --always-force-new-domain-key, or a key in starttls_next_keys) or '
                'publish a DANE-TA record (2 1 1) for the issuing CA')
            continue
        if key.get('error') or not _spki(key):
            group['notes'].append(f'NO NEXT KEY from {key.get("path")} ({key.get("source")}): '
                                  f'{key.get("error") or "no public key"}')
            continue
        key = dict(key, **_spki(key))
        current = by_digest.get(key['spki_sha256'])
        if current is not None:
            # The renewal keeps this key (certbot reuse_key, acme.sh's default): one record serves both.
            current['also_next'] = True
            current['next_source'] = f"{key.get('path')} ({key.get('source')})"
            continue
        matched = _tlsa.match_key(usable, key)
        pinned.extend(matched)
        entry = {'role': 'next', 'path': key.get('path'), 'certificate': key.get('for_certificate'),
                 'source': key.get('source'), 'listeners': [], 'digests': _spki(key),
                 'also_next': False, 'published': _published(matched, group), 'ta_covered': ta_covers}
        by_digest[key['spki_sha256']] = entry
        group['keys'].append(entry)
    if not found_any:
        group['notes'].append('NO NEXT KEY staged for the next renewal was found (starttls_next_keys matched no '
                              'readable key, and no certbot or acme.sh lineage holds the bound certificate): publish '
                              'the record of the next key two TTLs before the renewal that brings it')


def _key_comment(entry: dict, detail: bool) -> str:
    if not detail:
        return (f"current key: {entry['path']}" if entry['role'] == 'current'
                else f"next key: {entry['path']} ({entry['source']})")
    if entry['role'] == 'current':
        text = f"CURRENT key {entry['path']} (certificate {entry['certificate']}, on {', '.join(entry['listeners'])})"
        if entry.get('also_next'):
            text += f"; also the NEXT key: the renewal keeps it ({entry.get('next_source')})"
    else:
        text = f"NEXT key {entry['path']} ({entry['source']}"
        text += f", for {entry['certificate']})" if entry.get('certificate') else ')'
    published = entry.get('published')
    if published is None:
        status = 'publication unknown (no DNS data)'
    elif published:
        status = 'PUBLISHED (' + '; '.join(' '.join(record.split()[:3]) + ' ' + record.split()[-1][:8].upper() + '...'
                                           for record in published[:3]) + ')'
    else:
        status = 'NOT PUBLISHED'
    if entry['role'] == 'current' and not entry.get('also_next'):
        todo = ('keep it until the renewal has replaced this key, then remove it (two TTLs later)' if published
                else 'publish it now' if published is not None else 'it must be published while this key is served')
    elif entry['role'] == 'current':
        todo = 'keep it' if published or published is None else 'publish it now'
    elif entry.get('ta_covered') and not published:
        todo = 'covered by the DANE-TA record that authenticates the current chain; publish it to pin the key itself'
    else:
        todo = ('keep it' if published else 'publish it now, two TTLs or more before the renewal'
                if published is not None else 'it must be published two TTLs or more before the renewal')
    return f'{text}: {status}: {todo}'


def _comment(text: str) -> str:
    """A zone-file comment of one line: paths and names come from the host and the DNS, and a line
    break in them must not start a record line (control characters are made visible)."""
    return '; ' + _verdict.one_line(text, 600)


def plan_lines(groups: list, ttl=None, detail: bool = True) -> list:
    """Zone-file lines for publish_plan's groups: a record per key after a `;` comment saying whether it
    is the current or the next key and whether it is already published; notes and stale records as
    comments."""
    lines: list = []
    if detail and not groups:
        lines.append('; no SMTP listener with a bound certificate on the MX port: no TLSA record to publish')
    for group in groups:
        if detail:
            dns = group.get('dns')
            if dns is None:
                state = 'published TLSA records unknown (no DNS data: run the audit with starttls_dns_checks)'
            elif not dns['records']:
                state = 'no TLSA record published (DANE is not in effect for this name)'
            else:
                state = (f"{len(dns['records'])} TLSA record(s) published, "
                         + ('DNSSEC-validated' if dns.get('secure') else 'NOT DNSSEC-validated (senders ignore them)'))
            lines.append(_comment(f"MX {group['mx']} (listeners {', '.join(group['listeners']) or 'none'}): {state}"))
        for entry in group['keys']:
            for line in _tlsa.zone_lines(group['owner'], entry['digests'], ttl=ttl,
                                         comment=_comment(_key_comment(entry, detail))[2:]):
                if line.startswith(';') or line not in lines:
                    lines.append(line)
        if not detail:
            continue
        for stale in group['stale']:
            why = (f"unusable ({stale['problem']})" if stale['problem']
                   else 'pins none of these keys (another host of this MX may serve its key)')
            lines.append(_comment(f"published, {why}: remove it once no listener of {group['mx']} serves that key:"))
            lines.append(_comment(f"{' '.join(str(part) for part in (group['owner'], ttl, 'IN TLSA') if part is not None)} "
                                  f"{stale['record'].upper() if not stale['problem'] else stale['record']}"))
        lines.extend(_comment(note) for note in group['notes'])
    return lines
