# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Whether a chain verifies, and the I/O that takes: trust stores on disk and the openssl command.

The pure side (parsing, naming, descriptions) is `_x509`. Checks run the `openssl` command while
that is cheaper than importing `cryptography` (see `library_for_checks`), and the library after.
`verify_chain` never raises: failures come back as values.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import shutil
import tempfile
import threading

from ansible_collections.mailsec.starttls.plugins.module_utils import _command, _files, _x509

OPENSSL_TIMEOUT_SECONDS = 20
# Runs of the openssl command after which a process is taken to check many more chains and keys,
# and cryptography's import (worth 12-20 runs) pays off.
OPENSSL_RUNS_BEFORE_LIBRARY = 8
_openssl_runs = [0]

_trust_lock = threading.Lock()
_trust_stores: dict = {}
_openssl_command: list = []
# Successful verifications: (chain, ca_file, ca_path) -> (not before, not after) of the verified
# path. A path that verified stays verified at any moment inside that window (revocation is not
# checked), so many listeners presenting one chain cost one signature check.
_verified_windows: dict = {}
VERIFIED_CACHE_SIZE = 512
# Chains that did not verify: (chain, ca_file, ca_path, library) -> (moment, reason). Within a minute of
# that moment the answer stands: a host whose listeners present one chain that fails costs one check,
# not one per listener (the openssl command is the expensive part of a host's inspection).
_refused: dict = {}
REFUSED_REUSE_SECONDS = 60


def openssl_path() -> str | None:
    if not _openssl_command:
        _openssl_command.append(shutil.which('openssl'))
    return _openssl_command[0]


def run_openssl(arguments: list, input_bytes: bytes | None = None, timeout: float = OPENSSL_TIMEOUT_SECONDS) -> tuple:
    """(exit code, stdout, stderr) of the openssl command, in the C locale; raises _command.CommandError."""
    _openssl_runs[0] += 1
    return _command.run([openssl_path()] + list(arguments), input_bytes=input_bytes,
                        env=dict(os.environ, LC_ALL='C'), timeout=timeout)


def library_for_checks(verification: bool = False) -> bool:
    """Whether key and chain checks go through `cryptography` rather than the openssl command.

    One `openssl` run costs 3-5 ms of CPU, importing cryptography about 60 ms: a host inspection
    (a few distinct keys and chains) runs the command; a process that checks many chains (the
    controller probing a fleet) imports the library once the command has run
    OPENSSL_RUNS_BEFORE_LIBRARY times, or at once when the library is loaded already or the
    command is missing.
    """
    backend = _x509.BACKEND
    if backend == 'stdlib':
        return False
    if backend == 'auto' and not _x509.Cryptography.available and openssl_path() \
            and _openssl_runs[0] < OPENSSL_RUNS_BEFORE_LIBRARY:
        return False
    if not _x509.Cryptography.load():
        return False
    return _x509.Cryptography.verification is not None if verification else True


def _directory_files(directory: str) -> list:
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    return [os.path.join(directory, name) for name in names
            if os.path.isfile(os.path.join(directory, name))]


def _read_trust_certificates(ca_file: str | None, ca_path: str | None) -> tuple[list, list]:
    """DER of the trust anchors from a bundle file and/or an OpenSSL hash directory."""
    sources = []
    if ca_file is None and ca_path is None:
        defaults = ssl_default_verify_paths()
        bundles = [path for path in (defaults['cafile'], defaults['openssl_cafile'])
                   if path and os.path.isfile(path)]
        if bundles:
            sources.append(bundles[0])
        else:
            # Only a hash directory; the hash links duplicate files, dropped below.
            for directory in (defaults['capath'], defaults['openssl_capath']):
                if directory and os.path.isdir(directory):
                    sources.extend(_directory_files(directory))
                    break
    else:
        if ca_file is not None:
            sources.append(ca_file)
        if ca_path is not None:
            if not os.path.isdir(ca_path):
                return [], [f'{ca_path}: not a directory']
            sources.extend(_directory_files(ca_path))
    anchors = []
    seen = set()
    problems = []
    for source in sources:
        try:
            # A bundle is a regular file of bounded size; a FIFO or device given as ca_file is refused.
            content = _files.read_regular(source, 64 * _x509.MAX_DER_BYTES)
        except OSError as exc:
            problems.append(f'{source}: {exc.strerror or exc}')
            continue
        for der in _x509.pem_to_der_list(content):
            if der not in seen:
                seen.add(der)
                anchors.append(der)
    return anchors, problems


def ssl_default_verify_paths() -> dict:
    import ssl
    paths = ssl.get_default_verify_paths()
    return {
        'cafile': paths.cafile,
        'capath': paths.capath,
        'openssl_cafile': paths.openssl_cafile,
        'openssl_capath': paths.openssl_capath,
    }


def _trust_store(ca_file: str | None, ca_path: str | None):
    """(cryptography Store, None) or (None, reason); built once per process per source."""
    key = (ca_file, ca_path)
    with _trust_lock:
        cached = _trust_stores.get(key)
        if cached is not None:
            return cached
        try:
            anchors, problems = _read_trust_certificates(ca_file, ca_path)
            certificates = []
            store = None
            with _x509._quiet():
                for der in anchors:
                    try:
                        certificates.append(_x509.Cryptography.x509.load_der_x509_certificate(der))
                    except Exception:  # one anchor that newer cryptography refuses must not disable the rest
                        continue
                if certificates:
                    store = _x509.Cryptography.verification.Store(certificates)
            if store is not None:
                cached = (store, None)
            else:
                where = ', '.join(str(part) for part in key if part) or 'the system trust store'
                reason = '; '.join(problems) or 'no certificates found'
                cached = (None, f'no trust anchors in {where}: {reason}')
        except Exception as exc:
            cached = (None, f'trust store could not be loaded: {exc}')
        _trust_stores[key] = cached
        return cached


def _verification_subject_from_sans(sans: list):
    """A (kind, value) name that the leaf itself carries: its first DNS or IP SAN."""
    for san in sans:
        if san.startswith('DNS:'):
            name = san[4:]
            if name.startswith('*.'):
                # A wildcard covers any one label; check it with a concrete name it covers.
                name = 'wildcard-check' + name[1:]
            return 'dns', name
        if san.startswith('IP:') and _x509._ip_literal(san[3:]) is not None:
            return 'ip', san[3:]
    return None


_NO_SAN = 'leaf certificate has no DNS or IP subjectAltName to verify against'


def verify_chain(chain_der: list, ca_file: str | None = None, ca_path: str | None = None,
                 at: datetime.datetime | None = None) -> tuple:
    """Whether the leaf (chain_der[0]) chains to a trust anchor through chain_der[1:].

    Name-agnostic: the leaf is checked as a TLS server certificate for a name it carries
    itself. Returns (True, None), (False, reason), or (None, reason) when nothing could check.
    The trust anchors (ca_file / ca_path, or the system store) are loaded once per process.
    """
    try:
        if not chain_der:
            return None, 'no certificate to verify'
        chain = tuple(bytes(der) for der in chain_der)
        moment = _x509._as_utc(at)
        use_library = library_for_checks(verification=True)
        cache_key = (chain, ca_file, ca_path, use_library)
        window = _verified_windows.get(cache_key)
        if window is not None and window[0] <= moment <= window[1]:
            return True, None
        refused = _refused.get(cache_key)
        if refused is not None and abs((moment - refused[0]).total_seconds()) <= REFUSED_REUSE_SECONDS:
            return False, refused[1]
        if use_library:
            with _x509._quiet():
                verified, reason, window = _verify_with_cryptography(chain, ca_file, ca_path, moment)
        else:
            leaf = _x509.describe_der(chain[0])
            if leaf['error']:
                return False, f'leaf: {leaf["error"]}'
            subject = _verification_subject_from_sans(leaf['sans'])
            if subject is None:
                return False, _NO_SAN
            for position, der in enumerate(chain[1:], 1):
                try:
                    _x509._parse_certificate(der)
                except _x509.DerError as exc:
                    return False, f'chain certificate {position} does not parse: {exc}'
            if not openssl_path():
                return None, 'neither the openssl command nor cryptography >= 42 is available to verify'
            verified, reason = _verify_with_openssl(chain, ca_file, ca_path, moment)
            window = _presented_window(chain) if verified else None
        if verified and window is not None:
            if len(_verified_windows) >= VERIFIED_CACHE_SIZE:
                _verified_windows.clear()
            _verified_windows[cache_key] = window
        elif verified is False:
            if len(_refused) >= VERIFIED_CACHE_SIZE:
                _refused.clear()
            _refused[cache_key] = (moment, reason)
        return verified, reason
    except Exception as exc:
        return None, f'verification could not run: {type(exc).__name__}: {exc}'


def _validity_window(certificates) -> tuple:
    starts, ends = [], []
    for cert in certificates:
        if hasattr(cert, 'not_valid_before_utc'):
            starts.append(cert.not_valid_before_utc)
            ends.append(cert.not_valid_after_utc)
        else:
            starts.append(cert.not_valid_before.replace(tzinfo=_x509.UTC))
            ends.append(cert.not_valid_after.replace(tzinfo=_x509.UTC))
    return max(starts), min(ends)


def _presented_window(chain: tuple):
    # openssl does not say which anchor it used; the presented certificates bound the window.
    starts, ends = [], []
    for der in chain:
        try:
            fields = _x509._parse_certificate(der)
        except _x509.DerError:
            return None
        starts.append(fields['not_before'])
        ends.append(fields['not_after'])
    return max(starts), min(ends)


def _verify_with_cryptography(chain: tuple, ca_file, ca_path, moment) -> tuple:
    """(verified, reason, validity window of the verified path or None)."""
    try:
        leaf = _x509.Cryptography.x509.load_der_x509_certificate(chain[0])
    except Exception as exc:
        return False, f'leaf does not parse: {exc}', None
    intermediates = []
    for position, der in enumerate(chain[1:], 1):
        try:
            intermediates.append(_x509.Cryptography.x509.load_der_x509_certificate(der))
        except Exception as exc:
            return False, f'chain certificate {position} does not parse: {exc}', None
    try:
        san = leaf.extensions.get_extension_for_class(_x509.Cryptography.x509.SubjectAlternativeName).value
        sans = [_x509._crypto_general_name(name) for name in san
                if isinstance(name, (_x509.Cryptography.x509.DNSName, _x509.Cryptography.x509.IPAddress))]
    except _x509.Cryptography.x509.ExtensionNotFound:
        sans = []
    except Exception as exc:
        return False, f'leaf extensions do not parse: {exc}', None
    subject = _verification_subject_from_sans(sans)
    if subject is None:
        return False, _NO_SAN, None
    store, reason = _trust_store(ca_file, ca_path)
    if store is None:
        return None, reason, None
    kind, value = subject
    try:
        if kind == 'dns':
            name = _x509.Cryptography.verification.DNSName(value)
        else:
            name = _x509.Cryptography.verification.IPAddress(ipaddress.ip_address(value))
    except Exception as exc:
        return False, f'leaf name {value!r} cannot be verified: {exc}', None
    try:
        verifier = _x509.Cryptography.verification.PolicyBuilder().store(store).time(moment).build_server_verifier(name)
        path = verifier.verify(leaf, intermediates)
    except _x509.Cryptography.verification.VerificationError as exc:
        message = str(exc)
        if 'candidates exhausted with no interior errors' in message:
            # Nothing was wrong with a certificate; the path just never reached an anchor.
            top = intermediates[-1] if intermediates else leaf
            message = (f'no path to a trust anchor: the presented chain ends at issuer '
                       f'"{_x509.format_name(_x509._crypto_name(top.issuer))}", which is neither presented nor trusted')
        return False, message, None
    except Exception as exc:
        return False, f'{type(exc).__name__}: {exc}', None
    try:
        window = _validity_window(path)
    except Exception:
        window = None
    return True, None, window


_OPENSSL_VERIFY_ERROR = re.compile(r'error (\d+) at (\d+) depth lookup: ?(.*)')


def _verify_with_openssl(chain: tuple, ca_file, ca_path, moment) -> tuple:
    with tempfile.TemporaryDirectory(prefix='mailsec-verify-') as workdir:
        leaf_file = os.path.join(workdir, 'leaf.pem')
        with open(leaf_file, 'w', encoding='ascii') as handle:
            handle.write(_x509._der_to_pem(chain[0]))
        command = ['verify', '-purpose', 'sslserver', '-attime', str(int(moment.timestamp()))]
        if ca_file is not None:
            command += ['-CAfile', ca_file]
        if ca_path is not None:
            command += ['-CApath', ca_path]
        if len(chain) > 1:
            untrusted_file = os.path.join(workdir, 'untrusted.pem')
            with open(untrusted_file, 'w', encoding='ascii') as handle:
                handle.write(''.join(_x509._der_to_pem(der) for der in chain[1:]))
            command += ['-untrusted', untrusted_file]
        command.append(leaf_file)
        try:
            returncode, stdout, stderr = run_openssl(command, timeout=30)
        except _command.CommandError as exc:
            return None, f'openssl verify could not run: {exc}'
    output = (stdout + stderr).decode('utf-8', 'replace')
    if returncode == 0 and ': OK' in output:
        return True, None
    found = _OPENSSL_VERIFY_ERROR.search(output)
    if found:
        return False, f'{found.group(3).strip()} (depth {found.group(2)})'
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return None, 'openssl verify failed: ' + (lines[0] if lines else f'exit {returncode}')
