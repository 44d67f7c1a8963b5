# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Screening records from managed hosts (not trusted, DESIGN.md): a listener or probe record whose
types cannot be judged is replaced by a stand-in that becomes one judgement-error finding for its
host, so that one malformed record never stops the judgement of the others."""

from __future__ import annotations

from ansible_collections.mailsec.starttls.plugins.module_utils._model import PROTOCOL_TLS_MODE
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.values import clean_text, one_line

_SCALAR = (str, int, float, bool, type(None))
_TEXT_KEYS = ('address', 'probe_address', 'mta', 'service', 'defined_at', 'offers_starttls_reason', 'reader_user',
              'config_dir')
_LIST_KEYS = ('notes', 'expected_certificates', 'expected_names')
_BOOL_KEYS = ('offers_starttls', 'listening')
LISTENER_TLS_MODES = ('starttls', 'implicit', 'none')


def port_problem(value, what: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return f'{what} is a {type(value).__name__}, not a port number'
    if isinstance(value, str) and not value.strip().isdigit():
        return f'{what} {clean_text(value, 40)!r} is not a port number'
    if not 0 <= int(value) <= 65535:
        return f'{what} {clean_text(value, 40)} is out of range'
    return None


def probe_problem(probe, what: str) -> str | None:
    if not isinstance(probe, dict):
        return f'{what} is a {type(probe).__name__}, not a probe record'
    target = probe.get('target')
    if not isinstance(target, dict):
        return f'{what}.target is not a dictionary'
    if target.get('address') is not None and not isinstance(target.get('address'), str):
        return f'{what}.target.address is a {type(target.get("address")).__name__}, not text'
    problem = port_problem(target.get('port'), f'{what}.target.port')
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
    problem = port_problem(listener.get('port'), 'port')
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
        return probe_problem(listener['probe'], 'probe')
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
        port = int(port) if port_problem(port, 'port') is None and port is not None else None
        protocol = source.get('protocol') if source.get('protocol') in PROTOCOL_TLS_MODE else None
        screened.append({'host': owner, 'address': address, 'port': port, 'protocol': protocol,
                         'mta': source.get('mta') if isinstance(source.get('mta'), str) else None,
                         'record_error': one_line(problem, 200)})
    return screened


def screen_probes(probes) -> tuple:
    """(probes that can be judged, stand-in listeners for those that cannot: see screen_listeners)."""
    good, stand_ins = [], []
    for probe in probes or []:
        problem = probe_problem(probe, 'probe')
        if problem is None:
            good.append(probe)
            continue
        source = probe if isinstance(probe, dict) else {}
        target = source.get('target') if isinstance(source.get('target'), dict) else {}
        stand_ins.append({'host': source.get('host') if isinstance(source.get('host'), str) else None,
                          'address': target.get('address') if isinstance(target.get('address'), str) else None,
                          'port': None, 'protocol': None, 'record_error': one_line(problem, 200)})
    return good, stand_ins
