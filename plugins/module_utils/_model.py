# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The records shared by every part of the collection (see docs/architecture.md).

Records are plain dicts so that they travel unchanged through module results, facts,
filters and JSON reports. This module holds their vocabulary and the few helpers that
build them; it performs no I/O.
"""

from __future__ import annotations

# Protocols a listener can speak, with the TLS mode each one implies.
PROTOCOL_TLS_MODE = {
    'smtp': 'starttls',
    'submission': 'starttls',
    'lmtp': 'starttls',
    'smtps': 'implicit',
    'imap': 'starttls',
    'imaps': 'implicit',
    'pop3': 'starttls',
    'pop3s': 'implicit',
    'sieve': 'starttls',
}
PROTOCOLS = tuple(PROTOCOL_TLS_MODE)

# Well-known ports, used when a target leaves its protocol out.
PORT_PROTOCOL = {
    25: 'smtp',
    587: 'submission',
    24: 'lmtp',
    465: 'smtps',
    143: 'imap',
    993: 'imaps',
    110: 'pop3',
    995: 'pop3s',
    4190: 'sieve',
}

# Which dialog a protocol speaks before TLS.
PROTOCOL_DIALOG = {
    'smtp': 'smtp',
    'submission': 'smtp',
    'lmtp': 'lmtp',
    'smtps': 'smtp',
    'imap': 'imap',
    'imaps': 'imap',
    'pop3': 'pop3',
    'pop3s': 'pop3',
    'sieve': 'sieve',
}

PROBE_STAGES = ('connect', 'greeting', 'capabilities', 'starttls', 'handshake', 'post_tls')

PROBE_FLAGS = (
    'masked',
    'response_injection',
    'command_injection',
    'malformed_reply',
    'timeout',
    'greeting_refused',
    'ehlo_rejected',
    'legacy_tls',
    'starttls_after_tls',
    'no_certificate',
    'connection_closed',
    'inconsistent',
)

LEGACY_TLS_VERSIONS = ('SSLv3', 'TLSv1', 'TLSv1.1')

# The addresses a listener binds to serve every address of its host, one per family, and the
# address at which the host itself reaches a listener bound to one.
IPV4_WILDCARD = '0.0.0.0'
IPV6_WILDCARD = '::'
WILDCARD_ADDRESSES = (IPV4_WILDCARD, IPV6_WILDCARD)
LOOPBACK_FOR = {IPV4_WILDCARD: '127.0.0.1', IPV6_WILDCARD: '::1'}
# A listener address that names no one address: a wildcard, `*` as configurations write it, or none.
ANY_ADDRESS = WILDCARD_ADDRESSES + ('*', '', None)


def tls_mode(protocol: str) -> str:
    return PROTOCOL_TLS_MODE[protocol]


def new_probe(address: str, port: int, protocol: str, sni: str | None, vantage: str, name: str | None = None) -> dict:
    """An empty probe record: every key present, nothing observed yet. `name` is the host name the
    target was given as (its address is then one that the name resolved to), else None."""
    return {
        'target': {'address': address, 'port': port, 'protocol': protocol, 'sni': sni, 'name': name},
        'vantage': vantage,
        'tls_mode': PROTOCOL_TLS_MODE[protocol],
        'connected': False,
        'peer_address': None,
        'greeting': None,
        'capabilities': [],
        'capabilities_reply': None,
        'capabilities_after_tls': None,
        'starttls_advertised': None,
        'starttls_reply': None,
        'pre_tls_surplus': None,
        'injected_reply': None,
        'tls': None,
        'certificate': None,
        'flags': [],
        'error': None,
        'timings_ms': {},
        'attempts': [],
    }


def family_wildcards(address: str) -> tuple:
    """The wildcard sockets that may serve `address`, its own family's first (a dual-stack `::`
    socket accepts IPv4 too)."""
    return (IPV6_WILDCARD, IPV4_WILDCARD) if ':' in address else WILDCARD_ADDRESSES
