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

One module per concept:

- catalogue.py: the rules (ID, severity, title, modes, evidence side), store problem IDs, options
- values.py: bounded text, IP literals, endpoints, ports, fingerprints, times
- records.py: reading listener and probe records (modes, stores, what a probe established)
- screening.py: records from managed hosts that cannot be judged become stand-ins
- evidence.py: the evidence a finding carries
- pairing.py: joining probes to listeners (`join`)
- findings.py: the finding record, its keys, the collector, merging sightings per fault
- fixes.py: the fix text (the MTA's own words come from its adapter, _mta/)
- judgement.py: `judge`, one listener through every rule family, `applicable_rules`
- the rule families, one listener (case.py) at a time:
  - availability.py: starttls-advertised-without-certificate, implicit-tls-without-certificate,
    starttls-not-offered, starttls-stripped
  - certificate_store.py: certificate-unreadable, certificate-key-mismatch, private-key-exposed,
    and the bound certificate's validity
  - validity.py: certificate-expired, certificate-expiring, certificate-host-mismatch,
    validation-failure
  - served.py: tls-terminated-elsewhere, presented-certificate-differs, inconsistent-answers
    (certificates)
  - dialog.py: middlebox-masking, pre-tls-surplus, starttls-command-injection, starttls-after-tls,
    legacy-tls-protocol, inconsistent-answers (repeated probes)
  - coverage.py: listener-drift, inspection-uncertain, probe-failed
  - judgement-error: judgement.py (a record or listener that cannot be judged) and
    certificate_store.py (a store that could not be inspected); the DNS rules: plugin_utils/_dane.py
"""

from __future__ import annotations

from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.catalogue import (
    ANY_TLS,
    BOTH,
    DEFAULT_OPTIONS,
    DNS,
    HOST,
    NETWORK,
    PROBLEM_RULES,
    RULE_IDS,
    RULES,
    SEVERITIES,
    SEVERITY_RANK,
    VerdictError,
    normalise_options,
    problem_rule,
    worst_severity,
)
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.evidence import (
    certificate_evidence,
    host_evidence,
    probe_evidence,
)
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.findings import (
    fault_key,
    finding_key,
    merge_sightings,
)
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.fixes import fix_for
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.judgement import applicable_rules, judge
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.pairing import join
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.records import (
    HOST_VANTAGE,
    classify_probe,
    configured_fingerprints,
    listener_identity,
    listener_key,
    listener_mode,
    offers_tls,
    protocol_mode,
    store_certificate,
    store_of,
    usable_certificate,
)
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.screening import (
    record_problem,
    screen_listeners,
    screen_probes,
)
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.values import (
    as_port,
    canonical_address,
    clean_text,
    endpoint,
    listener_label,
    normalise_sha256,
    one_line,
    parse_time,
)

# The name of as_port before the split, for code written against it on branches not yet merged.
_as_port = as_port

__all__ = [
    'ANY_TLS', 'BOTH', 'DEFAULT_OPTIONS', 'DNS', 'HOST', 'HOST_VANTAGE', 'NETWORK', 'PROBLEM_RULES', 'RULE_IDS',
    'RULES', 'SEVERITIES', 'SEVERITY_RANK', 'VerdictError', 'applicable_rules', 'as_port', 'canonical_address',
    'certificate_evidence', 'classify_probe', 'clean_text', 'configured_fingerprints', 'endpoint', 'fault_key',
    'finding_key', 'fix_for', 'host_evidence', 'join', 'judge', 'listener_identity', 'listener_key',
    'listener_label', 'listener_mode', 'merge_sightings', 'normalise_options', 'normalise_sha256', 'offers_tls',
    'one_line', 'parse_time', 'probe_evidence', 'problem_rule', 'protocol_mode', 'record_problem',
    'screen_listeners', 'screen_probes', 'store_certificate', 'store_of', 'usable_certificate', 'worst_severity',
]
