# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Certificate store problems, judged on the host side (`vantage: null`): certificate-unreadable,
certificate-key-mismatch, private-key-exposed, an incomplete bound chain (validation-failure), the
bound certificate's validity and names (validity.py), and a store that could not be inspected
(judgement-error). Only private-key-exposed is raised for a listener that does not offer TLS."""

from __future__ import annotations

from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.case import ListenerCase
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.catalogue import problem_rule
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.evidence import certificate_evidence
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.records import store_certificate, store_of
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.validity import certificate_rules
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.values import (
    clean_text,
    normalise_sha256,
    one_line,
)


def judge_store(case: ListenerCase, tls_in_use: bool) -> set:
    """Host-side certificate findings; returns the SHA-256 fingerprints they already describe."""
    listener, probes, collector = case.listener, case.probes, case.collector
    store = store_of(listener)
    described: set = set()
    if store is None:
        return described
    binding = listener.get('binding') or {}
    base = case.base
    paths = {'certificate': binding.get('certificate'), 'key': binding.get('key')}
    certificate = store_certificate(store)
    key = store.get('key') if isinstance(store.get('key'), dict) else {}
    chain = store.get('chain') if isinstance(store.get('chain'), dict) else {}
    bound_sha = normalise_sha256(certificate.get('sha256'))
    served_by = sorted(str(probe.get('vantage')) for probe in probes
                       if bound_sha and normalise_sha256((probe.get('certificate') or {}).get('sha256')) == bound_sha)
    raised: dict = {}

    def raise_rule(rule, summary, extra=None, detail=None):
        if rule != 'private-key-exposed' and not tls_in_use:
            # A certificate nobody serves hurts nobody: the listener does not offer TLS.
            return
        if rule in raised:
            if extra:
                raised[rule].setdefault('more', []).append(extra)
            return
        evidence = dict(base)
        if extra:
            evidence.update(extra)
        if served_by:
            evidence['served_to'] = served_by
        merged_detail = dict(paths)
        merged_detail.update(detail or {})
        raised[rule] = collector.add(rule, listener, None, summary, evidence, merged_detail)['evidence']

    label = case.label
    if store.get('error'):
        collector.add('judgement-error', listener, None,
                      f'{label}: the certificate store could not be inspected: {one_line(store["error"], 160)}',
                      dict(base), paths)
    for problem in store.get('problems') or []:
        if not isinstance(problem, dict):
            continue
        rule = problem_rule(str(problem.get('id') or ''))
        if rule == 'certificate-expiring':
            # The window is the judge's option, not the store's: recomputed below.
            continue
        raise_rule(rule, f'{label}: {one_line(problem.get("message") or problem.get("id"), 200)}',
                   {'problem': {'id': problem.get('id'), 'message': clean_text(problem.get('message'))}})
    if certificate.get('error') and 'certificate-unreadable' not in raised:
        raise_rule('certificate-unreadable', f'{label}: certificate {paths["certificate"]}: '
                   f'{one_line(certificate["error"], 160)}')
    if key.get('error') and 'certificate-unreadable' not in raised:
        raise_rule('certificate-unreadable', f'{label}: key {paths["key"]}: {one_line(key["error"], 160)}')
    if key.get('matches_certificate') is False and 'certificate-key-mismatch' not in raised:
        raise_rule('certificate-key-mismatch',
                   f'{label}: key {paths["key"]} does not belong to certificate {paths["certificate"]}')
    if key.get('exposed') and 'private-key-exposed' not in raised:
        detail = {key_name: key.get(key_name) for key_name in ('mode', 'owner', 'group', 'readable_by')
                  if key.get(key_name) is not None}
        raise_rule('private-key-exposed', f'{label}: private key {paths["key"]} is exposed '
                   f'({one_line(key.get("exposed_reason") or detail or "readable by others", 120)})',
                   {'key_file': detail} if detail else None)
    if chain.get('complete') is False and 'validation-failure' not in raised:
        raise_rule('validation-failure', f'{label}: the bound chain is incomplete: '
                   f'{one_line(chain.get("error") or "missing intermediates", 160)}')
    if certificate and not certificate.get('error'):
        for rule, summary, detail in certificate_rules(certificate, case.options):
            if rule == 'validation-failure' and ('validation-failure' in raised or certificate.get('verified') is None):
                continue
            if rule in raised:
                continue
            detail = dict(detail, path=paths['certificate'])
            raise_rule(rule, f'{label}: {summary} ({paths["certificate"]})',
                       {'certificate': certificate_evidence(certificate)}, detail)
        if certificate.get('sha256'):
            described.add(normalise_sha256(certificate['sha256']))
    return described
