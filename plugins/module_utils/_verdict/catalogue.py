# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rule catalogue: every finding ID with its default severity, title, the TLS modes it applies to
and the side that can raise it; the certificate store's problem IDs and the finding each becomes; the
judgement's options and their defaults. docs/findings.md has one section per rule
(tests/unit/plugins/module_utils/test_findings_doc.py holds the two in step)."""

from __future__ import annotations

import datetime

from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.values import parse_time

SEVERITIES = ('critical', 'high', 'medium', 'low', 'info')
SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}

# Where a finding can come from: the host's configuration and files, the wire, or both.
HOST, NETWORK, BOTH = 'host', 'network', 'both'
# The domain's DNS promise (DANE, MTA-STS): judged by the opt-in DNS checks (plugin_utils/_dane.py).
DNS = 'dns'
STARTTLS, IMPLICIT = ('starttls',), ('implicit',)
ANY_TLS = ('starttls', 'implicit')

# The catalogue. `modes`: the TLS modes (by protocol) a rule applies to; `evidence`: which side
# can raise it (a black-box listener is judged by the NETWORK and BOTH rules only).
RULES = {
    'starttls-advertised-without-certificate': {
        'severity': 'critical', 'modes': STARTTLS, 'evidence': BOTH,
        'title': 'STARTTLS advertised without a usable certificate'},
    'implicit-tls-without-certificate': {
        'severity': 'critical', 'modes': IMPLICIT, 'evidence': BOTH,
        'title': 'Implicit-TLS listener without a usable certificate'},
    'starttls-not-offered': {
        'severity': 'medium', 'modes': STARTTLS, 'evidence': BOTH,
        'title': 'A usable certificate is bound but STARTTLS is not advertised'},
    'certificate-unreadable': {
        'severity': 'critical', 'modes': ANY_TLS, 'evidence': HOST,
        'title': 'The bound certificate or key cannot be read or parsed'},
    'certificate-key-mismatch': {
        'severity': 'critical', 'modes': ANY_TLS, 'evidence': HOST,
        'title': 'The bound key does not belong to the bound certificate'},
    'certificate-expired': {
        'severity': 'high', 'modes': ANY_TLS, 'evidence': BOTH,
        'title': 'The certificate has expired'},
    'certificate-expiring': {
        'severity': 'medium', 'modes': ANY_TLS, 'evidence': BOTH,
        'title': 'The certificate expires soon'},
    'certificate-host-mismatch': {
        'severity': 'medium', 'modes': ANY_TLS, 'evidence': BOTH,
        'title': 'The certificate does not name the host'},
    'validation-failure': {
        'severity': 'medium', 'modes': ANY_TLS, 'evidence': BOTH,
        'title': 'The certificate chain does not verify'},
    'private-key-exposed': {
        'severity': 'high', 'modes': ANY_TLS, 'evidence': HOST,
        'title': 'The private key is readable by others or has the wrong owner'},
    'presented-certificate-differs': {
        'severity': 'medium', 'modes': ANY_TLS, 'evidence': HOST,
        'title': 'The served certificate is not the configured one'},
    'starttls-stripped': {
        'severity': 'high', 'modes': STARTTLS, 'evidence': NETWORK,
        'title': 'STARTTLS is removed on the way to a vantage point'},
    'middlebox-masking': {
        'severity': 'high', 'modes': ANY_TLS, 'evidence': NETWORK,
        'title': 'A middlebox rewrites the dialog (masked banner or keywords)'},
    'tls-terminated-elsewhere': {
        'severity': 'high', 'modes': ANY_TLS, 'evidence': HOST,
        'title': 'A vantage point is shown a certificate the host does not hold'},
    'pre-tls-surplus': {
        'severity': 'high', 'modes': STARTTLS, 'evidence': NETWORK,
        'title': 'Bytes arrive between the STARTTLS reply and the handshake'},
    'starttls-command-injection': {
        'severity': 'critical', 'modes': STARTTLS, 'evidence': NETWORK,
        'title': 'A command sent before TLS is answered after it'},
    'starttls-after-tls': {
        'severity': 'low', 'modes': STARTTLS, 'evidence': NETWORK,
        'title': 'STARTTLS is still advertised inside TLS'},
    'legacy-tls-protocol': {
        'severity': 'medium', 'modes': ANY_TLS, 'evidence': NETWORK,
        'title': 'TLS 1.0 or 1.1 (or SSLv3) was negotiated'},
    'inconsistent-answers': {
        'severity': 'medium', 'modes': ANY_TLS, 'evidence': NETWORK,
        'title': 'Repeated probes or vantage points got different answers'},
    'listener-drift': {
        'severity': 'info', 'modes': ANY_TLS, 'evidence': HOST,
        'title': 'Configured but not listening, or listening but not configured'},
    'inspection-uncertain': {
        'severity': 'medium', 'modes': ANY_TLS, 'evidence': HOST,
        'title': 'Host inspection could not tell how this listener is configured'},
    'probe-failed': {
        'severity': 'medium', 'modes': ANY_TLS, 'evidence': NETWORK,
        'title': 'The listener could not be probed, so nothing could be judged'},
    'judgement-error': {
        'severity': 'medium', 'modes': ANY_TLS, 'evidence': BOTH,
        'title': 'A record could not be judged'},
    'tlsa-invalid': {
        'severity': 'critical', 'modes': STARTTLS, 'evidence': DNS,
        'title': 'The DANE TLSA records do not match the certificate served or bound'},
    'dnssec-invalid': {
        'severity': 'medium', 'modes': STARTTLS, 'evidence': DNS,
        'title': 'The DNS answer behind DANE or MTA-STS is not DNSSEC-validated'},
    'dane-next-key-unpublished': {
        'severity': 'high', 'modes': STARTTLS, 'evidence': DNS,
        'title': 'The key staged for the next renewal is not pinned by a TLSA record'},
    'sts-policy-invalid': {
        'severity': 'high', 'modes': STARTTLS, 'evidence': DNS,
        'title': 'The MTA-STS policy is invalid or does not cover the MX hosts'},
    'sts-webpki-invalid': {
        'severity': 'high', 'modes': STARTTLS, 'evidence': DNS,
        'title': 'The MTA-STS policy host does not present a valid certificate'},
    'mta-sts-enforce-without-tls': {
        'severity': 'critical', 'modes': STARTTLS, 'evidence': DNS,
        'title': 'An MX under an enforced MTA-STS policy offers no usable TLS'},
    'tlsrpt-missing': {
        'severity': 'low', 'modes': STARTTLS, 'evidence': DNS,
        'title': 'A domain with DANE or MTA-STS publishes no TLS-RPT record'},
    'tlsrpt-invalid': {
        'severity': 'low', 'modes': STARTTLS, 'evidence': DNS,
        'title': 'The TLS-RPT record of a domain with DANE or MTA-STS is malformed'},
}
RULE_IDS = tuple(RULES)

# The store problem IDs of _certs.py, and the finding each one becomes. Unknown problem IDs are
# kept as evidence and mapped by their wording (see problem_rule).
PROBLEM_RULES = {
    'certificate-unreadable': 'certificate-unreadable',
    'certificate-missing': 'certificate-unreadable',
    'certificate-invalid': 'certificate-unreadable',
    'certificate-unparsable': 'certificate-unreadable',
    'key-encrypted': 'certificate-unreadable',
    'key-unreadable': 'certificate-unreadable',
    'key-missing': 'certificate-unreadable',
    'key-invalid': 'certificate-unreadable',
    'chain-unreadable': 'certificate-unreadable',
    'certificate-key-mismatch': 'certificate-key-mismatch',
    'key-mismatch': 'certificate-key-mismatch',
    'certificate-expired': 'certificate-expired',
    'certificate-not-yet-valid': 'certificate-expired',
    'certificate-expiring': 'certificate-expiring',
    'certificate-host-mismatch': 'certificate-host-mismatch',
    'validation-failure': 'validation-failure',
    'chain-incomplete': 'validation-failure',
    'private-key-exposed': 'private-key-exposed',
    'key-exposed': 'private-key-exposed',
}


def problem_rule(problem_id: str) -> str | None:
    """The finding a store problem ID becomes (an unknown ID by its wording)."""
    if not problem_id:
        return None
    if problem_id in PROBLEM_RULES:
        return PROBLEM_RULES[problem_id]
    if problem_id in RULES:
        return problem_id
    lowered = problem_id.lower()
    if 'exposed' in lowered or 'permission' in lowered or 'owner' in lowered or 'mode' in lowered:
        return 'private-key-exposed'
    if 'mismatch' in lowered and 'key' in lowered:
        return 'certificate-key-mismatch'
    if 'host' in lowered or 'name' in lowered:
        return 'certificate-host-mismatch'
    if 'expiring' in lowered or 'expires' in lowered:
        return 'certificate-expiring'
    if 'expired' in lowered or 'not-yet' in lowered:
        return 'certificate-expired'
    if 'chain' in lowered or 'verif' in lowered or 'trust' in lowered:
        return 'validation-failure'
    return 'certificate-unreadable'


DEFAULT_OPTIONS = {
    'expiring_days': 30,
    'now': None,
    'starttls_not_offered_severity': 'medium',
    # {finding ID: severity}: site policy may raise or lower any rule.
    'severity': {},
    # {host: [address, ...]}: addresses a host owns beyond those of its listeners (for wildcards).
    'host_addresses': {},
    # Sockets that look like mail but match no configured listener (gather_host's
    # `unmatched_sockets`), as a list of records with `host`, or {host: [record, ...]}.
    'unmatched_sockets': [],
    # {host: [sha256, ...]}: every certificate the host holds, for tls-terminated-elsewhere.
    'host_certificates': {},
}


class VerdictError(ValueError):
    """Options that cannot be judged with (a bad argument, not a bad record)."""


def normalise_options(options: dict | None) -> dict:
    merged = dict(DEFAULT_OPTIONS)
    for key, value in (options or {}).items():
        if key not in DEFAULT_OPTIONS:
            raise VerdictError(f'unknown judge option {key!r}; known: {", ".join(sorted(DEFAULT_OPTIONS))}')
        if value is not None:
            merged[key] = value
    try:
        merged['expiring_days'] = int(merged['expiring_days'])
    except (TypeError, ValueError):
        raise VerdictError(f'expiring_days must be a whole number of days, not {merged["expiring_days"]!r}')
    if merged['expiring_days'] < 0:
        raise VerdictError('expiring_days must not be negative')
    if merged['now'] is None:
        merged['now'] = datetime.datetime.now(datetime.timezone.utc)
    else:
        moment = parse_time(merged['now'])
        if moment is None:
            raise VerdictError(f'now: cannot read {merged["now"]!r} as a date or an ISO 8601 time')
        merged['now'] = moment
    severities = dict(merged['severity'] or {})
    if not isinstance(merged['severity'] or {}, dict):
        raise VerdictError('severity must map finding IDs to severities')
    severities.setdefault('starttls-not-offered', merged['starttls_not_offered_severity'])
    for rule, severity in severities.items():
        if rule not in RULES:
            raise VerdictError(f'severity: unknown finding ID {rule!r}')
        if severity not in SEVERITY_RANK:
            raise VerdictError(f'severity of {rule}: {severity!r} is not one of {", ".join(SEVERITIES)}')
    merged['severity'] = severities
    for key in ('host_addresses', 'host_certificates'):
        if not isinstance(merged[key], dict):
            raise VerdictError(f'{key} must be a dictionary keyed by host')
    return merged


def worst_severity(findings: list) -> str | None:
    ranks = [SEVERITY_RANK.get(finding.get('severity'), len(SEVERITIES)) for finding in findings]
    return SEVERITIES[min(ranks)] if ranks else None
