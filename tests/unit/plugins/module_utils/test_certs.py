# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""_certs: a certificate binding judged the way the daemon that reads it will meet it."""

from __future__ import annotations

import base64
import datetime
import json
import os
import pwd
import shutil
import stat
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest

from ansible_collections.mailsec.starttls.plugins.module_utils import _certs, _command, _trust, _x509

FIXTURES = Path(__file__).parent / 'fixtures' / 'certs'
UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 1, 1, tzinfo=UTC)
ROOT_CA = str(FIXTURES / 'root-ca.pem')
IS_ROOT = os.geteuid() == 0
HAS_NOBODY = True
try:
    NOBODY = pwd.getpwnam('nobody')
except KeyError:
    HAS_NOBODY = False

needs_root = pytest.mark.skipif(not IS_ROOT, reason='needs root to set owners and read as others')
needs_nobody = pytest.mark.skipif(not HAS_NOBODY, reason='needs the nobody user')


@pytest.fixture(params=['cryptography', 'stdlib'])
def backend(request, monkeypatch):
    """Both ways to load keys: cryptography, or the openssl command with the DER reader."""
    if request.param == 'cryptography' and not _x509.has_cryptography():
        pytest.skip('cryptography is not installed')
    if request.param == 'stdlib' and not shutil.which('openssl'):
        pytest.skip('the openssl command is not installed')
    monkeypatch.setattr(_x509, 'BACKEND', request.param)
    monkeypatch.setattr(_trust, '_verified_windows', {})
    return request.param


@pytest.fixture
def store():
    """A copy of the fixtures in a directory everyone may search (so `nobody` can be tested),
    keys 0600 root, certificates 0644."""
    directory = Path(tempfile.mkdtemp(prefix='mailsec-certs-test-'))
    directory.chmod(0o755)
    for source in FIXTURES.iterdir():
        if source.suffix in ('.pem', '.key'):
            target = directory / source.name
            shutil.copyfile(source, target)
            target.chmod(0o600 if source.suffix == '.key' or source.name.startswith('combined') else 0o644)
    yield directory
    shutil.rmtree(directory)


def inspect(store_dir, cert, key=None, chain=None, **options):
    options.setdefault('now', NOW)
    options.setdefault('ca_file', ROOT_CA)
    return _certs.inspect_store(
        str(store_dir / cert), str(store_dir / key) if key else None,
        [str(store_dir / name) for name in chain] if chain else None, **options)


def ids(result) -> list:
    return sorted(problem['id'] for problem in result['problems'])


def unknown_checks(result) -> list:
    return sorted(entry['check'] for entry in result['unknown'])


def private_key_lines() -> list:
    """Every base64 line of every private key in the fixtures: none may appear in a result."""
    lines = []
    for path in FIXTURES.iterdir():
        text = path.read_text(errors='replace')
        for block in _x509.pem_blocks(text):
            if 'PRIVATE KEY' in block['label']:
                lines.extend(line for line in block['text'].splitlines()
                             if len(line) >= 24 and not line.startswith(('-----', 'Proc-Type', 'DEK-Info')))
    assert len(lines) > 50
    return lines


KEY_LINES = private_key_lines()


def assert_no_key_material(result) -> None:
    dumped = json.dumps(result)
    assert 'PRIVATE KEY' not in dumped
    for line in KEY_LINES:
        assert line not in dumped
        assert line[:24] not in dumped


def assert_shape(result) -> None:
    assert set(result) == {'certificate', 'key', 'chain', 'usable', 'problems', 'unknown', 'tlsa'}
    assert set(result['certificate']) == {'path', 'exists', 'readable_by', 'readable', 'parses', 'describe',
                                          'chain_length'}
    assert set(result['key']) == {'path', 'exists', 'readable', 'owner', 'group', 'mode', 'exposed', 'encrypted',
                                  'type', 'matches_certificate'}
    assert set(result['chain']) == {'complete', 'error'}
    for problem in result['problems']:
        assert set(problem) == {'id', 'message'} and problem['id'] in _certs.PROBLEM_IDS and problem['message']
    for entry in result['unknown']:
        assert set(entry) == {'check', 'reason'} and entry['reason']
    assert_no_key_material(result)


# ---------------------------------------------------------------------------------------------
# Good bindings


def test_rsa_leaf_with_intermediate_is_usable(backend, store):
    result = inspect(store, 'leaf-rsa.pem', 'leaf-rsa.key', ['intermediate-ca.pem'], expected_names=['mail.lab.test'])
    assert_shape(result)
    assert result['usable'] is True
    assert result['problems'] == [] and result['unknown'] == []
    assert result['chain'] == {'complete': True, 'error': None}
    certificate, key = result['certificate'], result['key']
    assert certificate['exists'] is certificate['readable'] is certificate['parses'] is True
    assert certificate['chain_length'] == 2
    assert certificate['readable_by'] == pwd.getpwuid(os.geteuid()).pw_name
    assert certificate['describe']['subject'] == 'CN=mail.lab.test,O=Lab'
    assert certificate['describe']['hostname_match'] is True
    assert key['exists'] is key['readable'] is key['matches_certificate'] is True
    assert key['encrypted'] is False and key['exposed'] is False
    assert key['type'] == 'RSA' and key['mode'] == '0600'
    assert key['owner'] == pwd.getpwuid(os.geteuid()).pw_name


def test_ec_wildcard_with_fullchain_file(backend, store):
    result = inspect(store, 'leaf-ec.pem', 'leaf-ec.key', ['intermediate-ca.pem'], expected_names=['mx.lab.test'])
    assert result['usable'] is True and result['problems'] == []
    assert result['key']['type'] == 'EC'
    fullchain = inspect(store, 'leaf-rsa-fullchain.pem', 'leaf-rsa.key')
    assert fullchain['usable'] is True and fullchain['chain']['complete'] is True
    assert fullchain['certificate']['chain_length'] == 2


def test_other_key_types_match(backend, store):
    for cert, key in (('selfsigned-ec.pem', 'selfsigned-ec.key'), ('ed25519.pem', 'ed25519.key'),
                      ('nosan-rsa.pem', 'nosan-rsa.key')):
        result = inspect(store, cert, key)
        assert result['key']['matches_certificate'] is True, cert
        assert result['usable'] is True, cert


@pytest.mark.skipif(not shutil.which('openssl'), reason='needs the openssl command to write the key')
def test_ec_key_with_a_compressed_point_matches_its_certificate(backend, store):
    """`openssl ec -conv_form compressed` keys: openssl pkey then gives a compressed public point."""
    for source, name in (('leaf-ec.key', 'compressed.key'), ('selfsigned-ec.key', 'other-compressed.key')):
        subprocess.run(['openssl', 'ec', '-in', str(store / source), '-conv_form', 'compressed',
                        '-out', str(store / name)], check=True, capture_output=True)
        (store / name).chmod(0o600)
    public = subprocess.run(['openssl', 'pkey', '-in', str(store / 'compressed.key'), '-pubout', '-outform', 'DER'],
                            check=True, capture_output=True).stdout
    assert public[-33] in (2, 3)  # the stdlib backend really compares a compressed point with an uncompressed one
    result = inspect(store, 'leaf-ec.pem', 'compressed.key', ['intermediate-ca.pem'])
    assert result['key']['matches_certificate'] is True and result['usable'] is True
    other = inspect(store, 'leaf-ec.pem', 'other-compressed.key', ['intermediate-ca.pem'])
    assert ids(other) == ['certificate-key-mismatch']


# ---------------------------------------------------------------------------------------------
# What makes a binding unusable, or only doubtful


def test_mismatched_key(backend, store):
    result = inspect(store, 'leaf-rsa.pem', 'other-rsa.key', ['intermediate-ca.pem'])
    assert_shape(result)
    assert ids(result) == ['certificate-key-mismatch']
    assert result['key']['matches_certificate'] is False
    assert result['usable'] is False
    ec_key_for_rsa_cert = inspect(store, 'leaf-rsa.pem', 'leaf-ec.key', ['intermediate-ca.pem'])
    assert ids(ec_key_for_rsa_cert) == ['certificate-key-mismatch']
    assert 'EC private key' in ec_key_for_rsa_cert['problems'][0]['message']


@pytest.mark.parametrize('cert, key, key_type', [
    ('leaf-ec.pem', 'leaf-ec-encrypted.key', None),                 # PKCS#8: the label hides the type
    ('leaf-rsa.pem', 'leaf-rsa-encrypted-legacy.key', 'RSA'),       # Proc-Type header, typed label
])
def test_encrypted_key_is_doubtful_not_matched(backend, store, cert, key, key_type):
    result = inspect(store, cert, key, ['intermediate-ca.pem'])
    assert_shape(result)
    assert ids(result) == ['key-encrypted']
    assert unknown_checks(result) == ['certificate-key-mismatch']
    assert result['key']['encrypted'] is True
    assert result['key']['type'] == key_type
    assert result['key']['matches_certificate'] is None
    assert result['usable'] is None


def test_expired_and_expiring(backend, store):
    expired = inspect(store, 'expired-rsa.pem', 'expired-rsa.key')
    assert 'certificate-expired' in ids(expired)
    assert expired['usable'] is False
    assert '2021-01-01T00:00:00Z' in next(p['message'] for p in expired['problems'] if p['id'] == 'certificate-expired')
    soon = datetime.datetime(2035, 5, 22, tzinfo=UTC)   # 10 days before leaf-rsa expires
    expiring = inspect(store, 'leaf-rsa.pem', 'leaf-rsa.key', ['intermediate-ca.pem'], now=soon)
    assert ids(expiring) == ['certificate-expiring']
    assert expiring['usable'] is True
    assert inspect(store, 'leaf-rsa.pem', 'leaf-rsa.key', ['intermediate-ca.pem'], now=soon,
                   expiring_days=5)['problems'] == []


def test_host_mismatch_and_untrusted_chain_do_not_make_it_unusable(backend, store):
    result = inspect(store, 'leaf-rsa.pem', 'leaf-rsa.key', ['intermediate-ca.pem'], expected_names=['mx.other.test'])
    assert ids(result) == ['certificate-host-mismatch']
    assert 'mx.other.test' in result['problems'][0]['message']
    assert result['usable'] is True
    self_signed = inspect(store, 'selfsigned-ec.pem', 'selfsigned-ec.key', ca_file=None)
    assert ids(self_signed) == ['validation-failure']
    assert self_signed['chain']['complete'] is False and self_signed['chain']['error']
    assert self_signed['usable'] is True
    no_intermediate = inspect(store, 'leaf-rsa.pem', 'leaf-rsa.key')
    assert ids(no_intermediate) == ['validation-failure']


def test_missing_files(backend, store):
    result = inspect(store, 'absent.pem', 'absent.key')
    assert_shape(result)
    assert ids(result) == ['certificate-missing', 'key-missing']
    assert result['certificate']['exists'] is False and result['key']['exists'] is False
    assert result['usable'] is False
    missing_key = inspect(store, 'leaf-rsa.pem', 'absent.key', ['intermediate-ca.pem'])
    assert ids(missing_key) == ['key-missing'] and missing_key['usable'] is False
    missing_chain = inspect(store, 'leaf-rsa.pem', 'leaf-rsa.key', ['absent-chain.pem'])
    assert 'certificate-missing' in ids(missing_chain) and missing_chain['usable'] is False
    below_a_file = inspect(store, 'leaf-rsa.pem/x.pem', 'leaf-rsa.key')
    assert 'certificate-missing' in ids(below_a_file)


def test_garbage_and_truncated_certificates(backend, store):
    garbage = inspect(store, 'garbage.pem', 'leaf-rsa.key')
    assert_shape(garbage)
    assert ids(garbage) == ['certificate-unparsable', 'certificate-unparsable']
    messages = [problem['message'] for problem in garbage['problems']]
    assert any('garbage.pem:1:' in message and 'base64' in message for message in messages)
    assert any('garbage.pem:4:' in message for message in messages)
    assert garbage['certificate']['parses'] is False and garbage['usable'] is False
    assert garbage['key']['matches_certificate'] is None

    leaf = _x509.pem_to_der_list((FIXTURES / 'leaf-rsa.pem').read_text())[0]
    truncated = store / 'truncated.pem'
    truncated.write_text(_x509._der_to_pem(leaf[:-40]))
    result = inspect(store, 'truncated.pem', 'leaf-rsa.key')
    assert ids(result) == ['certificate-unparsable'] and result['usable'] is False
    assert result['certificate']['describe']['error']

    (store / 'empty.pem').write_text('')
    assert ids(inspect(store, 'empty.pem', 'leaf-rsa.key')) == ['certificate-unparsable']

    der_file = store / 'leaf.der'
    der_file.write_bytes(leaf)
    der_result = inspect(store, 'leaf.der', 'leaf-rsa.key', ['intermediate-ca.pem'])
    assert ids(der_result) == ['certificate-unparsable'] and 'PEM' in der_result['problems'][0]['message']
    assert der_result['certificate']['describe']['subject'] == 'CN=mail.lab.test,O=Lab'


def test_corrupt_key_is_unusable_and_says_nothing_of_its_content(backend, store):
    body = base64.b64encode(b'\x30\x82\x01\x00' + b'\x5a' * 64).decode()
    (store / 'corrupt.key').write_text(f'-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n')
    (store / 'corrupt.key').chmod(0o600)
    result = inspect(store, 'leaf-rsa.pem', 'corrupt.key', ['intermediate-ca.pem'])
    assert_shape(result)
    assert ids(result) == ['key-unreadable']
    assert result['usable'] is False
    assert body[:20] not in json.dumps(result)


def test_certificate_file_without_key(backend, store):
    # key_path None: the key is expected in the certificate file, as Postfix defaults it.
    result = inspect(store, 'leaf-rsa.pem', None, ['intermediate-ca.pem'])
    assert ids(result) == ['key-missing']
    assert 'no private key in the file' in result['problems'][0]['message']
    assert result['key']['exposed'] is None  # a 0644 certificate is not an exposed key
    assert result['usable'] is False


# ---------------------------------------------------------------------------------------------
# Combined files and Postfix chain files


def test_combined_key_and_certificate_file(backend, store):
    both = inspect(store, 'combined.pem', 'combined.pem', expected_names=['smtp.lab.test'])
    assert_shape(both)
    assert both['usable'] is True and both['problems'] == []
    assert both['certificate']['chain_length'] == 2 and both['chain']['complete'] is True
    assert both['key']['matches_certificate'] is True
    implicit = inspect(store, 'combined.pem')
    assert implicit['usable'] is True and implicit['key']['path'] == str(store / 'combined.pem')


def test_chain_files_two_algorithms(backend, store):
    results = _certs.inspect_chain_files([str(store / 'combined.pem'), str(store / 'combined-ec.pem')],
                                         now=NOW, ca_file=ROOT_CA)
    assert [result['key']['type'] for result in results] == ['RSA', 'EC']
    for result in results:
        assert_shape(result)
        assert result['usable'] is True and result['problems'] == []
        assert result['certificate']['chain_length'] == 2
    assert results[1]['certificate']['path'] == str(store / 'combined-ec.pem')


def test_chain_files_split_across_files(backend, store):
    paths = [str(store / name) for name in ('leaf-rsa.key', 'leaf-rsa.pem', 'intermediate-ca.pem')]
    [result] = _certs.inspect_chain_files(paths, now=NOW, ca_file=ROOT_CA)
    assert result['usable'] is True and result['certificate']['chain_length'] == 2
    assert result['key']['path'] == paths[0] and result['certificate']['path'] == paths[1]


def test_chain_files_in_the_wrong_order(backend, store):
    paths = [str(store / 'leaf-rsa-fullchain.pem'), str(store / 'leaf-rsa.key')]
    certificates_first, key_last = _certs.inspect_chain_files(paths, now=NOW, ca_file=ROOT_CA)
    assert 'key-missing' in ids(certificates_first) and certificates_first['usable'] is False
    assert 'not preceded by a private key' in next(
        problem['message'] for problem in certificates_first['problems'] if problem['id'] == 'key-missing')
    assert ids(key_last) == ['certificate-missing'] and key_last['usable'] is False
    assert 'no certificate follows' in key_last['problems'][0]['message']


def test_chain_files_with_a_missing_file(backend, store):
    [result] = _certs.inspect_chain_files([str(store / 'combined.pem'), str(store / 'gone.pem')], now=NOW)
    assert 'certificate-missing' in ids(result) and result['usable'] is False
    assert _certs.inspect_chain_files([], now=NOW)[0]['usable'] is False


# ---------------------------------------------------------------------------------------------
# Permissions: who can read what


def test_group_and_world_readable_key_is_exposed(backend, store):
    (store / 'leaf-rsa.key').chmod(0o644)
    result = inspect(store, 'leaf-rsa.pem', 'leaf-rsa.key', ['intermediate-ca.pem'])
    assert ids(result) == ['private-key-exposed']
    assert result['key']['exposed'] is True and result['key']['mode'] == '0644'
    assert 'readable by everyone' in result['problems'][0]['message']
    assert result['usable'] is True  # exposed, but the MTA can use it


@needs_root
@needs_nobody
def test_key_unreadable_for_the_daemon_user(backend, store):
    result = inspect(store, 'leaf-rsa.pem', 'leaf-rsa.key', ['intermediate-ca.pem'], reader_user='nobody')
    assert_shape(result)
    assert result['certificate']['readable_by'] == 'nobody'
    assert result['certificate']['readable'] is True
    assert result['key']['readable'] is False
    assert ids(result) == ['key-unreadable']
    assert 'mode 0600' in result['problems'][0]['message']
    # The key still matches (root could read it) but the daemon cannot use it.
    assert result['key']['matches_certificate'] is True
    assert result['usable'] is False
    by_uid = inspect(store, 'leaf-rsa.pem', 'leaf-rsa.key', ['intermediate-ca.pem'], reader_user=NOBODY.pw_uid)
    assert by_uid['certificate']['readable_by'] == 'nobody' and by_uid['key']['readable'] is False


@needs_root
@needs_nobody
def test_directory_without_search_permission(backend, store):
    private = store / 'private'
    private.mkdir(mode=0o700)
    shutil.copyfile(store / 'leaf-rsa.pem', private / 'leaf-rsa.pem')
    (private / 'leaf-rsa.pem').chmod(0o644)
    result = inspect(store, 'private/leaf-rsa.pem', 'leaf-rsa.key', ['intermediate-ca.pem'], reader_user='nobody')
    assert 'certificate-unreadable' in ids(result)
    assert f'no search permission on directory {private}' in ' '.join(p['message'] for p in result['problems'])
    private.chmod(0o711)
    assert inspect(store, 'private/leaf-rsa.pem', 'leaf-rsa.key', reader_user='nobody')['certificate']['readable'] is True


@needs_root
@needs_nobody
def test_the_reading_daemons_own_group_is_not_exposure(backend, store):
    """Debian's Exim reads its key as Debian-exim through 0640 root:Debian-exim; that group is its own."""
    key = store / 'leaf-rsa.key'
    os.chown(key, 0, NOBODY.pw_gid)
    key.chmod(0o640)
    result = inspect(store, 'leaf-rsa.pem', 'leaf-rsa.key', ['intermediate-ca.pem'], reader_user='nobody')
    assert result['key']['readable'] is True
    assert result['usable'] is True
    assert ids(result) == [] and result['key']['exposed'] is False
    # Read by root, the same group is somebody else's: exposure.
    as_root = inspect(store, 'leaf-rsa.pem', 'leaf-rsa.key', ['intermediate-ca.pem'])
    assert ids(as_root) == ['private-key-exposed']
    assert 'readable by group' in as_root['problems'][0]['message']


@needs_root
@needs_nobody
def test_key_owned_by_someone_else_is_exposed(backend, store):
    os.chown(store / 'leaf-rsa.key', NOBODY.pw_uid, NOBODY.pw_gid)
    as_root = inspect(store, 'leaf-rsa.pem', 'leaf-rsa.key', ['intermediate-ca.pem'])
    assert ids(as_root) == ['private-key-exposed']
    assert 'owned by nobody' in as_root['problems'][0]['message']
    assert as_root['key']['owner'] == 'nobody'
    as_owner = inspect(store, 'leaf-rsa.pem', 'leaf-rsa.key', ['intermediate-ca.pem'], reader_user='nobody')
    assert as_owner['problems'] == [] and as_owner['usable'] is True


def _set_acl(path: Path, entries) -> None:
    raw = struct.pack('<I', 2) + b''.join(struct.pack('<HHI', tag, perm, ident) for tag, perm, ident in entries)
    try:
        os.setxattr(str(path), 'system.posix_acl_access', raw)
    except (OSError, AttributeError) as exc:
        pytest.skip(f'POSIX ACLs unavailable here: {exc}')


@needs_root
@needs_nobody
def test_posix_acl_named_user(backend, store):
    key = store / 'leaf-rsa.key'
    everyone = 0xffffffff
    # u::rw-, u:nobody:r--, g::---, m::r--, o::---
    _set_acl(key, [(0x01, 6, everyone), (0x02, 4, NOBODY.pw_uid), (0x04, 0, everyone), (0x10, 4, everyone),
                   (0x20, 0, everyone)])
    result = inspect(store, 'leaf-rsa.pem', 'leaf-rsa.key', ['intermediate-ca.pem'], reader_user='nobody')
    assert result['key']['readable'] is True and result['usable'] is True
    assert ids(result) == []  # the ACL names exactly the reader: that is the intended grant
    as_root = inspect(store, 'leaf-rsa.pem', 'leaf-rsa.key', ['intermediate-ca.pem'])
    assert ids(as_root) == ['private-key-exposed'] and 'ACL' in as_root['problems'][0]['message']
    # The mask caps the named entry: m::--- takes the grant away again.
    _set_acl(key, [(0x01, 6, everyone), (0x02, 4, NOBODY.pw_uid), (0x04, 0, everyone), (0x10, 0, everyone),
                   (0x20, 0, everyone)])
    assert inspect(store, 'leaf-rsa.pem', 'leaf-rsa.key', reader_user='nobody')['key']['readable'] is False


def test_unknown_reader_user(backend, store):
    result = inspect(store, 'leaf-rsa.pem', 'leaf-rsa.key', ['intermediate-ca.pem'], reader_user='no-such-user-x')
    assert_shape(result)
    assert result['certificate']['readable'] is None and result['key']['readable'] is None
    assert result['usable'] is None
    assert {'certificate-unreadable', 'key-unreadable'} <= set(unknown_checks(result))
    assert 'no such user' in result['unknown'][0]['reason']


def test_inspector_cannot_read_the_key_itself(backend, store, monkeypatch):
    """Not root: the key is there but this process may not open it, so nothing is known of it."""
    key_path = str(store / 'leaf-rsa.key')
    real_read = _certs._files.read_regular

    def guarded_read(path, limit):
        if str(path) == key_path:
            raise PermissionError(13, 'Permission denied', path)
        return real_read(path, limit)

    # Every store file is read through the one bounded reader.
    monkeypatch.setattr(_certs._files, 'read_regular', guarded_read)
    result = inspect(store, 'leaf-rsa.pem', 'leaf-rsa.key', ['intermediate-ca.pem'])
    assert_shape(result)
    assert result['key']['exists'] is True and result['key']['matches_certificate'] is None
    assert result['usable'] is None
    assert 'key-missing' in unknown_checks(result)
    assert result['problems'] == []


def test_directory_instead_of_a_file(backend, store):
    (store / 'dir.pem').mkdir()
    result = inspect(store, 'dir.pem', 'leaf-rsa.key')
    assert_shape(result)
    assert 'certificate-unparsable' in unknown_checks(result) or 'certificate-unparsable' in ids(result)
    assert result['usable'] is not True


# ---------------------------------------------------------------------------------------------
# Caching: one read, one key load, one verification per file version


def test_twenty_listeners_cost_one_inspection(backend, store, monkeypatch):
    calls = []
    real_run = _command.run

    def counting_run(command, *args, **kwargs):
        calls.append(command[1])
        return real_run(command, *args, **kwargs)

    monkeypatch.setattr(_command, 'run', counting_run)
    inspector = _certs.StoreInspector(ca_file=ROOT_CA)
    results = [inspector.inspect(str(store / 'leaf-rsa.pem'), str(store / 'leaf-rsa.key'),
                                 [str(store / 'intermediate-ca.pem')], now=NOW) for listener in range(20)]
    assert all(result['usable'] is True for result in results)
    assert inspector.counters == {'file_reads': 3, 'key_loads': 1, 'verifications': 1}
    # Without cryptography the key goes through exactly one `openssl pkey`.
    assert calls.count('pkey') == (1 if backend == 'stdlib' else 0)
    # Results are independent copies: a caller editing one does not change the next.
    results[0]['certificate']['describe']['sans'].append('DNS:changed')
    again = inspector.inspect(str(store / 'leaf-rsa.pem'), str(store / 'leaf-rsa.key'), now=NOW)
    assert 'DNS:changed' not in again['certificate']['describe']['sans']

    # A renewed file (new content, new mtime) is read again.
    os.replace(store / 'selfsigned-ec.pem', store / 'leaf-rsa.pem')
    os.replace(store / 'selfsigned-ec.key', store / 'leaf-rsa.key')
    renewed = inspector.inspect(str(store / 'leaf-rsa.pem'), str(store / 'leaf-rsa.key'), now=NOW)
    assert renewed['certificate']['describe']['subject'] == 'CN=selfsigned.lab.test,O=Lab'
    assert renewed['key']['matches_certificate'] is True
    assert inspector.counters['file_reads'] == 5 and inspector.counters['key_loads'] == 2


def test_the_cache_keeps_no_key_material(backend, store):
    inspector = _certs.StoreInspector(ca_file=ROOT_CA)
    for cert, key in (('combined.pem', None), ('leaf-ec.pem', 'leaf-ec.key'), ('leaf-rsa.pem', 'leaf-rsa.key')):
        assert inspector.inspect(str(store / cert), str(store / key) if key else None, now=NOW)['key']['type']
    kept = repr([(facts.keys, facts.certificates) for facts in inspector._files.values()])
    assert '-----BEGIN' not in kept
    for line in KEY_LINES:
        assert line[:24] not in kept
    assert all(set(key) == {'line', 'label', 'encrypted', 'type', 'spki', 'error', 'corrupt'}
               for facts in inspector._files.values() for key in facts.keys)


def test_one_batch_is_judged_at_one_moment(backend, store):
    """With no `now`, the first inspection fixes the moment, so the caches still hold."""
    inspector = _certs.StoreInspector(ca_file=ROOT_CA)
    for listener in range(20):
        result = inspector.inspect(str(store / 'leaf-rsa.pem'), str(store / 'leaf-rsa.key'),
                                   [str(store / 'intermediate-ca.pem')])
        assert result['usable'] is True
    assert inspector.counters['verifications'] == 1
    assert inspector.moment() == inspector.moment()
    fixed = _certs.StoreInspector(now=datetime.datetime(2036, 1, 1))
    assert fixed.moment() == datetime.datetime(2036, 1, 1, tzinfo=UTC)
    assert fixed.inspect(str(store / 'leaf-rsa.pem'), str(store / 'leaf-rsa.key'))['usable'] is False


def test_nothing_configured(backend, store):
    result = _certs.inspect_store(None, None, now=NOW)
    assert_shape(result)
    assert ids(result) == ['certificate-missing', 'key-missing']
    assert 'no certificate file is configured' in result['problems'][0]['message']
    assert result['usable'] is False
    [empty] = _certs.inspect_chain_files([str(store / 'garbage.pem')], now=NOW)
    assert empty['usable'] is False and 'certificate-unparsable' in ids(empty)


def test_both_backends_reach_the_same_verdicts(store, monkeypatch):
    if not _x509.has_cryptography() or not shutil.which('openssl'):
        pytest.skip('needs cryptography and the openssl command')
    bindings = [
        ('leaf-rsa.pem', 'leaf-rsa.key', ['intermediate-ca.pem']), ('leaf-rsa.pem', 'other-rsa.key', None),
        ('leaf-ec.pem', 'leaf-ec-encrypted.key', None), ('combined.pem', None, None),
        ('garbage.pem', 'leaf-rsa.key', None), ('expired-rsa.pem', 'expired-rsa.key', None),
        ('leaf-rsa.pem', 'leaf-rsa-encrypted-legacy.key', None), ('ed25519.pem', 'ed25519.key', None),
        ('absent.pem', 'absent.key', None), ('selfsigned-ec.pem', 'selfsigned-ec.key', None),
    ]

    def verdicts():
        monkeypatch.setattr(_trust, '_verified_windows', {})
        outcome = []
        for cert, key, chain in bindings:
            result = inspect(store, cert, key, chain, expected_names=['mail.lab.test'])
            result['chain'].pop('error')
            for problem in result['problems']:
                if problem['id'] == 'validation-failure':
                    problem['message'] = ''  # the two verifiers word their reasons differently
            outcome.append(result)
        return outcome

    monkeypatch.setattr(_x509, 'BACKEND', 'cryptography')
    with_library = verdicts()
    monkeypatch.setattr(_x509, 'BACKEND', 'stdlib')
    assert verdicts() == with_library


def test_no_key_loader_available(store, monkeypatch):
    monkeypatch.setattr(_x509, 'BACKEND', 'stdlib')
    monkeypatch.setattr(_trust, '_openssl_command', [None])
    result = inspect(store, 'leaf-rsa.pem', 'leaf-rsa.key', ['intermediate-ca.pem'])
    assert_shape(result)
    assert result['key']['matches_certificate'] is None and result['usable'] is None
    assert 'certificate-key-mismatch' in unknown_checks(result)
    assert result['problems'] == []


def test_results_never_carry_key_material_even_for_odd_files(backend, store):
    (store / 'openssh.key').write_text('-----BEGIN OPENSSH PRIVATE KEY-----\n'
                                       + (FIXTURES / 'leaf-rsa.key').read_text().splitlines()[1]
                                       + '\n-----END OPENSSH PRIVATE KEY-----\n')
    for cert, key in (('leaf-rsa.pem', 'openssh.key'), ('combined.pem', 'combined.pem'),
                      ('leaf-rsa.pem', 'leaf-rsa-encrypted-legacy.key'), ('leaf-rsa.key', 'leaf-rsa.key')):
        result = inspect(store, cert, key, expected_names=['mail.lab.test'])
        assert_shape(result)
    openssh = inspect(store, 'leaf-rsa.pem', 'openssh.key')
    assert 'key-unreadable' in ids(openssh) and openssh['usable'] is False


def test_inspect_store_on_a_real_system_path_does_not_raise(backend):
    """Whatever the host has (or not) at the usual Debian snakeoil paths, a full result comes back."""
    result = _certs.inspect_store('/etc/ssl/certs/ssl-cert-snakeoil.pem', '/etc/ssl/private/ssl-cert-snakeoil.key',
                                  reader_user='nobody' if HAS_NOBODY else None)
    assert_shape(result)
    assert result['usable'] in (True, False, None)
    if result['key']['exists']:
        assert stat.S_ISREG(os.stat(result['key']['path']).st_mode) and result['key']['mode']
