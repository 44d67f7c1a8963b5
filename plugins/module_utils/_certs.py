# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Is the certificate store bound to a listener usable by the daemon that reads it?

One (certificate, key, chain) binding on the host is checked the way the MTA will meet it:
the files exist, the daemon's user can reach and read them (mode bits, owner, groups, POSIX
ACLs, every parent directory), the certificate parses, the key matches it, it is in date,
names and chain. Standard library plus the `openssl` command; `cryptography` when present and a
process checks enough keys and chains to pay for its import (`_trust.library_for_checks`).

Private key material is read only to derive its public key. It never enters a result, an
error message or a log: key loading errors are reported by class, not by text.
"""

from __future__ import annotations

import datetime
import grp
import os
import pwd
import stat
import struct

from ansible_collections.mailsec.starttls.plugins.module_utils import _command, _files, _tlsa, _trust, _x509

PROBLEM_IDS = (
    'certificate-missing',
    'certificate-unreadable',
    'certificate-unparsable',
    'key-missing',
    'key-unreadable',
    'certificate-key-mismatch',
    'certificate-expired',
    'certificate-expiring',
    'certificate-host-mismatch',
    'validation-failure',
    'private-key-exposed',
    'key-encrypted',
)

# A certificate store file is a few KiB; a CA bundle perhaps 300 KiB.
MAX_STORE_FILE_BYTES = 4 << 20
KEY_LABELS = ('PRIVATE KEY', 'RSA PRIVATE KEY', 'EC PRIVATE KEY', 'DSA PRIVATE KEY',
              'ENCRYPTED PRIVATE KEY', 'OPENSSH PRIVATE KEY')
OPENSSL_TIMEOUT_SECONDS = _trust.OPENSSL_TIMEOUT_SECONDS

_READ = 4
_SEARCH = 1
# What a legacy PEM label says about a key that cannot be loaded (PKCS#8 labels say nothing).
_LABEL_KEY_TYPES = {'RSA PRIVATE KEY': 'RSA', 'EC PRIVATE KEY': 'EC', 'DSA PRIVATE KEY': 'DSA'}

# Linux POSIX ACL xattr layout (acl_ea_header / acl_ea_entry, little endian).
_ACL_XATTR = 'system.posix_acl_access'
_ACL_USER_OBJ, _ACL_USER, _ACL_GROUP_OBJ, _ACL_GROUP, _ACL_MASK, _ACL_OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20


def _use_cryptography() -> bool:
    return _trust.library_for_checks()


def _group_ids(names: tuple) -> frozenset:
    found = set()
    for name in names:
        try:
            found.add(grp.getgrnam(name).gr_gid)
        except KeyError:
            pass
    return frozenset(found)


# Groups whose whole purpose is to let daemons read private keys (Debian and Ubuntu).
KEY_GROUPS_BY_ID = _group_ids(('ssl-cert',))


class _Reader:
    """The user a daemon reads its files as: name, uid and every group it belongs to."""

    __slots__ = ('name', 'uid', 'gids')

    def __init__(self, name: str, uid: int, gids: frozenset) -> None:
        self.name = name
        self.uid = uid
        self.gids = gids


class _FileFacts:
    """What one store file holds, cached per (path, mtime, size, inode)."""

    __slots__ = ('path', 'signature', 'exists', 'stat', 'stat_error', 'read_error',
                 'certificates', 'certificate_errors', 'keys')

    def __init__(self, path: str) -> None:
        self.path = path
        self.signature = None
        self.exists = None
        self.stat = None
        self.stat_error = None
        self.read_error = None
        self.certificates = []        # (line, der) of every CERTIFICATE block, in file order
        self.certificate_errors = []  # (line, message) of blocks that do not decode
        self.keys = []                # public facts about each private key block, in file order


def _new_result(cert_path, key_path, reader_name) -> dict:
    return {
        'certificate': {
            'path': cert_path,
            'exists': None,
            'readable_by': reader_name,
            'readable': None,
            'parses': None,
            'describe': None,
            'chain_length': 0,
        },
        'key': {
            'path': key_path,
            'exists': None,
            'readable': None,
            'owner': None,
            'group': None,
            'mode': None,
            'exposed': None,
            'encrypted': None,
            'type': None,
            'matches_certificate': None,
        },
        'chain': {'complete': None, 'error': None},
        'tlsa': {'chain': [], 'key': _tlsa.spki_digests(None)},
        'usable': None,
        'problems': [],
        'unknown': [],
    }


class StoreInspector:
    """Inspects certificate stores; each file is read, and each key loaded, once per version.

    Keep one instance for a batch of listeners: twenty listeners bound to one file cost one
    read, one key load and one chain verification. A changed file (mtime, size or inode) is
    read again.
    """

    def __init__(self, ca_file: str | None = None, ca_path: str | None = None,
                 now: datetime.datetime | None = None) -> None:
        """`ca_file` / `ca_path`: trust anchors for the chain check instead of the system store.
        `now`: the moment the whole batch is judged at (default: the first inspection's time),
        so that every listener is judged at one moment and the caches hold across calls."""
        self.ca_file = ca_file
        self.ca_path = ca_path
        self._moment = _x509._as_utc(now) if now is not None else None
        self._files: dict = {}
        self._stats: dict = {}
        self._acls: dict = {}
        self._readers: dict = {}
        self._group_members = None
        self._descriptions: dict = {}
        self._verifications: dict = {}
        self.counters = {'file_reads': 0, 'key_loads': 0, 'verifications': 0}

    # -- public -------------------------------------------------------------------------------

    def moment(self, now: datetime.datetime | None = None) -> datetime.datetime:
        """`now` when given, else the batch's moment, fixed on first use."""
        if now is not None:
            return _x509._as_utc(now)
        if self._moment is None:
            self._moment = _x509._as_utc(None)
        return self._moment

    def inspect(self, cert_path: str, key_path: str | None = None, chain_paths: list | None = None,
                reader_user: str | int | dict | None = None, expected_names: list | None = None,
                expiring_days: int = 30, now: datetime.datetime | None = None) -> dict:
        """One binding. `key_path` None means the key sits in the certificate file (Postfix's
        default `smtpd_tls_key_file = $smtpd_tls_cert_file`); `reader_user` None means the
        user this runs as."""
        try:
            key_source = key_path if key_path else cert_path
            reader, reader_name, reader_error = self._reader(reader_user)
            result = _new_result(cert_path, key_source, reader_name)
            cert_facts = self._file(cert_path)
            entries = [(cert_path, line, der) for line, der in cert_facts.certificates]
            chain_facts = []
            for chain_path in chain_paths or []:
                facts = self._file(chain_path)
                chain_facts.append(facts)
                entries.extend((chain_path, line, der) for line, der in facts.certificates)
            key_facts = self._file(key_source)
            key_block = key_facts.keys[0] if key_facts.keys else None
            self._assemble(result, cert_facts, chain_facts, entries, key_facts, key_block,
                           reader, reader_error, expected_names, expiring_days, self.moment(now))
            return result
        except Exception as exc:  # a bug here must not cost the other listeners their results
            reader_label = reader_user.get('name') if isinstance(reader_user, dict) else reader_user
            result = _new_result(cert_path, key_path or cert_path, str(reader_label or ''))
            result['unknown'].append({'check': 'inspection', 'reason': f'{type(exc).__name__}: {exc}'})
            return result

    def inspect_chain_files(self, paths: list, reader_user: str | int | dict | None = None,
                            expected_names: list | None = None, expiring_days: int = 30,
                            now: datetime.datetime | None = None) -> list:
        """Postfix `smtpd_tls_chain_files`: each private key followed by its certificate chain,
        leaf first, across the files in order. One result per key; Postfix loads all of them or
        none, so the listener is usable only if every result is."""
        moment = self.moment(now)
        try:
            reader, reader_name, reader_error = self._reader(reader_user)
            facts_by_path = [(path, self._file(path)) for path in paths]
            for path, facts in facts_by_path:
                if facts.exists is not True or facts.read_error is not None:
                    # Without every file the grouping is unknowable; report the file itself.
                    return [self.inspect(path, path, None, reader_user, expected_names, expiring_days, moment)]
            groups = []
            for path, facts in facts_by_path:
                items = [(key['line'], 'key', key) for key in facts.keys]
                items += [(line, 'certificate', der) for line, der in facts.certificates]
                for line, kind, value in sorted(items, key=lambda item: item[0]):
                    if kind == 'key':
                        groups.append({'key': (facts, value), 'entries': [], 'at': f'{path}:{line}'})
                        continue
                    if not groups:
                        groups.append({'key': None, 'entries': [], 'at': f'{path}:{line}'})
                    groups[-1]['entries'].append((path, line, value))
            results = []
            for group in groups:
                entries = group['entries']
                no_certificate = no_key = None
                if group['key'] is not None:
                    key_facts, key_block = group['key']
                    if not entries:
                        no_certificate = f'{group["at"]}: no certificate follows this private key'
                else:
                    key_facts, key_block = self._file(entries[0][0]), None
                    no_key = f'{group["at"]}: certificates are not preceded by a private key'
                cert_facts = self._file(entries[0][0]) if entries else key_facts
                chain_facts = [self._file(path) for path in
                               sorted({entry[0] for entry in entries[1:]} - {cert_facts.path})]
                result = _new_result(cert_facts.path, key_facts.path, reader_name)
                self._assemble(result, cert_facts, chain_facts, entries, key_facts, key_block,
                               reader, reader_error, expected_names, expiring_days, moment,
                               no_certificate, no_key)
                results.append(result)
            if not results:
                first = paths[0] if paths else None
                result = _new_result(first, first, reader_name)
                where = ', '.join(paths) if paths else 'smtpd_tls_chain_files'
                what = 'no private key and no certificate in' if paths else 'no file named in'
                result['problems'].append({'id': 'key-missing', 'message': f'{what} {where}'})
                result['problems'].append({'id': 'certificate-missing', 'message': f'{what} {where}'})
                result['usable'] = False
                results.append(result)
            return results
        except Exception as exc:
            first = paths[0] if paths else ''
            result = _new_result(first, first, str(reader_user or ''))
            result['unknown'].append({'check': 'inspection', 'reason': f'{type(exc).__name__}: {exc}'})
            return [result]

    # -- the judgement ------------------------------------------------------------------------

    def _assemble(self, result, cert_facts, chain_facts, entries, key_facts, key_block, reader,
                  reader_error, expected_names, expiring_days, moment, no_certificate_message=None,
                  no_key_message=None) -> None:
        problems, unknown = result['problems'], result['unknown']
        certificate, key = result['certificate'], result['key']

        def problem(problem_id, message):
            problems.append({'id': problem_id, 'message': message})

        def not_known(check, reason):
            unknown.append({'check': check, 'reason': reason})

        # Certificate files: exist, reachable and readable by the daemon's user.
        certificate_files = [cert_facts] + [facts for facts in chain_facts if facts.path != cert_facts.path]
        certificate['exists'] = _all_known(facts.exists for facts in certificate_files)
        readable_flags = []
        for facts in certificate_files:
            if facts.exists is False:
                problem('certificate-missing', _missing(facts.path, 'certificate'))
                continue
            if facts.exists is None:
                not_known('certificate-missing', f'{facts.path}: {facts.stat_error}')
                readable_flags.append(None)
                continue
            readable, why = self._readable(reader, reader_error, facts)
            readable_flags.append(readable)
            if readable is False:
                problem('certificate-unreadable', f'{facts.path}: not readable by {reader.name}: {why}')
            elif readable is None:
                not_known('certificate-unreadable', f'{facts.path}: {why}')
            if facts.read_error is not None:
                not_known('certificate-unparsable', f'{facts.path}: {facts.read_error}')
        certificate['readable'] = _all_known(readable_flags) if readable_flags else None

        # Certificates: every block decodes and parses; the first is the leaf.
        parse_errors = [f'{facts.path}:{line}: {message}'
                        for facts in certificate_files for line, message in facts.certificate_errors]
        descriptions = []
        for path, line, der in entries:
            description = self._describe(der, moment, expected_names)
            descriptions.append(description)
            if description['error']:
                parse_errors.append(f'{path}:{line}: {description["error"]}')
        certificate['chain_length'] = sum(1 for description in descriptions if not description['error'])
        certificate['describe'] = descriptions[0] if descriptions else None
        if parse_errors:
            certificate['parses'] = False
            for message in parse_errors:
                problem('certificate-unparsable', message)
        elif entries:
            certificate['parses'] = True
        elif no_certificate_message:
            certificate['parses'] = False
            problem('certificate-missing', no_certificate_message)
        elif cert_facts.exists is True and cert_facts.read_error is None:
            certificate['parses'] = False
            problem('certificate-unparsable', f'{cert_facts.path}: no CERTIFICATE block in the file')
        # The leaf's description when it parsed, else None.
        leaf_description = descriptions[0] if descriptions and not descriptions[0]['error'] else None

        # Dates, names, chain.
        expired = None
        if leaf_description is not None:
            expired = leaf_description['expired']
            leaf_at = f'{entries[0][0]}:{entries[0][1]}'
            if expired:
                problem('certificate-expired', f'{leaf_at}: expired {leaf_description["not_after"]} '
                        f'({-leaf_description["days_left"]} days ago)')
            elif leaf_description['days_left'] < expiring_days:
                problem('certificate-expiring', f'{leaf_at}: expires {leaf_description["not_after"]}, '
                        f'in {leaf_description["days_left"]} days (threshold {expiring_days})')
            if leaf_description['hostname_match'] is False:
                presented = ', '.join(leaf_description['sans']) or f'subject {leaf_description["subject"]}'
                problem('certificate-host-mismatch', f'{leaf_at}: none of '
                        f'{", ".join(str(name) for name in expected_names)} matches {presented}')
            verified, error = self._verify(tuple(entry[2] for entry in entries), moment)
            result['chain'] = {'complete': verified, 'error': error}
            if verified is False:
                problem('validation-failure', f'{leaf_at}: chain does not verify: {error}')
            elif verified is None:
                not_known('validation-failure', error or 'the chain could not be verified')

        # The key file: there, readable by the daemon, not exposed.
        key['exists'] = key_facts.exists
        key_present = None
        key_readable = None
        if key_facts.exists is False:
            key_present = False
            problem('key-missing', _missing(key_facts.path, 'private key'))
        elif key_facts.exists is None:
            not_known('key-missing', f'{key_facts.path}: {key_facts.stat_error}')
        else:
            file_stat = key_facts.stat
            key['owner'] = _user_name(file_stat.st_uid)
            key['group'] = _group_name(file_stat.st_gid)
            key['mode'] = f'{stat.S_IMODE(file_stat.st_mode):04o}'
            key_readable, why = self._readable(reader, reader_error, key_facts)
            key['readable'] = key_readable
            if key_readable is False:
                problem('key-unreadable', f'{key_facts.path}: not readable by {reader.name}: {why}')
            elif key_readable is None:
                not_known('key-unreadable', f'{key_facts.path}: {why}')
            if key_facts.read_error is not None:
                not_known('key-missing', f'{key_facts.path}: {key_facts.read_error}')
            elif key_block is None:
                key_present = False
                problem('key-missing', no_key_message or f'{key_facts.path}: no private key in the file')
            else:
                key_present = True
            # A certificate-only file named as the key source is missing a key, not exposing one.
            if key_present is not False:
                exposed, exposure = self._exposure(key_facts, reader)
                if exposed and reader is None and not stat.S_IMODE(key_facts.stat.st_mode) & 0o004:
                    # Group access or ownership is only a fault when it is not the reading daemon's
                    # own, and the reading identity is unknown here: say so instead of guessing.
                    exposed = None
                    not_known('private-key-exposed', f'{key_facts.path}: {exposure}, and the reading '
                              f'identity is unknown ({reader_error})')
                key['exposed'] = exposed
                if exposed:
                    problem('private-key-exposed', f'{key_facts.path}: mode {key["mode"]}, owner '
                            f'{key["owner"]}:{key["group"]}: {exposure}')

        # The key itself: loads, matches the leaf.
        matches = None
        if key_block is not None:
            key['encrypted'] = key_block['encrypted']
            key['type'] = key_block['type']
            where = f'{key_facts.path}:{key_block["line"]}'
            if key_block['encrypted']:
                problem('key-encrypted', f'{where}: private key is encrypted; an MTA without a configured '
                        'passphrase cannot load it')
                not_known('certificate-key-mismatch', f'{where}: the key is encrypted')
            elif key_block['error'] and key_block['corrupt']:
                key_present = False
                problem('key-unreadable', f'{where}: {key_block["error"]}')
            elif key_block['error']:
                not_known('certificate-key-mismatch', f'{where}: {key_block["error"]}')
            elif leaf_description is not None:
                matches = _same_public_key(key_block['spki'], _x509.public_key_der(entries[0][2]))
                if matches is False:
                    problem('certificate-key-mismatch', f'{where}: the {key_block["type"]} private key does '
                            f'not match the {leaf_description["key_type"]} certificate '
                            f'{entries[0][0]}:{entries[0][1]}')
                elif matches is None:
                    not_known('certificate-key-mismatch', f'{where}: public keys could not be compared')
            elif entries:
                not_known('certificate-key-mismatch', f'{where}: the certificate does not parse')
        key['matches_certificate'] = matches
        # What a DANE TLSA record can pin: the bound chain and the key (digests only).
        result['tlsa'] = {'chain': _tlsa.chain_digests([entry[2] for entry in entries]),
                          'key': _tlsa.spki_digests(key_block['spki'] if key_block else None)}

        # Usable: exists, readable by the reader, parses, key there and matching, in date.
        result['usable'] = _usable([
            certificate['exists'], certificate['readable'], certificate['parses'],
            key_present, key_readable, matches, None if expired is None else not expired,
        ])

    # -- facts gathering ----------------------------------------------------------------------

    def _file(self, path: str | None) -> _FileFacts:
        facts = _FileFacts(path)
        if not path:
            facts.exists = False  # nothing configured: as good as missing
            return facts
        try:
            file_stat = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            facts.exists = False
            return facts
        except PermissionError:
            facts.stat_error = f'cannot look it up as {_user_name(os.geteuid())} (permission denied)'
            return facts
        except OSError as exc:
            facts.stat_error = f'cannot look it up: {exc.strerror or exc}'
            return facts
        signature = (file_stat.st_mtime_ns, file_stat.st_size, file_stat.st_ino, file_stat.st_dev)
        cached = self._files.get(path)
        if cached is not None and cached.signature == signature:
            cached.stat = file_stat
            return cached
        facts.exists = True
        facts.stat = file_stat
        facts.signature = signature
        self._files[path] = facts
        if not stat.S_ISREG(file_stat.st_mode):
            facts.read_error = 'not a regular file'
            return facts
        if file_stat.st_size > MAX_STORE_FILE_BYTES:
            facts.read_error = f'{file_stat.st_size} bytes, more than {MAX_STORE_FILE_BYTES}'
            return facts
        try:
            # Never blocks on a FIFO swapped in since the stat, never reads past the cap.
            content = _files.read_regular(path, MAX_STORE_FILE_BYTES)
        except _files.RefusedFile as exc:
            facts.read_error = exc.strerror
            return facts
        except PermissionError:
            facts.read_error = f'cannot read it as {_user_name(os.geteuid())} (permission denied)'
            return facts
        except OSError as exc:
            facts.read_error = f'cannot read it: {exc.strerror or exc}'
            return facts
        self.counters['file_reads'] += 1
        blocks = _x509.pem_blocks(content)
        for block in blocks:
            if block['label'] == 'CERTIFICATE':
                if block['der'] is None:
                    facts.certificate_errors.append((block['line'], block['error']))
                else:
                    facts.certificates.append((block['line'], block['der']))
            elif block['label'] in KEY_LABELS:
                # Only the public facts are kept; the block text dies with this frame.
                facts.keys.append(self._key_facts(block))
        if not blocks and content[:1] == b'\x30':
            # DER: described for the record, but the MTAs covered here all read PEM only.
            facts.certificates.append((1, content))
            facts.certificate_errors.append((1, 'DER encoded; Postfix, Exim, Dovecot and OpenSMTPD read PEM'))
        del content
        return facts

    def _key_facts(self, block: dict) -> dict:
        """Public facts about one private key block: never the key itself."""
        label = block['label']
        facts = {'line': block['line'], 'label': label, 'encrypted': None, 'type': None,
                 'spki': None, 'error': None, 'corrupt': False}
        if label == 'ENCRYPTED PRIVATE KEY' or 'ENCRYPTED' in block['headers'].get('Proc-Type', ''):
            facts['encrypted'] = True
            facts['type'] = _LABEL_KEY_TYPES.get(label)
            return facts
        if label == 'OPENSSH PRIVATE KEY':
            facts['error'] = 'OpenSSH key format, which no MTA reads'
            facts['corrupt'] = True
            return facts
        facts['encrypted'] = False
        if block['der'] is None:
            facts['error'] = f'key block does not decode ({block["error"]})'
            facts['corrupt'] = True
            return facts
        self.counters['key_loads'] += 1
        if _use_cryptography():
            spki, encrypted, error = _public_key_with_cryptography(block['text'])
        else:
            spki, encrypted, error = self._public_key_with_openssl(block['text'])
        if encrypted:
            facts['encrypted'] = True
            return facts
        facts['spki'], facts['error'] = spki, error
        # A key that the loader rejects is one the MTA rejects too; a missing loader is not.
        facts['corrupt'] = encrypted is False and spki is None
        if spki is not None:
            facts['type'] = _x509.public_key_summary(spki)[0]
        return facts

    def load_public_key(self, pem_text: str) -> tuple:
        """(SubjectPublicKeyInfo DER, encrypted, error) of a PEM private key (for _tlsa.next_keys)."""
        if _use_cryptography():
            return _public_key_with_cryptography(pem_text)
        return self._public_key_with_openssl(pem_text)

    def _public_key_with_openssl(self, pem_text: str) -> tuple:
        if not _trust.openssl_path():
            return None, None, 'neither cryptography nor the openssl command is available to load the key'
        try:
            # The key goes through a pipe, never a command line or a temporary file; an
            # empty passphrase keeps openssl from prompting for one.
            returncode, stdout, _stderr = _trust.run_openssl(
                ['pkey', '-pubout', '-outform', 'DER', '-passin', 'pass:'], input_bytes=pem_text.encode('latin-1'))
        except _command.CommandError as exc:
            return None, None, f'openssl pkey could not run ({exc})'
        if returncode != 0 or not stdout:
            # openssl's messages are not shown: they are not needed, and stay away from the key.
            return None, False, f'openssl pkey could not load the key (exit {returncode})'
        return stdout, False, None

    def _describe(self, der: bytes, moment, expected_names) -> dict:
        names = tuple(expected_names) if expected_names else None
        cache_key = (der, moment, names)
        description = self._descriptions.get(cache_key)
        if description is None:
            description = _x509.describe_der(der, moment, list(names) if names else None)
            self._descriptions[cache_key] = description
        return dict(description, sans=list(description['sans'] or [])) if not description['error'] \
            else dict(description)

    def _verify(self, chain: tuple, moment) -> tuple:
        cache_key = (chain, moment)
        outcome = self._verifications.get(cache_key)
        if outcome is None:
            self.counters['verifications'] += 1
            outcome = _trust.verify_chain(list(chain), ca_file=self.ca_file, ca_path=self.ca_path, at=moment)
            self._verifications[cache_key] = outcome
        return outcome

    # -- who can read what --------------------------------------------------------------------

    def _reader(self, reader_user):
        """(_Reader or None, name to report, error or None).

        `reader_user` is a user name or uid (looked up in this host's passwd), None (this process),
        or an identity dict {'name', 'uid', 'gids', 'reason'} that host inspection took from the
        live daemon (/proc/PID/status, its own passwd and group): a uid of None there means the
        identity is unknown, and readability is then unknown too, never False.
        """
        if isinstance(reader_user, dict):
            return self._identity_reader(reader_user)
        cache_key = reader_user if reader_user is not None else ('euid', os.geteuid())
        if cache_key in self._readers:
            return self._readers[cache_key]
        try:
            if reader_user is None:
                uid = os.geteuid()
                name = _user_name(uid)
                # This process's own credentials, supplementary groups included.
                gids = frozenset(os.getgroups()) | {os.getegid()}
                outcome = (_Reader(name, uid, frozenset(gids)), name, None)
            else:
                entry = pwd.getpwuid(reader_user) if isinstance(reader_user, int) else pwd.getpwnam(str(reader_user))
                gids = {entry.pw_gid} | set(self._supplementary_groups().get(entry.pw_name, ()))
                outcome = (_Reader(entry.pw_name, entry.pw_uid, frozenset(gids)), entry.pw_name, None)
        except KeyError:
            outcome = (None, str(reader_user), f'no such user: {reader_user}')
        except Exception as exc:
            outcome = (None, str(reader_user), f'user {reader_user} could not be looked up: {exc}')
        self._readers[cache_key] = outcome
        return outcome

    def _identity_reader(self, identity: dict):
        name = str(identity.get('name') or identity.get('uid') or 'unknown')
        uid = identity.get('uid')
        if not isinstance(uid, int) or isinstance(uid, bool):
            return None, name, f'the reading identity is unknown: {identity.get("reason") or "not established"}'
        gids = frozenset(gid for gid in identity.get('gids') or [] if isinstance(gid, int))
        return _Reader(name, uid, gids), name, None

    def _supplementary_groups(self) -> dict:
        if self._group_members is None:
            members: dict = {}
            for entry in grp.getgrall():
                for member in entry.gr_mem:
                    members.setdefault(member, []).append(entry.gr_gid)
            self._group_members = members
        return self._group_members

    def _stat(self, path: str):
        if path not in self._stats:
            try:
                self._stats[path] = os.stat(path)
            except OSError as exc:
                self._stats[path] = exc
        return self._stats[path]

    def _acl(self, path: str, file_stat):
        # setfacl changes the inode's ctime, so a changed ACL is read again.
        cache_key = (path, file_stat.st_ino, file_stat.st_ctime_ns)
        if cache_key not in self._acls:
            entries = None
            if hasattr(os, 'getxattr'):
                try:
                    entries = _parse_acl(os.getxattr(path, _ACL_XATTR))
                except OSError:
                    entries = None  # no ACL beyond the mode bits, or no xattr support here
            self._acls[cache_key] = entries
        return self._acls[cache_key]

    def _permits(self, reader: _Reader, path: str, file_stat, want: int) -> bool:
        if reader.uid == 0:
            return True  # DAC override; MAC policies (AppArmor, SELinux) are not modelled
        acl = self._acl(path, file_stat)
        mode = file_stat.st_mode
        if acl is None:
            if reader.uid == file_stat.st_uid:
                return bool((mode >> 6) & want)
            if file_stat.st_gid in reader.gids:
                return bool((mode >> 3) & want)
            return bool(mode & want)
        return _acl_permits(acl, reader, file_stat, want)

    def _readable(self, reader, reader_error, facts: _FileFacts) -> tuple:
        """(bool or None, why) for the reader: search on every directory, read on the file."""
        if reader is None:
            return None, reader_error
        absolute = os.path.abspath(facts.path)
        paths = [absolute]
        real = os.path.realpath(absolute)
        if real != absolute:
            paths.append(real)
        for candidate in paths:
            directory = os.path.dirname(candidate)
            ancestors = []
            while True:
                ancestors.append(directory)
                parent = os.path.dirname(directory)
                if parent == directory:
                    break
                directory = parent
            for ancestor in reversed(ancestors):
                directory_stat = self._stat(ancestor)
                if isinstance(directory_stat, OSError):
                    return None, f'cannot look up {ancestor}: {directory_stat.strerror or directory_stat}'
                if not self._permits(reader, ancestor, directory_stat, _SEARCH):
                    return False, f'no search permission on directory {ancestor}'
        if facts.stat is None:
            return None, facts.stat_error or 'not looked up'
        if not self._permits(reader, real, facts.stat, _READ):
            return False, (f'mode {stat.S_IMODE(facts.stat.st_mode):04o} owner '
                           f'{_user_name(facts.stat.st_uid)}:{_group_name(facts.stat.st_gid)}')
        return True, None

    def _exposure(self, facts: _FileFacts, reader) -> tuple:
        """(exposed, why): readable by others, by a group that is not the reading daemon's own,
        or owned by neither root nor the reader.

        A group the reading user belongs to is how a daemon that drops root reads its key (Debian's
        Exim: 0640 root:Debian-exim), and `ssl-cert` is Debian's group for exactly that purpose.
        """
        file_stat = facts.stat
        reasons = []
        mode = stat.S_IMODE(file_stat.st_mode)
        if mode & 0o004:
            reasons.append('readable by everyone')
        acl = self._acl(os.path.realpath(facts.path), file_stat)
        group_is_readers = file_stat.st_gid in KEY_GROUPS_BY_ID or (
            reader is not None and file_stat.st_gid in reader.gids and reader.uid != 0)
        if acl is None:
            if mode & 0o040 and not group_is_readers:
                reasons.append(f'readable by group {_group_name(file_stat.st_gid)}')
        else:
            # With an ACL the mode's group bits are the mask; the owning group has its own entry.
            mask = _acl_mask(acl)
            for tag, perm, ident in acl:
                if not perm & mask & _READ:
                    continue
                if tag == _ACL_GROUP_OBJ and not group_is_readers:
                    reasons.append(f'readable by group {_group_name(file_stat.st_gid)}')
                elif tag == _ACL_USER and ident != getattr(reader, 'uid', None):
                    reasons.append(f'ACL lets user {_user_name(ident)} read it')
                elif tag == _ACL_GROUP:
                    reasons.append(f'ACL lets group {_group_name(ident)} read it')
        allowed_owners = {0}
        if reader is not None:
            allowed_owners.add(reader.uid)
        if file_stat.st_uid not in allowed_owners:
            reasons.append(f'owned by {_user_name(file_stat.st_uid)}, neither root nor the reading user')
        return bool(reasons), '; '.join(reasons) if reasons else None


# ---------------------------------------------------------------------------------------------

def _missing(path: str | None, what: str) -> str:
    return f'{path}: no such file' if path else f'no {what} file is configured'


def _all_known(values) -> bool | None:
    values = list(values)
    if any(value is False for value in values):
        return False
    if any(value is None for value in values):
        return None
    return True


def _usable(checks: list) -> bool | None:
    if any(check is False for check in checks):
        return False
    if any(check is None for check in checks):
        return None
    return True


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _parse_acl(raw: bytes) -> list | None:
    if len(raw) < 4 or (len(raw) - 4) % 8:
        return None
    if struct.unpack_from('<I', raw, 0)[0] != 2:
        return None
    return [struct.unpack_from('<HHI', raw, offset) for offset in range(4, len(raw), 8)]


def _acl_mask(acl: list) -> int:
    # Without a mask entry (a minimal ACL) nothing is masked.
    return next((entry[1] for entry in acl if entry[0] == _ACL_MASK), 7)


def _acl_permits(acl: list, reader: _Reader, file_stat, want: int) -> bool:
    # POSIX.1e access check order: owner, named users, groups (any match grants), other.
    mask = _acl_mask(acl)
    if reader.uid == file_stat.st_uid:
        return any(entry[0] == _ACL_USER_OBJ and entry[1] & want for entry in acl)
    for tag, perm, ident in acl:
        if tag == _ACL_USER and ident == reader.uid:
            return bool(perm & mask & want)
    group_matched = False
    for tag, perm, ident in acl:
        if (tag == _ACL_GROUP_OBJ and file_stat.st_gid in reader.gids) or \
                (tag == _ACL_GROUP and ident in reader.gids):
            group_matched = True
            if perm & mask & want:
                return True
    if group_matched:
        return False
    return any(entry[0] == _ACL_OTHER and entry[1] & want for entry in acl)


def _public_key_with_cryptography(pem_text: str) -> tuple:
    """(SubjectPublicKeyInfo DER, encrypted, error) of a PEM private key."""
    data = pem_text.encode('latin-1')
    try:
        try:
            # The RSA consistency check (primality of p and q) costs ~80 ms and is not what the
            # MTA does either: OpenSSL's SSL_CTX_check_private_key compares public halves, as we do.
            key = _x509.Cryptography.serialization.load_pem_private_key(data, password=None, unsafe_skip_rsa_key_validation=True)
        except TypeError as exc:
            if 'unsafe_skip_rsa_key_validation' not in str(exc):
                raise
            key = _x509.Cryptography.serialization.load_pem_private_key(data, password=None)  # cryptography < 39
    except TypeError:
        return None, True, None  # cryptography's way of saying a passphrase is needed
    except Exception as exc:
        # The class is enough to act on; the message is not shown so nothing of the key can leak.
        return None, False, f'the key does not load ({type(exc).__name__})'
    try:
        serialization = _x509.Cryptography.serialization
        spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    except Exception as exc:
        return None, None, f'the public half cannot be derived ({type(exc).__name__})'
    return spki, False, None


def _same_public_key(key_spki: bytes | None, certificate_spki: bytes | None) -> bool | None:
    if key_spki is None or certificate_spki is None:
        return None
    if key_spki == certificate_spki:
        return True
    # Same key, different encoding (compressed EC point, explicit curve parameters).
    key_summary = _x509.public_key_summary(key_spki)[2]
    certificate_summary = _x509.public_key_summary(certificate_spki)[2]
    if key_summary is None or certificate_summary is None:
        return None
    return key_summary == certificate_summary


def inspect_store(cert_path: str | None, key_path: str | None = None, chain_paths: list | None = None,
                  reader_user: str | int | dict | None = None, expected_names: list | None = None,
                  expiring_days: int = 30, now: datetime.datetime | None = None,
                  ca_file: str | None = None, ca_path: str | None = None) -> dict:
    """One binding, inspected by a fresh StoreInspector (see StoreInspector.inspect)."""
    return StoreInspector(ca_file, ca_path).inspect(cert_path, key_path, chain_paths, reader_user,
                                                    expected_names, expiring_days, now)


def inspect_chain_files(paths: list, reader_user: str | int | dict | None = None,
                        expected_names: list | None = None, expiring_days: int = 30,
                        now: datetime.datetime | None = None, ca_file: str | None = None,
                        ca_path: str | None = None) -> list:
    """Postfix smtpd_tls_chain_files (see StoreInspector.inspect_chain_files)."""
    return StoreInspector(ca_file, ca_path).inspect_chain_files(paths, reader_user, expected_names,
                                                                expiring_days, now)
