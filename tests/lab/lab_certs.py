# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lab's test CA and certificates: where each file lives under the lab root, which ones the
selected scenarios need, issuing them with the openssl command, and renewing one in place."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import shlex
import ssl
import subprocess
from pathlib import Path

from lab_common import LabError, clean_environment, group_id  # pylint: disable=import-error
from lab_scenarios import ABSENT_PREFIX, CERT_BY_NAME, CERTIFICATES, CertSpec, InstanceSpec  # pylint: disable=import-error

PLACEHOLDER = re.compile(r'\{(cert|key|absent):([A-Za-z0-9._-]+)\}')
NAMED = re.compile(r'\{(?:cert|key):([A-Za-z0-9._-]+)\}')
OPENSSL_TIME = '%Y%m%d%H%M%SZ'


class LabCertificates:
    """The certificates of the lab rooted at `root`: <root>/certs/NAME.crt and NAME.key, the CA's
    database in <root>/certs/ca, and <root>/certs/absent/ for bindings to files that do not exist."""

    def __init__(self, root: Path):
        self.root = root
        self.directory = root / 'certs'
        self.ca_dir = self.directory / 'ca'

    # ---- paths -------------------------------------------------------------------------------
    def cert_path(self, name: str) -> Path:
        return self.directory / f'{name}.crt'

    def key_path(self, name: str) -> Path:
        return self.directory / f'{name}.key'

    def absent_path(self, filename: str) -> Path:
        return self.directory / 'absent' / filename

    def path(self, name: str, suffix: str) -> Path:
        """The certificate ('crt') or key ('key') file of NAME, or of ABSENT_PREFIX + NAME."""
        if name.startswith(ABSENT_PREFIX):
            return self.absent_path(f'{name[len(ABSENT_PREFIX):]}.{suffix}')
        return self.cert_path(name) if suffix == 'crt' else self.key_path(name)

    def bound_path(self, bound: str | None, suffix: str) -> str | None:
        return None if bound is None else str(self.path(bound, suffix))

    def resolve(self, template: str) -> str:
        """Expand {cert:NAME}, {key:NAME} and {absent:FILE} placeholders to lab paths."""
        def replace(match: re.Match) -> str:
            kind, name = match.group(1), match.group(2)
            if kind == 'cert':
                return str(self.cert_path(name))
            if kind == 'key':
                return str(self.key_path(name))
            return str(self.absent_path(name))
        return PLACEHOLDER.sub(replace, template)

    # ---- issuing -----------------------------------------------------------------------------
    def _openssl(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(['openssl', *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=clean_environment(self.root))

    @staticmethod
    def _finish(processes: list[subprocess.Popen], what: str) -> None:
        failures = []
        for process in processes:
            _out, err = process.communicate()
            if process.returncode != 0:
                failures.append(f'{shlex.join(process.args)}: {err.decode(errors="replace").strip()}')
        if failures:
            raise LabError(f'{what} failed:\n' + '\n'.join(failures))

    def _sign(self, name: str, out: Path, start: dt.datetime, end: dt.datetime, extfile: Path) -> subprocess.Popen:
        return self._openssl(
            'ca', '-batch', '-config', str(self.ca_dir / 'openssl.cnf'), '-cert', str(self.cert_path('lab-ca')),
            '-keyfile', str(self.key_path('lab-ca')), '-in', str(self.directory / f'{name}.csr'),
            '-out', str(out), '-startdate', start.strftime(OPENSSL_TIME), '-enddate', end.strftime(OPENSSL_TIME),
            '-extfile', str(extfile), '-extensions', 'leaf', '-notext')

    @staticmethod
    def san(spec: CertSpec) -> str:
        return ','.join([f'DNS:{spec.common_name}'] + [f'IP:{ip}' for ip in spec.ip_addresses])

    def make(self, wanted: list[CertSpec]) -> dict:
        """Issue the CA and every certificate and key in `wanted`; returns the manifest's
        `certificates` entry (paths, SHA-256, key mode and owner per name)."""
        certs, ca_dir = self.directory, self.ca_dir
        (ca_dir / 'issued').mkdir(parents=True)
        certs.chmod(0o755)
        (ca_dir / 'index.txt').write_text('')
        (ca_dir / 'serial').write_text('1000\n')
        (ca_dir / 'openssl.cnf').write_text(
            '[ ca ]\ndefault_ca = lab_ca\n'
            f'[ lab_ca ]\ndatabase = {ca_dir}/index.txt\nnew_certs_dir = {ca_dir}/issued\n'
            f'serial = {ca_dir}/serial\ndefault_md = sha256\npolicy = lab_policy\nunique_subject = no\n'
            '[ lab_policy ]\norganizationName = optional\ncommonName = supplied\n')
        subject = '/O=mailsec lab/CN={}'
        keygen = []
        for spec in wanted:
            key, cert = self.key_path(spec.name), self.cert_path(spec.name)
            if spec.kind == 'ca':
                keygen.append(self._openssl(
                    'req', '-x509', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', str(key), '-out', str(cert),
                    '-days', '3650', '-subj', subject.format(spec.common_name),
                    '-addext', 'basicConstraints=critical,CA:TRUE',
                    '-addext', 'keyUsage=critical,keyCertSign,cRLSign'))
            elif spec.kind == 'key-only':
                keygen.append(self._openssl('genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048',
                                            '-out', str(key)))
            elif spec.kind == 'self-signed':
                keygen.append(self._openssl(
                    'req', '-x509', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', str(key), '-out', str(cert),
                    '-days', '365', '-subj', subject.format(spec.common_name),
                    '-addext', 'basicConstraints=critical,CA:FALSE',
                    '-addext', f'subjectAltName={self.san(spec)}'))
            else:
                keygen.append(self._openssl(
                    'req', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', str(key),
                    '-out', str(certs / f'{spec.name}.csr'), '-subj', subject.format(spec.common_name)))
        self._finish(keygen, 'key generation')

        now = dt.datetime.now(dt.timezone.utc)
        for spec in wanted:
            if spec.kind not in ('leaf', 'expired'):
                continue
            if spec.kind == 'expired':
                start, end = now - dt.timedelta(days=400), now - dt.timedelta(days=35)
            else:
                start, end = now - dt.timedelta(hours=1), now + dt.timedelta(days=365)
            extfile = certs / f'{spec.name}.ext'
            extfile.write_text('[ leaf ]\nbasicConstraints = critical,CA:FALSE\n'
                               'keyUsage = critical,digitalSignature,keyEncipherment\n'
                               'extendedKeyUsage = serverAuth\nauthorityKeyIdentifier = keyid\n'
                               f'subjectAltName = {self.san(spec)}\n')
            self._finish([self._sign(spec.name, self.cert_path(spec.name), start, end, extfile)],
                         f'signing {spec.name}')

        manifest = {}
        for spec in wanted:
            key = self.key_path(spec.name)
            if spec.key_group:
                os.chown(key, 0, group_id(spec.key_group))
                key.chmod(0o640)
            else:
                os.chown(key, 0, 0)
                key.chmod(0o600)
            cert = self.cert_path(spec.name)
            entry = {'cert': None, 'key': str(key), 'sha256': None, 'kind': spec.kind,
                     'key_mode': '0640' if spec.key_group else '0600',
                     'key_owner': f'root:{spec.key_group or "root"}'}
            if spec.kind != 'key-only':
                cert.chmod(0o644)
                entry.update(cert=str(cert), sha256=self.sha256(spec.name))
            manifest[spec.name] = entry
        return manifest

    def renew(self, name: str) -> str:
        """Issue a new certificate for NAME from its existing request and key (new serial, new dates)
        and put it in place of the old file; returns the new certificate's SHA-256."""
        csr, extfile = self.directory / f'{name}.csr', self.directory / f'{name}.ext'
        if not csr.exists() or not extfile.exists():
            raise LabError(f'certificate {name!r} was not issued by the lab CA in {self.root}')
        now = dt.datetime.now(dt.timezone.utc)
        staged = self.directory / f'.{name}.crt.renewing'
        self._finish([self._sign(name, staged, now - dt.timedelta(minutes=5), now + dt.timedelta(days=400), extfile)],
                     f'renewing {name}')
        staged.chmod(0o644)
        os.replace(staged, self.cert_path(name))
        return self.sha256(name)

    def sha256(self, name: str) -> str:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(self.cert_path(name).read_text())).hexdigest()


def needed_certificates(specs: list[InstanceSpec]) -> list[CertSpec]:
    """The lab CA plus every certificate or key the selected instances mention."""
    names = {'lab-ca'}
    for spec in specs:
        names.update(NAMED.findall(repr(spec.settings)))
        for listener in spec.listeners:
            names.update(NAMED.findall(repr(listener.options)))
            names.update(name for name in (listener.bound_cert, listener.bound_key, listener.expect.cert)
                         if name and not name.startswith(ABSENT_PREFIX))
        for pki in spec.settings.get('pki', {}).values():
            names.update(name for name in pki if not name.startswith(ABSENT_PREFIX))
        global_cert = spec.settings.get('cert') if spec.mta == 'dovecot' else None
        if global_cert and not global_cert.startswith(ABSENT_PREFIX):
            names.add(global_cert)
    unknown = names - set(CERT_BY_NAME)
    if unknown:
        raise LabError(f'instances refer to unknown certificates: {", ".join(sorted(unknown))}')
    return [spec for spec in CERTIFICATES if spec.name in names]
