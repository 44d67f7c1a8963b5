# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""_x509: describing certificates with either reader, names per RFC 6125, chain verification."""

from __future__ import annotations

import datetime
import os
import random
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest

from ansible_collections.mailsec.starttls.plugins.module_utils import _trust, _x509

FIXTURES = Path(__file__).parent / 'fixtures' / 'certs'
UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 1, 1, tzinfo=UTC)
CERTIFICATE_FILES = sorted(path.name for path in FIXTURES.glob('*.pem') if path.name != 'garbage.pem')
OPENSSL = shutil.which('openssl')


def ders(name: str) -> list:
    return _x509.pem_to_der_list((FIXTURES / name).read_text())


def der(name: str) -> bytes:
    return ders(name)[0]


def tlv(tag: int, content: bytes) -> bytes:
    """One DER element (short or long length form), to build test input by hand."""
    if len(content) < 0x80:
        return bytes([tag, len(content)]) + content
    length = len(content).to_bytes((len(content).bit_length() + 7) // 8, 'big')
    return bytes([tag, 0x80 | len(length)]) + length + content


@pytest.fixture(params=['cryptography', 'stdlib'])
def backend(request, monkeypatch):
    if request.param == 'cryptography' and not _x509.has_cryptography():
        pytest.skip('cryptography is not installed')
    monkeypatch.setattr(_x509, 'BACKEND', request.param)
    return request.param


@pytest.fixture(autouse=True)
def fresh_verification_caches(monkeypatch):
    monkeypatch.setattr(_trust, '_verified_windows', {})
    monkeypatch.setattr(_trust, '_trust_stores', {})
    monkeypatch.setattr(_trust, '_refused', {})


# ---------------------------------------------------------------------------------------------
# describe_der


@pytest.mark.skipif(not _x509.has_cryptography(), reason='needs cryptography to compare against')
@pytest.mark.parametrize('file_name', CERTIFICATE_FILES)
def test_both_readers_describe_every_fixture_identically(file_name, monkeypatch):
    for position, certificate in enumerate(ders(file_name)):
        # The cryptography path must really run, not fall back to the DER reader.
        assert _x509._parse_with_cryptography(certificate)['subject']
        monkeypatch.setattr(_x509, 'BACKEND', 'cryptography')
        with_library = _x509.describe_der(certificate, NOW, ['mail.lab.test', '127.0.10.1', 'x.lab.test'])
        monkeypatch.setattr(_x509, 'BACKEND', 'stdlib')
        with_stdlib = _x509.describe_der(certificate, NOW, ['mail.lab.test', '127.0.10.1', 'x.lab.test'])
        assert with_library == with_stdlib, (file_name, position)
        assert with_stdlib['error'] is None
        monkeypatch.setattr(_x509, 'BACKEND', 'cryptography')
        library_spki = _x509.public_key_der(certificate)
        monkeypatch.setattr(_x509, 'BACKEND', 'stdlib')
        assert _x509.public_key_der(certificate) == library_spki
        assert _x509.public_key_summary(library_spki)[0] == with_stdlib['key_type']


def test_rsa_leaf_signed_by_intermediate(backend):
    description = _x509.describe_der(der('leaf-rsa.pem'), NOW, ['mail.lab.test'])
    assert set(description) == set(_x509.DESCRIBE_KEYS)
    assert description == {
        'sha256': description['sha256'],
        'subject': 'CN=mail.lab.test,O=Lab',
        'issuer': 'CN=Lab Intermediate CA,O=Lab',
        'sans': ['DNS:mail.lab.test', 'DNS:smtp.lab.test', 'IP:127.0.10.1', 'IP:::1'],
        'not_before': '2025-06-01T00:00:00Z',
        'not_after': '2035-06-01T00:00:00Z',
        'expired': False,
        'days_left': 3438,
        'self_signed': False,
        'key_type': 'RSA',
        'key_bits': 2048,
        'serial': 'a11ce',
        'signature_algorithm': 'ecdsa-with-SHA384',
        'hostname_match': True,
        'error': None,
    }
    assert len(description['sha256']) == 64 and description['sha256'] == description['sha256'].lower()


@pytest.mark.parametrize('file_name, key_type, key_bits, signature_algorithm, self_signed', [
    ('root-ca.pem', 'RSA', 2048, 'sha256WithRSAEncryption', True),
    ('intermediate-ca.pem', 'EC', 384, 'sha256WithRSAEncryption', False),
    ('leaf-ec.pem', 'EC', 256, 'ecdsa-with-SHA384', False),
    ('selfsigned-ec.pem', 'EC', 256, 'ecdsa-with-SHA256', True),
    ('nosan-rsa.pem', 'RSA', 2048, 'sha256WithRSAEncryption', True),
    ('expired-rsa.pem', 'RSA', 2048, 'sha256WithRSAEncryption', True),
    ('ed25519.pem', 'Ed25519', 256, 'Ed25519', True),
    ('ed448.pem', 'Ed448', 456, 'Ed448', True),
    ('dsa.pem', 'DSA', 2048, 'dsa-with-SHA256', True),
    ('rsa-pss.pem', 'RSA', 2048, 'rsassaPss', True),
    ('ec-p521.pem', 'EC', 521, 'ecdsa-with-SHA512', True),
    ('odd-names.pem', 'EC', 256, 'ecdsa-with-SHA256', True),
    # Same subject and issuer, no key identifiers, signed by another key: self-signed by what it
    # claims, since signatures are not checked (verify_chain is where trust is decided).
    ('self-issued-other-key.pem', 'RSA', 2048, 'sha256WithRSAEncryption', True),
    # Own signature, names equal, but the key identifiers disagree.
    ('aki-mismatch.pem', 'EC', 256, 'ecdsa-with-SHA256', False),
])
def test_key_signature_and_self_signed(backend, file_name, key_type, key_bits, signature_algorithm, self_signed):
    description = _x509.describe_der(der(file_name), NOW)
    assert description['error'] is None
    assert (description['key_type'], description['key_bits']) == (key_type, key_bits)
    assert description['signature_algorithm'] == signature_algorithm
    assert description['self_signed'] is self_signed
    assert description['hostname_match'] is None


def test_self_signed_is_judged_by_names_and_key_identifiers(backend):
    impostor = _x509.describe_der(der('self-issued-other-key.pem'), NOW)
    assert impostor['subject'] == impostor['issuer'] == 'CN=impostor.lab.test,O=Lab'
    assert impostor['self_signed'] is True
    # The rule itself, on fields read from a certificate whose names and key identifiers agree.
    fields = _x509._parse_certificate(der('odd-names.pem'))
    assert fields['subject_key_id'] is not None
    assert fields['subject_key_id'] == fields['authority_key_id']
    assert _x509._render(b'', fields, NOW, None)['self_signed'] is True
    for change, self_signed in (({'authority_key_id': b'other'}, False),
                                ({'authority_key_id': None}, True),          # one identifier: names decide
                                ({'subject_key_id': None, 'authority_key_id': b'other'}, True),
                                ({'issuer': [[('2.5.4.3', 'Someone Else')]]}, False)):
        assert _x509._render(b'', dict(fields, **change), NOW, None)['self_signed'] is self_signed, change


def test_rfc4514_escaping_utf8_multivalued_rdn_and_every_san_kind(backend):
    description = _x509.describe_der(der('odd-names.pem'), NOW)
    assert description['subject'] == ('CN=\\ #odd\\+name\\; \\"x\\"\\ ,emailAddress=postmaster@lab.test,'
                                      'OU=Ops+OU=Mail,O=Lab\\, Inc.,L=Zürich,C=CH')
    assert description['issuer'] == description['subject']
    assert description['sans'] == [
        'DNS:odd.lab.test', 'email:postmaster@lab.test', 'URI:https://lab.test/', 'DirName:CN=dir,O=Lab',
        'RID:1.2.3.4', 'othername:1.3.6.1.5.5.7.8.7', 'IP:2001:db8::25']
    # UTCTime 1950 (the first year it can hold) and GeneralizedTime 2050 (the first it cannot).
    assert description['not_before'] == '1950-01-01T00:00:00Z'
    assert description['not_after'] == '2050-01-01T12:30:45Z'
    assert description['serial'] == format((1 << 158) + 12345, 'x')


def test_expiry_and_days_left(backend):
    certificate = der('expired-rsa.pem')
    description = _x509.describe_der(certificate, NOW)
    assert description['expired'] is True
    assert description['days_left'] == -1826
    at_end = datetime.datetime(2021, 1, 1, tzinfo=UTC)
    assert _x509.describe_der(certificate, at_end)['expired'] is False
    assert _x509.describe_der(certificate, at_end)['days_left'] == 0
    one_second_later = at_end + datetime.timedelta(seconds=1)
    assert _x509.describe_der(certificate, one_second_later)['expired'] is True
    assert _x509.describe_der(certificate, one_second_later)['days_left'] == -1
    # A naive moment is UTC; an aware one in another zone is converted.
    assert _x509.describe_der(certificate, datetime.datetime(2020, 12, 31, 12))['days_left'] == 0
    plus_two = datetime.timezone(datetime.timedelta(hours=2))
    assert _x509.describe_der(certificate, datetime.datetime(2021, 1, 1, 1, tzinfo=plus_two))['expired'] is False
    assert _x509.describe_der(certificate)['expired'] is True  # default: the current time


@pytest.mark.parametrize('names, expected', [
    (None, None), ([], None), (['mail.lab.test'], True), (['MAIL.LAB.TEST.'], True),
    (['other.test', '127.0.10.1'], True), (['[::1]'], True), (['::1'], True), (['127.0.10.2'], False),
    (['lab.test'], False), (['mail.lab.test.evil'], False),
])
def test_hostname_match_in_description(backend, names, expected):
    assert _x509.describe_der(der('leaf-rsa.pem'), NOW, names)['hostname_match'] is expected


def test_wildcard_certificate_and_cn_only_certificate(backend):
    assert _x509.describe_der(der('leaf-ec.pem'), NOW, ['mx.lab.test'])['hostname_match'] is True
    assert _x509.describe_der(der('leaf-ec.pem'), NOW, ['a.b.lab.test'])['hostname_match'] is False
    assert _x509.describe_der(der('leaf-ec.pem'), NOW, ['lab.test'])['hostname_match'] is True
    assert _x509.describe_der(der('nosan-rsa.pem'), NOW, ['nosan.lab.test'])['hostname_match'] is True
    # The IP SAN never stands in for a DNS name, nor the reverse.
    assert _x509.describe_der(der('selfsigned-ec.pem'), NOW, ['127.0.60.1'])['hostname_match'] is True
    assert _x509.describe_der(der('selfsigned-ec.pem'), NOW, ['selfsigned.lab.test'])['hostname_match'] is True


@pytest.mark.skipif(not OPENSSL, reason='needs the openssl command')
@pytest.mark.parametrize('file_name', CERTIFICATE_FILES)
def test_agrees_with_the_openssl_command(backend, file_name):
    """An independent reader: fingerprint, serial and dates as openssl prints them."""
    completed = subprocess.run(
        [OPENSSL, 'x509', '-noout', '-fingerprint', '-sha256', '-serial', '-startdate', '-enddate',
         '-dateopt', 'iso_8601'],
        input=(FIXTURES / file_name).read_bytes(), capture_output=True, check=True)
    fields = dict(line.split('=', 1) for line in completed.stdout.decode().splitlines())
    description = _x509.describe_der(der(file_name), NOW)
    assert fields['sha256 Fingerprint'].replace(':', '').lower() == description['sha256']
    assert int(fields['serial'], 16) == int(description['serial'], 16)
    assert fields['notBefore'].replace(' ', 'T') == description['not_before']
    assert fields['notAfter'].replace(' ', 'T') == description['not_after']


# ---------------------------------------------------------------------------------------------
# Malformed input never raises


def _assert_error_shape(description: dict) -> None:
    assert set(description) == set(_x509.DESCRIBE_KEYS)
    assert isinstance(description['error'], str) and description['error']
    assert all(description[key] is None for key in _x509.DESCRIBE_KEYS if key != 'error')


def test_truncated_der_at_every_length(backend):
    certificate = der('leaf-ec.pem')
    for length in range(len(certificate)):
        _assert_error_shape(_x509.describe_der(certificate[:length], NOW, ['mail.lab.test']))


@pytest.mark.parametrize('blob, fragment', [
    (b'', 'empty'),
    (b'\x30\x80\x00\x00', 'indefinite length'),
    (b'\x30\x81\x05\x02\x01\x01\x02\x01', 'non-minimal length'),
    (b'\x30\x84\xff\xff\xff\xff', 'overrun'),
    (b'\x30\x89' + b'\x01' * 9, 'length of 9 octets'),
    (b'\x1f\x81\x01\x00', 'high tag number'),
    (b'\x02\x01\x01', 'expected tag 0x30'),
])
def test_malformed_der_is_an_error_value(backend, blob, fragment):
    description = _x509.describe_der(blob, NOW)
    _assert_error_shape(description)
    if backend == 'stdlib':
        assert fragment in description['error']


def test_trailing_bytes_and_non_bytes(backend):
    _assert_error_shape(_x509.describe_der(der('leaf-rsa.pem') + b'\x00', NOW))
    for not_bytes in (None, 'text', 42, ['x']):
        _assert_error_shape(_x509.describe_der(not_bytes, NOW))
    _assert_error_shape(_x509.describe_der(b'\x30' * (_x509.MAX_DER_BYTES + 1), NOW))
    assert _x509.describe_der(bytearray(der('leaf-rsa.pem')), NOW)['error'] is None


def test_nesting_depth_is_bounded():
    nested = b'\x05\x00'
    for level in range(_x509.MAX_DER_DEPTH + 3):
        nested = tlv(0x30, nested)
    cursor = _x509._Der(nested)
    with pytest.raises(_x509.DerError, match='nested deeper'):
        for level in range(_x509.MAX_DER_DEPTH + 3):
            cursor = cursor.enter(0x30, 'level')


def test_strict_primitives():
    with pytest.raises(_x509.DerError):
        _x509._decode_integer(b'\x00\x7f', 'n')
    with pytest.raises(_x509.DerError):
        _x509._decode_integer(b'', 'n')
    assert _x509._decode_integer(b'\x00\x80', 'n') == 128
    assert _x509._decode_integer(b'\xff', 'n') == -1
    with pytest.raises(_x509.DerError):
        _x509._decode_oid(b'\x2a\x80\x01', 'oid')
    assert _x509._decode_oid(bytes.fromhex('2a864886f70d01010b'), 'oid') == '1.2.840.113549.1.1.11'
    with pytest.raises(_x509.DerError):
        _x509._decode_bit_string(b'\x08\x00', 'bits')
    with pytest.raises(_x509.DerError):
        _x509._decode_time(0x17, b'2601010000Z', 'time')
    with pytest.raises(_x509.DerError):
        _x509._decode_time(0x17, b'260230000000Z', 'time')
    assert _x509._decode_time(0x17, b'491231235959Z', 't').year == 2049
    assert _x509._decode_time(0x17, b'500101000000Z', 't').year == 1950


FUZZ_FILES = ['leaf-rsa.pem', 'leaf-ec.pem', 'odd-names.pem', 'nosan-rsa.pem', 'ed25519.pem']


def _mutations(original: bytes, rng: random.Random, count: int):
    for mutant in range(count):
        blob = bytearray(original)
        for change in range(rng.randint(1, 4)):
            choice = rng.random()
            position = rng.randrange(len(blob)) if blob else 0
            if choice < 0.4 and blob:
                blob[position] ^= 1 << rng.randrange(8)
            elif choice < 0.55 and blob:
                blob[position] = rng.choice((0x00, 0x80, 0x81, 0x84, 0xff, 0x30, 0x1f))
            elif choice < 0.7:
                blob[position:position] = bytes(rng.randrange(256) for inserted in range(rng.randint(1, 8)))
            elif choice < 0.85 and blob:
                del blob[position:position + rng.randint(1, 16)]
            else:
                blob = blob[:position]
        yield bytes(blob)


@pytest.mark.parametrize('file_name', FUZZ_FILES)
def test_random_mutations_never_raise(backend, file_name):
    rng = random.Random(f'{file_name}-{backend}')
    parsed = 0
    for blob in _mutations(der(file_name), rng, 300):
        description = _x509.describe_der(blob, NOW, ['mail.lab.test', '127.0.10.1'])
        assert set(description) == set(_x509.DESCRIBE_KEYS)
        if description['error'] is None:
            parsed += 1
            assert isinstance(description['sha256'], str) and isinstance(description['days_left'], int)
            assert isinstance(description['sans'], list) and isinstance(description['hostname_match'], bool)
        else:
            _assert_error_shape(description)
    # Flips inside signatures and names still parse; the mutations are not all rejected up front.
    assert parsed > 0


# ---------------------------------------------------------------------------------------------
# Public keys, as _certs compares a key file with its certificate


def compressed_ec_spki(spki: bytes, flip_parity: bool = False) -> bytes:
    """The same SubjectPublicKeyInfo with its point in compressed form (X9.62 02/03 || x)."""
    outer = _x509._Der(spki).enter(0x30, 'spki')
    algorithm_at = outer.pos
    outer.next('algorithm')
    algorithm = spki[algorithm_at:outer.pos]
    point = outer.take(0x03, 'key')[1:]
    assert point[0] == 4
    x = point[1:1 + (len(point) - 1) // 2]
    prefix = 2 | ((point[-1] & 1) ^ flip_parity)
    return tlv(0x30, algorithm + tlv(0x03, b'\x00' + bytes([prefix]) + x))


@pytest.mark.parametrize('file_name, bits', [('leaf-ec.pem', 256), ('intermediate-ca.pem', 384), ('ec-p521.pem', 521)])
def test_compressed_and_uncompressed_ec_points_are_the_same_key(backend, file_name, bits):
    spki = _x509.public_key_der(der(file_name))
    compressed = compressed_ec_spki(spki)
    if _x509.has_cryptography():  # the hand-made encoding is the same key to an independent reader
        from cryptography.hazmat.primitives.serialization import load_der_public_key  # pylint: disable=import-outside-toplevel
        assert load_der_public_key(compressed).public_numbers() == load_der_public_key(spki).public_numbers()
    summary = _x509.public_key_summary(spki)
    assert summary[:2] == _x509.public_key_summary(compressed)[:2] == ('EC', bits)
    assert _x509.public_key_summary(compressed)[2] == summary[2]
    # The other point with this x, and another key on the same curve, are different keys.
    assert _x509.public_key_summary(compressed_ec_spki(spki, flip_parity=True))[2] != summary[2]
    if file_name == 'leaf-ec.pem':
        assert _x509.public_key_summary(_x509.public_key_der(der('selfsigned-ec.pem')))[2] != summary[2]


def test_public_key_helpers_on_bad_input():
    assert _x509.public_key_der(b'junk') is None
    assert _x509.public_key_summary(b'junk') == (None, None, None)
    rsa = _x509.public_key_summary(_x509.public_key_der(der('leaf-rsa.pem')))
    assert rsa[:2] == ('RSA', 2048) and rsa[2][0] == 'RSA' and rsa[2][2] == 65537


# ---------------------------------------------------------------------------------------------
# PEM


def test_pem_to_der_list_takes_every_certificate_block():
    chain = ders('leaf-rsa-fullchain.pem')
    assert len(chain) == 2
    assert chain[1] == der('intermediate-ca.pem')
    combined = ders('combined.pem')  # key first, then two certificates
    assert combined == chain
    text = (FIXTURES / 'combined.pem').read_text()
    assert _x509.pem_to_der_list(text.replace('\n', '\r\n')) == chain
    assert _x509.pem_to_der_list(text.encode()) == chain
    assert _x509.pem_to_der_list('no pem here') == []
    assert _x509.pem_to_der_list(None) == []


def test_pem_blocks_report_bad_base64_and_keep_going():
    blocks = _x509.pem_blocks((FIXTURES / 'garbage.pem').read_text() + (FIXTURES / 'leaf-rsa.pem').read_text())
    assert [block['label'] for block in blocks] == ['CERTIFICATE'] * 3
    assert blocks[0]['der'] is None and 'base64' in blocks[0]['error']
    assert blocks[1]['der'] == b'\x30\x03\x02\x01\x01' and blocks[1]['line'] == 4
    assert blocks[2]['der'] == der('leaf-rsa.pem')
    # A block without its END line does not swallow the next one.
    broken = '-----BEGIN CERTIFICATE-----\nAAAA\n' + (FIXTURES / 'leaf-rsa.pem').read_text()
    assert _x509.pem_to_der_list(broken) == [der('leaf-rsa.pem')]
    legacy = _x509.pem_blocks((FIXTURES / 'leaf-rsa-encrypted-legacy.key').read_text())[0]
    assert legacy['label'] == 'RSA PRIVATE KEY' and legacy['headers']['Proc-Type'] == '4,ENCRYPTED'


# ---------------------------------------------------------------------------------------------
# RFC 6125 names


@pytest.mark.parametrize('sans, cn, name, expected', [
    (['DNS:mail.example.org'], None, 'mail.example.org', True),
    (['DNS:mail.example.org'], None, 'MAIL.Example.ORG.', True),
    (['DNS:*.example.org'], None, 'mail.example.org', True),
    (['DNS:*.example.org'], None, 'example.org', False),
    (['DNS:*.example.org'], None, 'a.b.example.org', False),
    (['DNS:*.example.org'], None, '.example.org', False),
    (['DNS:m*.example.org'], None, 'mail.example.org', False),   # partial wildcards: no
    (['DNS:mail.*.org'], None, 'mail.example.org', False),       # not left-most: no
    (['DNS:*.*.example.org'], None, 'a.b.example.org', False),
    (['DNS:*.org'], None, 'example.org', False),                 # needs two labels after '*'
    (['DNS:*'], None, 'localhost', False),
    (['DNS:other.org', 'DNS:*.example.org'], None, 'smtp.example.org', True),
    (['DNS:other.org'], 'mail.example.org', 'mail.example.org', False),  # CN ignored when DNS SANs exist
    ([], 'mail.example.org', 'mail.example.org', True),
    ([], '*.example.org', 'mail.example.org', True),
    (['IP:192.0.2.1'], 'mail.example.org', 'mail.example.org', True),    # IP SANs do not hide the CN
    (['IP:192.0.2.1'], None, '192.0.2.1', True),
    (['DNS:192.0.2.1'], None, '192.0.2.1', False),               # an IP literal needs an IP SAN
    ([], '192.0.2.1', '192.0.2.1', False),
    (['IP:2001:db8::1'], None, '[2001:DB8:0::1]', True),
    (['IP:2001:db8::1'], None, '2001:db8::2', False),
    (['DNS:xn--bcher-kva.example'], None, 'bücher.example', True),
    (['DNS:mail.example.org'], None, '', False),
    (['DNS:mail.example.org'], None, 'mail..example.org', False),
])
def test_hostname_matches(sans, cn, name, expected):
    assert _x509.hostname_matches(sans, cn, name) is expected


def test_hostname_matches_tolerates_junk():
    assert _x509.hostname_matches(None, None, 'a.example') is False
    assert _x509.hostname_matches(['DNS:a.example', None, 7], None, 'a.example') is True
    assert _x509.hostname_matches(['DNS:a.example'], None, None) is False


# ---------------------------------------------------------------------------------------------
# verify_chain


@pytest.fixture(params=['cryptography', 'openssl'])
def verifier(request, monkeypatch):
    if request.param == 'cryptography':
        if not _x509.has_cryptography_verification():
            pytest.skip('cryptography >= 42 is not installed')
        monkeypatch.setattr(_x509, 'BACKEND', 'cryptography')
    else:
        if not OPENSSL:
            pytest.skip('no openssl command')
        monkeypatch.setattr(_x509, 'BACKEND', 'stdlib')
    return request.param


ROOT = str(FIXTURES / 'root-ca.pem')


def test_chain_to_the_given_anchor_verifies(verifier, tmp_path):
    assert _trust.verify_chain(ders('leaf-rsa-fullchain.pem'), ca_file=ROOT, at=NOW) == (True, None)
    # A wildcard-only leaf is checked against a concrete name under its wildcard.
    assert _trust.verify_chain([der('leaf-ec.pem'), der('intermediate-ca.pem')], ca_file=ROOT, at=NOW) == (True, None)
    # Anchors from a hash directory (openssl -CApath finds them by subject hash).
    shutil.copy(ROOT, tmp_path / 'root-ca.pem')
    if OPENSSL:
        subprocess.run([OPENSSL, 'rehash', str(tmp_path)], check=True, capture_output=True)
    assert _trust.verify_chain(ders('leaf-rsa-fullchain.pem'), ca_path=str(tmp_path), at=NOW) == (True, None)


@pytest.mark.parametrize('chain, at, fragment', [
    (['leaf-rsa.pem'], NOW, ''),                                        # intermediate not presented
    (['leaf-rsa-fullchain.pem'], datetime.datetime(2036, 1, 1, tzinfo=UTC), ''),  # leaf expired then
    (['selfsigned-ec.pem'], NOW, ''),                                   # not under this anchor
    (['nosan-rsa.pem'], NOW, 'no DNS or IP subjectAltName'),
])
def test_chains_that_do_not_verify(verifier, chain, at, fragment):
    chain_der = [certificate for file_name in chain for certificate in ders(file_name)]
    verified, reason = _trust.verify_chain(chain_der, ca_file=ROOT, at=at)
    assert verified is False
    assert isinstance(reason, str) and fragment in reason


def test_verify_chain_reasons_are_readable(verifier):
    verified, reason = _trust.verify_chain([der('leaf-rsa.pem')], ca_file=ROOT, at=NOW)
    if verifier == 'cryptography':
        assert 'CN=Lab Intermediate CA,O=Lab' in reason
    else:
        assert 'unable to get local issuer certificate' in reason
    verified, reason = _trust.verify_chain(ders('leaf-rsa-fullchain.pem'), ca_file=ROOT,
                                           at=datetime.datetime(2036, 1, 1, tzinfo=UTC))
    assert 'expired' in reason or 'not valid at validation time' in reason


def test_self_signed_certificate_as_its_own_anchor(verifier):
    anchor = str(FIXTURES / 'selfsigned-ec.pem')
    assert _trust.verify_chain([der('selfsigned-ec.pem')], ca_file=anchor, at=NOW) == (True, None)


def test_bad_input_to_verify_chain(verifier):
    assert _trust.verify_chain([], ca_file=ROOT) == (None, 'no certificate to verify')
    verified, reason = _trust.verify_chain([b'\x30\x03\x02\x01\x01'], ca_file=ROOT, at=NOW)
    assert verified is False and reason
    verified, reason = _trust.verify_chain([der('leaf-rsa.pem'), b'junk'], ca_file=ROOT, at=NOW)
    assert verified is False and reason
    verified, reason = _trust.verify_chain(ders('leaf-rsa-fullchain.pem'), ca_file='/nonexistent/ca.pem', at=NOW)
    assert verified is None and '/nonexistent/ca.pem' in reason


def test_verified_chains_are_reused_inside_their_validity_window(verifier, monkeypatch):
    chain = ders('leaf-rsa-fullchain.pem')
    assert _trust.verify_chain(chain, ca_file=ROOT, at=NOW) == (True, None)

    def must_not_run(*args, **kwargs):
        raise AssertionError('verified again')

    monkeypatch.setattr(_trust, '_verify_with_cryptography', must_not_run)
    monkeypatch.setattr(_trust, '_verify_with_openssl', must_not_run)
    assert _trust.verify_chain(chain, ca_file=ROOT, at=NOW + datetime.timedelta(days=300)) == (True, None)
    # Outside the window the chain is checked again (and here the check itself is refused).
    verified, reason = _trust.verify_chain(chain, ca_file=ROOT, at=datetime.datetime(2036, 1, 1, tzinfo=UTC))
    assert verified is None and 'verified again' in reason


@pytest.mark.skipif(not _x509.has_cryptography_verification(), reason='needs cryptography >= 42')
def test_trust_store_is_loaded_once_per_process(monkeypatch):
    reads = []
    original = _trust._read_trust_certificates

    def counting(ca_file, ca_path):
        reads.append((ca_file, ca_path))
        return original(ca_file, ca_path)

    monkeypatch.setattr(_trust, '_read_trust_certificates', counting)
    monkeypatch.setattr(_x509, 'BACKEND', 'cryptography')
    for attempt in range(5):
        _trust.verify_chain(ders('leaf-rsa-fullchain.pem'), at=NOW)   # system store: our root is not in it
        _trust.verify_chain(ders('leaf-rsa-fullchain.pem'), ca_file=ROOT, at=NOW)
    assert len(reads) == 2 and set(reads) == {(None, None), (ROOT, None)}


def negative_serial(certificate: bytes) -> bytes:
    """The certificate with the top bit of its serial number set: still DER, now negative."""
    tbs = _x509._Der(certificate).enter(0x30, 'certificate').enter(0x30, 'tbs')
    if tbs.peek() == 0xa0:
        tbs.next('version')
    start = tbs.expect(0x02, 'serial')[0]
    assert certificate[start] < 0x7f
    patched = bytearray(certificate)
    patched[start] |= 0x80
    return bytes(patched)


@pytest.mark.skipif(not _x509.has_cryptography_verification(), reason='needs cryptography >= 42')
def test_trust_store_skips_odd_anchors_without_warnings(monkeypatch, tmp_path):
    """System bundles hold CAs that cryptography warns about or refuses; neither may reach the user."""
    monkeypatch.setattr(_x509, 'BACKEND', 'cryptography')
    odd = negative_serial(der('selfsigned-ec.pem'))
    bundle = tmp_path / 'bundle.pem'
    # Undecodable base64, a DER that is not a certificate, a negative serial, then the real anchor.
    bundle.write_text((FIXTURES / 'garbage.pem').read_text() + _x509._der_to_pem(odd)
                      + (FIXTURES / 'root-ca.pem').read_text())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert _trust.verify_chain(ders('leaf-rsa-fullchain.pem'), ca_file=str(bundle), at=NOW) == (True, None)
        # The same certificate described or presented warns no more than as an anchor.
        assert _x509.describe_der(odd, NOW)['serial'].startswith('-')
        assert _x509.public_key_der(odd) == _x509.public_key_der(der('selfsigned-ec.pem'))
        verified, reason = _trust.verify_chain([odd], ca_file=ROOT, at=NOW)
        assert verified is False and reason
    assert [str(warning.message) for warning in caught] == []


def test_no_verifier_at_all(monkeypatch):
    monkeypatch.setattr(_x509, 'BACKEND', 'stdlib')
    monkeypatch.setattr(_trust, '_openssl_command', [None])
    verified, reason = _trust.verify_chain(ders('leaf-rsa-fullchain.pem'), ca_file=ROOT, at=NOW)
    assert verified is None and 'openssl' in reason


def test_verification_name_comes_from_the_leaf():
    assert _trust._verification_subject_from_sans(['email:a@b', 'IP:192.0.2.7', 'DNS:a.example']) == ('ip', '192.0.2.7')
    assert _trust._verification_subject_from_sans(['DNS:*.example.org']) == ('dns', 'wildcard-check.example.org')
    assert _trust._verification_subject_from_sans(['URI:https://example.org/']) is None


def test_module_imports_without_optional_parts(tmp_path):
    """The module must import where cryptography is absent (the managed host's Python)."""
    import sys  # pylint: disable=import-outside-toplevel
    code = ('import sys, builtins\n'
            'real = builtins.__import__\n'
            'def fake(name, *a, **k):\n'
            '    if name.startswith("cryptography"):\n'
            '        raise ImportError(name)\n'
            '    return real(name, *a, **k)\n'
            'builtins.__import__ = fake\n'
            'from ansible_collections.mailsec.starttls.plugins.module_utils import _x509\n'
            'assert not _x509.has_cryptography()\n'
            'print(_x509.describe_der(open(sys.argv[1], "rb").read())["error"])\n')
    certificate_file = tmp_path / 'leaf-rsa.der'
    certificate_file.write_bytes(der('leaf-rsa.pem'))
    completed = subprocess.run([sys.executable, '-c', code, str(certificate_file)], capture_output=True, check=False,
                               env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert completed.returncode == 0, completed.stderr.decode()
    assert completed.stdout.decode().strip() == 'None'
