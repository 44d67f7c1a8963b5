# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The certificate a vantage point was served, against the ones the host holds and binds:
tls-terminated-elsewhere (one the host does not hold), presented-certificate-differs (not the
configured one: renewed on disk and not reloaded, or served with nothing usable bound; for a black-box
listener, not one of the expected pins), the served certificate's own validity and names
(validity.py), and inconsistent-answers when vantage points are shown different certificates."""

from __future__ import annotations

from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.case import ListenerCase, seen_from
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.evidence import LazyEvidence
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.records import (
    HOST_VANTAGE,
    configured_fingerprints,
    unfingerprinted_alternates,
)
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.validity import certificate_rules
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.values import normalise_sha256, one_line


class ServedCertificates:
    """What one listener's host holds and binds, read once for all its probes.

    `entries_by_host`: the join entries by host (the certificates of a host's other listeners are
    held by the host too); `described`: the fingerprints the store findings already judged.
    """

    def __init__(self, case: ListenerCase, entries_by_host: dict, described: set):
        self.case = case
        self.described = described
        listener = case.listener
        host_certificates = {normalise_sha256(value) for value in
                             (case.options['host_certificates'].get(listener.get('host')) or [])}
        for other in entries_by_host.get(listener.get('host'), []):
            host_certificates.update(configured_fingerprints(other['listener']))
        host_certificates.discard(None)
        self.host_certificates = host_certificates
        self.expected = configured_fingerprints(listener)
        self.reference_sha = normalise_sha256(((case.reference or {}).get('certificate') or {}).get('sha256'))
        # Whether the host side knows which certificates it holds: its bindings were read.
        self.knows_host_certificates = bool(host_certificates) or isinstance(listener.get('binding'), dict)
        self.presented_by_vantage: dict = {}
        for probe in case.judged:
            sha = normalise_sha256((probe.get('certificate') or {}).get('sha256'))
            if sha:
                self.presented_by_vantage.setdefault((probe.get('target') or {}).get('sni'), {})[probe.get('vantage')] = sha

    def judge_probe(self, probe: dict, ev: LazyEvidence) -> None:
        case = self.case
        listener, label, mode = case.listener, case.label, case.mode
        expected, reference_sha = self.expected, self.reference_sha
        vantage = probe.get('vantage')
        from_where = seen_from(probe)
        certificate = probe.get('certificate') or {}
        sha = normalise_sha256(certificate.get('sha256'))
        if case.status(probe) != 'tls' or not sha:
            return
        sni = (probe.get('target') or {}).get('sni')
        remote = vantage != HOST_VANTAGE
        if (mode == 'host' and remote and self.knows_host_certificates and sha not in self.host_certificates
                and reference_sha != sha):
            # The host does not hold it and, as far as its own probe shows, does not serve it.
            ev()['host_certificates'] = sorted(self.host_certificates)[:10]
            if reference_sha:
                ev()['host_probe_sha256'] = reference_sha
            case.add('tls-terminated-elsewhere', vantage,
                     f'{label}: {from_where}, the handshake presents {one_line(certificate.get("subject"), 80)} '
                     f'(sha256 {sha[:16]}...), a certificate this host does not hold', ev())
        # When the host's own probe shows the configured certificate, a different one seen remotely
        # was swapped on the path (tls-terminated-elsewhere), not by the server.
        path_swap = remote and reference_sha is not None and reference_sha in expected and reference_sha != sha
        if (mode == 'host' and sha not in expected and not path_swap
                and not (expected and unfingerprinted_alternates(listener))):
            no_bound = case.usable is not True
            if no_bound:
                summary = (f'{label} serves {one_line(certificate.get("subject"), 80)} (sha256 {sha[:16]}...) '
                           f'although no usable certificate is bound to it ({from_where})')
            else:
                summary = (f'{label} serves sha256 {sha[:16]}... but the configured certificate is '
                           f'{(expected or ["?"])[0][:16]}... ({from_where})')
            ev()['configured_sha256'] = expected
            case.add('presented-certificate-differs', vantage, summary, ev(),
                     {'no_bound_certificate': no_bound}, severity='high' if no_bound else None)
        if mode in ('black-box', 'probe', 'socket') and listener.get('expected_certificates') and sha not in expected:
            ev()['expected_certificates'] = expected
            case.add('presented-certificate-differs', vantage,
                     f'{label} serves sha256 {sha[:16]}..., not one of the expected certificates ({from_where})',
                     ev(), {})
        if sha not in self.described:
            for rule, summary, detail in certificate_rules(certificate, case.options):
                case.add(rule, vantage, f'{label}: {summary} ({from_where})', dict(ev()), detail)
        if mode != 'host' and len(set(self.presented_by_vantage.get(sni, {}).values())) > 1:
            ev()['certificates_by_vantage'] = self.presented_by_vantage.get(sni, {})
            case.add('inconsistent-answers', vantage,
                     f'{label}: vantage points are shown different certificates ({from_where} '
                     f'sha256 {sha[:16]}...)', ev())
