# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""DANE TLSA and MTA-STS against real parts on loopback: Knot serving a DNSSEC-signed zone (and an
unsigned one), Unbound validating with that zone's trust anchor, nginx serving the MTA-STS policies
with certificates from the lab CA, and the lab's real Postfix instances as the MX hosts. The audit
playbook runs with the DNS checks on; every query goes to the lab's resolver and nothing else."""

from __future__ import annotations

import datetime
import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from conftest import PRIVATE_NETWORK_PROBLEM, ansible_bin
from test_audit_role import run_audit, write_inventory

cryptography = pytest.importorskip('cryptography')
pytest.importorskip('dns')
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

import dns_lab  # noqa: E402  pylint: disable=import-error,wrong-import-position

ZONES_OWN = ('lab.test.', 'kb.lab.test.', 'badcert.lab.test.', 'unsigned.test.')


def spki_sha256_of_key(key) -> str:
    return hashlib.sha256(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()


def spki_sha256_of_cert(path) -> str:
    with open(path, 'rb') as handle:
        certificate = x509.load_pem_x509_certificate(handle.read())
    return hashlib.sha256(certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()


def issue(directory, name, ca_cert_path=None, ca_key_path=None):
    """A server certificate for `name`: from the lab CA, or self-signed without one."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    if ca_cert_path:
        ca_cert = x509.load_pem_x509_certificate(open(ca_cert_path, 'rb').read())
        ca_key = serialization.load_pem_private_key(open(ca_key_path, 'rb').read(), None)
        issuer, signer = ca_cert.subject, ca_key
    else:
        issuer, signer = subject, key
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(days=30))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
                   .sign(signer, hashes.SHA256()))
    cert_path, key_path = directory / f'{name}.crt', directory / f'{name}.key'
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return str(cert_path), str(key_path)


def policy(mode, *mx):
    return 'version: STSv1\n' f'mode: {mode}\n' + ''.join(f'mx: {name}\n' for name in mx) + 'max_age: 604800\n'


@pytest.fixture(scope='module')
def dane(lab, sshd, ansible_env, tmp_path_factory):  # pylint: disable=unused-argument
    missing = dns_lab.missing_binaries()
    if missing:
        pytest.fail(f'DNS lab not installed ({", ".join(missing)}): run tests/setup.sh')
    work = tmp_path_factory.mktemp('dane')
    certs = work / 'certs'
    certs.mkdir()
    ca_cert, ca_key = f"{lab['root']}/certs/lab-ca.crt", f"{lab['root']}/certs/lab-ca.key"
    postfix_a = spki_sha256_of_cert(f"{lab['root']}/certs/postfix-a.crt")
    postfix_b = spki_sha256_of_cert(f"{lab['root']}/certs/postfix-b.crt")
    # The keys staged for the next renewal: one already pinned at mail-a, one not.
    staged = work / 'next'
    staged.mkdir()
    keys = {}
    for name in ('covered', 'uncovered'):
        key = ec.generate_private_key(ec.SECP256R1())
        (staged / f'{name}.key').write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        keys[name] = spki_sha256_of_key(key)
    old_key = spki_sha256_of_key(ec.generate_private_key(ec.SECP256R1()))
    zones = {
        'lab.test': {'signed': True, 'records': [
            '@ IN MX 10 mail-a', '@ IN MX 20 mail-b',
            'mail-a IN A 127.0.10.1', 'mail-b IN A 127.0.11.1',
            f'_25._tcp.mail-a IN TLSA 3 1 1 {postfix_a}', f'_25._tcp.mail-a IN TLSA 3 1 1 {keys["covered"]}',
            # mail-b was renewed with a new key; its record still pins the old one.
            f'_25._tcp.mail-b IN TLSA 3 1 1 {old_key}',
            '_mta-sts IN TXT "v=STSv1; id=20261202"', 'mta-sts IN A 127.0.53.3',
            '_smtp._tls IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@lab.test"',
            # kb.lab.test: MTA-STS enforce over the KB Q237327 listener (454).
            'kb IN MX 10 mail.kb', 'mail.kb IN A 127.0.10.2',
            '_mta-sts.kb IN TXT "v=STSv1; id=1"', 'mta-sts.kb IN A 127.0.53.4',
            # Its TLS-RPT record names a destination without a scheme: senders ignore it.
            '_smtp._tls.kb IN TXT "v=TLSRPTv1; rua=tlsrpt@kb.lab.test"',
            # badcert.lab.test: the policy host presents a certificate no trusted CA issued.
            'badcert IN MX 10 mail-a', '_mta-sts.badcert IN TXT "v=STSv1; id=1"', 'mta-sts.badcert IN A 127.0.53.5',
        ]},
        'unsigned.test': {'signed': False, 'records': [
            '@ IN MX 10 mx', 'mx IN A 127.0.10.1', f'_25._tcp.mx IN TLSA 3 1 1 {postfix_a}']},
    }
    sites = []
    for address, name, body, trusted in (
            ('127.0.53.3', 'mta-sts.lab.test', policy('enforce', 'mail-a.lab.test'), True),
            ('127.0.53.4', 'mta-sts.kb.lab.test', policy('enforce', 'mail.kb.lab.test'), True),
            ('127.0.53.5', 'mta-sts.badcert.lab.test', policy('enforce', 'mail-a.badcert.lab.test'), False)):
        cert, key = issue(certs, name, ca_cert if trusted else None, ca_key if trusted else None)
        sites.append({'address': address, 'name': name, 'cert': cert, 'key': key, 'body': body})
    instance = dns_lab.DnsLab(work / 'dns', zones, sites)
    try:
        started = instance.start()
        inventory = write_inventory(work / 'inventory.json', lab)
        completed = run_audit(ansible_env, inventory, work / 'reports', extra={
            'starttls_dns_checks': True, 'starttls_domains': ['lab.test', 'kb.lab.test', 'badcert.lab.test', 'unsigned.test'],
            'starttls_dns_resolvers': [started['resolver']], 'starttls_sts_ca_file': ca_cert,
            'starttls_next_keys': [str(staged / '*.key')], 'starttls_fail': False})
        report_path = work / 'reports' / 'starttls-report.json'
        assert report_path.exists(), completed.stdout[-5000:] + completed.stderr[-3000:]
        yield {'report': json.loads(report_path.read_text()), 'completed': completed, 'keys': keys,
               'dns': json.loads((work / 'reports' / 'starttls-report.dns.json').read_text()),
               'queries': instance.queries(), 'resolver': started['resolver'], 'postfix_a': postfix_a,
               'lab_root': lab['root'], 'work': work, 'staged': staged, 'inventory': inventory}
    finally:
        instance.remove()


def found(report, rule, host=None, address=None):
    return [finding for finding in report['findings'] if finding['id'] == rule
            and (host is None or finding['host'] == host)
            and (address is None or finding['listener']['address'] == address)]


def test_the_run_succeeds_with_the_dns_step(dane):
    assert dane['completed'].returncode == 0, dane['completed'].stdout[-4000:]
    assert dane['dns']['resolvers'] == [f"{dane['resolver']}:53"]


def test_tlsa_matching_gives_no_tlsa_finding(dane):
    # mta_tls_info finds Postfix instances by their processes, and the PID namespace is shared: another
    # checkout's lab on the same addresses shows up with its own certificates. Only this lab's count.
    mine = [(finding['vantage'], finding['summary']) for finding in
            found(dane['report'], 'tlsa-invalid', 'lab-host', '127.0.10.1')
            if finding['vantage'] is not None or dane['lab_root'] in finding['summary']]
    assert mine == []
    mail_a = next(item for item in dane['dns']['tlsa'] if item['mx'] == 'mail-a.lab.test')
    assert mail_a['dnssec'] is True and mail_a['listeners']


def test_tlsa_pinning_the_old_key_after_renewal(dane):
    findings = found(dane['report'], 'tlsa-invalid', 'lab-host', '127.0.11.1')
    vantages = {finding['vantage'] for finding in findings}
    # Served to the host's own probe and to the controller, and bound on disk.
    assert {'host', 'controller', None} <= vantages, vantages
    assert {finding['severity'] for finding in findings} == {'critical'}
    assert all(finding['evidence']['dns']['secure'] is True for finding in findings)


def test_next_key_covered_and_not_covered(dane):
    findings = found(dane['report'], 'dane-next-key-unpublished', 'lab-host', '127.0.10.1')
    assert len(findings) == 1
    assert findings[0]['evidence']['next_key']['path'].endswith('uncovered.key')
    assert dane['keys']['uncovered'].upper() in findings[0]['fix']
    # The zone lines to publish name the bound key and both staged keys.
    lines = '\n'.join(dane['dns']['tlsa_publish'])
    for digest in (dane['postfix_a'], dane['keys']['covered'], dane['keys']['uncovered']):
        assert f'_25._tcp.mail-a.lab.test. IN TLSA 3 1 1 {digest.upper()}' in lines


def test_unsigned_zone_says_so(dane):
    findings = found(dane['report'], 'dnssec-invalid', 'mx.unsigned.test')
    assert len(findings) == 1 and findings[0]['severity'] == 'medium'
    assert findings[0]['evidence']['dns']['secure'] is False
    assert found(dane['report'], 'tlsa-invalid', 'mx.unsigned.test') == []
    assert found(dane['report'], 'dnssec-invalid', 'mail-a.lab.test') == []


def test_mta_sts_enforce_with_a_kb_listener_is_critical(dane):
    findings = found(dane['report'], 'mta-sts-enforce-without-tls', 'lab-host', '127.0.10.2')
    assert findings and {finding['severity'] for finding in findings} == {'critical'}
    assert {'host', 'controller'} <= {finding['vantage'] for finding in findings}
    # The healthy enforced MX has none.
    assert found(dane['report'], 'mta-sts-enforce-without-tls', 'lab-host', '127.0.10.1') == []


def test_policy_mx_list_missing_an_mx(dane):
    findings = found(dane['report'], 'sts-policy-invalid', 'mail-b.lab.test')
    assert len(findings) == 1 and findings[0]['severity'] == 'high'
    assert findings[0]['evidence']['fetch']['webpki'] is True


def test_policy_host_with_a_bad_certificate(dane):
    findings = found(dane['report'], 'sts-webpki-invalid', 'mta-sts.badcert.lab.test')
    assert len(findings) == 1
    assert 'certificate' in findings[0]['summary'] or 'verify' in findings[0]['summary']
    assert found(dane['report'], 'sts-webpki-invalid', 'mta-sts.lab.test') == []


def test_tls_rpt_missing_or_malformed_where_mta_sts_or_dane_is_published(dane):
    rules = {finding['host']: finding['id'] for finding in dane['report']['findings']
             if finding['id'] in ('tlsrpt-missing', 'tlsrpt-invalid')}
    # lab.test publishes a well-formed record; kb.lab.test a malformed one; badcert.lab.test (MTA-STS) and
    # unsigned.test (TLSA only) none.
    assert rules == {'_smtp._tls.kb.lab.test': 'tlsrpt-invalid', '_smtp._tls.badcert.lab.test': 'tlsrpt-missing',
                     '_smtp._tls.unsigned.test': 'tlsrpt-missing'}, rules
    invalid = found(dane['report'], 'tlsrpt-invalid', '_smtp._tls.kb.lab.test')[0]
    assert invalid['severity'] == 'low' and 'tlsrpt@kb.lab.test' in invalid['summary']
    assert invalid['evidence']['dns']['records'] == ['"v=TLSRPTv1; rua=tlsrpt@kb.lab.test"']
    assert '"v=TLSRPTv1; rua=mailto:tlsrpt@kb.lab.test"' in invalid['fix']
    missing = found(dane['report'], 'tlsrpt-missing', '_smtp._tls.unsigned.test')[0]
    assert missing['evidence']['tlsa_mx'] == ['mx.unsigned.test'] and missing['evidence']['mta_sts'] is False


def test_no_query_went_anywhere_but_the_lab_resolver(dane):
    asked = dane['dns']['asked']
    assert asked and {entry['resolver'] for entry in asked} == {f"{dane['resolver']}:53"}
    # And the resolver was asked about the lab's zones only (its log), nothing outside them.
    assert dane['queries']
    strays = [name for name, _type in dane['queries'] if not name.endswith(ZONES_OWN) and name not in ZONES_OWN]
    assert strays == []
    # The whole run (resolver, policy hosts, MTAs, ansible) was in the tests' own network namespace.
    assert PRIVATE_NETWORK_PROBLEM is None, PRIVATE_NETWORK_PROBLEM


# -- the remediation role prints the TLSA records to publish (never applies them) -----------------

def openssl_spki_sha256(path, private_key=False) -> str:
    """SHA-256 of the SubjectPublicKeyInfo of a certificate (or a private key's public half), by the
    openssl command alone: x509 -pubkey (pkey -pubout) | pkey -pubin -outform DER | sha256sum."""
    command = (['openssl', 'pkey', '-in', str(path), '-pubout'] if private_key
               else ['openssl', 'x509', '-in', str(path), '-pubkey', '-noout'])
    public = subprocess.run(command, capture_output=True, check=True).stdout
    der = subprocess.run(['openssl', 'pkey', '-pubin', '-outform', 'DER'], input=public, capture_output=True,
                         check=True).stdout
    return subprocess.run(['sha256sum'], input=der, capture_output=True, check=True).stdout.split()[0].decode()


def lab_files(root) -> dict:
    """Every configuration file of the lab's MTAs (nothing may change)."""
    return {str(path): path.read_bytes() for path in Path(root).rglob('*')
            if path.is_file() and path.suffix in ('.cf', '.conf') and '/queue' not in str(path)}


def remediate_tlsa(ansible_env, dane, name, extra, args=()) -> dict:
    reports = dane['work'] / f'remediate-{name}'
    variables = dict({'starttls_report_dir': str(reports), 'starttls_target': 'lab-host', 'starttls_mtas': ['postfix'],
                      # The one compliant listener: the role has nothing to change, only records to print.
                      'starttls_remediate_listeners': [{'address': '127.0.10.1', 'port': 25}]}, **extra)
    completed = subprocess.run([ansible_bin('ansible-playbook'), '-i', dane['inventory'], 'mailsec.starttls.remediate',
                                '-e', json.dumps(variables), *args],
                               env=ansible_env, capture_output=True, text=True, timeout=900, check=False)
    assert completed.returncode == 0, completed.stdout[-6000:] + completed.stderr[-2000:]
    # The printed lines: the debug task's message, as the default callback shows it.
    task = completed.stdout.index('REPORT | TLSA records to publish')
    start = completed.stdout.index('ok: [lab-host] => ', task) + len('ok: [lab-host] => ')
    printed, _end = json.JSONDecoder().raw_decode(completed.stdout[start:])
    record = json.loads((reports / 'starttls-remediation-lab-host.json').read_text())
    zone = (reports / 'starttls-remediation-lab-host.tlsa.zone').read_text()
    return {'printed': printed['msg'], 'record': record, 'zone': zone, 'output': completed.stdout}


def group_of(lines, mx) -> list:
    """The lines of one MX's group (from its `; MX name` header to the next)."""
    start = lines.index(next(line for line in lines if line.startswith(f'; MX {mx} ')))
    following = [index for index, line in enumerate(lines) if index > start and line.startswith('; MX ')]
    return lines[start:following[0] if following else len(lines)]


def test_remediation_prints_the_tlsa_records_of_the_current_and_the_next_key(ansible_env, dane):
    before = lab_files(dane['lab_root'])
    extra = {'starttls_remediate_report': str(dane['work'] / 'reports' / 'starttls-report.json'),
             'starttls_next_keys': [str(dane['staged'] / '*.key')]}
    checked = remediate_tlsa(ansible_env, dane, 'check', extra, args=('--check',))
    lines = checked['printed']
    # Computed here, independently, with the openssl command.
    current_a = openssl_spki_sha256(f"{dane['lab_root']}/certs/postfix-a.crt").upper()
    current_b = openssl_spki_sha256(f"{dane['lab_root']}/certs/postfix-b.crt").upper()
    covered = openssl_spki_sha256(dane['staged'] / 'covered.key', private_key=True).upper()
    uncovered = openssl_spki_sha256(dane['staged'] / 'uncovered.key', private_key=True).upper()
    mail_a = group_of(lines, 'mail-a.lab.test')
    assert mail_a[0].startswith('; MX mail-a.lab.test (listeners 127.0.10.1:25')
    assert mail_a[0].endswith(': 2 TLSA record(s) published, DNSSEC-validated'), mail_a[0]
    comments = {line: mail_a[index - 1] for index, line in enumerate(mail_a) if not line.startswith(';')}
    # (The PID namespace is shared: another checkout's lab on the same address may show up with its own key.)
    records = [line for line, comment in comments.items()
               if dane['lab_root'] in comment or str(dane['staged']) in comment]
    owner = '_25._tcp.mail-a.lab.test. 3600 IN TLSA 3 1 1 '
    assert records == [owner + current_a, owner + covered, owner + uncovered], mail_a
    assert comments[owner + current_a].startswith('; CURRENT key ') and 'PUBLISHED' in comments[owner + current_a]
    assert 'postfix-a.key' in comments[owner + current_a]
    assert comments[owner + covered].startswith('; NEXT key ') and ': PUBLISHED' in comments[owner + covered]
    assert comments[owner + uncovered].startswith('; NEXT key ') and 'NOT PUBLISHED: publish it now' in \
        comments[owner + uncovered]
    # mail-b was renewed with a new key: its current key is not published; the old key's record is to go.
    mail_b = group_of(lines, 'mail-b.lab.test')
    owner_b = '_25._tcp.mail-b.lab.test. 3600 IN TLSA 3 1 1 '
    assert 'NOT PUBLISHED: publish it now' in mail_b[mail_b.index(owner_b + current_b) - 1]
    assert any(line.startswith('; published, pins none of these keys') for line in mail_b), mail_b
    # The unsigned zone's MX says that its records are not validated.
    assert 'NOT DNSSEC-validated' in group_of(lines, 'mx.unsigned.test')[0]
    # The zone file and the changes report hold what was printed; nothing changed on the host.
    assert checked['zone'] == '\n'.join(lines) + '\n'
    assert checked['record']['tlsa']['lines'] == lines and checked['record']['check_mode'] is True
    assert checked['record']['tlsa']['zone_file'].endswith('starttls-remediation-lab-host.tlsa.zone')
    assert 'PRIVATE KEY' not in checked['output'] and 'PRIVATE KEY' not in checked['zone']
    # A second run, not in check mode, prints the same and changes nothing either.
    again = remediate_tlsa(ansible_env, dane, 'again', extra)
    assert again['printed'] == lines and again['zone'] == checked['zone']
    assert 'changed=0' in again['output']
    assert lab_files(dane['lab_root']) == before


def test_remediation_without_dns_data_or_next_key_says_so(ansible_env, dane):
    printed = remediate_tlsa(ansible_env, dane, 'nodns', {
        'starttls_mx_names': ['mx.lab.test'], 'starttls_next_keys': [str(dane['staged'] / 'absent-*.key')]},
        args=('--check',))['printed']
    header = printed[0]
    assert header.startswith('; MX mx.lab.test (listeners ') and 'published TLSA records unknown' in header
    # Every SMTP listener on port 25 with a bound certificate, under the MX name given.
    assert '127.0.10.1:25' in header and '127.0.11.1:25' in header
    current_a = openssl_spki_sha256(f"{dane['lab_root']}/certs/postfix-a.crt").upper()
    assert f'_25._tcp.mx.lab.test. 3600 IN TLSA 3 1 1 {current_a}' in printed
    assert any(line.startswith('; NO NEXT KEY staged for the next renewal was found') for line in printed), printed
    assert not any(line.startswith('; NEXT key') for line in printed)
