# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Joining probes to listeners: every probe, from every vantage point, to the listener it is
evidence about (by address and port, a wildcard listener through its host's addresses, a probe the
controller made for one inventory host to that host alone), with nothing dropped."""

from __future__ import annotations

from ansible_collections.mailsec.starttls.plugins.module_utils._model import PROTOCOL_TLS_MODE, WILDCARD_ADDRESSES
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.records import HOST_VANTAGE, listener_identity
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.values import as_port, canonical_address


def _probe_identity(probe: dict) -> tuple:
    target = probe.get('target') or {}
    return (probe.get('vantage'), canonical_address(target.get('address')), as_port(target.get('port')),
            target.get('sni'))


def _same_observation(first: dict, second: dict) -> bool:
    """One probe passed twice under two labels (a listener's own probe, and again in the probe
    list with the host's name as vantage): the same target, greeting and timings."""
    timings = first.get('timings_ms')
    return bool(timings) and timings == second.get('timings_ms') and first.get('target') == second.get('target') \
        and first.get('greeting') == second.get('greeting')


def _socket_listener(host, record: dict) -> dict:
    port = as_port(record.get('port'))
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
            if address and address not in WILDCARD_ADDRESSES:
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
        port = as_port(listener.get('port'))
        own_addresses = {canonical_address(listener.get('address')), canonical_address(listener.get('probe_address'))}
        for address in own_addresses - {None}:
            exact_index.setdefault((address, port), []).append(entry)
        if canonical_address(listener.get('address')) in WILDCARD_ADDRESSES:
            wildcard_by_host.setdefault((listener.get('host'), port), []).append(entry)
    order = {id(entry): position for position, entry in enumerate(entries)}

    orphans: dict = {}
    for probe in probes or []:
        if not isinstance(probe, dict):
            continue
        target = probe.get('target') or {}
        port = as_port(target.get('port'))
        # A target given as a name: every address it resolved to is evidence about the listener listed by
        # that name (the probe says which address it came from).
        addresses = {canonical_address(target.get('address')), canonical_address(probe.get('peer_address')),
                     canonical_address(target.get('name'))}
        mapped = probe.get('mapped_from')
        if isinstance(mapped, dict) and probe.get('host') is not None:
            # Reached at another address or port (NAT, port forward, load balancer: the address map):
            # the listener is the one the host binds, for the host the controller probed it for.
            port = as_port(mapped.get('port'))
            addresses = {canonical_address(mapped.get('address'))}
        addresses.discard(None)
        exact: list = []
        # By identity in a set: an address many hosts' listeners share (aliases of one host, one address
        # behind NAT) would otherwise make this quadratic in the number of those hosts, for every probe.
        taken: set = set()
        for address in sorted(addresses):
            for entry in exact_index.get((address, port), []):
                if id(entry) not in taken:
                    taken.add(id(entry))
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
