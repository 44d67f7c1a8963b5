# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's one rule: advertising STARTTLS against the availability of a usable certificate.

starttls-advertised-without-certificate and implicit-tls-without-certificate (offered, but no
certificate completes TLS), starttls-not-offered (a usable certificate, but no STARTTLS), and
starttls-stripped (not advertised to one vantage point while the host or another vantage point sees
it): judged per probe, or from the configuration alone when no probe could judge the listener.
"""

from __future__ import annotations

from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.case import ListenerCase, seen_from
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.evidence import LazyEvidence
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.records import (
    HOST_VANTAGE,
    starttls_worked_unasked,
)
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.values import one_line


def judge_configuration(case: ListenerCase) -> None:
    """Host-side (`vantage: null`) when no probe could judge a host listener that may be open."""
    listener, label, base = case.listener, case.label, case.base
    if case.mode != 'host' or case.judged or listener.get('listening') is False:
        return
    if case.wire_mode == 'starttls' and case.offers and case.usable is False:
        case.add('starttls-advertised-without-certificate', None,
                 f'{label}: the configuration advertises STARTTLS ({one_line(listener.get("offers_starttls_reason") or "offers_starttls", 120)}) '
                 'but no usable certificate is bound (no probe reached it to confirm)',
                 base, {'store_usable': False})
    elif case.wire_mode == 'implicit' and case.offers is not False and case.usable is False:
        case.add('implicit-tls-without-certificate', None,
                 f'{label}: implicit TLS without a usable certificate bound (no probe reached it to confirm)',
                 base, {'store_usable': False})
    elif case.wire_mode == 'starttls' and case.offers is False and case.usable is True:
        case.add('starttls-not-offered', None,
                 f'{label}: a usable certificate is bound but the configuration does not offer STARTTLS '
                 f'({one_line(listener.get("offers_starttls_reason") or "offers_starttls: false", 120)})',
                 base)


def judge_probe(case: ListenerCase, probe: dict, ev: LazyEvidence) -> None:
    """What one vantage point saw of STARTTLS (or of the implicit-TLS handshake)."""
    status = case.status(probe)
    if case.wire_mode == 'starttls' and status in ('starttls-refused', 'starttls-dropped', 'handshake-failed',
                                                   'no-certificate'):
        _advertised_without_certificate(case, probe, status, ev)
    if case.wire_mode == 'implicit' and status in ('handshake-failed', 'no-certificate'):
        if status == 'no-certificate':
            what = 'completes TLS without a certificate'
        else:
            what = (f'accepts the connection but the handshake fails: '
                    f'{one_line((probe.get("tls") or {}).get("error") or (probe.get("error") or {}).get("message"), 100)}')
        case.add('implicit-tls-without-certificate', probe.get('vantage'),
                 f'{case.label} {what} ({seen_from(probe)})', ev(), {'store_usable': case.usable is True})
    if case.wire_mode == 'starttls' and status == 'not-advertised':
        _not_advertised(case, probe, ev)


def _advertised_without_certificate(case: ListenerCase, probe: dict, status: str, ev: LazyEvidence) -> None:
    reply = probe.get('starttls_reply') or {}
    reply_text = one_line(f'{reply.get("code") or ""} {reply.get("text") or ""}', 120)
    if status == 'starttls-refused':
        what = f'advertises STARTTLS but answers {reply_text}'
    elif status == 'starttls-dropped':
        what = f'advertises STARTTLS but drops the connection when asked ({one_line((probe.get("error") or {}).get("message") or "no reply", 100)})'
    elif status == 'no-certificate':
        what = 'advertises STARTTLS but completes TLS without a certificate (anonymous TLS)'
    else:
        plaintext = (probe.get('tls') or {}).get('server_plaintext')
        if plaintext:
            what = (f'advertises STARTTLS, answers {reply_text}, then says in plaintext '
                    f'{one_line(plaintext, 100)}')
        else:
            what = (f'advertises STARTTLS, answers {reply_text}, then the handshake fails: '
                    f'{one_line((probe.get("tls") or {}).get("error") or (probe.get("error") or {}).get("message"), 100)}')
    if case.usable is True:
        what += ' although the configured certificate is usable on disk'
    case.add('starttls-advertised-without-certificate', probe.get('vantage'),
             f'{case.label} {what} ({seen_from(probe)})', ev(), {'store_usable': case.usable is True})


def _not_advertised(case: ListenerCase, probe: dict, ev: LazyEvidence) -> None:
    """starttls-stripped when the host's own probe, its configuration or another vantage point shows
    STARTTLS; else starttls-not-offered when a usable certificate is bound (or nothing is known)."""
    vantage = probe.get('vantage')
    label, from_where, reference = case.label, seen_from(probe), case.reference
    host_says = None
    if reference is not None and reference is not probe and reference.get('starttls_advertised') is not None:
        host_says = ('host probe', bool(reference.get('starttls_advertised')))
    elif reference is None and case.mode == 'host' and case.offers and case.usable is True:
        # Only a configuration that offers TLS *with* a usable certificate must show STARTTLS:
        # Sendmail and Exchange drop the keyword when the certificate fails (fail closed).
        host_says = ('configuration', True)
    others = [other for other in case.judged if other.get('starttls_advertised') and other is not probe]
    if 'masked' in (probe.get('flags') or []):
        return  # middlebox-masking (dialog.py) says it, with the masked keywords as evidence
    if vantage != HOST_VANTAGE and host_says and host_says[1]:
        ev()['compared_with'] = host_says[0]
        case.add('starttls-stripped', vantage,
                 f'{label}: STARTTLS is not advertised {from_where}, but the {host_says[0]} shows it '
                 'advertised', ev())
    elif vantage != HOST_VANTAGE and others and not (host_says and not host_says[1]):
        ev()['compared_with'] = sorted({str(other.get('vantage')) for other in others})
        case.add('starttls-stripped', vantage,
                 f'{label}: STARTTLS is not advertised {from_where}, but '
                 f'{", ".join(ev()["compared_with"])} sees it advertised', ev())
    elif vantage != HOST_VANTAGE and starttls_worked_unasked(probe):
        case.add('starttls-stripped', vantage,
                 f'{label}: STARTTLS is not advertised {from_where}, yet the server accepts it when '
                 'asked', ev())
    elif case.usable is True or (case.mode != 'host' and case.usable is None):
        if case.usable is True:
            why = 'a usable certificate is bound'
        else:
            why = 'no host evidence: whether a certificate is bound is unknown'
        case.add('starttls-not-offered', vantage,
                 f'{label} does not advertise STARTTLS ({from_where}); {why}', ev())
