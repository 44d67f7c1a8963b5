# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The judgement: listeners (what a host is configured to do) and probes (what each vantage
point saw) in, findings out.

`judge(listeners, probes, options)` is the one entry point. Everything here is a pure function
over plain records: no I/O, no clock unless `options['now']` is left out, nothing outside the
standard library, importable on Python 3.8. The rules are documented one by one in
docs/findings.md; the IDs are stable.

Both sides are needed (research/MTA-BEHAVIOUR.md, lesson 3): the host's own configuration and
certificate store cannot see an OpenSMTPD whose valid configuration fails every handshake, and
the wire cannot tell Exim's self-made certificate from the one it was given.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import re

from ansible_collections.mailsec.starttls.plugins.module_utils._model import (
    LEGACY_TLS_VERSIONS,
    PROTOCOL_TLS_MODE,
)
from ansible_collections.mailsec.starttls.plugins.module_utils._text import visible

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
# kept as evidence and mapped by their wording (see _problem_rule).
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

STARTTLS_OK = ('220', 'OK', '+OK')
WILDCARDS = ('0.0.0.0', '::')
HOST_VANTAGE = 'host'
TEXT_LIMIT = 1000
LINE_LIMIT = 160


class VerdictError(ValueError):
    """Options that cannot be judged with (a bad argument, not a bad record)."""


# -- small helpers -------------------------------------------------------------------------

def clean_text(value, limit: int = TEXT_LIMIT):
    """Text from a server, bounded; control characters (other than tab, CR and LF) and bidi
    overrides made visible (_text.visible)."""
    if value is None:
        return None
    text = visible(value, keep_cr=True)
    if len(text) > limit:
        text = text[:limit] + f'... ({len(text) - limit} more characters)'
    return text


def one_line(value, limit: int = LINE_LIMIT) -> str:
    text = clean_text(value, limit * 4) or ''
    text = ' '.join(text.split())
    if len(text) > limit:
        text = text[:limit - 3] + '...'
    return text


def canonical_address(address) -> str | None:
    if address is None or address == '':
        return None
    return _canonical_text(str(address))


@functools.lru_cache(maxsize=65536)
def _canonical_text(text: str) -> str:
    """IP literals in one spelling (a fleet repeats the same few thousand addresses)."""
    text = text.strip()
    if text.startswith('[') and text.endswith(']'):
        text = text[1:-1]
    if text.lower().startswith('ipv6:'):
        text = text[5:]
    text = text.split('%', 1)[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text.lower()


def endpoint(address, port) -> str:
    address = '' if address is None else str(address)
    if ':' in address:
        return f'[{address}]:{port}'
    return f'{address}:{port}'


def listener_label(listener: dict) -> str:
    return f'{endpoint(listener.get("address"), listener.get("port"))}/{listener.get("protocol") or "?"}'


def _as_port(value):
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        # Kept as given only when it can be part of a key (a list or a dict cannot).
        return value if isinstance(value, str) else None


def _normalise_sha256(value) -> str | None:
    if not value or not isinstance(value, str):
        return None
    return value.replace(':', '').strip().lower() or None


def parse_time(value) -> datetime.datetime | None:
    """A UTC datetime from a datetime, a date or an ISO 8601 text ('...Z' included)."""
    if value is None or value == '':
        return None
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)
    if isinstance(value, datetime.date):
        return datetime.datetime(value.year, value.month, value.day, tzinfo=datetime.timezone.utc)
    text = str(value).strip()
    if text.endswith('Z'):
        text = text[:-1] + '+00:00'
    for pattern in ('%Y-%m-%dT%H:%M:%S%z', '%Y-%m-%dT%H:%M:%S.%f%z', '%Y-%m-%d %H:%M:%S%z',
                    '%Y-%m-%dT%H:%M:%S', '%Y-%m-%d'):
        candidate = text
        if '%z' in pattern and len(candidate) > 6 and candidate[-3] == ':' and candidate[-6] in '+-':
            # strptime's %z wants +0000 on Python 3.6; accept +00:00 everywhere.
            candidate = candidate[:-3] + candidate[-2:]
        try:
            moment = datetime.datetime.strptime(candidate, pattern)
        except ValueError:
            continue
        return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)
    return None


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


# -- reading records -----------------------------------------------------------------------

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
        value = _normalise_sha256(value)
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


def _unfingerprinted_alternates(listener: dict) -> bool:
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


def _starttls_worked_unasked(probe: dict) -> bool:
    """The probe tried STARTTLS although it was not advertised, and it worked."""
    reply = probe.get('starttls_reply') or {}
    return str(reply.get('code')) in STARTTLS_OK and bool((probe.get('tls') or {}).get('established'))


# -- screening records from managed hosts -----------------------------------------------------

_SCALAR = (str, int, float, bool, type(None))
_TEXT_KEYS = ('address', 'probe_address', 'mta', 'service', 'defined_at', 'offers_starttls_reason', 'reader_user',
              'config_dir')
_LIST_KEYS = ('notes', 'expected_certificates', 'expected_names')
_BOOL_KEYS = ('offers_starttls', 'listening')
LISTENER_TLS_MODES = ('starttls', 'implicit', 'none')


def _port_problem(value, what: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return f'{what} is a {type(value).__name__}, not a port number'
    if isinstance(value, str) and not value.strip().isdigit():
        return f'{what} {clean_text(value, 40)!r} is not a port number'
    if not 0 <= int(value) <= 65535:
        return f'{what} {clean_text(value, 40)} is out of range'
    return None


def _probe_problem(probe, what: str) -> str | None:
    if not isinstance(probe, dict):
        return f'{what} is a {type(probe).__name__}, not a probe record'
    target = probe.get('target')
    if not isinstance(target, dict):
        return f'{what}.target is not a dictionary'
    if target.get('address') is not None and not isinstance(target.get('address'), str):
        return f'{what}.target.address is a {type(target.get("address")).__name__}, not text'
    problem = _port_problem(target.get('port'), f'{what}.target.port')
    if problem:
        return problem
    for key, kinds in (('flags', list), ('greeting', dict), ('starttls_reply', dict), ('tls', dict),
                       ('certificate', dict), ('error', dict), ('capabilities', list), ('timings_ms', dict),
                       ('attempts', list)):
        if probe.get(key) is not None and not isinstance(probe.get(key), kinds):
            return f'{what}.{key} is a {type(probe.get(key)).__name__}, not a {kinds.__name__}'
    if probe.get('vantage') is not None and not isinstance(probe.get('vantage'), str):
        return f'{what}.vantage is not text'
    return None


def record_problem(listener) -> str | None:
    """Why a listener record (from a managed host, so not trusted) cannot be judged, or None.

    Types only: a value may be wrong and still be judged; a list where a port belongs, a string
    where a binding belongs or a protocol the collection does not know cannot be.
    """
    if not isinstance(listener, dict):
        return f'the record is a {type(listener).__name__}, not a dictionary'
    if listener.get('host') is not None and not isinstance(listener.get('host'), str):
        return 'host is not text'
    for key in _TEXT_KEYS:
        if not isinstance(listener.get(key), _SCALAR):
            return f'{key} is a {type(listener.get(key)).__name__}, not text'
    problem = _port_problem(listener.get('port'), 'port')
    if problem:
        return problem
    protocol = listener.get('protocol')
    if protocol is not None and (not isinstance(protocol, str) or protocol not in PROTOCOL_TLS_MODE):
        return (f'protocol {clean_text(protocol, 40)!r} is not one of {", ".join(PROTOCOL_TLS_MODE)}'
                if isinstance(protocol, str) else f'protocol is a {type(protocol).__name__}, not text')
    if listener.get('tls_mode') is not None and listener.get('tls_mode') not in LISTENER_TLS_MODES:
        return f'tls_mode {clean_text(listener.get("tls_mode"), 40)!r} is not one of {", ".join(LISTENER_TLS_MODES)}'
    for key in _BOOL_KEYS:
        if listener.get(key) is not None and not isinstance(listener.get(key), bool):
            return f'{key} is a {type(listener.get(key)).__name__}, not true, false or null'
    for key in _LIST_KEYS:
        if listener.get(key) is not None and not isinstance(listener.get(key), list):
            return f'{key} is a {type(listener.get(key)).__name__}, not a list'
    binding = listener.get('binding')
    if binding is not None:
        if not isinstance(binding, dict):
            return f'binding is a {type(binding).__name__}, not a dictionary'
        for key in ('certificate', 'key', 'source'):
            if not isinstance(binding.get(key), _SCALAR):
                return f'binding.{key} is a {type(binding.get(key)).__name__}, not text'
        for key in ('sni', 'alternates'):
            entries = binding.get(key)
            if entries is not None and (not isinstance(entries, list)
                                        or not all(isinstance(entry, dict) for entry in entries)):
                return f'binding.{key} is not a list of dictionaries'
    for where, value in (('store', listener.get('store')),
                         ('binding.store', binding.get('store') if isinstance(binding, dict) else None)):
        if value is None or isinstance(value, dict):
            continue
        if not isinstance(value, list) or not all(isinstance(part, dict) for part in value):
            return f'{where} is a {type(value).__name__}, not a certificate store record'
    if listener.get('probe') is not None:
        return _probe_problem(listener['probe'], 'probe')
    return None


def screen_listeners(listeners, host: str | None = None) -> list:
    """Listener records as they may be judged: a record that cannot be read is replaced by a stand-in
    that carries `record_error` (judged as one judgement-error finding for its host alone), so that
    one malformed record never stops the judgement of the others. Stand-ins pass again unchanged.
    `host`, when given, is the host every record is bound to (a record that is not even a
    dictionary still belongs to the result it came in)."""
    screened = []
    for listener in listeners or []:
        problem = record_problem(listener)
        if problem is None:
            screened.append(listener)
            continue
        source = listener if isinstance(listener, dict) else {}
        owner = host or (source.get('host') if isinstance(source.get('host'), str) else None)
        address = source.get('address') if isinstance(source.get('address'), str) else None
        port = source.get('port')
        port = int(port) if _port_problem(port, 'port') is None and port is not None else None
        protocol = source.get('protocol') if source.get('protocol') in PROTOCOL_TLS_MODE else None
        screened.append({'host': owner, 'address': address, 'port': port, 'protocol': protocol,
                         'mta': source.get('mta') if isinstance(source.get('mta'), str) else None,
                         'record_error': one_line(problem, 200)})
    return screened


def screen_probes(probes) -> tuple:
    """(probes that can be judged, stand-in listeners for those that cannot: see screen_listeners)."""
    good, stand_ins = [], []
    for probe in probes or []:
        problem = _probe_problem(probe, 'probe')
        if problem is None:
            good.append(probe)
            continue
        source = probe if isinstance(probe, dict) else {}
        target = source.get('target') if isinstance(source.get('target'), dict) else {}
        stand_ins.append({'host': source.get('host') if isinstance(source.get('host'), str) else None,
                          'address': target.get('address') if isinstance(target.get('address'), str) else None,
                          'port': None, 'protocol': None, 'record_error': one_line(problem, 200)})
    return good, stand_ins


# -- evidence ------------------------------------------------------------------------------

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
        evidence['reached_for'] = endpoint(clean_text(mapped.get('address'), 255), _as_port(mapped.get('port')))
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


# -- fixes ---------------------------------------------------------------------------------

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


# -- matching probes to listeners ----------------------------------------------------------

def listener_identity(listener: dict) -> tuple:
    return (listener.get('host'), canonical_address(listener.get('address')), _as_port(listener.get('port')))


def listener_key(listener: dict) -> str:
    host, address, port = listener_identity(listener)
    return f'{host}|{address}|{port}'


def _probe_identity(probe: dict) -> tuple:
    target = probe.get('target') or {}
    return (probe.get('vantage'), canonical_address(target.get('address')), _as_port(target.get('port')),
            target.get('sni'))


def _same_observation(first: dict, second: dict) -> bool:
    """One probe passed twice under two labels (a listener's own probe, and again in the probe
    list with the host's name as vantage): the same target, greeting and timings."""
    timings = first.get('timings_ms')
    return bool(timings) and timings == second.get('timings_ms') and first.get('target') == second.get('target') \
        and first.get('greeting') == second.get('greeting')


def _socket_listener(host, record: dict) -> dict:
    port = _as_port(record.get('port'))
    protocol = record.get('protocol') or record.get('protocol_guess')
    if protocol not in PROTOCOL_TLS_MODE:
        protocol = 'smtp'
    return {
        'host': host, 'address': record.get('address'), 'port': port, 'protocol': protocol,
        'mta': record.get('mta'), 'instance': None, 'service': None, 'mode': 'socket',
        'listening': True, 'socket': {key: record.get(key) for key in ('pid', 'process', 'reason')},
    }


def _unmatched_socket_listeners(options: dict) -> list:
    raw = options.get('unmatched_sockets') or []
    records = []
    if isinstance(raw, dict):
        for host, items in raw.items():
            for item in items or []:
                if isinstance(item, dict):
                    records.append(_socket_listener(item.get('host') or host, item))
    else:
        for item in raw:
            if isinstance(item, dict):
                records.append(_socket_listener(item.get('host'), item))
    return records


def join(listeners: list, probes: list, options: dict | None = None) -> list:
    """Pair every listener with the probes of it, from every vantage point.

    Returns [{'listener': record, 'probes': [probe, ...]}]. Nothing is dropped: a probe that
    matches no listener gets a listener of its own (mode 'probe'), an unmatched socket becomes a
    listener (mode 'socket'). A probe matches a listener when the ports are equal and the probed
    address (or the address that answered) is the listener's address or probe_address; for a
    wildcard listener, any address of its host.
    """
    options = options or {}
    entries = []
    for listener in listeners or []:
        if isinstance(listener, dict):
            entries.append({'listener': listener, 'probes': []})
    known = {listener_identity(entry['listener']) for entry in entries}
    for record in _unmatched_socket_listeners(options):
        if listener_identity(record) not in known:
            entries.append({'listener': record, 'probes': []})
            known.add(listener_identity(record))

    host_addresses: dict = {}
    for entry in entries:
        listener = entry['listener']
        owned = host_addresses.setdefault(listener.get('host'), set())
        for key in ('address', 'probe_address'):
            address = canonical_address(listener.get(key))
            if address and address not in WILDCARDS:
                owned.add(address)
    for host, addresses in (options.get('host_addresses') or {}).items():
        host_addresses.setdefault(host, set()).update(
            canonical_address(address) for address in addresses or [] if address)

    seen: dict = {}

    def attach(entry: dict, probe: dict) -> None:
        identity = _probe_identity(probe)
        bucket = seen.setdefault(id(entry), set())
        if identity in bucket or any(probe is other or _same_observation(probe, other) for other in entry['probes']):
            return
        bucket.add(identity)
        entry['probes'].append(probe)

    for entry in entries:
        own = entry['listener'].get('probe')
        if isinstance(own, dict):
            # A listener's own probe was made on the host: it is the host vantage whatever its label.
            if own.get('vantage') != HOST_VANTAGE:
                own = dict(own, vantage=HOST_VANTAGE, vantage_label=own.get('vantage'))
            attach(entry, own)

    # Indexes, so that matching stays linear in the number of probes on a large fleet.
    exact_index: dict = {}
    # Wildcard listeners by (host, port), and hosts by address: a probe finds the wildcard
    # listeners of the hosts that own its address without looking at every host's.
    wildcard_by_host: dict = {}
    hosts_by_address: dict = {}
    for host, addresses in host_addresses.items():
        for address in addresses:
            hosts_by_address.setdefault(address, []).append(host)
    for entry in entries:
        listener = entry['listener']
        port = _as_port(listener.get('port'))
        own_addresses = {canonical_address(listener.get('address')), canonical_address(listener.get('probe_address'))}
        for address in own_addresses - {None}:
            exact_index.setdefault((address, port), []).append(entry)
        if canonical_address(listener.get('address')) in WILDCARDS:
            wildcard_by_host.setdefault((listener.get('host'), port), []).append(entry)
    order = {id(entry): position for position, entry in enumerate(entries)}

    orphans: dict = {}
    for probe in probes or []:
        if not isinstance(probe, dict):
            continue
        target = probe.get('target') or {}
        port = _as_port(target.get('port'))
        # A target given as a name: every address it resolved to is evidence about the listener listed by
        # that name (the probe says which address it came from).
        addresses = {canonical_address(target.get('address')), canonical_address(probe.get('peer_address')),
                     canonical_address(target.get('name'))}
        mapped = probe.get('mapped_from')
        if isinstance(mapped, dict) and probe.get('host') is not None:
            # Reached at another address or port (NAT, port forward, load balancer: the address map):
            # the listener is the one the host binds, for the host the controller probed it for.
            port = _as_port(mapped.get('port'))
            addresses = {canonical_address(mapped.get('address'))}
        addresses.discard(None)
        exact: list = []
        for address in sorted(addresses):
            for entry in exact_index.get((address, port), []):
                if not any(entry is other for other in exact):
                    exact.append(entry)
        owners = {host for address in addresses for host in hosts_by_address.get(address, ())}
        wildcard = sorted((entry for host in owners for entry in wildcard_by_host.get((host, port), [])),
                          key=lambda entry: order[id(entry)])
        if probe.get('host') is not None:
            # The controller knows which inventory host it probed for: the probe is evidence about that
            # host alone (loopback addresses repeat across hosts, and another host's records may claim
            # this address to draw the probe away).
            exact = [entry for entry in exact if entry['listener'].get('host') == probe['host']]
            wildcard = list(wildcard_by_host.get((probe['host'], port), []))
        candidates = exact or wildcard
        if len(candidates) > 1:
            same_protocol = [entry for entry in candidates
                             if entry['listener'].get('protocol') == target.get('protocol')]
            candidates = same_protocol or candidates
        if candidates:
            for entry in candidates:
                attach(entry, probe)
            continue
        host = probe.get('host') or target.get('address')
        key = (host, canonical_address(target.get('address')), port)
        if key not in orphans:
            orphans[key] = {'listener': {'host': host, 'address': target.get('address'), 'port': port,
                                         'protocol': target.get('protocol'), 'mode': 'probe'},
                            'probes': []}
        attach(orphans[key], probe)
    entries.extend(orphans.values())
    return entries


# -- the judgement -------------------------------------------------------------------------

def finding_key(rule: str, listener: dict, vantage) -> str:
    host, address, port = listener_identity(listener)
    return f'{rule}|{host}|{address}|{port}|{vantage if vantage else "-"}'


class _Collector:
    """Findings in order, one per (id, host, address, port, vantage)."""

    def __init__(self, options: dict):
        self.options = options
        self.findings: list = []
        self.by_key: dict = {}

    def add(self, rule: str, listener: dict, vantage, summary: str, evidence: dict, detail: dict | None = None,
            severity: str | None = None) -> dict:
        key = finding_key(rule, listener, vantage)
        # The caller goes on adding to its evidence dict for the next rule: keep this one's own copy.
        evidence = dict(evidence)
        existing = self.by_key.get(key)
        if existing is not None:
            # Same listener, same vantage, another address of a wildcard or another SNI name.
            also = existing['evidence'].setdefault('also_seen', [])
            if len(also) < 10:
                also.append({key: value for key, value in evidence.items()
                             if key in ('probe', 'target', 'sni', 'record_error')})
            return existing
        # Site policy (options['severity']) beats a rule's situational severity, which beats the catalogue.
        severity = self.options['severity'].get(rule) or severity or RULES[rule]['severity']
        finding = {
            'id': rule,
            'severity': severity,
            'title': RULES[rule]['title'],
            'host': listener.get('host'),
            'listener': {
                'address': listener.get('address'),
                'port': _as_port(listener.get('port')),
                'protocol': listener.get('protocol'),
                'mta': listener.get('mta'),
                'service': listener.get('service'),
                'instance': listener.get('instance'),
                'defined_at': listener.get('defined_at'),
            },
            'vantage': vantage,
            'summary': one_line(summary, 300),
            'evidence': evidence,
            'fix': fix_for(rule, listener, detail),
            'waived': False,
            'waiver': None,
            'key': key,
        }
        self.by_key[key] = finding
        self.findings.append(finding)
        return finding


def _days_left(certificate: dict, now: datetime.datetime):
    not_after = parse_time(certificate.get('not_after'))
    if not_after is not None:
        return (not_after - now).total_seconds() / 86400.0
    if certificate.get('expired'):
        return -1.0
    days = certificate.get('days_left')
    return float(days) if isinstance(days, (int, float)) else None


def _not_yet_valid(certificate: dict, now: datetime.datetime) -> bool:
    not_before = parse_time(certificate.get('not_before'))
    return not_before is not None and not_before > now


def _certificate_rules(certificate: dict, options: dict) -> list:
    """(rule, summary, detail) for a certificate's own properties (expiry, names, chain)."""
    found = []
    now = options['now']
    days = _days_left(certificate, now)
    subject = one_line(certificate.get('subject') or '?', 100)
    if _not_yet_valid(certificate, now):
        found.append(('certificate-expired', f'certificate {subject} is not valid before {certificate.get("not_before")}', {}))
    elif days is not None and days < 0:
        found.append(('certificate-expired', f'certificate {subject} expired on {certificate.get("not_after")}', {}))
    elif days is not None and days < options['expiring_days']:
        found.append(('certificate-expiring',
                      f'certificate {subject} expires in {int(days)} days ({certificate.get("not_after")}), '
                      f'within the {options["expiring_days"]}-day window', {}))
    if certificate.get('hostname_match') is False:
        found.append(('certificate-host-mismatch',
                      f'certificate {subject} does not name the expected host '
                      f'(SANs: {one_line(", ".join(certificate.get("sans") or []) or "none", 120)})', {}))
    if certificate.get('verified') is False or (certificate.get('self_signed') and certificate.get('verified') is not True):
        reason = certificate.get('verify_error') or ('self-signed' if certificate.get('self_signed') else 'does not verify')
        found.append(('validation-failure', f'certificate {subject} does not verify: {one_line(reason, 120)}', {}))
    return found


def _problem_rule(problem_id: str) -> str | None:
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


def _reference(probes: list) -> dict | None:
    """The host's own probe of the listener: what the listener says with no network in between."""
    for probe in probes:
        if probe.get('vantage') == HOST_VANTAGE:
            return probe
    return None


def _store_findings(listener: dict, probes: list, collector: _Collector, options: dict, tls_in_use: bool) -> set:
    """Host-side certificate findings; returns the SHA-256 fingerprints they already describe."""
    store = store_of(listener)
    described: set = set()
    if store is None:
        return described
    binding = listener.get('binding') or {}
    base = host_evidence(listener)
    paths = {'certificate': binding.get('certificate'), 'key': binding.get('key')}
    certificate = store_certificate(store)
    key = store.get('key') if isinstance(store.get('key'), dict) else {}
    chain = store.get('chain') if isinstance(store.get('chain'), dict) else {}
    bound_sha = _normalise_sha256(certificate.get('sha256'))
    served_by = sorted(str(probe.get('vantage')) for probe in probes
                       if bound_sha and _normalise_sha256((probe.get('certificate') or {}).get('sha256')) == bound_sha)
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

    label = listener_label(listener)
    if store.get('error'):
        collector.add('judgement-error', listener, None,
                      f'{label}: the certificate store could not be inspected: {one_line(store["error"], 160)}',
                      dict(base), paths)
    for problem in store.get('problems') or []:
        if not isinstance(problem, dict):
            continue
        rule = _problem_rule(str(problem.get('id') or ''))
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
        for rule, summary, detail in _certificate_rules(certificate, options):
            if rule == 'validation-failure' and ('validation-failure' in raised or certificate.get('verified') is None):
                continue
            if rule in raised:
                continue
            detail = dict(detail, path=paths['certificate'])
            raise_rule(rule, f'{label}: {summary} ({paths["certificate"]})',
                       {'certificate': certificate_evidence(certificate)}, detail)
        if certificate.get('sha256'):
            described.add(_normalise_sha256(certificate['sha256']))
    return described


class _LazyEvidence:
    """A probe's evidence, built on first use: most probes of a healthy fleet give no finding."""

    def __init__(self, base: dict, probe: dict):
        self.base = base
        self.probe = probe
        self.value = None

    def __call__(self) -> dict:
        if self.value is None:
            self.value = dict(self.base, probe=probe_evidence(self.probe))
        return self.value


def _judge_listener(entry: dict, all_entries_by_host: dict, collector: _Collector, options: dict) -> None:
    listener, probes = entry['listener'], entry['probes']
    if listener.get('record_error'):
        collector.add('judgement-error', listener, None,
                      f'a listener record of {listener.get("host") or "an unnamed host"} could not be read: '
                      f'{listener["record_error"]}', {'record_error': listener['record_error']})
        return
    mode = listener_mode(listener)
    wire_mode = protocol_mode(listener)
    label = listener_label(listener)
    usable = usable_certificate(listener)
    offers = offers_tls(listener)
    base = host_evidence(listener)
    reference = _reference(probes)
    statuses = {id(probe): classify_probe(probe) for probe in probes}
    judged = [probe for probe in probes if statuses[id(probe)] not in ('unreachable', 'refused', 'incomplete')]

    not_open = mode == 'host' and listener.get('listening') is False

    # -- drift ------------------------------------------------------------------------------
    if mode == 'socket':
        socket_info = listener.get('socket') or {}
        collector.add('listener-drift', listener, None,
                      f'{label} is listening ({socket_info.get("process") or "unknown process"}, pid '
                      f'{socket_info.get("pid") or "?"}) but no configured listener matches it',
                      {'socket': socket_info}, {'kind': 'not-configured', 'pid': socket_info.get('pid'),
                                                'process': socket_info.get('process')})
    elif not_open:
        # A listener that is not open advertises nothing to anyone: its store problems are evidence
        # of why it may be down (Dovecot refuses to start without its certificate), not findings of
        # their own, which would bury the listeners that do serve clients.
        problems = sorted({str(problem.get('id')) for problem in (store_of(listener) or {}).get('problems') or []
                           if isinstance(problem, dict) and problem.get('id')})
        summary = f'{label} is configured at {listener.get("defined_at") or "?"} but nothing listens there'
        if problems:
            summary += f'; its certificate store has problems ({", ".join(problems)}) that will matter once it listens'
        collector.add('listener-drift', listener, None, summary,
                      dict(base, notes=list(listener.get('notes') or [])[:5]), {'kind': 'not-listening'})

    # -- what the host side could not tell -----------------------------------------------------
    uncertain = [item for item in listener.get('uncertain') or [] if isinstance(item, dict)] \
        if mode == 'host' else []
    if uncertain:
        first = uncertain[0]
        reasons = '; '.join(one_line(f'{item.get("what") or "?"}: {item.get("reason") or "?"}'
                                     f'{" (" + str(item["where"]) + ")" if item.get("where") else ""}', 160)
                            for item in uncertain[:3])
        more = f' and {len(uncertain) - 3} more' if len(uncertain) > 3 else ''
        collector.add('inspection-uncertain', listener, None,
                      f'{label}: the host inspection could not tell {reasons}{more}; this listener is not '
                      'vouched for by its configuration',
                      dict(base, uncertain=[{key: clean_text(item.get(key), 300) for key in ('what', 'where', 'reason')}
                                            for item in uncertain[:10]]),
                      {'what': sorted({str(item.get('what')) for item in uncertain})[:10],
                       'first_where': first.get('where')})

    # -- probes that could not judge anything --------------------------------------------------
    for probe in probes:
        status = statuses[id(probe)]
        if status not in ('unreachable', 'refused', 'incomplete'):
            continue
        error = probe.get('error') or {}
        severity = 'medium'
        if status == 'refused' or not_open:
            severity = 'info'
        if status == 'unreachable':
            why = f'could not connect: {one_line(error.get("message") or "no connection", 120)}'
        elif status == 'refused':
            greeting = probe.get('greeting') or {}
            reply = probe.get('capabilities_reply') or {}
            if 'ehlo_rejected' in (probe.get('flags') or []):
                why = f'EHLO was refused: {one_line(str(reply.get("code") or "") + " " + str(reply.get("text") or ""), 120)}'
            else:
                why = (f'the greeting was a refusal: {one_line(str(greeting.get("code") or "") + " " + " ".join(greeting.get("lines") or []), 120)}')
        else:
            why = (f'stopped in stage {error.get("stage") or "?"}: '
                   f'{one_line(error.get("message") or "no STARTTLS answer", 120)}')
        collector.add('probe-failed', listener, probe.get('vantage'),
                      f'{label} from {probe.get("vantage")}: {why}; nothing could be judged from there',
                      {'probe': probe_evidence(probe)}, severity=severity)

    if wire_mode not in ANY_TLS or not_open:
        return

    tls_in_use = bool(offers) or any(statuses[id(probe)] not in ('not-advertised',) for probe in judged)
    described = _store_findings(listener, probes, collector, options, tls_in_use)

    # -- static judgement when no probe could judge ---------------------------------------------
    if mode == 'host' and not judged and listener.get('listening') is not False:
        if wire_mode == 'starttls' and offers and usable is False:
            collector.add('starttls-advertised-without-certificate', listener, None,
                          f'{label}: the configuration advertises STARTTLS ({one_line(listener.get("offers_starttls_reason") or "offers_starttls", 120)}) '
                          'but no usable certificate is bound (no probe reached it to confirm)',
                          base, {'store_usable': False})
        elif wire_mode == 'implicit' and offers is not False and usable is False:
            collector.add('implicit-tls-without-certificate', listener, None,
                          f'{label}: implicit TLS without a usable certificate bound (no probe reached it to confirm)',
                          base, {'store_usable': False})
        elif wire_mode == 'starttls' and offers is False and usable is True:
            collector.add('starttls-not-offered', listener, None,
                          f'{label}: a usable certificate is bound but the configuration does not offer STARTTLS '
                          f'({one_line(listener.get("offers_starttls_reason") or "offers_starttls: false", 120)})',
                          base)

    host_certificates = {_normalise_sha256(value) for value in
                         (options['host_certificates'].get(listener.get('host')) or [])}
    for other in all_entries_by_host.get(listener.get('host'), []):
        host_certificates.update(configured_fingerprints(other['listener']))
    host_certificates.discard(None)
    expected = configured_fingerprints(listener)
    reference_sha = _normalise_sha256(((reference or {}).get('certificate') or {}).get('sha256'))
    # Whether the host side knows which certificates it holds: its bindings were read.
    knows_host_certificates = bool(host_certificates) or isinstance(listener.get('binding'), dict)
    advertised_somewhere = [probe for probe in judged if probe.get('starttls_advertised')]
    presented_by_vantage = {}
    for probe in judged:
        sha = _normalise_sha256((probe.get('certificate') or {}).get('sha256'))
        if sha:
            presented_by_vantage.setdefault((probe.get('target') or {}).get('sni'), {})[probe.get('vantage')] = sha

    for probe in judged:
        status = statuses[id(probe)]
        vantage = probe.get('vantage')
        flags = probe.get('flags') or []
        ev = _LazyEvidence(base, probe)
        from_where = f'seen from {vantage}'
        reply = probe.get('starttls_reply') or {}
        reply_text = one_line(f'{reply.get("code") or ""} {reply.get("text") or ""}', 120)

        # -- advertised, but no working certificate -------------------------------------------
        if wire_mode == 'starttls' and status in ('starttls-refused', 'starttls-dropped', 'handshake-failed',
                                                  'no-certificate'):
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
            if usable is True:
                what += ' although the configured certificate is usable on disk'
            collector.add('starttls-advertised-without-certificate', listener, vantage,
                          f'{label} {what} ({from_where})', ev(), {'store_usable': usable is True})

        if wire_mode == 'implicit' and status in ('handshake-failed', 'no-certificate'):
            if status == 'no-certificate':
                what = 'completes TLS without a certificate'
            else:
                what = (f'accepts the connection but the handshake fails: '
                        f'{one_line((probe.get("tls") or {}).get("error") or (probe.get("error") or {}).get("message"), 100)}')
            collector.add('implicit-tls-without-certificate', listener, vantage,
                          f'{label} {what} ({from_where})', ev(), {'store_usable': usable is True})

        # -- not advertised -----------------------------------------------------------------------
        if wire_mode == 'starttls' and status == 'not-advertised':
            masked = 'masked' in flags
            host_says = None
            if reference is not None and reference is not probe and reference.get('starttls_advertised') is not None:
                host_says = ('host probe', bool(reference.get('starttls_advertised')))
            elif reference is None and mode == 'host' and offers and usable is True:
                # Only a configuration that offers TLS *with* a usable certificate must show STARTTLS:
                # Sendmail and Exchange drop the keyword when the certificate fails (fail closed).
                host_says = ('configuration', True)
            others = [other for other in advertised_somewhere if other is not probe]
            if masked:
                pass  # middlebox-masking below says it, with the masked keywords as evidence
            elif vantage != HOST_VANTAGE and host_says and host_says[1]:
                ev()['compared_with'] = host_says[0]
                collector.add('starttls-stripped', listener, vantage,
                              f'{label}: STARTTLS is not advertised {from_where}, but the {host_says[0]} shows it '
                              'advertised', ev())
            elif vantage != HOST_VANTAGE and others and not (host_says and not host_says[1]):
                ev()['compared_with'] = sorted({str(other.get('vantage')) for other in others})
                collector.add('starttls-stripped', listener, vantage,
                              f'{label}: STARTTLS is not advertised {from_where}, but '
                              f'{", ".join(ev()["compared_with"])} sees it advertised', ev())
            elif vantage != HOST_VANTAGE and _starttls_worked_unasked(probe):
                collector.add('starttls-stripped', listener, vantage,
                              f'{label}: STARTTLS is not advertised {from_where}, yet the server accepts it when '
                              'asked', ev())
            elif usable is True or (mode != 'host' and usable is None):
                if usable is True:
                    why = 'a usable certificate is bound'
                else:
                    why = 'no host evidence: whether a certificate is bound is unknown'
                collector.add('starttls-not-offered', listener, vantage,
                              f'{label} does not advertise STARTTLS ({from_where}); {why}', ev())

        # -- the certificate that was served --------------------------------------------------------
        certificate = probe.get('certificate') or {}
        sha = _normalise_sha256(certificate.get('sha256'))
        if status == 'tls' and sha:
            sni = (probe.get('target') or {}).get('sni')
            remote = vantage != HOST_VANTAGE
            if (mode == 'host' and remote and knows_host_certificates and sha not in host_certificates
                    and reference_sha != sha):
                # The host does not hold it and, as far as its own probe shows, does not serve it.
                ev()['host_certificates'] = sorted(host_certificates)[:10]
                if reference_sha:
                    ev()['host_probe_sha256'] = reference_sha
                collector.add('tls-terminated-elsewhere', listener, vantage,
                              f'{label}: {from_where}, the handshake presents {one_line(certificate.get("subject"), 80)} '
                              f'(sha256 {sha[:16]}...), a certificate this host does not hold', ev())
            # When the host's own probe shows the configured certificate, a different one seen remotely
            # was swapped on the path (tls-terminated-elsewhere), not by the server.
            path_swap = remote and reference_sha is not None and reference_sha in expected and reference_sha != sha
            if (mode == 'host' and sha not in expected and not path_swap
                    and not (expected and _unfingerprinted_alternates(listener))):
                no_bound = usable is not True
                if no_bound:
                    summary = (f'{label} serves {one_line(certificate.get("subject"), 80)} (sha256 {sha[:16]}...) '
                               f'although no usable certificate is bound to it ({from_where})')
                else:
                    summary = (f'{label} serves sha256 {sha[:16]}... but the configured certificate is '
                               f'{(expected or ["?"])[0][:16]}... ({from_where})')
                ev()['configured_sha256'] = expected
                collector.add('presented-certificate-differs', listener, vantage, summary, ev(),
                              {'no_bound_certificate': no_bound}, severity='high' if no_bound else None)
            if mode in ('black-box', 'probe', 'socket') and listener.get('expected_certificates') and sha not in expected:
                ev()['expected_certificates'] = expected
                collector.add('presented-certificate-differs', listener, vantage,
                              f'{label} serves sha256 {sha[:16]}..., not one of the expected certificates ({from_where})',
                              ev(), {})
            if sha not in described:
                for rule, summary, detail in _certificate_rules(certificate, options):
                    collector.add(rule, listener, vantage, f'{label}: {summary} ({from_where})',
                                  dict(ev()), detail)
            if mode != 'host' and len(set(presented_by_vantage.get(sni, {}).values())) > 1:
                ev()['certificates_by_vantage'] = presented_by_vantage.get(sni, {})
                collector.add('inconsistent-answers', listener, vantage,
                              f'{label}: vantage points are shown different certificates ({from_where} '
                              f'sha256 {sha[:16]}...)', ev())

        # -- dialog anomalies -------------------------------------------------------------------------
        if 'masked' in flags:
            collector.add('middlebox-masking', listener, vantage,
                          f'{label}: the dialog is masked {from_where} (banner or keywords rewritten, e.g. '
                          f'XXXXXXXA for STARTTLS)', ev())
        if 'response_injection' in flags or probe.get('pre_tls_surplus'):
            ev()['pre_tls_surplus'] = clean_text(probe.get('pre_tls_surplus'), 400)
            collector.add('pre-tls-surplus', listener, vantage,
                          f'{label}: bytes followed the STARTTLS reply before the handshake ({from_where}): '
                          f'{one_line(probe.get("pre_tls_surplus") or "", 60)}', ev())
        if 'command_injection' in flags:
            ev()['injected_reply'] = clean_text(probe.get('injected_reply'), 400)
            collector.add('starttls-command-injection', listener, vantage,
                          f'{label}: a command sent before TLS was answered inside TLS ({from_where}): '
                          f'{one_line(probe.get("injected_reply") or "", 60)}', ev())
        if 'starttls_after_tls' in flags:
            collector.add('starttls-after-tls', listener, vantage,
                          f'{label}: STARTTLS is still advertised after TLS ({from_where})', ev())
        version = (probe.get('tls') or {}).get('version')
        if 'legacy_tls' in flags or version in LEGACY_TLS_VERSIONS:
            collector.add('legacy-tls-protocol', listener, vantage,
                          f'{label} negotiated {version or "a legacy protocol"} ({from_where})', ev())
        if 'inconsistent' in flags:
            ev()['attempts'] = list(probe.get('attempts') or [])[:10]
            collector.add('inconsistent-answers', listener, vantage,
                          f'{label}: repeated probes {from_where} got different answers', ev())


def judge(listeners: list, probes: list, options: dict | None = None) -> list:
    """Findings for every listener, from both sides; see docs/findings.md.

    Raises VerdictError only for bad options. A record that cannot be judged becomes a
    `judgement-error` finding; the others are judged all the same.
    """
    options = normalise_options(options)
    probes, unreadable = screen_probes(probes)
    entries = join(screen_listeners(list(listeners or []) + unreadable), probes, options)
    by_host: dict = {}
    for entry in entries:
        by_host.setdefault(entry['listener'].get('host'), []).append(entry)
    collector = _Collector(options)
    for entry in entries:
        try:
            _judge_listener(entry, by_host, collector, options)
        except Exception as exc:  # pylint: disable=broad-except
            # One odd record must not cost the other listeners their judgement.
            collector.add('judgement-error', entry['listener'], None,
                          f'{listener_label(entry["listener"])}: could not be judged: {type(exc).__name__}: {exc}',
                          {'error': clean_text(f'{type(exc).__name__}: {exc}')})
    return merge_sightings(collector.findings)


def fault_key(rule: str, listener: dict) -> str:
    """The identity of a fault: one rule on one listener of one host, whoever saw it."""
    host, address, port = listener_identity(listener)
    return f'{rule}|{host}|{address}|{port}'


def merge_sightings(findings: list) -> list:
    """One finding per fault (host, listener, rule): the sightings of every vantage and of the
    configuration folded into the first one, in the order they were made.

    The merged finding keeps the first sighting's `vantage`, `summary`, `evidence` and `fix`, takes
    the worst severity of all sightings, and lists them all in `sightings` ({vantage, severity,
    summary, key}, plus `evidence` from the second on) and `vantages`. Its `key` is the fault key, which
    does not depend on who saw it, so that reports of different runs can be compared.
    """
    merged: list = []
    by_fault: dict = {}
    for finding in findings:
        key = fault_key(finding['id'], dict(finding.get('listener') or {}, host=finding.get('host')))
        # The sighting keeps its own key (id|host|address|port|vantage): waivers written for it still match.
        sighting = {'vantage': finding.get('vantage'), 'severity': finding.get('severity'),
                    'summary': finding.get('summary'), 'key': finding.get('key')}
        first = by_fault.get(key)
        if first is None:
            finding['key'] = key
            finding['sightings'] = [sighting]
            finding['vantages'] = [finding.get('vantage')]
            by_fault[key] = finding
            merged.append(finding)
            continue
        sighting['evidence'] = finding.get('evidence')
        first['sightings'].append(sighting)
        first['vantages'].append(finding.get('vantage'))
        if SEVERITY_RANK.get(finding.get('severity'), 9) < SEVERITY_RANK.get(first.get('severity'), 9):
            first['severity'] = finding.get('severity')
    for finding in merged:
        if len(finding['sightings']) > 1:
            others = ', '.join(str(vantage) if vantage else 'the configuration' for vantage in finding['vantages'][1:])
            finding['summary'] = one_line(f'{finding["summary"]}; also seen from {others}', 500)
    return merged


def applicable_rules(listener: dict) -> list:
    """The rule IDs evaluated for a listener (JUnit test cases): by its TLS mode, and only the
    network rules for a listener without host evidence."""
    mode = listener_mode(listener)
    wire_mode = protocol_mode(listener)
    rules = []
    for rule, spec in RULES.items():
        if rule == 'judgement-error' or spec['evidence'] == DNS:
            continue
        if wire_mode not in spec['modes']:
            continue
        if spec['evidence'] == HOST and mode != 'host':
            if not (rule == 'listener-drift' and mode == 'socket'):
                continue
        rules.append(rule)
    return rules


def worst_severity(findings: list) -> str | None:
    ranks = [SEVERITY_RANK.get(finding.get('severity'), len(SEVERITIES)) for finding in findings]
    return SEVERITIES[min(ranks)] if ranks else None
