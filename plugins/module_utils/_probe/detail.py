# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The two shapes listener_probe returns a probe record in: compact (its default) and full.

A full record is about 2 KiB, half of it the certificate description; Ansible then encodes,
decodes, copies and prints every key of it once more on the controller, which costs more than the
probe (bench/README.md). The compact record keeps what tells a person, and a playbook, what the
listener did: the target, the greeting, whether STARTTLS was advertised and what it answered, the
handshake, the certificate's identity, validity and verification, flags and the error. What only
evidence needs (capability lists, the certificate's issuer, names, key and DANE digests, the
timing of each stage) stays in the full record, which the judgement (fleet_assess) reads.
"""

from __future__ import annotations

DETAIL_LEVELS = ('compact', 'full')
DEFAULT_DETAIL = 'compact'

# The certificate as a person checks it, and every key the judgement's certificate rules read: which
# one (sha256, subject, names), its validity, whether it verifies and matches the expected name;
# `error` when it could not be read. Left out: issuer, serial, key, signature algorithm, chain length
# and the DANE digests (`tlsa_chain`, a quarter of a full record).
COMPACT_CERTIFICATE_KEYS = ('sha256', 'subject', 'sans', 'not_before', 'not_after', 'days_left', 'expired',
                            'self_signed', 'verified', 'verify_error', 'hostname_match')
# Keys every compact record has, with the value the full record has (null when the dialog did not
# get that far): a compact record is a full record with keys left out, never with values changed,
# except `certificate` and `timings_ms`, which keep a subset of their keys.
COMPACT_KEYS = ('target', 'vantage', 'tls_mode', 'connected', 'peer_address', 'greeting', 'starttls_advertised',
                'starttls_reply', 'pre_tls_surplus', 'injected_reply', 'tls', 'certificate', 'flags', 'error',
                'timings_ms', 'attempts')


def compact_certificate(certificate: dict | None) -> dict | None:
    if certificate is None:
        return None
    kept = {key: certificate.get(key) for key in COMPACT_CERTIFICATE_KEYS}
    if certificate.get('error'):
        kept['error'] = certificate['error']
    return kept


def compact(probe: dict) -> dict:
    """The compact shape of one full probe record (a new dictionary; the record is not changed)."""
    record = {key: probe.get(key) for key in COMPACT_KEYS}
    record['certificate'] = compact_certificate(probe.get('certificate'))
    timings = probe.get('timings_ms') or {}
    record['timings_ms'] = {'total': timings['total']} if 'total' in timings else {}
    if 'ehlo_rejected' in (probe.get('flags') or []):
        # The refusal is why nothing else was asked: the one capability reply that matters.
        record['capabilities_reply'] = probe.get('capabilities_reply')
    return record


def shape(probes: list, detail: str) -> list:
    """The probe records in the shape `detail` asks for."""
    if detail == 'full':
        return probes
    if detail != 'compact':
        raise ValueError(f"detail must be one of {', '.join(DETAIL_LEVELS)}, not {detail!r}")
    return [compact(probe) for probe in probes]
