# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host task's result as it travels from the host to the controller, and back into records.

Every byte of a host's result is encoded on the host, decoded by the controller, passed from a
worker to the main process and kept in hostvars, once per host: on a fleet that is most of the
controller's cost per host. So `mta_tls_info` returns each certificate's description once per
host, in `certificates` keyed by its SHA-256, and every place that saw the certificate (a store's
`certificate.describe`, a probe's `certificate`, an SNI entry's store) keeps only what is its own:
the fingerprint, the name match for its names, the chain it was presented with and whether that
verified. Each store record (one per distinct binding: certificate, key, chain and reading identity)
is returned once per host too, in `stores` keyed by a digest of its content, and the listeners and
SNI entries bound to it name it by that key. Listener fields no consumer reads (`tls_settings`, the
raw settings of each adapter) are not returned.

`compact` is the host side. `expand` is the one way every consumer on the controller reads a host
result (fleet_assess, the judge and report filters, the remediation and TLSA filters): it gives
the records as `gather_host` made them, so that the judgement never sees the travelling shape.
Pure functions, no I/O; neither changes its input.
"""

from __future__ import annotations

import hashlib
import json

# What a certificate says about itself, the same wherever it was seen on one host at one moment.
SHARED_KEYS = ('subject', 'issuer', 'sans', 'not_before', 'not_after', 'expired', 'days_left', 'self_signed',
               'key_type', 'key_bits', 'serial', 'signature_algorithm')
# Listener fields that only the adapters themselves use (mta_tls_config plans edits from its own
# gather): kept out of the result.
HOST_ONLY_LISTENER_KEYS = ('tls_settings',)


def _fold(description, certificates: dict):
    """A description with its shared part moved to `certificates`; unchanged when it cannot be (an
    error, no fingerprint, or a second reading of one certificate that disagrees, e.g. across midnight)."""
    if not isinstance(description, dict) or description.get('error') or 'subject' not in description:
        return description
    sha256 = description.get('sha256')
    if not isinstance(sha256, str) or not sha256:
        return description
    shared = {key: description[key] for key in SHARED_KEYS if key in description}
    if certificates.setdefault(sha256, shared) != shared:
        return description
    return {key: value for key, value in description.items() if key not in SHARED_KEYS}


def _unfold(reference, certificates: dict):
    if isinstance(reference, dict) and 'subject' not in reference and isinstance(reference.get('sha256'), str):
        shared = certificates.get(reference['sha256'])
        if isinstance(shared, dict):
            return dict(shared, **reference)
    return reference


def _map_store(store, change, certificates: dict):
    if not isinstance(store, dict) or not isinstance(store.get('certificate'), dict):
        return store
    certificate = store['certificate']
    if 'describe' not in certificate:
        return store
    return dict(store, certificate=dict(certificate, describe=change(certificate['describe'], certificates)))


def _map_probe(probe, change, certificates: dict):
    if not isinstance(probe, dict) or 'certificate' not in probe:
        return probe
    return dict(probe, certificate=change(probe['certificate'], certificates))


def _store_key(store: dict) -> str:
    """A key for a store record, the same for equal records (so a result reads the same from run to run)."""
    text = json.dumps(store, sort_keys=True, separators=(',', ':'), default=str)
    return hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:16]


class _Places:
    """What a listener's stores become on the way: with `put` on the host, folded and said once in
    `stores` (the place keeps the key); without, on the controller, the key replaced by the record
    and its certificate description unfolded."""

    def __init__(self, certificates: dict, stores: dict, change, put: bool):
        self.certificates, self.stores, self.change, self.put = certificates, stores, change, put

    def store(self, value):
        if isinstance(value, list):  # Postfix smtpd_tls_chain_files: one record per key+chain group
            return [self.store(part) for part in value]
        if self.put:
            value = _map_store(value, self.change, self.certificates)
            if not isinstance(value, dict):
                return value
            key = _store_key(value)
            if self.stores.setdefault(key, value) != value:  # a digest collision (never seen): kept whole
                return value
            return key
        if isinstance(value, str) and isinstance(self.stores.get(value), dict):
            value = self.stores[value]
        return _map_store(value, self.change, self.certificates)


def _map_listener(listener, places: _Places, drop: tuple = ()):
    if not isinstance(listener, dict):
        return listener
    certificates, change = places.certificates, places.change
    record = {key: value for key, value in listener.items() if key not in drop}
    if 'store' in record:
        record['store'] = places.store(record['store'])
    if 'probe' in record:
        record['probe'] = _map_probe(record['probe'], change, certificates)
    binding = record.get('binding')
    if isinstance(binding, dict) and 'store' in binding:
        # Records made by hand (and the judgement's own tests) may keep the store in the binding.
        binding = record['binding'] = dict(binding, store=_map_store(binding['store'], change, certificates))
    if isinstance(binding, dict) and isinstance(binding.get('sni'), list):
        record['binding'] = dict(binding, sni=[
            dict(entry, store=places.store(entry['store']))
            if isinstance(entry, dict) and 'store' in entry else entry
            for entry in binding['sni']])
    return record


def compact(result: dict) -> dict:
    """The result of gather_host in the shape mta_tls_info returns: `certificates` and `stores`
    added, each description folded into the first and each store record into the second (the
    listener and SNI entry keep the store's key), host-only listener fields dropped."""
    places = _Places({}, {}, _fold, put=True)
    listeners = [_map_listener(listener, places, HOST_ONLY_LISTENER_KEYS)
                 for listener in result.get('listeners') or []]
    return dict(result, listeners=listeners, certificates=places.certificates, stores=places.stores)


def expand(result):
    """A host result (mta_tls_info's, as registered) with every store key and certificate reference
    replaced by the whole record and description, and without `certificates` and `stores`. Anything
    else (an older result that has neither, a failed or skipped task, a list of records) comes back
    as it is."""
    if not isinstance(result, dict) or not isinstance(result.get('listeners'), list) \
            or not (isinstance(result.get('certificates'), dict) or isinstance(result.get('stores'), dict)):
        return result
    places = _Places(result.get('certificates') or {}, result.get('stores') or {}, _unfold, put=False)
    expanded = {key: value for key, value in result.items() if key not in ('certificates', 'stores')}
    expanded['listeners'] = [_map_listener(listener, places) for listener in result['listeners']]
    return expanded


def listeners_of(evidence) -> list:
    """The listener records of a host result, expanded, or of a list of records as given."""
    if isinstance(evidence, dict):
        return list(expand(evidence).get('listeners') or [])
    return list(evidence or [])
