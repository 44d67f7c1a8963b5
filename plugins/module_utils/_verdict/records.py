# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading listener and probe records: the TLS mode a listener's protocol implies, which side knows it
(host, socket, black box), its certificate store and whether a usable certificate is bound, the
fingerprints it may serve, what a probe established stage by stage, and a listener's identity."""

from __future__ import annotations

from ansible_collections.mailsec.starttls.plugins.module_utils._model import PROTOCOL_TLS_MODE
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.catalogue import ANY_TLS
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.values import (
    as_port,
    canonical_address,
    normalise_sha256,
)

STARTTLS_OK = ('220', 'OK', '+OK')
HOST_VANTAGE = 'host'


def protocol_mode(listener: dict) -> str:
    """The TLS mode the listener's protocol implies on the wire (a TLS-off SMTP listener is
    still an SMTP listener that a client will ask for STARTTLS)."""
    protocol = listener.get('protocol')
    if protocol in PROTOCOL_TLS_MODE:
        return PROTOCOL_TLS_MODE[protocol]
    if listener.get('tls_mode') in ANY_TLS:
        return listener['tls_mode']
    return 'starttls'


def listener_mode(listener: dict) -> str:
    """'host' (configuration and store known), 'socket' (listening, not configured) or
    'black-box' (only the address and port are known)."""
    mode = listener.get('mode')
    if mode in ('host', 'socket', 'black-box', 'probe'):
        return mode
    if any(key in listener for key in ('binding', 'store', 'offers_starttls', 'defined_at')):
        return 'host'
    return 'black-box'


def store_of(listener: dict) -> dict | None:
    """The certificate store record (_certs.StoreInspector) of the listener's binding.

    Postfix `smtpd_tls_chain_files` may bind several key+chain groups; they arrive as a list
    and are all loaded or none (the first is the primary, the rest its alternates).
    """
    store = listener.get('store')
    if store is None:
        store = (listener.get('binding') or {}).get('store')
    if isinstance(store, list):
        parts = [part for part in store if isinstance(part, dict)]
        if not parts:
            return None
        usable = [part.get('usable') for part in parts]
        merged = dict(parts[0])
        merged['usable'] = False if False in usable else (None if None in usable else True)
        merged['problems'] = [problem for part in parts for problem in part.get('problems') or []]
        merged['unknown'] = [item for part in parts for item in part.get('unknown') or []]
        merged['alternates'] = parts[1:]
        return merged
    return store if isinstance(store, dict) else None


def store_certificate(store: dict | None) -> dict:
    """The bound leaf's description ({sha256, subject, not_after, ...}) with its path."""
    if not isinstance(store, dict):
        return {}
    certificate = store.get('certificate')
    if not isinstance(certificate, dict):
        return {}
    description = certificate.get('describe')
    if isinstance(description, dict):
        merged = dict(description)
        merged.setdefault('path', certificate.get('path'))
        return merged
    return certificate


def usable_certificate(listener: dict):
    """True/False/None: is a usable certificate and key bound to this listener?"""
    if listener_mode(listener) != 'host':
        return None
    store = store_of(listener)
    if store is not None:
        if store.get('error'):
            # The inspection itself failed (reported as judgement-error): nothing is known.
            return None
        usable = store.get('usable')
        if usable is not None:
            return bool(usable)
    binding = listener.get('binding')
    if isinstance(binding, dict):
        if not binding.get('certificate'):
            return False
    return None


def offers_tls(listener: dict):
    """True/False/None: does the configuration make this listener offer TLS?"""
    if protocol_mode(listener) == 'implicit':
        return listener.get('tls_mode') != 'none' if listener_mode(listener) == 'host' else None
    if listener.get('tls_mode') == 'none' and listener_mode(listener) == 'host':
        return False
    offers = listener.get('offers_starttls')
    return None if offers is None else bool(offers)


def configured_fingerprints(listener: dict) -> list:
    """SHA-256 of every certificate this listener may serve: the bound one, alternates (RSA and
    ECDSA side by side) and SNI entries, plus pins given for a black-box listener."""
    found = []

    def add(value):
        value = normalise_sha256(value)
        if value and value not in found:
            found.append(value)

    store = store_of(listener)
    if store:
        add(store_certificate(store).get('sha256'))
        for alternate in store.get('alternates') or []:
            add(store_certificate(alternate).get('sha256'))
    binding = listener.get('binding') or {}
    for entry in list(binding.get('sni') or []) + list(binding.get('alternates') or []):
        if isinstance(entry, dict):
            entry_store = entry.get('store')
            for part in entry_store if isinstance(entry_store, list) else [entry_store]:
                add(store_certificate(part).get('sha256'))
    for pin in listener.get('expected_certificates') or []:
        add(pin)
    return found


def unfingerprinted_alternates(listener: dict) -> bool:
    """Whether the listener may serve a certificate whose fingerprint we do not know."""
    binding = listener.get('binding') or {}
    for entry in list(binding.get('alternates') or []) + list(binding.get('sni') or []):
        if isinstance(entry, dict) and entry.get('certificate') and not entry.get('store'):
            return True
    return False


def classify_probe(probe: dict) -> str:
    """What a probe established, by stage (never by TLS library wording, which varies with timing):

    unreachable, refused (greeting or EHLO refused), incomplete (stopped before STARTTLS was
    known), not-advertised, starttls-refused, starttls-dropped, handshake-failed, no-certificate, tls.
    """
    if not probe.get('connected'):
        return 'unreachable'
    flags = probe.get('flags') or []
    tls = probe.get('tls') or {}
    implicit = probe.get('tls_mode') == 'implicit'
    if implicit:
        if not tls:
            return 'incomplete'
        if not tls.get('established'):
            return 'handshake-failed'
        if 'no_certificate' in flags or not probe.get('certificate'):
            return 'no-certificate'
        return 'tls'
    if 'greeting_refused' in flags or 'ehlo_rejected' in flags:
        return 'refused'
    advertised = probe.get('starttls_advertised')
    if advertised is None:
        return 'incomplete'
    if not advertised:
        return 'not-advertised'
    reply = probe.get('starttls_reply')
    if not reply:
        if (probe.get('error') or {}).get('stage') in ('connect', 'greeting', 'capabilities'):
            # STARTTLS was never sent (a capability list cut at the reader's cap): nothing to judge.
            return 'incomplete'
        return 'starttls-dropped'
    if str(reply.get('code')) not in STARTTLS_OK:
        return 'starttls-refused'
    if not tls or not tls.get('established'):
        return 'handshake-failed'
    if 'no_certificate' in flags or not probe.get('certificate'):
        return 'no-certificate'
    return 'tls'


def starttls_worked_unasked(probe: dict) -> bool:
    """The probe tried STARTTLS although it was not advertised, and it worked."""
    reply = probe.get('starttls_reply') or {}
    return str(reply.get('code')) in STARTTLS_OK and bool((probe.get('tls') or {}).get('established'))


def listener_identity(listener: dict) -> tuple:
    return (listener.get('host'), canonical_address(listener.get('address')), as_port(listener.get('port')))


def listener_key(listener: dict) -> str:
    host, address, port = listener_identity(listener)
    return f'{host}|{address}|{port}'
