# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One listener under judgement: its record, the probes joined to it, what each probe established,
and what the host side says about it, read once and shared by every rule family."""

from __future__ import annotations

from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.evidence import host_evidence
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.records import (
    HOST_VANTAGE,
    classify_probe,
    listener_mode,
    offers_tls,
    protocol_mode,
    usable_certificate,
)
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.values import listener_label

# Probe outcomes that establish nothing about TLS (probe-failed says why).
UNJUDGED = ('unreachable', 'refused', 'incomplete')


class ListenerCase:
    """A join entry ({listener, probes}) read for judgement.

    `mode`: host, socket, black-box or probe (records.listener_mode); `wire_mode`: the TLS mode its
    protocol implies; `usable`/`offers`: True, False or None (unknown); `base`: the host-side evidence;
    `reference`: the host's own probe, if any; `judged`: the probes whose outcome says something
    about TLS; `not_open`: configured on the host, but nothing listens there.
    """

    def __init__(self, entry: dict, collector, options: dict):
        self.listener = listener = entry['listener']
        self.probes = probes = entry['probes']
        self.collector = collector
        self.options = options
        self.mode = listener_mode(listener)
        self.wire_mode = protocol_mode(listener)
        self.label = listener_label(listener)
        self.usable = usable_certificate(listener)
        self.offers = offers_tls(listener)
        self.base = host_evidence(listener)
        self.reference = next((probe for probe in probes if probe.get('vantage') == HOST_VANTAGE), None)
        self.statuses = {id(probe): classify_probe(probe) for probe in probes}
        self.judged = [probe for probe in probes if self.statuses[id(probe)] not in UNJUDGED]
        self.not_open = self.mode == 'host' and listener.get('listening') is False

    def status(self, probe: dict) -> str:
        """What the probe established (records.classify_probe)."""
        return self.statuses[id(probe)]

    def add(self, rule: str, vantage, summary: str, evidence: dict, detail: dict | None = None,
            severity: str | None = None) -> dict:
        """A finding of `rule` on this listener (findings.Collector.add)."""
        return self.collector.add(rule, self.listener, vantage, summary, evidence, detail, severity=severity)


def seen_from(probe: dict) -> str:
    """How a summary says where a probe was made."""
    return f'seen from {probe.get("vantage")}'
