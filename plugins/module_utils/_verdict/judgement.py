# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The judgement, orchestrated: records screened, probes joined to listeners, each listener judged by
every rule family in a fixed order (the order of the findings), sightings merged per fault."""

from __future__ import annotations

from ansible_collections.mailsec.starttls.plugins.module_utils._verdict import (
    availability,
    certificate_store,
    coverage,
    dialog,
)
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.case import ListenerCase
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.catalogue import (
    ANY_TLS,
    DNS,
    HOST,
    RULES,
    normalise_options,
)
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.evidence import LazyEvidence
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.findings import Collector, merge_sightings
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.pairing import join
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.records import listener_mode, protocol_mode
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.screening import screen_listeners, screen_probes
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.served import ServedCertificates
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.values import clean_text, listener_label


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
    collector = Collector(options)
    for entry in entries:
        try:
            judge_listener(entry, by_host, collector, options)
        except Exception as exc:  # pylint: disable=broad-except
            # One odd record must not cost the other listeners their judgement.
            collector.add('judgement-error', entry['listener'], None,
                          f'{listener_label(entry["listener"])}: could not be judged: {type(exc).__name__}: {exc}',
                          {'error': clean_text(f'{type(exc).__name__}: {exc}')})
    return merge_sightings(collector.findings)


def judge_listener(entry: dict, entries_by_host: dict, collector: Collector, options: dict) -> None:
    """Every rule family on one join entry ({listener, probes}); findings go to `collector`."""
    listener = entry['listener']
    if listener.get('record_error'):
        collector.add('judgement-error', listener, None,
                      f'a listener record of {listener.get("host") or "an unnamed host"} could not be read: '
                      f'{listener["record_error"]}', {'record_error': listener['record_error']})
        return
    case = ListenerCase(entry, collector, options)
    coverage.judge_drift(case)
    coverage.judge_uncertain(case)
    coverage.judge_failed_probes(case)
    if case.wire_mode not in ANY_TLS or case.not_open:
        return

    tls_in_use = bool(case.offers) or any(case.status(probe) != 'not-advertised' for probe in case.judged)
    described = certificate_store.judge_store(case, tls_in_use)
    availability.judge_configuration(case)
    served = ServedCertificates(case, entries_by_host, described)
    for probe in case.judged:
        # One evidence record per probe, shared by the families in this order (see LazyEvidence).
        ev = LazyEvidence(case.base, probe)
        availability.judge_probe(case, probe, ev)
        served.judge_probe(probe, ev)
        dialog.judge_probe(case, probe, ev)


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
