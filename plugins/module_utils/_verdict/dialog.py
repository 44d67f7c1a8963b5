# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the dialog itself shows, from the flags the probe engine set: middlebox-masking (banner or
keywords rewritten), pre-tls-surplus (bytes between the STARTTLS reply and the handshake),
starttls-command-injection (a command sent before TLS answered inside it), starttls-after-tls,
legacy-tls-protocol, and inconsistent-answers between repeated probes."""

from __future__ import annotations

from ansible_collections.mailsec.starttls.plugins.module_utils._model import LEGACY_TLS_VERSIONS
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.case import ListenerCase, seen_from
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.evidence import LazyEvidence
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.values import clean_text, one_line


def judge_probe(case: ListenerCase, probe: dict, ev: LazyEvidence) -> None:
    label, vantage, from_where = case.label, probe.get('vantage'), seen_from(probe)
    flags = probe.get('flags') or []
    if 'masked' in flags:
        case.add('middlebox-masking', vantage,
                 f'{label}: the dialog is masked {from_where} (banner or keywords rewritten, e.g. '
                 f'XXXXXXXA for STARTTLS)', ev())
    if 'response_injection' in flags or probe.get('pre_tls_surplus'):
        ev()['pre_tls_surplus'] = clean_text(probe.get('pre_tls_surplus'), 400)
        case.add('pre-tls-surplus', vantage,
                 f'{label}: bytes followed the STARTTLS reply before the handshake ({from_where}): '
                 f'{one_line(probe.get("pre_tls_surplus") or "", 60)}', ev())
    if 'command_injection' in flags:
        ev()['injected_reply'] = clean_text(probe.get('injected_reply'), 400)
        case.add('starttls-command-injection', vantage,
                 f'{label}: a command sent before TLS was answered inside TLS ({from_where}): '
                 f'{one_line(probe.get("injected_reply") or "", 60)}', ev())
    if 'starttls_after_tls' in flags:
        case.add('starttls-after-tls', vantage,
                 f'{label}: STARTTLS is still advertised after TLS ({from_where})', ev())
    version = (probe.get('tls') or {}).get('version')
    if 'legacy_tls' in flags or version in LEGACY_TLS_VERSIONS:
        case.add('legacy-tls-protocol', vantage,
                 f'{label} negotiated {version or "a legacy protocol"} ({from_where})', ev())
    if 'inconsistent' in flags:
        ev()['attempts'] = list(probe.get('attempts') or [])[:10]
        case.add('inconsistent-answers', vantage,
                 f'{label}: repeated probes {from_where} got different answers', ev())
