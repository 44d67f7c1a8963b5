# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Key and chain checks without `cryptography`: the openssl command and the DER reader answer,
and the library is imported only when a process checks enough to pay for it."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.mailsec.starttls.plugins.module_utils import _trust, _x509

FIXTURES = Path(__file__).parent / 'fixtures' / 'certs'
NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
OPENSSL = shutil.which('openssl')
needs_openssl = pytest.mark.skipif(not OPENSSL, reason='needs the openssl command')


@pytest.fixture(autouse=True)
def fresh_caches(monkeypatch):
    """Every test counts its own openssl runs: nothing verified or refused by an earlier test."""
    monkeypatch.setattr(_trust, '_verified_windows', {})
    monkeypatch.setattr(_trust, '_refused', {})
    monkeypatch.setattr(_trust, '_trust_stores', {})


# Inspect three bindings and verify one presented chain in a fresh interpreter, then say whether
# cryptography was imported: the host task's whole certificate path.
SCRIPT = r'''
import datetime, json, sys
from ansible_collections.mailsec.starttls.plugins.module_utils import _certs, _trust, _x509
fixtures, backend = sys.argv[1:]
_x509.BACKEND = backend
now = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
inspector = _certs.StoreInspector(ca_file=f'{fixtures}/root-ca.pem', now=now)
def problems(cert, key, chain):
    result = inspector.inspect(f'{fixtures}/{cert}', f'{fixtures}/{key}', [f'{fixtures}/{name}' for name in chain],
                               None, ['mail.lab.test'])
    # The fixtures' key files are world-readable in a checkout: that finding is not the subject here.
    return sorted(item['id'] for item in result['problems'] if item['id'] != 'private-key-exposed')
chain = _x509.pem_to_der_list(open(f'{fixtures}/leaf-rsa-fullchain.pem').read())
print(json.dumps({
    'good': problems('leaf-rsa.pem', 'leaf-rsa.key', ['intermediate-ca.pem']),
    'mismatch': problems('leaf-rsa.pem', 'other-rsa.key', ['intermediate-ca.pem']),
    'no_chain': problems('leaf-rsa.pem', 'leaf-rsa.key', []),
    'presented': _trust.verify_chain(chain, ca_file=f'{fixtures}/root-ca.pem', at=now),
    'cryptography_imported': any(name == 'cryptography' or name.startswith('cryptography.') for name in sys.modules),
    'openssl_runs': _trust._openssl_runs[0],
}))
'''


def _run_fresh(backend: str = 'auto') -> dict:
    completed = subprocess.run([sys.executable, '-c', SCRIPT, str(FIXTURES), backend], capture_output=True,
                               text=True, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)), check=False)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


@needs_openssl
def test_a_host_checks_keys_and_chains_without_importing_cryptography():
    report = _run_fresh()
    assert report['cryptography_imported'] is False
    assert report['good'] == []
    assert report['mismatch'] == ['certificate-key-mismatch']
    assert report['no_chain'] == ['validation-failure']
    assert report['presented'] == [True, None]
    # Two distinct keys and two distinct chains, each once; the repeated leaf+chain verification is cached.
    assert 2 <= report['openssl_runs'] < _trust.OPENSSL_RUNS_BEFORE_LIBRARY


def test_the_same_verdicts_with_cryptography():
    if not _x509.has_cryptography_verification() or not OPENSSL:
        pytest.skip('needs cryptography >= 42 and the openssl command to compare')
    without = _run_fresh('auto')
    with_library = _run_fresh('cryptography')
    assert with_library['cryptography_imported'] is True and with_library['openssl_runs'] == 0
    for binding in ('good', 'mismatch', 'no_chain'):
        assert with_library[binding] == without[binding], binding
    assert with_library['presented'] == without['presented'] == [True, None]


def test_library_for_checks_follows_backend_cost_and_availability(monkeypatch):
    monkeypatch.setattr(_trust, '_openssl_runs', [0])
    monkeypatch.setattr(_x509, 'BACKEND', 'stdlib')
    assert _trust.library_for_checks() is False
    monkeypatch.setattr(_x509, 'BACKEND', 'auto')
    monkeypatch.setattr(_trust, '_openssl_command', ['/usr/bin/openssl'])
    monkeypatch.setattr(_x509.Cryptography, 'available', False)
    monkeypatch.setattr(_x509.Cryptography, 'tried', True)
    # The command is there and has run little: it is cheaper than importing the library.
    assert _trust.library_for_checks() is False
    _trust._openssl_runs[0] = _trust.OPENSSL_RUNS_BEFORE_LIBRARY
    # Enough runs, but no library to switch to: the command goes on.
    assert _trust.library_for_checks() is False
    monkeypatch.setattr(_x509.Cryptography, 'available', True)
    monkeypatch.setattr(_x509.Cryptography, 'verification', None)
    assert _trust.library_for_checks() is True
    # cryptography < 42 loads keys but cannot verify chains.
    assert _trust.library_for_checks(verification=True) is False
    _trust._openssl_runs[0] = 0
    # No command at all: the library, when it is there, from the first check.
    monkeypatch.setattr(_trust, '_openssl_command', [None])
    assert _trust.library_for_checks() is True


@needs_openssl
def test_verification_falls_back_to_the_openssl_command_and_counts_its_runs(monkeypatch):
    monkeypatch.setattr(_x509, 'BACKEND', 'auto')
    monkeypatch.setattr(_trust, '_openssl_runs', [0])
    monkeypatch.setattr(_trust, '_verified_windows', {})
    monkeypatch.setattr(_x509.Cryptography, 'available', False)
    monkeypatch.setattr(_x509.Cryptography, 'tried', True)
    chain = _x509.pem_to_der_list((FIXTURES / 'leaf-rsa-fullchain.pem').read_text())
    assert _trust.verify_chain(chain, ca_file=str(FIXTURES / 'root-ca.pem'), at=NOW) == (True, None)
    verified, reason = _trust.verify_chain(chain[:1], ca_file=str(FIXTURES / 'root-ca.pem'), at=NOW)
    assert verified is False and 'unable to get local issuer certificate' in reason
    assert _trust._openssl_runs[0] == 2


@needs_openssl
def test_a_chain_that_fails_is_checked_once_a_minute(monkeypatch):
    monkeypatch.setattr(_x509, 'BACKEND', 'stdlib')
    monkeypatch.setattr(_trust, '_openssl_runs', [0])
    monkeypatch.setattr(_trust, '_refused', {})
    leaf_only = _x509.pem_to_der_list((FIXTURES / 'leaf-rsa.pem').read_text())[:1]
    ca_file = str(FIXTURES / 'root-ca.pem')
    first = _trust.verify_chain(leaf_only, ca_file=ca_file, at=NOW)
    assert first[0] is False
    # Many listeners presenting the same failing chain in one inspection: one openssl run.
    for seconds in (1, 30, 59):
        assert _trust.verify_chain(leaf_only, ca_file=ca_file, at=NOW + datetime.timedelta(seconds=seconds)) == first
    assert _trust._openssl_runs[0] == 1
    # Later (or against other anchors) it is checked again.
    assert _trust.verify_chain(leaf_only, ca_file=ca_file, at=NOW + datetime.timedelta(minutes=5))[0] is False
    assert _trust._openssl_runs[0] == 2
