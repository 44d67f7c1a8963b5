# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fuzz and property-test entry points: arbitrary bytes as one MTA's configuration.

`check_config(mta, data)` lays `data` out as that MTA's configuration file(s) in a private
fixture root, runs the whole host inspection for that MTA (files only, no tools, no sockets) and
checks what must hold for any input: no adapter exception (the gather turns one into a
"listeners failed" warning, which counts as a failure here), a result that strict UTF-8 JSON can
carry, a bounded number of warnings and a bounded size, within a time bound. It raises
AssertionError with the reason otherwise. Used by tests/unit/.../mta/test_properties.py
(hypothesis) and tests/fuzz/fuzz_parsers.py (atheris, or its pure-Python fallback).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

from ansible_collections.mailsec.starttls.plugins.module_utils._host import gather_host
from ansible_collections.mailsec.starttls.plugins.module_utils._mta import context

MTAS = ('postfix', 'exim', 'dovecot', 'opensmtpd', 'sendmail')
# Where each MTA's configuration goes; for Postfix the input is split into main.cf and master.cf
# at the first line that is only '----' (both get all of it when there is none).
CONFIG_PATHS = {
    'postfix': ('/etc/postfix/main.cf', '/etc/postfix/master.cf'),
    'exim': ('/etc/exim/configure',),
    'dovecot': ('/etc/dovecot/dovecot.conf',),
    'opensmtpd': ('/etc/smtpd.conf',),
    'sendmail': ('/etc/mail/sendmail.cf',),
}
SEPARATOR = b'\n----\n'
# A second file every configuration may include by a relative or absolute name.
INCLUDED = '/etc/included.conf'
FAILURE_MARKS = ('listeners failed', 'detection failed')
MAX_SECONDS = 15.0
MAX_RESULT_BYTES = 4 << 20

_ROOT: list = []


def fixture_root() -> str:
    """One private root per process: /etc for the inputs and a /proc with no processes."""
    if not _ROOT:
        root = tempfile.mkdtemp(prefix='mailsec-fuzz-')
        os.makedirs(os.path.join(root, 'proc', 'net'))
        for name in ('tcp', 'tcp6', 'fib_trie', 'if_inet6'):
            with open(os.path.join(root, 'proc', 'net', name), 'w'):
                pass
        _ROOT.append(root)
    return _ROOT[0]


def remove_fixture_root() -> None:
    if _ROOT:
        shutil.rmtree(_ROOT.pop(), ignore_errors=True)


def _write(root: str, host_path: str, data: bytes) -> None:
    real = os.path.join(root, host_path.lstrip('/'))
    os.makedirs(os.path.dirname(real), exist_ok=True)
    with open(real, 'wb') as handle:
        handle.write(data)


def lay_out(mta: str, data: bytes) -> str:
    root = fixture_root()
    etc = os.path.join(root, 'etc')
    if os.path.isdir(etc):
        shutil.rmtree(etc)
    paths = CONFIG_PATHS[mta]
    if len(paths) == 2:
        first, separator, second = data.partition(SEPARATOR)
        _write(root, paths[0], first)
        _write(root, paths[1], second if separator else data)
    else:
        _write(root, paths[0], data)
    _write(root, INCLUDED, data[len(data) // 2:])
    return root


def check_config(mta: str, data: bytes, max_seconds: float = MAX_SECONDS) -> dict:
    """Inspect `data` as `mta`'s configuration; AssertionError when an invariant breaks."""
    root = lay_out(mta, data)
    options = {'root': root, 'use_tools': 'never', 'mtas': [mta], 'scan_sockets': False,
               'config_paths': {'exim': [CONFIG_PATHS['exim'][0]]} if mta == 'exim' else {}}
    started = time.monotonic()
    result = gather_host(options)
    elapsed = time.monotonic() - started
    failures = [item['message'] for item in result['warnings']
                if any(mark in item['message'] for mark in FAILURE_MARKS)]
    assert not failures, f'{mta}: adapter raised: {failures[0]}'
    encoded = json.dumps(result, ensure_ascii=False, default=str).encode('utf-8')
    assert len(encoded) <= MAX_RESULT_BYTES, f'{mta}: result of {len(encoded)} bytes'
    most = context.MAX_WARNINGS + context.MAX_LIMIT_WARNINGS + 1
    assert len(result['warnings']) <= most, f'{mta}: {len(result["warnings"])} warnings'
    assert elapsed <= max_seconds, f'{mta}: {elapsed:.1f} s'
    for listener in result['listeners']:
        assert listener['mta'] == mta and isinstance(listener['binding'], dict)
    return result


def check_input(data: bytes) -> None:
    """The fuzz entry point: the first byte chooses the MTA, the rest is its configuration."""
    if not data:
        return
    check_config(MTAS[data[0] % len(MTAS)], data[1:])
