# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The evidence a finding carries: the parts of a probe that explain it, a certificate's description,
and the configuration side (where the listener is defined, which rule chose its certificate, the
store's health), bounded and cleaned."""

from __future__ import annotations

from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.records import (
    classify_probe,
    listener_mode,
    store_certificate,
    store_of,
)
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.values import (
    as_port,
    clean_text,
    endpoint,
)


def probe_evidence(probe: dict) -> dict:
    """The parts of a probe that explain a finding, bounded and cleaned."""
    target = probe.get('target') or {}
    evidence = {
        'vantage': probe.get('vantage'),
        'target': endpoint(target.get('address'), target.get('port')),
        'outcome': classify_probe(probe),
    }
    if isinstance(target.get('name'), str):
        evidence['name'] = clean_text(target['name'], 255)
    mapped = probe.get('mapped_from')
    if isinstance(mapped, dict):
        evidence['reached_for'] = endpoint(clean_text(mapped.get('address'), 255), as_port(mapped.get('port')))
    if probe.get('vantage_label'):
        evidence['vantage_label'] = clean_text(probe['vantage_label'], 255)
    if target.get('sni'):
        evidence['sni'] = clean_text(target['sni'], 255)
    greeting = probe.get('greeting')
    if greeting:
        evidence['greeting'] = {'code': clean_text(greeting.get('code'), 16),
                                'lines': [clean_text(line, 512) for line in (greeting.get('lines') or [])[:5]]}
    if probe.get('starttls_advertised') is not None:
        evidence['starttls_advertised'] = probe['starttls_advertised']
        evidence['capabilities'] = [clean_text(item, 200) for item in (probe.get('capabilities') or [])[:40]]
    reply = probe.get('starttls_reply')
    if reply:
        evidence['starttls_reply'] = {'code': clean_text(reply.get('code'), 16), 'text': clean_text(reply.get('text'))}
    tls = probe.get('tls')
    if tls:
        evidence['tls'] = {key: clean_text(tls.get(key)) if isinstance(tls.get(key), str) else tls.get(key)
                           for key in ('established', 'version', 'cipher', 'error', 'server_plaintext')
                           if tls.get(key) is not None}
    certificate = probe.get('certificate')
    if certificate:
        evidence['certificate'] = certificate_evidence(certificate)
    if probe.get('flags'):
        evidence['flags'] = list(probe['flags'])
    if probe.get('error'):
        evidence['error'] = {'stage': probe['error'].get('stage'), 'message': clean_text(probe['error'].get('message'))}
    return evidence


def certificate_evidence(certificate: dict) -> dict:
    keys = ('sha256', 'subject', 'issuer', 'sans', 'not_before', 'not_after', 'days_left', 'expired',
            'self_signed', 'key_type', 'key_bits', 'chain_length', 'verified', 'verify_error',
            'hostname_match', 'error', 'path')
    result = {}
    for key in keys:
        if key not in certificate or certificate[key] is None:
            continue
        value = certificate[key]
        if isinstance(value, str):
            value = clean_text(value, 512)
        elif isinstance(value, list):
            value = [clean_text(item, 255) for item in value[:50]]
        result[key] = value
    return result


def host_evidence(listener: dict) -> dict:
    """The configuration side: where the listener is defined and which rule chose its certificate."""
    if listener_mode(listener) != 'host':
        return {}
    evidence = {'defined_at': listener.get('defined_at'), 'offers_starttls': listener.get('offers_starttls')}
    if listener.get('offers_starttls_reason'):
        evidence['offers_starttls_reason'] = listener['offers_starttls_reason']
    binding = listener.get('binding')
    if isinstance(binding, dict):
        evidence['binding'] = {key: binding.get(key) for key in ('certificate', 'key', 'chain', 'source', 'resolved')
                               if binding.get(key) not in (None, [])}
    store = store_of(listener)
    if store is not None:
        evidence['store'] = {'usable': store.get('usable')}
        if store.get('problems'):
            evidence['store']['problems'] = [
                {'id': problem.get('id'), 'message': clean_text(problem.get('message'))}
                for problem in store['problems'] if isinstance(problem, dict)]
        if store.get('error'):
            evidence['store']['error'] = clean_text(store['error'])
        if store.get('unknown'):
            evidence['store']['unknown'] = [
                {'check': item.get('check'), 'reason': clean_text(item.get('reason'))}
                for item in store['unknown'][:10] if isinstance(item, dict)]
        certificate = store_certificate(store)
        if certificate.get('sha256'):
            evidence['store']['certificate_sha256'] = certificate['sha256']
    if listener.get('reader_user'):
        evidence['reader_user'] = listener['reader_user']
    return evidence


class LazyEvidence:
    """A probe's evidence, built on first use: most probes of a healthy fleet give no finding.

    One instance serves every rule judged on one probe: what one rule adds to it (`compared_with`,
    `host_certificates`) goes with the findings of the rules after it."""

    def __init__(self, base: dict, probe: dict):
        self.base = base
        self.probe = probe
        self.value = None

    def __call__(self) -> dict:
        if self.value is None:
            self.value = dict(self.base, probe=probe_evidence(self.probe))
        return self.value
