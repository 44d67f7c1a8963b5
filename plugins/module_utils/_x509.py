# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a certificate says about itself, and whether a presented chain verifies.

Runs on the managed host's Python (3.8+) with the standard library alone: pure parsing and
naming, no file or subprocess I/O (trust stores and the `openssl` command are in `_trust`).
`cryptography`, when asked for (BACKEND), parses the certificate instead of the built-in DER
reader; both paths feed the same renderer so the description is identical whichever one ran.

Public entry points: `describe_der`, `pem_to_der_list`, `pem_blocks`, `hostname_matches`,
`public_key_der`, `public_key_summary` (`_trust.verify_chain` checks a chain). None of them raises
on bad input: failures come back as values.

No signature is checked here (`_trust.verify_chain` does, by the openssl command or cryptography):
pure-Python public-key arithmetic would be slow and a lot of code to keep correct.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime
import hashlib
import ipaddress
import re
import warnings


class Cryptography:
    """The parts of `cryptography` this collection uses, imported on first use.

    Importing it costs about 60 ms of CPU, more than a small host's whole inspection, and the
    standard library and the `openssl` command answer the same questions; so nothing imports it at
    module load. `load()` tries once per process; after it the attributes are the modules (or None).
    """

    tried = False
    available = False
    x509 = serialization = dsa = ec = ed448 = ed25519 = rsa = None
    verification = None  # cryptography >= 42 only

    @classmethod
    def load(cls) -> bool:
        if not cls.tried:
            cls.tried = True
            try:
                from cryptography import x509 as cx509
                from cryptography.hazmat.primitives import serialization
                from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
                cls.x509, cls.serialization, cls.dsa, cls.ec = cx509, serialization, dsa, ec
                cls.ed448, cls.ed25519, cls.rsa = ed448, ed25519, rsa
                cls.available = True
            except Exception:  # ImportError, and also half-installed wheels whose Rust part fails to load
                cls.available = False
            if cls.available:
                try:
                    from cryptography.x509 import verification
                    cls.verification = verification
                except Exception:  # cryptography < 42 has no path validation
                    cls.verification = None
        return cls.available


def has_cryptography() -> bool:
    """Whether `cryptography` can be imported (imports it)."""
    return Cryptography.load()


def has_cryptography_verification() -> bool:
    """Whether `cryptography` >= 42 (path validation) can be imported (imports it)."""
    return Cryptography.load() and Cryptography.verification is not None


# Which implementation parses certificates and checks keys and chains: 'auto' (the DER reader; the
# `openssl` command for keys and chains until `cryptography` pays for its import, see
# _trust.library_for_checks), 'stdlib' (never `cryptography`) or 'cryptography'. Tests flip it to
# prove that every path gives the same answer; `_certs` and `_trust` follow it too.
BACKEND = 'auto'

DESCRIBE_KEYS = (
    'sha256', 'subject', 'issuer', 'sans', 'not_before', 'not_after', 'expired', 'days_left',
    'self_signed', 'key_type', 'key_bits', 'serial', 'signature_algorithm', 'hostname_match', 'error',
)

# Certificates are a few KiB; anything this large is not one, and parsing it only costs memory.
MAX_DER_BYTES = 1 << 20
# X.509 needs about eight levels (Certificate/tbs/extensions/extension/SAN/DirName/RDN/ATV).
MAX_DER_DEPTH = 16
MAX_OID_BYTES = 64

UTC = datetime.timezone.utc


def use_cryptography() -> bool:
    """True when certificate parsing should go through `cryptography`: only when asked for, since
    the DER reader gives the same description without the import."""
    if BACKEND != 'cryptography':
        return False
    return Cryptography.load()


# ---------------------------------------------------------------------------------------------
# Vocabulary (facts from RFC 4514, RFC 5280, RFC 8017, RFC 5758, RFC 8410)

# RFC 4514 section 3 short names; the rest get the names OpenSSL users know.
ATTRIBUTE_NAMES = {
    '2.5.4.3': 'CN',
    '2.5.4.7': 'L',
    '2.5.4.8': 'ST',
    '2.5.4.10': 'O',
    '2.5.4.11': 'OU',
    '2.5.4.6': 'C',
    '2.5.4.9': 'STREET',
    '0.9.2342.19200300.100.1.25': 'DC',
    '0.9.2342.19200300.100.1.1': 'UID',
    '2.5.4.5': 'serialNumber',
    '1.2.840.113549.1.9.1': 'emailAddress',
}
OID_COMMON_NAME = '2.5.4.3'

SIGNATURE_ALGORITHM_NAMES = {
    '1.2.840.113549.1.1.4': 'md5WithRSAEncryption',
    '1.2.840.113549.1.1.5': 'sha1WithRSAEncryption',
    '1.2.840.113549.1.1.14': 'sha224WithRSAEncryption',
    '1.2.840.113549.1.1.11': 'sha256WithRSAEncryption',
    '1.2.840.113549.1.1.12': 'sha384WithRSAEncryption',
    '1.2.840.113549.1.1.13': 'sha512WithRSAEncryption',
    '1.2.840.113549.1.1.10': 'rsassaPss',
    '1.2.840.10045.4.1': 'ecdsa-with-SHA1',
    '1.2.840.10045.4.3.1': 'ecdsa-with-SHA224',
    '1.2.840.10045.4.3.2': 'ecdsa-with-SHA256',
    '1.2.840.10045.4.3.3': 'ecdsa-with-SHA384',
    '1.2.840.10045.4.3.4': 'ecdsa-with-SHA512',
    '1.3.101.112': 'Ed25519',
    '1.3.101.113': 'Ed448',
    '1.2.840.10040.4.3': 'dsa-with-SHA1',
    '2.16.840.1.101.3.4.3.1': 'dsa-with-SHA224',
    '2.16.840.1.101.3.4.3.2': 'dsa-with-SHA256',
}

KEY_ALGORITHMS = {
    '1.2.840.113549.1.1.1': 'RSA',
    '1.2.840.113549.1.1.10': 'RSA',  # RSASSA-PSS restricted key: still an RSA key
    '1.2.840.10045.2.1': 'EC',
    '1.3.101.112': 'Ed25519',
    '1.3.101.113': 'Ed448',
    '1.2.840.10040.4.1': 'DSA',
}
# Size of the encoded public key, the figure OpenSSL prints for Ed448 (456) and that we use for
# Ed25519 too (256) so that both EdDSA curves follow one rule.
EDDSA_KEY_BITS = {'Ed25519': 256, 'Ed448': 456}

CURVE_BITS = {
    '1.2.840.10045.3.1.1': 192,   # P-192
    '1.3.132.0.33': 224,          # P-224
    '1.2.840.10045.3.1.7': 256,   # P-256
    '1.3.132.0.34': 384,          # P-384
    '1.3.132.0.35': 521,          # P-521
    '1.3.132.0.10': 256,          # secp256k1
    '1.3.36.3.3.2.8.1.1.7': 256,  # brainpoolP256r1
    '1.3.36.3.3.2.8.1.1.11': 384,  # brainpoolP384r1
    '1.3.36.3.3.2.8.1.1.13': 512,  # brainpoolP512r1
}

OID_SUBJECT_ALT_NAME = '2.5.29.17'
OID_SUBJECT_KEY_IDENTIFIER = '2.5.29.14'
OID_AUTHORITY_KEY_IDENTIFIER = '2.5.29.35'


# ---------------------------------------------------------------------------------------------
# A strict, bounded DER reader

class DerError(ValueError):
    """The bytes are not the DER this module expects; the message says where."""


_TAG_BOOLEAN = 0x01
_TAG_INTEGER = 0x02
_TAG_BIT_STRING = 0x03
_TAG_OCTET_STRING = 0x04
_TAG_OID = 0x06
_TAG_UTC_TIME = 0x17
_TAG_GENERALIZED_TIME = 0x18
_TAG_SEQUENCE = 0x30
_TAG_SET = 0x31

# Directory string types and how to decode them (X.520). PrintableString and IA5String are
# decoded leniently as Latin-1: real certificates put '*' and '_' into PrintableString.
_STRING_DECODERS = {
    0x0c: 'utf-8',      # UTF8String
    0x13: 'latin-1',    # PrintableString
    0x16: 'latin-1',    # IA5String
    0x14: 'latin-1',    # TeletexString (T61); Latin-1 is what every reader does in practice
    0x1a: 'latin-1',    # VisibleString
    0x12: 'latin-1',    # NumericString
    0x1e: 'utf-16-be',  # BMPString
    0x1c: 'utf-32-be',  # UniversalString
}


class _Der:
    """A cursor over one level of DER content: data[pos:end] at nesting `depth`."""

    __slots__ = ('data', 'pos', 'end', 'depth', 'what')

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None, depth: int = 0,
                 what: str = 'input') -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end
        self.depth = depth
        self.what = what

    def at_end(self) -> bool:
        return self.pos >= self.end

    def peek(self) -> int | None:
        return None if self.pos >= self.end else self.data[self.pos]

    def next(self, what: str) -> tuple[int, int, int]:
        """Read one TLV: (tag, content start, content end); advance past it."""
        data, pos, end = self.data, self.pos, self.end
        if pos >= end:
            raise DerError(f'{what}: missing (end of {self.what} at byte {pos})')
        tag = data[pos]
        if tag & 0x1f == 0x1f:
            raise DerError(f'{what}: high tag number form at byte {pos} (not used by X.509)')
        if pos + 2 > end:
            raise DerError(f'{what}: truncated header at byte {pos}')
        first = data[pos + 1]
        header = 2
        if first < 0x80:
            length = first
        elif first == 0x80:
            raise DerError(f'{what}: indefinite length at byte {pos} (not DER)')
        else:
            count = first & 0x7f
            if count > 4:
                raise DerError(f'{what}: length of {count} octets at byte {pos}')
            if pos + 2 + count > end:
                raise DerError(f'{what}: truncated length at byte {pos}')
            length = int.from_bytes(data[pos + 2:pos + 2 + count], 'big')
            if data[pos + 2] == 0 or length < 0x80:
                raise DerError(f'{what}: non-minimal length at byte {pos} (not DER)')
            header += count
        start = pos + header
        stop = start + length
        if stop > end:
            raise DerError(f'{what}: {length} content bytes at byte {pos} overrun {self.what} '
                           f'(ends at byte {end})')
        self.pos = stop
        return tag, start, stop

    def expect(self, tag: int, what: str) -> tuple[int, int]:
        at = self.pos
        found, start, stop = self.next(what)
        if found != tag:
            raise DerError(f'{what}: expected tag 0x{tag:02x}, found 0x{found:02x} at byte {at}')
        return start, stop

    def take(self, tag: int, what: str) -> bytes:
        start, stop = self.expect(tag, what)
        return self.data[start:stop]

    def enter(self, tag: int, what: str) -> _Der:
        if self.depth + 1 > MAX_DER_DEPTH:
            raise DerError(f'{what}: nested deeper than {MAX_DER_DEPTH} levels')
        start, stop = self.expect(tag, what)
        return _Der(self.data, start, stop, self.depth + 1, what)

    def done(self) -> None:
        if self.pos != self.end:
            raise DerError(f'{self.what}: {self.end - self.pos} unexpected bytes at byte {self.pos}')


def _decode_integer(content: bytes, what: str) -> int:
    if not content:
        raise DerError(f'{what}: empty INTEGER')
    if len(content) > 1 and ((content[0] == 0 and content[1] < 0x80)
                             or (content[0] == 0xff and content[1] >= 0x80)):
        raise DerError(f'{what}: non-minimal INTEGER (not DER)')
    return int.from_bytes(content, 'big', signed=True)


def _decode_boolean(content: bytes, what: str) -> bool:
    if content == b'\x00':
        return False
    if content == b'\xff':
        return True
    raise DerError(f'{what}: BOOLEAN must be one byte 00 or ff in DER')


def _decode_oid(content: bytes, what: str) -> str:
    if not content or len(content) > MAX_OID_BYTES:
        raise DerError(f'{what}: OBJECT IDENTIFIER of {len(content)} bytes')
    if content[-1] & 0x80:
        raise DerError(f'{what}: truncated OBJECT IDENTIFIER')
    arcs = []
    value = 0
    starting = True
    for octet in content:
        if starting and octet == 0x80:
            raise DerError(f'{what}: non-minimal OBJECT IDENTIFIER arc')
        value = (value << 7) | (octet & 0x7f)
        starting = not octet & 0x80
        if starting:
            arcs.append(value)
            value = 0
    first = arcs[0]
    if first < 40:
        head = [0, first]
    elif first < 80:
        head = [1, first - 40]
    else:
        head = [2, first - 80]
    return '.'.join(str(arc) for arc in head + arcs[1:])


def _decode_bit_string(content: bytes, what: str) -> bytes:
    if not content:
        raise DerError(f'{what}: empty BIT STRING')
    unused = content[0]
    if unused > 7 or (unused and len(content) == 1):
        raise DerError(f'{what}: BIT STRING with {unused} unused bits')
    if unused and content[-1] & ((1 << unused) - 1):
        raise DerError(f'{what}: BIT STRING unused bits not zero (not DER)')
    return content[1:]


def _decode_time(tag: int, content: bytes, what: str) -> datetime.datetime:
    # RFC 5280 4.1.2.5: UTCTime YYMMDDHHMMSSZ (YY >= 50 is 19YY) or GeneralizedTime
    # YYYYMMDDHHMMSSZ, always Zulu, seconds present, no fractions.
    try:
        text = content.decode('ascii')
    except UnicodeDecodeError:
        raise DerError(f'{what}: time is not ASCII') from None
    if tag == _TAG_UTC_TIME:
        if not re.fullmatch(r'[0-9]{12}Z', text):
            raise DerError(f'{what}: UTCTime {text!r} is not YYMMDDHHMMSSZ')
        year = int(text[0:2])
        year += 1900 if year >= 50 else 2000
        rest = text[2:]
    elif tag == _TAG_GENERALIZED_TIME:
        if not re.fullmatch(r'[0-9]{14}Z', text):
            raise DerError(f'{what}: GeneralizedTime {text!r} is not YYYYMMDDHHMMSSZ')
        year = int(text[0:4])
        rest = text[4:]
    else:
        raise DerError(f'{what}: expected UTCTime or GeneralizedTime, found tag 0x{tag:02x}')
    try:
        return datetime.datetime(year, int(rest[0:2]), int(rest[2:4]), int(rest[4:6]),
                                 int(rest[6:8]), int(rest[8:10]), tzinfo=UTC)
    except ValueError as exc:
        raise DerError(f'{what}: impossible date {text!r} ({exc})') from None


def _decode_string(tag: int, content: bytes) -> str | bytes:
    codec = _STRING_DECODERS.get(tag)
    if codec is None:
        return content
    try:
        return content.decode(codec)
    except UnicodeDecodeError:
        return content


def _read_algorithm(cursor: _Der, what: str) -> tuple[str, bytes | None]:
    """AlgorithmIdentifier: (OID, the parameters' full TLV or None)."""
    algorithm = cursor.enter(_TAG_SEQUENCE, what)
    oid = _decode_oid(algorithm.take(_TAG_OID, f'{what}.algorithm'), what)
    params = None
    if not algorithm.at_end():
        at = algorithm.pos
        algorithm.next(f'{what}.parameters')
        params = algorithm.data[at:algorithm.pos]
    algorithm.done()
    return oid, params


def _read_name(cursor: _Der, what: str) -> list:
    """Name: RDNSequence as [[(oid, value), ...], ...] in encoded order."""
    name = cursor.enter(_TAG_SEQUENCE, what)
    rdns = []
    while not name.at_end():
        rdn = name.enter(_TAG_SET, f'{what} RDN')
        attributes = []
        while not rdn.at_end():
            pair = rdn.enter(_TAG_SEQUENCE, f'{what} attribute')
            oid = _decode_oid(pair.take(_TAG_OID, f'{what} attribute type'), what)
            tag, start, stop = pair.next(f'{what} attribute value')
            pair.done()
            attributes.append((oid, _decode_string(tag, pair.data[start:stop])))
        if not attributes:
            raise DerError(f'{what}: empty RDN')
        rdns.append(attributes)
    return rdns


def _read_general_names(cursor: _Der, what: str) -> list:
    names = []
    while not cursor.at_end():
        at = cursor.pos
        tag, start, stop = cursor.next(what)
        content = cursor.data[start:stop]
        if tag == 0x82:
            names.append('DNS:' + content.decode('latin-1'))
        elif tag == 0x87:
            if len(content) in (4, 16):
                names.append(f'IP:{ipaddress.ip_address(content)}')
            else:
                names.append('IP:#' + content.hex())
        elif tag == 0x81:
            names.append('email:' + content.decode('latin-1'))
        elif tag == 0x86:
            names.append('URI:' + content.decode('latin-1'))
        elif tag == 0xa4:
            if cursor.depth + 1 > MAX_DER_DEPTH:
                raise DerError(f'{what}: nested deeper than {MAX_DER_DEPTH} levels')
            explicit = _Der(cursor.data, start, stop, cursor.depth + 1, f'{what} directoryName')
            names.append('DirName:' + format_name(_read_name(explicit, f'{what} directoryName')))
            explicit.done()
        elif tag == 0x88:
            names.append('RID:' + _decode_oid(content, f'{what} registeredID'))
        elif tag == 0xa0:
            other = _Der(cursor.data, start, stop, cursor.depth + 1, f'{what} otherName')
            names.append('othername:' + _decode_oid(other.take(_TAG_OID, f'{what} otherName'), what))
        elif tag == 0xa3:
            names.append('x400Address:#' + content.hex())
        elif tag == 0xa5:
            names.append('ediPartyName:#' + content.hex())
        else:
            raise DerError(f'{what}: unknown GeneralName tag 0x{tag:02x} at byte {at}')
    return names


def _read_public_key(spki: _Der) -> dict:
    oid, params = _read_algorithm(spki, 'subjectPublicKeyInfo.algorithm')
    key_bytes = _decode_bit_string(spki.take(_TAG_BIT_STRING, 'subjectPublicKey'), 'subjectPublicKey')
    spki.done()
    key_type = KEY_ALGORITHMS.get(oid, oid)
    key = {'oid': oid, 'type': key_type, 'bits': None, 'params': params, 'public': key_bytes}
    if key_type == 'RSA':
        rsa_key = _Der(key_bytes, what='RSAPublicKey').enter(_TAG_SEQUENCE, 'RSAPublicKey')
        modulus = _decode_integer(rsa_key.take(_TAG_INTEGER, 'modulus'), 'modulus')
        exponent = _decode_integer(rsa_key.take(_TAG_INTEGER, 'publicExponent'), 'publicExponent')
        rsa_key.done()
        if modulus <= 0 or exponent <= 0:
            raise DerError('RSAPublicKey: modulus and exponent must be positive')
        key['n'], key['e'] = modulus, exponent
        key['bits'] = modulus.bit_length()
    elif key_type == 'EC':
        curve = None
        if params is not None and params[0] == _TAG_OID:
            curve = _decode_oid(_Der(params).take(_TAG_OID, 'namedCurve'), 'namedCurve')
        key['curve'] = curve
        if curve in CURVE_BITS:
            key['bits'] = CURVE_BITS[curve]
        elif key_bytes[:1] == b'\x04' and len(key_bytes) % 2 == 1:
            key['bits'] = (len(key_bytes) - 1) // 2 * 8
    elif key_type in EDDSA_KEY_BITS:
        key['bits'] = EDDSA_KEY_BITS[key_type]
    elif key_type == 'DSA' and params is not None:
        # The size of p is the key size; q, g and y only matter to signature checks.
        domain = _Der(params).enter(_TAG_SEQUENCE, 'Dss-Parms')
        key['bits'] = _decode_integer(domain.take(_TAG_INTEGER, 'p'), 'p').bit_length()
    return key


def _parse_certificate(der: bytes) -> dict:
    """Everything describe_der needs, read by the built-in DER reader. Raises DerError."""
    top = _Der(der, what='input')
    certificate = top.enter(_TAG_SEQUENCE, 'Certificate')
    top.done()
    tbs = certificate.enter(_TAG_SEQUENCE, 'tbsCertificate')
    signature_oid = _read_algorithm(certificate, 'signatureAlgorithm')[0]
    # Not kept, but read: a malformed signature field makes the certificate malformed, as it
    # does for cryptography, so that both readers accept the same inputs.
    _decode_bit_string(certificate.take(_TAG_BIT_STRING, 'signatureValue'), 'signatureValue')
    certificate.done()

    version = 0
    if tbs.peek() == 0xa0:
        explicit = tbs.enter(0xa0, 'version')
        version = _decode_integer(explicit.take(_TAG_INTEGER, 'version'), 'version')
        explicit.done()
    if version not in (0, 2):
        raise DerError(f'version: X.509 v{version + 1} is not v1 or v3')
    serial = _decode_integer(tbs.take(_TAG_INTEGER, 'serialNumber'), 'serialNumber')
    _read_algorithm(tbs, 'tbsCertificate.signature')
    issuer = _read_name(tbs, 'issuer')
    validity = tbs.enter(_TAG_SEQUENCE, 'validity')
    tag, start, stop = validity.next('notBefore')
    not_before = _decode_time(tag, der[start:stop], 'notBefore')
    tag, start, stop = validity.next('notAfter')
    not_after = _decode_time(tag, der[start:stop], 'notAfter')
    validity.done()
    subject = _read_name(tbs, 'subject')
    key = _read_public_key(tbs.enter(_TAG_SEQUENCE, 'subjectPublicKeyInfo'))
    for unique_id in (0x81, 0x82):
        if tbs.peek() == unique_id:
            tbs.next('uniqueIdentifier')
    extensions = {}
    if tbs.peek() == 0xa3:
        explicit = tbs.enter(0xa3, 'extensions')
        sequence = explicit.enter(_TAG_SEQUENCE, 'extensions')
        explicit.done()
        while not sequence.at_end():
            extension = sequence.enter(_TAG_SEQUENCE, 'extension')
            oid = _decode_oid(extension.take(_TAG_OID, 'extnID'), 'extnID')
            if extension.peek() == _TAG_BOOLEAN:
                _decode_boolean(extension.take(_TAG_BOOLEAN, 'critical'), f'extension {oid} critical')
            value = extension.take(_TAG_OCTET_STRING, f'extension {oid} value')
            extension.done()
            if oid in extensions:
                raise DerError(f'extensions: {oid} appears twice')
            extensions[oid] = value
    tbs.done()

    sans = []
    if OID_SUBJECT_ALT_NAME in extensions:
        names = _Der(extensions[OID_SUBJECT_ALT_NAME], depth=4, what='subjectAltName')
        sequence = names.enter(_TAG_SEQUENCE, 'subjectAltName')
        names.done()
        sans = _read_general_names(sequence, 'subjectAltName')
    subject_key_id = None
    if OID_SUBJECT_KEY_IDENTIFIER in extensions:
        wrapper = _Der(extensions[OID_SUBJECT_KEY_IDENTIFIER], depth=4, what='subjectKeyIdentifier')
        subject_key_id = wrapper.take(_TAG_OCTET_STRING, 'subjectKeyIdentifier')
        wrapper.done()
    authority_key_id = None
    if OID_AUTHORITY_KEY_IDENTIFIER in extensions:
        wrapper = _Der(extensions[OID_AUTHORITY_KEY_IDENTIFIER], depth=4, what='authorityKeyIdentifier')
        aki = wrapper.enter(_TAG_SEQUENCE, 'authorityKeyIdentifier')
        wrapper.done()
        while not aki.at_end():
            tag, start, stop = aki.next('authorityKeyIdentifier field')
            if tag == 0x80:
                authority_key_id = aki.data[start:stop]
            elif tag not in (0xa1, 0x82):
                raise DerError(f'authorityKeyIdentifier: unknown field tag 0x{tag:02x}')

    return {
        'subject': subject,
        'issuer': issuer,
        'serial': serial,
        'not_before': not_before,
        'not_after': not_after,
        'sans': sans,
        'subject_key_id': subject_key_id,
        'authority_key_id': authority_key_id,
        'key_type': key['type'],
        'key_bits': key['bits'],
        'signature_oid': signature_oid,
    }


# ---------------------------------------------------------------------------------------------
# The same fields read through cryptography

def _crypto_name(name) -> list:
    return [[(attribute.oid.dotted_string, attribute.value) for attribute in rdn] for rdn in name.rdns]


def _crypto_general_name(general_name) -> str:
    cx = Cryptography.x509
    if isinstance(general_name, cx.DNSName):
        return 'DNS:' + general_name.value
    if isinstance(general_name, cx.IPAddress):
        return f'IP:{general_name.value}'
    if isinstance(general_name, cx.RFC822Name):
        return 'email:' + general_name.value
    if isinstance(general_name, cx.UniformResourceIdentifier):
        return 'URI:' + general_name.value
    if isinstance(general_name, cx.DirectoryName):
        return 'DirName:' + format_name(_crypto_name(general_name.value))
    if isinstance(general_name, cx.RegisteredID):
        return 'RID:' + general_name.value.dotted_string
    if isinstance(general_name, cx.OtherName):
        return 'othername:' + general_name.type_id.dotted_string
    raise ValueError(f'unhandled general name {type(general_name).__name__}')


@contextlib.contextmanager
def _quiet():
    """Drop warnings while cryptography handles certificates.

    cryptography warns about certificates it means to refuse in a future release (a serial
    number that is not positive, found in old CAs of system bundles), at load and again when
    the serial or a Store is built. In a module they reach the user, who can do nothing about
    a distribution's bundle or a peer's certificate. catch_warnings swaps a process-wide filter
    list, so probe threads may race on it; the worst outcome is one warning shown or one
    suppressed too long, both harmless.
    """
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        yield


def _parse_with_cryptography(der: bytes) -> dict:
    """The fields of _parse_certificate, read by cryptography. Raises on anything unusual."""
    with _quiet():
        return _fields_from_cryptography(Cryptography.x509.load_der_x509_certificate(der))


def _fields_from_cryptography(cert) -> dict:
    extensions = cert.extensions
    sans = []
    subject_key_id = authority_key_id = None
    for extension in extensions:
        value = extension.value
        if isinstance(value, Cryptography.x509.SubjectAlternativeName):
            sans = [_crypto_general_name(name) for name in value]
        elif isinstance(value, Cryptography.x509.SubjectKeyIdentifier):
            subject_key_id = value.digest
        elif isinstance(value, Cryptography.x509.AuthorityKeyIdentifier):
            authority_key_id = value.key_identifier
    public_key = cert.public_key()
    if isinstance(public_key, Cryptography.rsa.RSAPublicKey):
        key_type, key_bits = 'RSA', public_key.key_size
    elif isinstance(public_key, Cryptography.ec.EllipticCurvePublicKey):
        key_type, key_bits = 'EC', public_key.curve.key_size
    elif isinstance(public_key, Cryptography.ed25519.Ed25519PublicKey):
        key_type, key_bits = 'Ed25519', EDDSA_KEY_BITS['Ed25519']
    elif isinstance(public_key, Cryptography.ed448.Ed448PublicKey):
        key_type, key_bits = 'Ed448', EDDSA_KEY_BITS['Ed448']
    elif isinstance(public_key, Cryptography.dsa.DSAPublicKey):
        key_type, key_bits = 'DSA', public_key.key_size
    else:
        raise ValueError('key type left to the DER reader')
    if hasattr(cert, 'not_valid_before_utc'):
        not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    else:  # cryptography < 42 returns naive UTC
        not_before = cert.not_valid_before.replace(tzinfo=UTC)
        not_after = cert.not_valid_after.replace(tzinfo=UTC)
    return {
        'subject': _crypto_name(cert.subject),
        'issuer': _crypto_name(cert.issuer),
        'serial': cert.serial_number,
        'not_before': not_before,
        'not_after': not_after,
        'sans': sans,
        'subject_key_id': subject_key_id,
        'authority_key_id': authority_key_id,
        'key_type': key_type,
        'key_bits': key_bits,
        'signature_oid': cert.signature_algorithm_oid.dotted_string,
    }


# ---------------------------------------------------------------------------------------------
# Rendering, shared by both readers

_RFC4514_SPECIAL = {'\\': '\\\\', '"': '\\"', '+': '\\+', ',': '\\,', ';': '\\;', '<': '\\<',
                    '>': '\\>', '\x00': '\\00'}


def _escape_value(value: str | bytes) -> str:
    # RFC 4514 2.4: non-string values as '#' and their hex; escape the specials, a leading
    # '#' or space and a trailing space.
    if isinstance(value, bytes):
        return '#' + value.hex()
    last = len(value) - 1
    escaped = []
    for position, char in enumerate(value):
        if char in _RFC4514_SPECIAL:
            escaped.append(_RFC4514_SPECIAL[char])
        elif (position == 0 and char in '# ') or (position == last and char == ' '):
            escaped.append('\\' + char)
        else:
            escaped.append(char)
    return ''.join(escaped)


def format_name(rdns: list) -> str:
    """RFC 4514 string: the last RDN first, multi-valued RDNs joined with '+'."""
    return ','.join(
        '+'.join(f'{ATTRIBUTE_NAMES.get(oid, oid)}={_escape_value(value)}' for oid, value in rdn)
        for rdn in reversed(rdns))


def _common_name(rdns: list) -> str | None:
    # The most specific CN (the last one encoded), as TLS libraries have done historically.
    names = [value for rdn in rdns for oid, value in rdn if oid == OID_COMMON_NAME and isinstance(value, str)]
    return names[-1] if names else None


def _iso(moment: datetime.datetime) -> str:
    return (f'{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T'
            f'{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}Z')


def _as_utc(moment: datetime.datetime | None) -> datetime.datetime:
    if moment is None:
        return datetime.datetime.now(UTC)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _format_serial(serial: int) -> str:
    return format(serial, 'x') if serial >= 0 else '-' + format(-serial, 'x')


def _error_description(message: str) -> dict:
    description = dict.fromkeys(DESCRIBE_KEYS)
    description['error'] = message
    return description


def _render(der: bytes, fields: dict, now: datetime.datetime, expected_names) -> dict:
    subject = format_name(fields['subject'])
    issuer = format_name(fields['issuer'])
    # What the certificate claims, not a trust decision: names equal and, when both key
    # identifiers are there, the issuer's key is its own (RFC 5280 4.2.1.1). The signature is
    # not checked, on purpose: checking it without cryptography costs milliseconds per
    # certificate in pure Python, and both readers must give the same answer. A forged
    # self-issued certificate still fails verify_chain, which is what the findings rely on.
    self_signed = subject == issuer
    subject_key_id, authority_key_id = fields['subject_key_id'], fields['authority_key_id']
    if self_signed and subject_key_id is not None and authority_key_id is not None:
        self_signed = subject_key_id == authority_key_id
    not_after = fields['not_after']
    remaining = not_after - now
    hostname_match = None
    if expected_names:
        common_name = _common_name(fields['subject'])
        hostname_match = any(hostname_matches(fields['sans'], common_name, name)
                             for name in expected_names if isinstance(name, str))
    return {
        'sha256': hashlib.sha256(der).hexdigest(),
        'subject': subject,
        'issuer': issuer,
        'sans': list(fields['sans']),
        'not_before': _iso(fields['not_before']),
        'not_after': _iso(not_after),
        'expired': now > not_after,
        'days_left': int(remaining.total_seconds() // 86400),
        'self_signed': self_signed,
        'key_type': fields['key_type'],
        'key_bits': fields['key_bits'],
        'serial': _format_serial(fields['serial']),
        'signature_algorithm': SIGNATURE_ALGORITHM_NAMES.get(fields['signature_oid'],
                                                             fields['signature_oid']),
        'hostname_match': hostname_match,
        'error': None,
    }


def describe_der(der: bytes, now: datetime.datetime | None = None,
                 expected_names: list[str] | None = None) -> dict:
    """Describe one DER certificate; every key of DESCRIBE_KEYS is present. Never raises.

    `now` (default: the current time; naive means UTC) decides `expired` and `days_left`.
    `hostname_match` is None without `expected_names`, else whether any of them matches.
    """
    try:
        if isinstance(der, (bytearray, memoryview)):
            der = bytes(der)
        if not isinstance(der, bytes):
            return _error_description(f'certificate is {type(der).__name__}, not bytes')
        if not der:
            return _error_description('certificate is empty')
        if len(der) > MAX_DER_BYTES:
            return _error_description(f'certificate is {len(der)} bytes, more than {MAX_DER_BYTES}')
        moment = _as_utc(now)
        fields = None
        if use_cryptography():
            try:
                fields = _parse_with_cryptography(der)
            except Exception:
                # Whatever cryptography refuses or does not model (an unknown key type, a
                # malformed unrelated extension) goes to the DER reader, which decides.
                fields = None
        if fields is None:
            fields = _parse_certificate(der)
        return _render(der, fields, moment, expected_names)
    except DerError as exc:
        return _error_description(f'certificate does not parse: {exc}')
    except Exception as exc:  # never raise: bad input must not hide other results
        return _error_description(f'certificate does not parse: {type(exc).__name__}: {exc}')


# ---------------------------------------------------------------------------------------------
# PEM

# The body may not contain '-----', so a block without its END line does not swallow the next.
_PEM_BLOCK = re.compile(r'-----BEGIN ([A-Z0-9 ]+)-----\r?\n?((?:[^-]|-(?!----))*?)-----END \1-----')


def pem_blocks(text: str | bytes) -> list:
    """Every PEM block: dicts with label, headers, der (None if undecodable), error, line, text.

    `text` holds the whole block as found; for private keys it is secret material and must
    only ever be handed to a key loader, never put in a result.
    """
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode('latin-1')
    blocks = []
    for match in _PEM_BLOCK.finditer(text):
        label, body = match.group(1), match.group(2)
        headers = {}
        if ':' in body.split('\n', 1)[0]:
            separator = '\n\n' if '\n\n' in body else '\r\n\r\n'
            head, body = body.split(separator, 1) if separator in body else (body, '')
            for header_line in head.splitlines():
                name, value = header_line.split(':', 1) if ':' in header_line else (header_line, '')
                headers[name.strip()] = value.strip()
        der = None
        error = None
        try:
            der = base64.b64decode(''.join(body.split()), validate=True)
            if not der:
                der, error = None, 'empty PEM body'
        except (binascii.Error, ValueError):
            error = 'PEM body is not valid base64'
        blocks.append({
            'label': label,
            'headers': headers,
            'der': der,
            'error': error,
            'line': text.count('\n', 0, match.start()) + 1,
            'text': match.group(0),
        })
    return blocks


def pem_to_der_list(text: str | bytes) -> list[bytes]:
    """The DER of every CERTIFICATE block whose base64 decodes, in file order."""
    try:
        return [block['der'] for block in pem_blocks(text)
                if block['label'] == 'CERTIFICATE' and block['der'] is not None]
    except Exception:
        return []


# ---------------------------------------------------------------------------------------------
# Names (RFC 6125 section 6)

def _ip_literal(name: str):
    candidate = name[1:-1] if name.startswith('[') and name.endswith(']') else name
    try:
        return ipaddress.ip_address(candidate)
    except ValueError:
        return None


def _dns_reference(name: str) -> str | None:
    name = name.strip()
    if name.endswith('.'):  # the absolute form names the same host
        name = name[:-1]
    if not name or '..' in name or name.startswith('.'):
        return None
    try:
        ascii_name = name.encode('ascii').decode('ascii')
    except UnicodeError:
        try:
            # The presented identifiers are A-labels; compare like with like.
            ascii_name = name.encode('idna').decode('ascii')
        except UnicodeError:
            return None
    return ascii_name.lower()


def _dns_identifier_matches(presented: str, reference: str) -> bool:
    pattern = _dns_reference(presented)
    if pattern is None:
        return False
    if '*' not in pattern:
        return pattern == reference
    labels = pattern.split('.')
    # RFC 6125 6.4.3 as tightened by RFC 9525: only a whole left-most label may be '*', it
    # matches exactly one label, and it needs two labels after it (no '*.com').
    if labels[0] != '*' or any('*' in label for label in labels[1:]) or len(labels) < 3:
        return False
    reference_labels = reference.split('.')
    return (len(reference_labels) == len(labels) and bool(reference_labels[0])
            and reference_labels[1:] == labels[1:])


def hostname_matches(sans: list, subject_cn: str | None, name: str) -> bool:
    """Whether the reference identifier `name` matches a certificate's identifiers.

    `sans` as describe_der gives them ('DNS:...', 'IP:...'). IP literals match IP SANs only;
    DNS names match DNS SANs, or the subject CN when there is no DNS SAN at all.
    """
    try:
        if not isinstance(name, str) or not name.strip():
            return False
        sans = [san for san in (sans or []) if isinstance(san, str)]
        address = _ip_literal(name.strip())
        if address is not None:
            return any(san.startswith('IP:') and _ip_literal(san[3:]) == address for san in sans)
        reference = _dns_reference(name)
        if reference is None:
            return False
        dns_names = [san[4:] for san in sans if san.startswith('DNS:')]
        if dns_names:
            return any(_dns_identifier_matches(presented, reference) for presented in dns_names)
        if subject_cn and _ip_literal(subject_cn) is None:
            return _dns_identifier_matches(subject_cn, reference)
        return False
    except Exception:
        return False


# ---------------------------------------------------------------------------------------------
# Chain verification

def _der_to_pem(der: bytes) -> str:
    body = base64.b64encode(der).decode('ascii')
    lines = [body[index:index + 64] for index in range(0, len(body), 64)]
    return '-----BEGIN CERTIFICATE-----\n' + '\n'.join(lines) + '\n-----END CERTIFICATE-----\n'


def public_key_der(der: bytes) -> bytes | None:
    """The SubjectPublicKeyInfo DER of a certificate, or None when it does not parse."""
    try:
        if use_cryptography():
            try:
                with _quiet():
                    cert = Cryptography.x509.load_der_x509_certificate(der)
                    serialization = Cryptography.serialization
                    return cert.public_key().public_bytes(serialization.Encoding.DER,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo)
            except Exception:
                pass
        top = _Der(der, what='input')
        certificate = top.enter(_TAG_SEQUENCE, 'Certificate')
        tbs = certificate.enter(_TAG_SEQUENCE, 'tbsCertificate')
        if tbs.peek() == 0xa0:
            tbs.next('version')
        for field in ('serialNumber', 'signature', 'issuer', 'validity', 'subject'):
            tbs.next(field)
        at = tbs.pos
        tbs.expect(_TAG_SEQUENCE, 'subjectPublicKeyInfo')
        return der[at:tbs.pos]
    except Exception:
        return None


def _ec_point_identity(encoded: bytes):
    """(x, parity of y) of an X9.62 point, so that compressed and uncompressed forms compare equal.

    On a prime-field curve (the only kind TLS still uses) a point is fixed by x and the parity
    of y, the other root being p - y, so no curve arithmetic is needed. Not checked to lie on
    the curve: the key side comes from a private key, and OpenSSL refuses a certificate whose
    point is off the curve when the MTA loads it.
    """
    form = encoded[:1]
    if form in (b'\x02', b'\x03'):
        return int.from_bytes(encoded[1:], 'big'), encoded[0] & 1
    if form in (b'\x04', b'\x06', b'\x07') and len(encoded) % 2 == 1:  # uncompressed, hybrid
        size = (len(encoded) - 1) // 2
        return int.from_bytes(encoded[1:1 + size], 'big'), encoded[-1] & 1
    return encoded


def public_key_summary(spki_der: bytes) -> tuple:
    """(key type, bits, comparable key) of a SubjectPublicKeyInfo, or (None, None, None)."""
    try:
        spki = _Der(spki_der, what='SubjectPublicKeyInfo').enter(_TAG_SEQUENCE, 'SubjectPublicKeyInfo')
        key = _read_public_key(spki)
        if key['type'] == 'RSA':
            comparable = ('RSA', key['n'], key['e'])
        elif key['type'] == 'EC':
            comparable = ('EC', key.get('curve'), _ec_point_identity(key['public']))
        else:
            comparable = (key['type'], key['params'], key['public'])
        return key['type'], key['bits'], comparable
    except Exception:
        return None, None, None
