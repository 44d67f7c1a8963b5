# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the audit could not vouch for: listener-drift (configured but not listening, or listening
but not configured), inspection-uncertain (the host side could not tell how a listener is
configured) and probe-failed (a vantage point could not judge the listener)."""

from __future__ import annotations

from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.case import UNJUDGED, ListenerCase
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.evidence import probe_evidence
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.records import store_of
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.values import clean_text, one_line


def judge_drift(case: ListenerCase) -> None:
    """listener-drift: a socket no configured listener explains, or a configured listener not open."""
    listener, label = case.listener, case.label
    if case.mode == 'socket':
        socket_info = listener.get('socket') or {}
        case.add('listener-drift', None,
                 f'{label} is listening ({socket_info.get("process") or "unknown process"}, pid '
                 f'{socket_info.get("pid") or "?"}) but no configured listener matches it',
                 {'socket': socket_info}, {'kind': 'not-configured', 'pid': socket_info.get('pid'),
                                           'process': socket_info.get('process')})
    elif case.not_open:
        # A listener that is not open advertises nothing to anyone: its store problems are evidence
        # of why it may be down (Dovecot refuses to start without its certificate), not findings of
        # their own, which would bury the listeners that do serve clients.
        problems = sorted({str(problem.get('id')) for problem in (store_of(listener) or {}).get('problems') or []
                           if isinstance(problem, dict) and problem.get('id')})
        summary = f'{label} is configured at {listener.get("defined_at") or "?"} but nothing listens there'
        if problems:
            summary += f'; its certificate store has problems ({", ".join(problems)}) that will matter once it listens'
        case.add('listener-drift', None, summary,
                 dict(case.base, notes=list(listener.get('notes') or [])[:5]), {'kind': 'not-listening'})


def judge_uncertain(case: ListenerCase) -> None:
    """inspection-uncertain: what the host side could not tell about this listener."""
    uncertain = [item for item in case.listener.get('uncertain') or [] if isinstance(item, dict)] \
        if case.mode == 'host' else []
    if not uncertain:
        return
    first = uncertain[0]
    reasons = '; '.join(one_line(f'{item.get("what") or "?"}: {item.get("reason") or "?"}'
                                 f'{" (" + str(item["where"]) + ")" if item.get("where") else ""}', 160)
                        for item in uncertain[:3])
    more = f' and {len(uncertain) - 3} more' if len(uncertain) > 3 else ''
    case.add('inspection-uncertain', None,
             f'{case.label}: the host inspection could not tell {reasons}{more}; this listener is not '
             'vouched for by its configuration',
             dict(case.base, uncertain=[{key: clean_text(item.get(key), 300) for key in ('what', 'where', 'reason')}
                                        for item in uncertain[:10]]),
             {'what': sorted({str(item.get('what')) for item in uncertain})[:10],
              'first_where': first.get('where')})


def judge_failed_probes(case: ListenerCase) -> None:
    """probe-failed: each probe that could not judge anything, and why."""
    for probe in case.probes:
        status = case.status(probe)
        if status not in UNJUDGED:
            continue
        error = probe.get('error') or {}
        severity = 'medium'
        if status == 'refused' or case.not_open:
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
        case.add('probe-failed', probe.get('vantage'),
                 f'{case.label} from {probe.get("vantage")}: {why}; nothing could be judged from there',
                 {'probe': probe_evidence(probe)}, severity=severity)
