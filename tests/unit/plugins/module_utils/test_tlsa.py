# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""DANE TLSA digests, record checks, matching, zone lines and the next-key lineages."""

from __future__ import annotations

import datetime
import hashlib
import os

import pytest

from ansible_collections.mailsec.starttls.plugins.module_utils import _tlsa

cryptography = pytest.importorskip('cryptography')
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402


def make_key():
    return ec.generate_private_key(ec.SECP256R1())


def make_cert(subject_key, name, issuer_key=None, issuer_name=None, ca=False):
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name or name)]))
               .public_key(subject_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=90))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
    return builder.sign(issuer_key or subject_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def spki_der(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope='module')
def chain():
    ca_key, leaf_key = make_key(), make_key()
    ca = make_cert(ca_key, 'Test CA', ca=True)
    leaf = make_cert(leaf_key, 'mx1.example.test', issuer_key=ca_key, issuer_name='Test CA')
    return {'ca_key': ca_key, 'leaf_key': leaf_key, 'ca': ca, 'leaf': leaf,
            'digests': _tlsa.chain_digests([leaf, ca])}


def test_certificate_digests_are_those_of_the_certificate_and_its_key(chain):
    leaf = chain['digests'][0]
    assert leaf['cert_sha256'] == hashlib.sha256(chain['leaf']).hexdigest()
    assert leaf['cert_sha512'] == hashlib.sha512(chain['leaf']).hexdigest()
    assert leaf['spki_sha256'] == hashlib.sha256(spki_der(chain['leaf_key'])).hexdigest()
    assert leaf['spki_sha512'] == hashlib.sha512(spki_der(chain['leaf_key'])).hexdigest()
    assert chain['digests'][1]['spki_sha256'] == hashlib.sha256(spki_der(chain['ca_key'])).hexdigest()


@pytest.mark.parametrize('text, problem', [
    ('3 1 1 ' + 'ab' * 32, None),
    ('2 0 2 ' + 'AB' * 64, None),
    ('1 1 1 ' + 'ab' * 32, 'unusable for SMTP'),
    ('0 0 1 ' + 'ab' * 32, 'unusable for SMTP'),
    ('3 2 1 ' + 'ab' * 32, 'selector 2'),
    ('3 1 3 ' + 'ab' * 32, 'matching type 3'),
    ('3 1 1 ' + 'ab' * 31, 'needs 32 bytes'),
    ('3 1 2 ' + 'ab' * 32, 'needs 64 bytes'),
    ('3 1 1 zz', 'not hexadecimal'),
    ('3 1', 'not a TLSA record'),
])
def test_record_problems(text, problem):
    record = _tlsa.parse_record(text)
    if problem is None:
        assert record['problem'] is None
    else:
        assert problem in record['problem']


def test_matching_every_selector_and_matching_type(chain):
    leaf_key_spki = spki_der(chain['leaf_key'])
    good = [
        f'3 1 1 {hashlib.sha256(leaf_key_spki).hexdigest()}',
        f'3 1 2 {hashlib.sha512(leaf_key_spki).hexdigest()}',
        f'3 0 1 {hashlib.sha256(chain["leaf"]).hexdigest()}',
        f'3 0 0 {chain["leaf"].hex()}',
        f'3 1 0 {leaf_key_spki.hex()}',
        f'2 1 1 {hashlib.sha256(spki_der(chain["ca_key"])).hexdigest()}',
        f'2 0 1 {hashlib.sha256(chain["ca"]).hexdigest()}',
    ]
    for text in good:
        record = _tlsa.parse_record(text)
        assert _tlsa.match_chain([record], chain['digests']) == [record], text
    # DANE-TA names the issuer: it does not match the leaf, and DANE-EE does not match the CA.
    wrong = [
        f'2 1 1 {hashlib.sha256(leaf_key_spki).hexdigest()}',
        f'3 1 1 {hashlib.sha256(spki_der(chain["ca_key"])).hexdigest()}',
        f'3 1 1 {hashlib.sha256(spki_der(make_key())).hexdigest()}',
        f'1 1 1 {hashlib.sha256(leaf_key_spki).hexdigest()}',
    ]
    for text in wrong:
        assert _tlsa.match_chain([_tlsa.parse_record(text)], chain['digests']) == [], text


def test_match_key_only_takes_dane_ee_spki(chain):
    key = _tlsa.spki_digests(spki_der(chain['leaf_key']))
    spki_record = _tlsa.parse_record(f'3 1 1 {key["spki_sha256"]}')
    cert_record = _tlsa.parse_record(f'3 0 1 {hashlib.sha256(chain["leaf"]).hexdigest()}')
    assert _tlsa.match_key([spki_record, cert_record], key) == [spki_record]


def test_zone_lines(chain):
    lines = _tlsa.zone_lines(_tlsa.tlsa_owner('mx1.example.test'), chain['digests'][0], ttl=3600, comment='now')
    assert lines == ['; now', f'_25._tcp.mx1.example.test. 3600 IN TLSA 3 1 1 {chain["digests"][0]["spki_sha256"].upper()}']
    # What the lines say is what matching accepts.
    record = _tlsa.parse_record(lines[-1].split('TLSA ', 1)[1])
    assert _tlsa.match_chain([record], chain['digests']) == [record]
    assert _tlsa.zone_lines('x.', {}) == []


def pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load(pem_text):
    key = serialization.load_pem_private_key(pem_text.encode('latin-1'), None)
    return spki_der(key), False, None


def test_certbot_lineage_staged_and_reuse_key(tmp_path):
    root = tmp_path / 'letsencrypt'
    (root / 'archive' / 'mx1').mkdir(parents=True)
    (root / 'live' / 'mx1').mkdir(parents=True)
    (root / 'renewal').mkdir()
    current, staged = make_key(), make_key()
    (root / 'archive' / 'mx1' / 'privkey1.pem').write_bytes(pem_key(current))
    (root / 'archive' / 'mx1' / 'privkey2.pem').write_bytes(pem_key(staged))
    os.symlink('../../archive/mx1/privkey1.pem', root / 'live' / 'mx1' / 'privkey.pem')
    certificate = str(root / 'live' / 'mx1' / 'fullchain.pem')
    (root / 'renewal' / 'mx1.conf').write_text('version = 2.1.0\n[renewalparams]\nreuse_key = False\n')
    found = _tlsa.next_keys([certificate], [], load, layouts=True)
    assert [(entry['source'], os.path.basename(entry['path'])) for entry in found] == [('certbot', 'privkey2.pem')]
    assert found[0]['spki_sha256'] == hashlib.sha256(spki_der(staged)).hexdigest()
    assert found[0]['for_certificate'] == certificate
    # Without a staged key and without reuse_key, the next key is unknown.
    (root / 'archive' / 'mx1' / 'privkey2.pem').unlink()
    found = _tlsa.next_keys([certificate], [], load, layouts=True)
    assert found[0]['unknown_next_key'] is True and found[0]['path'] is None
    # reuse_key keeps the current key: that one is the next key.
    (root / 'renewal' / 'mx1.conf').write_text('[renewalparams]\nreuse_key = True\n')
    found = _tlsa.next_keys([certificate], [], load, layouts=True)
    assert found[0]['reuse_key'] is True
    assert found[0]['spki_sha256'] == hashlib.sha256(spki_der(current)).hexdigest()
    # Layouts off: nothing but the user's patterns.
    assert _tlsa.next_keys([certificate], [], load, layouts=False) == []


def test_acme_sh_lineage(tmp_path):
    home = tmp_path / '.acme.sh'
    domain_dir = home / 'mx1.example.test_ecc'
    domain_dir.mkdir(parents=True)
    key = make_key()
    (domain_dir / 'mx1.example.test.key').write_bytes(pem_key(key))
    installed = tmp_path / 'etc' / 'mx1.pem'
    installed.parent.mkdir()
    installed.write_text('not read')
    (domain_dir / 'mx1.example.test.conf').write_text(f"Le_Domain='mx1.example.test'\nLe_RealFullChainPath='{installed}'\n")
    found = _tlsa.next_keys([str(installed)], [], load, layouts=True, acme_homes=[str(home)])
    assert found[0]['source'] == 'acme.sh' and found[0]['reuse_key'] is True
    assert found[0]['spki_sha256'] == hashlib.sha256(spki_der(key)).hexdigest()
    (domain_dir / 'mx1.example.test.conf').write_text(
        f"Le_RealFullChainPath='{installed}'\nLe_ForceNewDomainKey='1'\n")
    found = _tlsa.next_keys([str(installed)], [], load, layouts=True, acme_homes=[str(home)])
    assert found[0]['unknown_next_key'] is True


def test_user_patterns_and_hostile_files(tmp_path):
    key = make_key()
    (tmp_path / 'next.key').write_bytes(pem_key(key))
    (tmp_path / 'big.key').write_bytes(b'x' * (_tlsa.KEY_FILE_LIMIT + 1))
    (tmp_path / 'empty.key').write_bytes(b'')
    os.mkfifo(tmp_path / 'fifo.key')
    found = {os.path.basename(entry['path']): entry for entry in
             _tlsa.next_keys([], [str(tmp_path / '*.key')], load)}
    assert found['next.key']['spki_sha256'] == hashlib.sha256(spki_der(key)).hexdigest()
    assert 'larger than' in found['big.key']['error']
    assert 'no PEM private key' in found['empty.key']['error']
    assert found['fifo.key']['error'] == 'not a regular file'
    assert all(entry['source'] == 'user' for entry in found.values())
