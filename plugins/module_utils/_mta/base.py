# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The interface every MTA adapter implements, and the listener record they all build.

An adapter is a class with a `name` and two methods:

- `detect(ctx)` -> list of instance dicts: what is installed and what is running, from
  `ctx.processes` (scanned from /proc by _host) and `ctx.options['config_paths']`.
- `listeners(ctx, instance)` -> list of listener dicts (`new_listener`), each with the
  certificate binding that applies to exactly its address:port and the rule that chose it.

and, for the fix a finding shows (read by _verdict/fixes.py through the registry):

- `fix_text(rule, listener, detail)` -> the least change that removes finding `rule` on this
  listener, in the MTA's own terms, or None where the general text fits;
- `reload_text(listener)` -> how to make the MTA load the change, in words.

Adapters never raise for a configuration they do not understand: they call `ctx.warn` with
the file:line and go on. `listeners` is called inside a guard all the same.
"""

from __future__ import annotations

import ipaddress
import re

from ansible_collections.mailsec.starttls.plugins.module_utils._model import (
    LOOPBACK_FOR,
    PORT_PROTOCOL,
    PROTOCOL_TLS_MODE,
    WILDCARD_ADDRESSES,
)

# Used when /etc/services is missing or lacks a name: the names MTAs use in their configs.
KNOWN_SERVICE_PORTS = {
    'smtp': 25, 'mail': 25, 'submission': 587, 'submissions': 465, 'smtps': 465, 'ssmtp': 465,
    'urd': 465, 'lmtp': 24, 'imap': 143, 'imap2': 143, 'imaps': 993, 'pop3': 110, 'pop-3': 110,
    'pop3s': 995, 'sieve': 4190, 'managesieve': 4190,
}

# Hostile or generated configurations: the items of one address or port list that are used, and the
# listener records one instance may produce (each further one costs time and memory for nothing).
MAX_LIST_ITEMS = 256
MAX_LISTENERS = 1000

# Reasons a listener's STARTTLS state is what it is, phrased once.
REASON_IMPLICIT = 'implicit TLS listener: TLS starts at connect, STARTTLS is not used'


class MtaAdapter:
    """Base class: subclasses set `name` and implement `detect` and `listeners`."""

    name = ''

    def detect(self, ctx) -> list:
        raise NotImplementedError

    def listeners(self, ctx, instance: dict) -> list:
        raise NotImplementedError

    def fix_text(self, rule: str, listener: dict, detail: dict) -> str | None:
        """The fix for finding `rule` on `listener` (`detail`: what the rule found, e.g. store_usable),
        or None where the verdict's general text for the rule fits this MTA too."""
        return None

    def reload_text(self, listener: dict) -> str:
        """How the fix text tells the operator to make the MTA load a change to this listener."""
        return 'reload the server'


def new_instance(mta: str, instance_id: str, **fields) -> dict:
    record = {
        'mta': mta,
        'instance': instance_id,
        'name': mta,
        'version': None,
        'config_files': [],
        'config_source': None,
        'installed': True,
        'running': None,
        'pid': None,
        'command_line': None,
        'reading_user': 'root',
        'reading_user_source': None,
        'tools_used': [],
        'notes': [],
    }
    record.update(fields)
    return record


def new_binding(certificate=None, key=None, chain=None, source='default (none configured)',
                resolved=True) -> dict:
    return {
        'certificate': certificate,
        'key': key,
        'chain': list(chain or []),
        'source': source,
        'resolved': resolved,
        'alternates': [],
        'sni': [],
        'notes': [],
    }


def new_listener(mta: str, instance: str, service: str, address: str, port: int | None,
                 protocol: str, **fields) -> dict:
    """A listener record with every key present; adapters fill the rest."""
    wildcard = address in WILDCARD_ADDRESSES
    record = {
        'id': f'{mta}/{instance}/{service}/{format_endpoint(address, port)}',
        'host': None,
        'address': address,
        'port': port,
        'protocol': protocol,
        'tls_mode': PROTOCOL_TLS_MODE.get(protocol, 'none'),
        'mta': mta,
        'instance': instance,
        'service': service,
        'defined_at': None,
        'offers_starttls': None,
        'offers_starttls_reason': None,
        'binding': new_binding(),
        'reader_user': 'root',
        'listening': None,
        'owner': None,
        'probe_address': probe_address_for(address),
        'wildcard': wildcard,
        'derived_from': None,
        'tls_settings': {},
        'notes': [],
        'uncertain': [],
        'store': None,
        'probe': None,
    }
    if wildcard:
        record['notes'].append(
            f'wildcard listener ({address}): represented once, probed on {record["probe_address"]}')
    record.update(fields)
    return record


def setting(value, where: str | None) -> dict:
    """One raw configuration setting with the place it came from, for evidence."""
    return {'value': value, 'where': where}


def format_endpoint(address: str | None, port) -> str:
    if address and ':' in address:
        return f'[{address}]:{port}'
    return f'{address}:{port}'


def probe_address_for(address: str | None) -> str | None:
    if address is None:
        return None
    return LOOPBACK_FOR.get(address, address)


def normalise_address(text: str) -> str | None:
    """An IP literal in canonical form (brackets and zone-less), or None if it is not one."""
    candidate = text.strip()
    if candidate.startswith('[') and candidate.endswith(']'):
        candidate = candidate[1:-1]
    if candidate.lower().startswith('ipv6:'):
        candidate = candidate[5:]
    candidate = candidate.split('%', 1)[0]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None


def hosts_lookup(ctx, name: str) -> list:
    """Addresses of a name from /etc/hosts only: host inspection never asks DNS."""
    found = []
    for line in (ctx.read_text('/etc/hosts') or '').splitlines():
        fields = line.split('#', 1)[0].split()
        if len(fields) >= 2 and name.lower() in (field.lower() for field in fields[1:]):
            address = normalise_address(fields[0])
            if address and address not in found:
                found.append(address)
    return found


def split_host_port(text: str) -> tuple:
    """'[::1]:25' / '127.0.0.1:smtp' / 'smtp' -> (host or None, port text)."""
    text = text.strip()
    if text.startswith('['):
        close = text.find(']')
        if close > 0:
            host = text[1:close]
            rest = text[close + 1:]
            return host, rest[1:] if rest.startswith(':') else rest
    if text.count(':') == 1:
        host, port = text.split(':', 1)
        return host, port
    return None, text


def load_services(ctx) -> dict:
    cached = getattr(ctx, '_services', None)
    if cached is not None:
        return cached
    table = {}
    text = ctx.read_text('/etc/services') or ''
    for line in text.splitlines():
        line = line.split('#', 1)[0].split()
        if len(line) < 2 or not line[1].endswith('/tcp'):
            continue
        try:
            port = int(line[1].split('/', 1)[0])
        except ValueError:
            continue
        for name in [line[0]] + line[2:]:
            table.setdefault(name.lower(), port)
    ctx._services = table
    return table


def resolve_port(ctx, text) -> int | None:
    """A port number from a number or a service name (/etc/services, then well-known names)."""
    if isinstance(text, int):
        return text
    text = str(text).strip()
    if text.isascii() and text.isdigit():
        port = int(text)
        return port if 0 < port < 65536 else None
    name = text.lower()
    return load_services(ctx).get(name) or KNOWN_SERVICE_PORTS.get(name)


def infer_protocol(port: int | None, implicit: bool = False, hints=(), family: str = 'smtp') -> str:
    """The listener protocol from its family (smtp/imap/pop3/sieve/lmtp), port and name hints."""
    names = {str(hint).lower() for hint in hints if hint}
    if family == 'lmtp':
        return 'lmtp'
    if family == 'sieve':
        return 'sieve'
    if family == 'imap':
        return 'imaps' if implicit else 'imap'
    if family == 'pop3':
        return 'pop3s' if implicit else 'pop3'
    if implicit:
        return 'smtps'
    if port == 587 or 'submission' in names:
        return 'submission'
    if port in PORT_PROTOCOL and PORT_PROTOCOL[port] in ('smtp', 'submission', 'lmtp'):
        return PORT_PROTOCOL[port]
    return 'smtp'


def host_addresses(ctx) -> dict:
    """The host's own addresses: {'ipv4': [...], 'ipv6': [...], 'ipv4_networks': [...]}.

    IPv4 from /proc/net/fib_trie (readable without root), IPv6 from /proc/net/if_inet6.
    Linux treats the whole of 127.0.0.0/8 as local, which fib_trie shows as a /8 host route.
    """
    cached = getattr(ctx, '_host_addresses', None)
    if cached is not None:
        return cached
    ipv4, networks, ipv6 = [], [], []
    trie = _read_proc(ctx, 'net/fib_trie') or ''
    last_address = None
    for line in trie.splitlines():
        stripped = line.strip()
        if stripped.startswith('|-- '):
            last_address = stripped[4:]
        elif last_address and stripped.startswith('/') and 'host LOCAL' in stripped:
            prefix = stripped.split()[0][1:]
            if prefix == '32':
                if last_address not in ipv4:
                    ipv4.append(last_address)
            else:
                network = f'{last_address}/{prefix}'
                if network not in networks:
                    networks.append(network)
    for line in (_read_proc(ctx, 'net/if_inet6') or '').splitlines():
        fields = line.split()
        if fields and len(fields[0]) == 32:
            raw = fields[0]
            address = str(ipaddress.ip_address(':'.join(raw[i:i + 4] for i in range(0, 32, 4))))
            if address not in ipv6:
                ipv6.append(address)
    result = {'ipv4': ipv4, 'ipv6': ipv6, 'ipv4_networks': networks}
    ctx._host_addresses = result
    return result


def is_local_address(ctx, address: str) -> bool | None:
    """Whether the host owns the address (None when /proc says nothing)."""
    addresses = host_addresses(ctx)
    if not (addresses['ipv4'] or addresses['ipv6'] or addresses['ipv4_networks']):
        return None
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return None
    if parsed.version == 6:
        return address in addresses['ipv6']
    if address in addresses['ipv4']:
        return True
    return any(parsed in ipaddress.ip_network(network, strict=False)
               for network in addresses['ipv4_networks'])


def _read_proc(ctx, relative: str) -> str | None:
    try:
        with open(f'{ctx.proc_root}/{relative}', 'rb') as handle:
            return handle.read(1024 * 1024).decode('ascii', 'replace')
    except OSError:
        return None


def classify_chain_files(ctx, files: list) -> list:
    """Split a Postfix-style chain file list (key, then its certificate chain, repeated) into
    [{'key', 'certificate', 'chain'}] pairs, looking only at PEM BEGIN lines.

    When a file cannot be read (no root), its role is guessed from its name and says so.
    """
    pairs: list = []
    current = None
    guessed = False
    for path in files:
        labels = ctx.pem_labels(path)
        if labels is None:
            guessed = True
            labels = ['PRIVATE KEY'] if re.search(r'(key|\.key$)', path.lower()) else ['CERTIFICATE']
        for label in labels:
            if label.endswith('PRIVATE KEY'):
                if current is None or current['key'] is not None:
                    current = {'key': path, 'certificate': None, 'chain': []}
                    pairs.append(current)
                else:
                    current['key'] = path
            elif label in ('CERTIFICATE', 'TRUSTED CERTIFICATE', 'X509 CERTIFICATE'):
                if current is None:
                    current = {'key': None, 'certificate': None, 'chain': []}
                    pairs.append(current)
                if current['certificate'] is None:
                    current['certificate'] = path
                elif path != current['certificate'] and path not in current['chain']:
                    current['chain'].append(path)
    for pair in pairs:
        pair['guessed'] = guessed
    return pairs


def master_processes(ctx, mta: str) -> list:
    """The running master (or daemon) processes of one MTA, as scanned from /proc."""
    return [process for process in ctx.processes if process.get('mta') == mta and process.get('role') == 'master']


def backslash_lines(text: str, max_length: int = 64 * 1024):
    """(number of the first physical line, logical line): a trailing backslash continues a line
    (Dovecot, OpenSMTPD). A logical line stops growing at `max_length` characters: the parts are
    joined once, so a hostile file of continuation lines costs linear time."""
    parts, first, size = [], None, 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if first is None:
            first = number
        if line.endswith('\\'):
            if size < max_length:
                parts.append(line[:-1] + ' ')
                size += len(line)
            continue
        if size < max_length:
            parts.append(line)
        yield first, ''.join(parts)
        parts, first, size = [], None, 0
    if parts:
        yield first, ''.join(parts)


def strip_hash_comment(line: str, quotes: str = '"') -> str:
    """The line without a `#` comment that is not inside one of the quote characters."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in quotes:
            quote = char
        elif char == '#':
            return line[:index]
    return line


def bounded_items(ctx, items, what: str, where: str | None = None, mta: str | None = None,
                  limit: int = MAX_LIST_ITEMS) -> list:
    """`items` without repeats (first occurrence kept, in constant time each) and at most `limit`
    of them, with a warning when some are dropped."""
    unique = list(dict.fromkeys(items))
    if len(unique) > limit:
        if ctx is not None:
            ctx.warn(f'{what}: {len(unique)} entries, only the first {limit} are used', where=where, mta=mta,
                     limit=True)
        unique = unique[:limit]
    return unique


def enough_listeners(ctx, records: list, mta: str, instance: str | None = None, limit: int = MAX_LISTENERS) -> bool:
    """Whether an adapter has built `limit` records (for one instance, or derived from one wildcard
    listener) and must stop (warned once)."""
    if len(records) < limit:
        return False
    ctx.warn(f'more than {limit} listeners from one configuration or wildcard: the rest are not derived',
             mta=mta, instance=instance, limit=True)
    return True


def mark_uncertain(record: dict, what: str, where: str | None, reason: str) -> dict:
    """Say that host inspection could not tell `what` (offers_starttls, binding, address, ...)
    for this listener, and why; the audit turns it into an `inspection-uncertain` finding.

    A value that cannot be known is set to None here rather than guessed.
    """
    entry = {'what': what, 'where': where, 'reason': reason}
    uncertain = record.setdefault('uncertain', [])
    if entry not in uncertain:
        uncertain.append(entry)
    if what == 'offers_starttls':
        record['offers_starttls'] = None
        record['offers_starttls_reason'] = reason if not where else f'{reason} ({where})'
    elif what == 'binding':
        record['binding']['resolved'] = False
    return record


def fix_names(listener: dict) -> dict:
    """What a finding's fix text calls a listener's parts, with a placeholder where the record
    has none (a black-box listener has no binding, a socket no service)."""
    binding = listener.get('binding') or {}
    address = listener.get('address')
    where = format_endpoint('' if address is None else str(address), listener.get('port'))
    return {
        'endpoint': where,
        'address': address or 'ADDRESS',
        'port': listener.get('port'),
        'service': listener.get('service') or where,
        'cert': binding.get('certificate') or '/etc/ssl/certs/mail.pem',
        'key': binding.get('key') or binding.get('certificate') or '/etc/ssl/private/mail.key',
        'reader': listener.get('reader_user') or 'root',
        'defined_at': listener.get('defined_at') or 'its configuration',
    }
