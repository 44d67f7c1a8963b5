# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""DANE TLSA (RFC 6698, RFC 7671, RFC 7672 for SMTP): the digests a TLSA record can pin, the
matching of records against a chain or a key, the records to publish in zone-file form, and the
keys staged for the next renewal on a host.

Runs on managed hosts (the store and the probe attach digests) and on the controller (the
judgement): standard library only, importable on Python 3.8. Digests, never keys, leave a host.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import stat

from ansible_collections.mailsec.starttls.plugins.module_utils import _x509

USAGES = {0: 'PKIX-TA', 1: 'PKIX-EE', 2: 'DANE-TA', 3: 'DANE-EE'}
SELECTORS = {0: 'Cert', 1: 'SPKI'}
MATCHING_TYPES = {0: 'Full', 1: 'SHA2-256', 2: 'SHA2-512'}
DIGEST_BYTES = {1: 32, 2: 64}
# RFC 7672 3.1.3: an SMTP client treats PKIX-TA(0) and PKIX-EE(1) records as unusable.
SMTP_USAGES = (2, 3)

KEY_FILE_LIMIT = 64 * 1024
KEY_FILES_LIMIT = 64
_PRIVATE_KEY = re.compile(r'-----BEGIN ((?:RSA |EC |)PRIVATE KEY)-----.*?-----END \1-----', re.S)


def blob_digests(der: bytes | None, prefix: str) -> dict:
    if not der:
        return {f'{prefix}_sha256': None, f'{prefix}_sha512': None}
    return {f'{prefix}_sha256': hashlib.sha256(der).hexdigest(), f'{prefix}_sha512': hashlib.sha512(der).hexdigest()}


def certificate_digests(der: bytes) -> dict:
    """{cert_sha256, cert_sha512, spki_sha256, spki_sha512} of one DER certificate."""
    digests = blob_digests(der, 'cert')
    try:
        spki = _x509.public_key_der(der)
    except Exception:  # pylint: disable=broad-except
        spki = None
    digests.update(blob_digests(spki, 'spki'))
    return digests


def chain_digests(chain_der: list) -> list:
    """The digests of every certificate of a chain, leaf first."""
    return [certificate_digests(der) for der in chain_der or [] if der]


def spki_digests(spki_der: bytes | None) -> dict:
    return blob_digests(spki_der, 'spki')


# -- records -------------------------------------------------------------------------------

def parse_record(value) -> dict:
    """A TLSA record from a dict ({usage, selector, matching, data}) or presentation text
    ('3 1 1 ABCD...'); adds `problem` when a client cannot use it."""
    if isinstance(value, dict):
        record = {key: value.get(key) for key in ('usage', 'selector', 'matching', 'data')}
    else:
        parts = str(value).split()
        if len(parts) < 4:
            return {'usage': None, 'selector': None, 'matching': None, 'data': None,
                    'problem': f'not a TLSA record: {str(value)[:80]!r}'}
        record = {'usage': parts[0], 'selector': parts[1], 'matching': parts[2], 'data': ''.join(parts[3:])}
    for field in ('usage', 'selector', 'matching'):
        try:
            record[field] = int(record[field])
        except (TypeError, ValueError):
            record[field] = None
    data = re.sub(r'\s+', '', str(record.get('data') or '')).lower()
    record['data'] = data
    record['problem'] = record_problem(record)
    return record


def record_problem(record: dict) -> str | None:
    usage, selector, matching, data = record['usage'], record['selector'], record['matching'], record['data']
    if usage not in USAGES:
        return f'usage {usage} is not defined'
    if usage not in SMTP_USAGES:
        return f'usage {usage} ({USAGES[usage]}) is unusable for SMTP (RFC 7672 3.1.3)'
    if selector not in SELECTORS:
        return f'selector {selector} is not defined'
    if matching not in MATCHING_TYPES:
        return f'matching type {matching} is not defined'
    if not data or re.search(r'[^0-9a-f]', data) or len(data) % 2:
        return 'the association data is not hexadecimal'
    if matching in DIGEST_BYTES and len(data) != 2 * DIGEST_BYTES[matching]:
        return (f'matching type {matching} ({MATCHING_TYPES[matching]}) needs {DIGEST_BYTES[matching]} bytes, '
                f'the record has {len(data) // 2}')
    return None


def presentation(record: dict) -> str:
    return f"{record.get('usage')} {record.get('selector')} {record.get('matching')} {record.get('data')}"


def record_matches(record: dict, digests: dict) -> bool:
    """Whether one usable record pins the certificate or key these digests describe."""
    if record.get('problem') or not digests:
        return False
    part = 'cert' if record['selector'] == 0 else 'spki'
    if record['matching'] == 0:
        # Full data: compare its digest, so that no certificate body needs to travel.
        try:
            full = bytes.fromhex(record['data'])
        except ValueError:
            return False
        return hashlib.sha256(full).hexdigest() == digests.get(f'{part}_sha256')
    algorithm = 'sha256' if record['matching'] == 1 else 'sha512'
    return digests.get(f'{part}_{algorithm}') == record['data']


def match_chain(records: list, chain: list) -> list:
    """The records (as parsed) that authenticate this chain: DANE-EE(3) against the leaf,
    DANE-TA(2) against a certificate above it (RFC 7671 5.2: the server must send its trust anchor)."""
    matched = []
    for record in records:
        if record.get('problem') or not chain:
            continue
        candidates = chain[:1] if record['usage'] == 3 else chain[1:]
        if any(record_matches(record, digests) for digests in candidates):
            matched.append(record)
    return matched


def match_key(records: list, spki: dict) -> list:
    """DANE-EE SPKI records (3 1 x) that pin this key: the only kind a new key can be pinned by
    before its certificate exists."""
    return [record for record in records if not record.get('problem') and record['usage'] == 3
            and record['selector'] == 1 and record_matches(record, spki)]


def zone_lines(owner: str, digests: dict, ttl=None, usage: int = 3, selector: int = 1, matching: int = 1,
               comment: str | None = None) -> list:
    """Zone-file lines for one certificate or key: `_25._tcp.mx.example. [TTL] IN TLSA 3 1 1 HEX`."""
    part = 'cert' if selector == 0 else 'spki'
    algorithm = 'sha256' if matching == 1 else 'sha512'
    value = digests.get(f'{part}_{algorithm}')
    if not value:
        return []
    owner = owner if owner.endswith('.') else owner + '.'
    lines = [f'; {comment}'] if comment else []
    lines.append(' '.join(str(part) for part in (owner, ttl, 'IN', 'TLSA', usage, selector, matching, value.upper())
                          if part is not None))
    return lines


def tlsa_owner(mx_name: str, port: int = 25) -> str:
    return f'_{int(port)}._tcp.{mx_name.rstrip(".")}.'


# -- keys staged for the next renewal (host side) -------------------------------------------

def _regular_file_text(path: str) -> tuple:
    """(text, error) of a small regular file; key files stay in this process."""
    try:
        info = os.stat(path)
    except OSError as exc:
        return None, f'cannot stat: {exc.strerror}'
    if not stat.S_ISREG(info.st_mode):
        return None, 'not a regular file'
    if info.st_size > KEY_FILE_LIMIT:
        return None, f'larger than {KEY_FILE_LIMIT} bytes'
    try:
        with open(path, 'rb') as handle:
            return handle.read(KEY_FILE_LIMIT).decode('latin-1'), None
    except OSError as exc:
        return None, f'cannot read: {exc.strerror}'


def key_spki(path: str, load) -> tuple:
    """(spki DER, error) of the first private key in a PEM file; `load(pem_text)` returns
    (spki, encrypted, error) like _certs' loaders."""
    text, error = _regular_file_text(path)
    if text is None:
        return None, error
    match = _PRIVATE_KEY.search(text)
    if not match:
        return None, 'no PEM private key in the file'
    spki, encrypted, error = load(match.group(0))
    if encrypted:
        return None, 'the key is encrypted'
    return spki, error


def _read_settings(path: str) -> dict:
    """key = value lines (certbot renewal .conf, acme.sh DOMAIN.conf with quotes)."""
    text, error = _regular_file_text(path)
    settings: dict = {}
    if text is None:
        return settings
    for line in text.splitlines():
        match = re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$", line)
        if match:
            settings[match.group(1)] = match.group(2).strip('\'"')
    return settings


def _archive_index(path: str) -> int | None:
    match = re.search(r'privkey(\d+)\.pem$', path)
    return int(match.group(1)) if match else None


def certbot_lineage(certificate_path: str) -> dict | None:
    """The certbot lineage of a certificate under .../live/NAME/ (the layout certbot keeps:
    live/NAME/*.pem link to archive/NAME/*N.pem, renewal/NAME.conf holds the options)."""
    match = re.match(r'^(.*)/live/([^/]+)/(?:cert|fullchain|chain)\.pem$', certificate_path or '')
    if not match:
        return None
    root, name = match.group(1), match.group(2)
    current = os.path.realpath(os.path.join(root, 'live', name, 'privkey.pem'))
    current_index = _archive_index(current)
    staged = []
    for candidate in sorted(glob.glob(os.path.join(root, 'archive', name, 'privkey*.pem')))[:KEY_FILES_LIMIT]:
        index = _archive_index(candidate)
        if index is not None and current_index is not None and index > current_index:
            staged.append(candidate)
    settings = _read_settings(os.path.join(root, 'renewal', f'{name}.conf'))
    reuse = str(settings.get('reuse_key', '')).lower() in ('true', '1', 'yes')
    return {'source': 'certbot', 'lineage': name, 'current_key': current, 'staged': staged, 'reuse_key': reuse}


def acme_sh_lineage(certificate_path: str, homes: list) -> dict | None:
    """The acme.sh domain whose installed or own certificate is this file (DOMAIN.conf's
    Le_RealCertPath / Le_RealFullChainPath, or the .acme.sh/DOMAIN[_ecc]/ directory itself)."""
    real = os.path.realpath(certificate_path or '')
    for home in homes:
        for conf in sorted(glob.glob(os.path.join(home, '*', '*.conf')))[:KEY_FILES_LIMIT * 4]:
            directory = os.path.dirname(conf)
            domain = os.path.basename(directory)
            if domain.endswith('_ecc'):
                domain = domain[:-4]
            if os.path.basename(conf) != f'{domain}.conf':
                continue
            settings = _read_settings(conf)
            paths = {settings.get('Le_RealCertPath'), settings.get('Le_RealFullChainPath'),
                     os.path.join(directory, f'{domain}.cer'), os.path.join(directory, 'fullchain.cer')}
            if real not in {os.path.realpath(path) for path in paths if path}:
                continue
            # acme.sh keeps the domain key across renewals unless told otherwise
            # (--always-force-new-domain-key stores Le_ForceNewDomainKey=1).
            new_key = settings.get('Le_ForceNewDomainKey') == '1'
            staged = [path for path in (os.path.join(directory, f'{domain}.key.next'),) if os.path.isfile(path)]
            return {'source': 'acme.sh', 'lineage': domain, 'current_key': os.path.join(directory, f'{domain}.key'),
                    'staged': staged, 'reuse_key': not new_key}
    return None


ACME_SH_HOMES = ('/root/.acme.sh', '/etc/acme.sh', '/var/lib/acme.sh')


def next_keys(certificate_paths: list, patterns: list, load, layouts: bool = True,
              acme_homes=ACME_SH_HOMES) -> list:
    """Every key that the next renewal may put behind these certificates, as SPKI digests.

    Entries: {path, source (user, certbot, acme.sh), lineage, for_certificate, spki_sha256,
    spki_sha512, error, reuse_key}; a lineage whose next renewal makes a new key that is not
    staged anywhere gives an entry with `path` None and `unknown_next_key` True.
    """
    found: list = []
    seen: set = set()

    def add(path, source, lineage=None, certificate=None, reuse=None):
        key = (path, certificate)
        if key in seen or len(found) >= KEY_FILES_LIMIT:
            return
        seen.add(key)
        spki, error = key_spki(path, load)
        entry = {'path': path, 'source': source, 'lineage': lineage, 'for_certificate': certificate,
                 'error': error, 'reuse_key': reuse}
        entry.update(spki_digests(spki))
        found.append(entry)

    for pattern in patterns or []:
        for path in sorted(glob.glob(pattern))[:KEY_FILES_LIMIT]:
            add(path, 'user')
    if layouts:
        for certificate in sorted({path for path in certificate_paths or [] if path}):
            lineage = certbot_lineage(certificate) or acme_sh_lineage(certificate, list(acme_homes))
            if lineage is None:
                continue
            for path in lineage['staged']:
                add(path, lineage['source'], lineage['lineage'], certificate)
            if lineage['reuse_key']:
                add(lineage['current_key'], lineage['source'], lineage['lineage'], certificate, reuse=True)
            elif not lineage['staged']:
                found.append({'path': None, 'source': lineage['source'], 'lineage': lineage['lineage'],
                              'for_certificate': certificate, 'unknown_next_key': True, 'reuse_key': False,
                              'error': None, 'spki_sha256': None, 'spki_sha512': None})
    return found
