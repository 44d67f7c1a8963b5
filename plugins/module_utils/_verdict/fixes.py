# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fix a finding shows: the least change that removes it, in the listener's MTA's own terms."""

from __future__ import annotations

import re

from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.catalogue import DNS, RULES
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.values import endpoint


def _exim_endpoint_condition(address, port) -> str:
    return ('and{{eq{$received_ip_address}{' + str(address) + '}}{eq{$received_port}{' + str(port) + '}}}')


def postfix_config_dir(listener: dict) -> str | None:
    """A non-default Postfix instance's configuration directory (from the listener, or from
    where master.cf defines it), for `postconf -c` / `postfix -c`."""
    directory = listener.get('config_dir')
    if not directory:
        match = re.match(r'^(/.+)/(?:master|main)\.cf:\d+$', str(listener.get('defined_at') or ''))
        directory = match.group(1) if match else None
    return directory if directory and directory != '/etc/postfix' else None


def _names(listener: dict) -> dict:
    binding = listener.get('binding') or {}
    address = listener.get('address') or 'ADDRESS'
    return {
        'endpoint': endpoint(listener.get('address'), listener.get('port')),
        'address': address,
        'port': listener.get('port'),
        'service': listener.get('service') or endpoint(listener.get('address'), listener.get('port')),
        'cert': binding.get('certificate') or '/etc/ssl/certs/mail.pem',
        'key': binding.get('key') or binding.get('certificate') or '/etc/ssl/private/mail.key',
        'reader': listener.get('reader_user') or 'root',
        'postconf': f'postconf -c {postfix_config_dir(listener)}' if postfix_config_dir(listener) else 'postconf',
        'defined_at': listener.get('defined_at') or 'its configuration',
    }


RELOAD = {
    'postfix': '`postfix check && postfix reload`',
    'exim': '`exim -bV` (with `-C` for a non-default configuration), then restart Exim',
    'dovecot': '`doveconf -n`, then `doveadm reload`',
    'opensmtpd': '`smtpd -n`, then restart smtpd',
    'sendmail': 'rebuild sendmail.cf from sendmail.mc, then restart sendmail',
    'exchange': '`Restart-Service MSExchangeTransport`',
}


def _reload(mta: str, listener: dict) -> str:
    directory = postfix_config_dir(listener) if mta == 'postfix' else None
    if directory:
        return f'`postfix -c {directory} check && postfix -c {directory} reload`'
    return RELOAD.get(mta, 'reload the server')


EXCHANGE_REPORT_ONLY = ('Exchange (report only; this collection does not change it): ')


def _bind_or_stop(mta: str, n: dict, listener: dict) -> str:
    if mta == 'postfix':
        text = (f"Bind a usable certificate to this service: `{n['postconf']} -P "
                f"'{n['service']}/inet/smtpd_tls_chain_files={n['key']},{n['cert']}'` (key first, then the "
                f"certificate and its chain), or stop offering TLS on it only: `{n['postconf']} -P "
                f"'{n['service']}/inet/smtpd_tls_security_level=none'`. Then {_reload('postfix', listener)}.")
        if any('postscreen' in str(note) for note in listener.get('notes') or []):
            text += ' This service is postscreen: TLS belongs to its smtpd pass service, set the -o there.'
        return text
    if mta == 'exim':
        condition = _exim_endpoint_condition(n['address'], n['port'])
        return ('Give Exim a certificate for this address and port: `tls_certificate = ${if ' + condition
                + '{' + n['cert'] + '}{<other certificate>}}` with the same condition in `tls_privatekey`, '
                'or stop advertising here only: `tls_advertise_hosts = ${if ' + condition + '{}{*}}` '
                '(keep your current host list in place of `*`). Without a usable tls_certificate Exim '
                'serves a self-made certificate. Then ' + RELOAD['exim'] + '.')
    if mta == 'dovecot':
        return (f"Give this address its own certificate: `local {n['address']} {{ ssl_cert = <{n['cert']}` and "
                f"`ssl_key = <{n['key']} }}` (Dovecot 2.4: ssl_server_cert_file, ssl_server_key_file), or stop "
                f"offering TLS there: `local {n['address']} {{ ssl = no }}` (a local block covers every port "
                f"of the address; nest `protocol imap {{ }}` to narrow it). Then {RELOAD['dovecot']}.")
    if mta == 'opensmtpd':
        return (f"Declare a pki and attach it to this listener: `pki mail cert \"{n['cert']}\"`, "
                f"`pki mail key \"{n['key']}\"`, `listen on {n['address']} port {n['port']} tls pki mail`; or "
                f"drop `tls` from that `listen on` line. Then {RELOAD['opensmtpd']}.")
    if mta == 'sendmail':
        return ('Sendmail serves one certificate for all daemons (`confSERVER_CERT`, `confSERVER_KEY`; the key '
                'owned by root, mode 0600, or sendmail refuses it as unsafe). To stop advertising on this '
                f"daemon only, add `M=S` to its DaemonPortOptions (Port={n['port']}, Addr={n['address']}). "
                f"Then {RELOAD['sendmail']}.")
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
    n = _names(listener)
    reload_text = _reload(mta, listener)
    if rule == 'starttls-advertised-without-certificate':
        text = _bind_or_stop(mta, n, listener)
        if mta == 'opensmtpd' and detail.get('store_usable'):
            text += (' The configured pki is usable, yet the handshake fails: OpenSMTPD 6.8 portable with '
                     'OpenSSL 3 aborts with `EVP lib` (upstream issues #1171, #1239); upgrade OpenSMTPD, or '
                     'drop `tls` from this listener until it is fixed.')
        return text
    if rule == 'implicit-tls-without-certificate':
        if mta == 'postfix':
            return (f"Bind a certificate to this wrapper-mode service: `{n['postconf']} -P "
                    f"'{n['service']}/inet/smtpd_tls_chain_files={n['key']},{n['cert']}'`, or remove the service "
                    f"from master.cf ({n['defined_at']}). Then {_reload('postfix', listener)}.")
        if mta == 'exim':
            return ('Give Exim a usable `tls_certificate`/`tls_privatekey` for this address (an expanded '
                    'string may depend on `$received_ip_address` and `$received_port`), or remove the port '
                    f"from `tls_on_connect_ports` and `daemon_smtp_ports`. Then {RELOAD['exim']}.")
        if mta == 'dovecot':
            return (f"Set `ssl_cert`/`ssl_key` for this address (`local {n['address']} {{ ... }}`) or disable the "
                    f"inet_listener with `port = 0`. Then {RELOAD['dovecot']}.")
        if mta == 'opensmtpd':
            return (f"Attach a pki to the `listen on {n['address']} port {n['port']} smtps` line (`pki NAME` with "
                    f"cert and key), or remove the line. Then {RELOAD['opensmtpd']}.")
        if mta == 'sendmail':
            return ('Set `confSERVER_CERT`/`confSERVER_KEY` to a usable pair, or remove the `M=s` daemon. '
                    f"Then {RELOAD['sendmail']}.")
        if mta == 'exchange':
            return EXCHANGE_REPORT_ONLY + 'enable a certificate for the service on this port, or remove the binding.'
        return f"Bind a usable certificate and key to {n['endpoint']}, or stop listening there."
    if rule == 'starttls-not-offered':
        if mta == 'postfix':
            return (f"Offer TLS on this service: `{n['postconf']} -P '{n['service']}/inet/smtpd_tls_security_level=may'` "
                    '(and remove STARTTLS from smtpd_discard_ehlo_keywords if it is there). '
                    f"Then {_reload('postfix', listener)}.")
        if mta == 'exim':
            return ('Let `tls_advertise_hosts` include the clients of this address (default `*`); check that no '
                    f"condition excludes {n['endpoint']}. Then {RELOAD['exim']}.")
        if mta == 'dovecot':
            return (f"Set `ssl = yes` for this listener (globally or in `local {n['address']} {{ }}`). "
                    f"Then {RELOAD['dovecot']}.")
        if mta == 'opensmtpd':
            return (f"Add `tls pki NAME` to the `listen on {n['address']} port {n['port']}` line. "
                    f"Then {RELOAD['opensmtpd']}.")
        if mta == 'sendmail':
            return ('Remove `M=S` from the daemon\'s DaemonPortOptions and make sure confSERVER_CERT/confSERVER_KEY '
                    f"load (sendmail logs `STARTTLS: ServerCertFile` problems). Then {RELOAD['sendmail']}.")
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
        if mta == 'exim':
            owner = f"root:{n['reader'] if n['reader'] != 'root' else 'Debian-exim'}"
            return f"`chown {owner} {path} && chmod 0640 {path}` (Exim reads it as its own user)."
        return f"`chown root:root {path} && chmod 0600 {path}` ({mta or 'the server'} reads keys as root)."
    if rule == 'presented-certificate-differs':
        if detail.get('no_bound_certificate'):
            return _bind_or_stop(mta, n, listener)
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
        if mta == 'postfix':
            return 'Upgrade Postfix (CVE-2011-0411 was fixed in 2.8.0, 2.7.3, 2.6.9, 2.5.12 and 2.4.16).'
        return ('The server answers commands sent before TLS as if they came after it (CVE-2011-0411 class). '
                'Upgrade the server or the proxy in front of it.')
    if rule == 'starttls-after-tls':
        return ('RFC 3207 4.2 forbids offering STARTTLS inside TLS; upgrade the server or the proxy that '
                'rewrites the capability list.')
    if rule == 'legacy-tls-protocol':
        if mta == 'postfix':
            return (f"`{n['postconf']} -e 'smtpd_tls_protocols = >=TLSv1.2' 'smtpd_tls_mandatory_protocols = "
                    f">=TLSv1.2'`, then {_reload('postfix', listener)}.")
        if mta == 'exim':
            return ('GnuTLS builds: `tls_require_ciphers = NORMAL:-VERS-TLS1.0:-VERS-TLS1.1`; OpenSSL builds: '
                    f"`openssl_options = +no_tlsv1 +no_tlsv1_1`. Then {RELOAD['exim']}.")
        if mta == 'dovecot':
            return f"`ssl_min_protocol = TLSv1.2`, then {RELOAD['dovecot']}."
        if mta == 'opensmtpd':
            return f"Add `protocols \"tlsv1.2,tlsv1.3\"` to the listen line, then {RELOAD['opensmtpd']}."
        if mta == 'sendmail':
            return ("`define(`confSERVER_SSL_OPTIONS', `+SSL_OP_NO_TLSv1 +SSL_OP_NO_TLSv1_1')`, then "
                    f"{RELOAD['sendmail']}.")
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
