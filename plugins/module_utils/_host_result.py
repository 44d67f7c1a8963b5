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
verified. Listener fields no consumer reads (`tls_settings`, the raw settings of each adapter) are
not returned.

`compact` is the host side. `expand` is the one way every consumer on the controller reads a host
result (fleet_assess, the judge and report filters, the remediation and TLSA filters): it gives
the records as `gather_host` made them, so that the judgement never sees the travelling shape.
Pure functions, no I/O; neither changes its input.
"""

from __future__ import annotations

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


def _map_listener(listener, change, certificates: dict, drop: tuple = ()):
    if not isinstance(listener, dict):
        return listener
    record = {key: value for key, value in listener.items() if key not in drop}
    if 'store' in record:
        record['store'] = _map_store(record['store'], change, certificates)
    if 'probe' in record:
        record['probe'] = _map_probe(record['probe'], change, certificates)
    binding = record.get('binding')
    if isinstance(binding, dict) and 'store' in binding:
        # Records made by hand (and the judgement's own tests) may keep the store in the binding.
        binding = record['binding'] = dict(binding, store=_map_store(binding['store'], change, certificates))
    if isinstance(binding, dict) and isinstance(binding.get('sni'), list):
        record['binding'] = dict(binding, sni=[
            dict(entry, store=_map_store(entry['store'], change, certificates))
            if isinstance(entry, dict) and 'store' in entry else entry
            for entry in binding['sni']])
    return record


def compact(result: dict) -> dict:
    """The result of gather_host in the shape mta_tls_info returns: `certificates` added, each
    description folded into it, host-only listener fields dropped."""
    certificates: dict = {}
    listeners = [_map_listener(listener, _fold, certificates, HOST_ONLY_LISTENER_KEYS)
                 for listener in result.get('listeners') or []]
    return dict(result, listeners=listeners, certificates=certificates)


def expand(result):
    """A host result (mta_tls_info's, as registered) with every certificate reference replaced by
    the whole description, and without `certificates`. Anything else (an older result that has no
    `certificates`, a failed or skipped task, a list of records) comes back as it is."""
    if not isinstance(result, dict) or not isinstance(result.get('certificates'), dict) \
            or not isinstance(result.get('listeners'), list):
        return result
    certificates = result['certificates']
    expanded = {key: value for key, value in result.items() if key != 'certificates'}
    expanded['listeners'] = [_map_listener(listener, _unfold, certificates) for listener in result['listeners']]
    return expanded


def listeners_of(evidence) -> list:
    """The listener records of a host result, expanded, or of a list of records as given."""
    if isinstance(evidence, dict):
        return list(expand(evidence).get('listeners') or [])
    return list(evidence or [])
