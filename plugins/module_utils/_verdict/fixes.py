# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fix a finding shows: the least change that removes it, in the listener's MTA's own terms.

Each MTA's own words come from its adapter (MtaAdapter.fix_text and reload_text in _mta/, looked up
through the registry): adding an MTA adds its fix texts with it. What is left here is the text
for every MTA (a middlebox, a certificate to renew), for a listener of no known MTA, and for
Exchange, which the collection reports on but never changes.
"""

from __future__ import annotations

import functools

from ansible_collections.mailsec.starttls.plugins.module_utils._mta import MTA_NAMES, get_adapter
from ansible_collections.mailsec.starttls.plugins.module_utils._mta.base import fix_names
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.catalogue import DNS, RULES

EXCHANGE_REPORT_ONLY = 'Exchange (report only; this collection does not change it): '
EXCHANGE_RELOAD = '`Restart-Service MSExchangeTransport`'


@functools.lru_cache(maxsize=None)
def _adapter(mta: str):
    return get_adapter(mta)


def adapter_for(mta: str):
    """The adapter of a (lower-case) MTA name, or None for Exchange, an unknown name or none."""
    return _adapter(mta) if mta in MTA_NAMES else None


def _bind_or_stop(mta: str, n: dict) -> str:
    if mta == 'exchange':
        return (EXCHANGE_REPORT_ONLY + 'find the receive connector bound to this address and port '
                '(`Get-ReceiveConnector | Format-List Name,Bindings,Fqdn,AuthMechanism,TlsCertificateName`), '
                'enable a certificate that names the connector FQDN for SMTP (`Enable-ExchangeCertificate '
                '-Thumbprint <thumbprint> -Services SMTP`) or set `TlsCertificateName`; event 12014 names a '
                'connector that cannot offer STARTTLS.')
    return (f"Bind a usable certificate and key to {n['endpoint']}, or stop advertising STARTTLS there. "
            'docs/findings.md has the commands for Postfix, Exim, Dovecot, OpenSMTPD, Sendmail and Exchange.')


def fix_for(rule: str, listener: dict, detail: dict | None = None) -> str:
    """The least change that removes the finding, in the listener's MTA's own terms."""
    detail = detail or {}
    mta = (listener.get('mta') or '').lower()
    if rule == 'presented-certificate-differs' and detail.get('no_bound_certificate'):
        # Served although nothing usable is bound: the fix of a listener that advertises without one.
        return fix_for('starttls-advertised-without-certificate', listener)
    adapter = adapter_for(mta)
    if adapter is not None:
        text = adapter.fix_text(rule, listener, detail)
        if text:
            return text
        reload_text = adapter.reload_text(listener)
    else:
        reload_text = EXCHANGE_RELOAD if mta == 'exchange' else 'reload the server'
    n = fix_names(listener)
    if rule == 'starttls-advertised-without-certificate':
        return _bind_or_stop(mta, n)
    if rule == 'implicit-tls-without-certificate':
        if mta == 'exchange':
            return EXCHANGE_REPORT_ONLY + 'enable a certificate for the service on this port, or remove the binding.'
        return f"Bind a usable certificate and key to {n['endpoint']}, or stop listening there."
    if rule == 'starttls-not-offered':
        if mta == 'exchange':
            return (EXCHANGE_REPORT_ONLY + 'add `Tls` to the receive connector\'s AuthMechanism and enable a '
                    'certificate that names its FQDN for SMTP (event 12014 explains a dropped STARTTLS).')
        return f"Offer STARTTLS on {n['endpoint']} now that a usable certificate is available."
    if rule == 'certificate-unreadable':
        paths = ', '.join(path for path in (detail.get('certificate'), detail.get('key')) if path) or 'the bound files'
        return (f"Make {paths} exist, hold PEM data and be readable by the user that loads them "
                f"({n['reader']}); or bind another certificate. Then {reload_text}.")
    if rule == 'certificate-key-mismatch':
        return (f"Bind the private key that belongs to {n['cert']} (compare `openssl x509 -noout -pubkey` with "
                f"`openssl pkey -pubout`), or the certificate issued for {n['key']}. Then {reload_text}.")
    if rule in ('certificate-expired', 'certificate-expiring'):
        return (f"Renew the certificate ({detail.get('path') or n['cert']}) and reload so that the server serves "
                f"the new one: {reload_text}. Make the renewal hook reload the server.")
    if rule == 'certificate-host-mismatch':
        return ('Issue a certificate whose subjectAltName contains the names clients use for this listener '
                f"(the MX name, the submission host name) and bind it. Then {reload_text}.")
    if rule == 'validation-failure':
        return ('Serve a certificate from a CA the clients trust with its complete chain (leaf first, then the '
                'intermediates, in the file the server loads); replace self-signed or self-made certificates. '
                f"Then {reload_text}.")
    if rule == 'private-key-exposed':
        path = detail.get('key') or n['key']
        return f"`chown root:root {path} && chmod 0600 {path}` ({mta or 'the server'} reads keys as root)."
    if rule == 'presented-certificate-differs':
        return (f"The certificate on disk is not the one served: reload so that it is loaded ({reload_text}); "
                'if it still differs, find the rule that binds another certificate to this address (SNI, '
                'a per-listener override).')
    if rule == 'starttls-stripped':
        return ('A device between this vantage point and the server removes STARTTLS. On Cisco ASA/FTD ESMTP '
                'inspection, allow TLS (`allow-tls` in the ESMTP policy map) or stop inspecting ESMTP; check '
                'other proxies and anti-spam gateways in the path.')
    if rule == 'middlebox-masking':
        return ('A device in the path rewrites the SMTP dialog (Cisco ASA `mask-banner`, masked EHLO keywords). '
                'Turn off banner and keyword masking in its ESMTP inspection policy, or stop inspecting ESMTP.')
    if rule == 'tls-terminated-elsewhere':
        return ('Something between this vantage point and the host answers the handshake with its own '
                'certificate (TLS inspection, a load balancer, a firewall). Let it pass STARTTLS through, or give '
                'it the host\'s certificate and track it as part of the listener.')
    if rule == 'pre-tls-surplus':
        return ('The server (or a proxy) sends bytes after the STARTTLS reply before the handshake: an injection '
                'point (NO STARTTLS, USENIX Security 2021). Upgrade the server or proxy; clients must discard '
                'such bytes.')
    if rule == 'starttls-command-injection':
        return ('The server answers commands sent before TLS as if they came after it (CVE-2011-0411 class). '
                'Upgrade the server or the proxy in front of it.')
    if rule == 'starttls-after-tls':
        return ('RFC 3207 4.2 forbids offering STARTTLS inside TLS; upgrade the server or the proxy that '
                'rewrites the capability list.')
    if rule == 'legacy-tls-protocol':
        if mta == 'exchange':
            return EXCHANGE_REPORT_ONLY + 'disable TLS 1.0 and 1.1 in SCHANNEL (Exchange 2019 CU13 does by default).'
        return 'Disable TLS 1.0 and 1.1 (and SSLv3) on the server; allow TLS 1.2 and 1.3.'
    if rule == 'inconsistent-answers':
        return ('The nodes or paths behind this address behave differently (a load-balanced pool, a partial '
                'rollout, a middlebox on some paths). Make every node serve the same configuration.')
    if rule == 'listener-drift':
        if detail.get('kind') == 'not-configured':
            return ('A mail port is open that no configured listener explains: find its owner '
                    f"(pid {detail.get('pid') or '?'}, {detail.get('process') or 'unknown process'}) and stop it "
                    'or add it to the configuration so that it is audited.')
        return (f"The listener defined at {n['defined_at']} is not open: start or reload the server "
                f"({reload_text}), or remove the definition.")
    if rule == 'inspection-uncertain':
        where = detail.get('first_where') or n['defined_at']
        return (f'Read the configuration at {where} by hand (or run mta_tls_info where the MTA\'s own tools can run, '
                'as root): make the construct named in the evidence explicit (an address instead of an interface '
                'name, a rendered file instead of a template, the option set instead of its default), or '
                'waive the finding with the answer once it is known.')
    if rule == 'probe-failed':
        return ('Make the listener reachable from this vantage point (firewall, routing, postscreen or '
                'greylisting that refuses the prober), or remove the vantage point for it; then probe again.')
    if rule == 'judgement-error':
        return 'Report this with the listener and probe records attached; the other listeners were judged.'
    if RULES.get(rule, {}).get('evidence') == DNS:
        # The DNS checks (plugin_utils/_dane.py) write the specific fix; this is the general one.
        return ('Make the DNS promise and the listener agree: publish TLSA records for the key served and the '
                'next one, sign the zone, keep the MTA-STS policy in step with the MX records, and serve '
                f'STARTTLS with a valid certificate ({reload_text} after a change). See docs/dane-mta-sts.md.')
    return ''
