# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a mail domain promises, read on the controller: MX, DANE TLSA (RFC 7672), MTA-STS
(RFC 8461: the `_mta-sts` TXT record and the policy over HTTPS) and TLS-RPT (RFC 8460).

Every query goes to the resolver the user names, or to the system's (/etc/resolv.conf), and
nowhere else: the policy host's address is resolved here too, so the HTTPS fetch never asks
the system resolver. DNSSEC status is the AD bit of that resolver's answer (RFC 6840 5.7: the
query sets AD to ask for it); a SERVFAIL that a checking-disabled (CD) query does not repeat is
a DNSSEC validation failure. dnspython does the DNS work (a controller requirement).
"""

from __future__ import annotations

import hashlib
import http.client
import re
import socket
import ssl

try:
    import dns.exception
    import dns.flags
    import dns.message
    import dns.name
    import dns.query
    import dns.rcode
    import dns.rdatatype
    import dns.resolver
    HAS_DNSPYTHON = True
    DNSPYTHON_ERROR = None
except ImportError as exc:  # pragma: no cover - reported by the caller
    HAS_DNSPYTHON = False
    DNSPYTHON_ERROR = str(exc)

POLICY_PATH = '/.well-known/mta-sts.txt'
# RFC 8461 3.3: senders may cap the policy body at 64 KiB.
POLICY_LIMIT = 64 * 1024
DEFAULT_TIMEOUT = 5.0
NAME_LIMIT = 200


class MailDnsError(ValueError):
    """Options that cannot be used (a bad resolver address, dnspython missing)."""


def parse_resolver(text: str) -> tuple:
    """'192.0.2.53', '192.0.2.53:5353', '[2001:db8::53]:53', '2001:db8::53' -> (address, port)."""
    text = str(text).strip()
    port = 53
    if text.startswith('['):
        address, _sep, rest = text[1:].partition(']')
        if rest.startswith(':'):
            port = int(rest[1:])
    elif text.count(':') == 1:
        address, port_text = text.split(':')
        port = int(port_text)
    else:
        address = text
    try:
        socket.inet_pton(socket.AF_INET6 if ':' in address else socket.AF_INET, address)
    except OSError:
        raise MailDnsError(f'resolver {text!r}: not an IP address')
    return address, port


def system_resolvers() -> list:
    resolver = dns.resolver.Resolver(configure=True)
    return [(address, resolver.port) for address in resolver.nameservers]


class Lookup:
    """Queries one resolver; remembers every question asked (evidence and the tests' check)."""

    def __init__(self, resolvers: list | None = None, timeout: float = DEFAULT_TIMEOUT):
        if not HAS_DNSPYTHON:
            raise MailDnsError(f'the DNS checks need dnspython on the controller ({DNSPYTHON_ERROR})')
        self.resolvers = [parse_resolver(item) for item in resolvers] if resolvers else system_resolvers()
        if not self.resolvers:
            raise MailDnsError('no resolver: name one (dns_checks.resolvers) or configure /etc/resolv.conf')
        self.timeout = timeout
        self.asked: list = []
        self.cache: dict = {}

    def _exchange(self, name: str, rdtype: str, checking_disabled: bool = False):
        query = dns.message.make_query(name, rdtype, want_dnssec=True)
        query.flags |= dns.flags.AD | dns.flags.RD
        if checking_disabled:
            query.flags |= dns.flags.CD
        last_error = None
        for address, port in self.resolvers:
            self.asked.append({'name': name, 'type': rdtype, 'resolver': f'{address}:{port}',
                               'cd': checking_disabled})
            try:
                response, _tcp = dns.query.udp_with_fallback(query, address, timeout=self.timeout, port=port)
                return response, f'{address}:{port}', None
            except (dns.exception.DNSException, OSError) as exc:
                last_error = f'{address}:{port}: {type(exc).__name__}: {exc}'
        return None, None, last_error or 'no resolver answered'

    def query(self, name: str, rdtype: str) -> dict:
        """{name, type, status (NOERROR/NODATA/NXDOMAIN/SERVFAIL/.../TIMEOUT), records (text),
        secure (AD), bogus (SERVFAIL only with checking enabled), resolver, error}."""
        name = name.rstrip('.').lower() + '.'
        key = (name, rdtype)
        if key in self.cache:
            return self.cache[key]
        answer = {'name': name, 'type': rdtype, 'status': None, 'records': [], 'secure': False, 'bogus': False,
                  'resolver': None, 'error': None}
        response, resolver, error = self._exchange(name, rdtype)
        answer['resolver'] = resolver
        if response is None:
            answer.update(status='TIMEOUT', error=error)
        else:
            rcode = dns.rcode.to_text(response.rcode())
            answer['secure'] = bool(response.flags & dns.flags.AD)
            wanted = dns.rdatatype.from_text(rdtype)
            for rrset in response.answer:
                if rrset.rdtype == wanted:
                    answer['records'].extend(rdata.to_text() for rdata in rrset)
            answer['status'] = 'NODATA' if rcode == 'NOERROR' and not answer['records'] else rcode
            if rcode == 'SERVFAIL':
                # A validating resolver answers SERVFAIL for bogus data; without validation it answers.
                retry, _resolver, _error = self._exchange(name, rdtype, checking_disabled=True)
                answer['bogus'] = retry is not None and dns.rcode.to_text(retry.rcode()) in ('NOERROR', 'NXDOMAIN')
        self.cache[key] = answer
        return answer

    def addresses(self, name: str) -> dict:
        """A and AAAA together: {addresses, secure, answers}."""
        answers = [self.query(name, 'A'), self.query(name, 'AAAA')]
        return {'addresses': [record for answer in answers for record in answer['records']],
                'secure': all(answer['secure'] for answer in answers if answer['records']) and
                any(answer['records'] for answer in answers),
                'answers': answers}


# -- MTA-STS and TLS-RPT texts ---------------------------------------------------------------

def parse_tags(text: str) -> dict:
    """'v=STSv1; id=2024' -> {'v': 'STSv1', 'id': '2024'} (RFC 8461 3.1, RFC 8460 3)."""
    tags = {}
    for part in str(text).split(';'):
        if '=' in part:
            key, value = part.split('=', 1)
            tags[key.strip()] = value.strip()
    return tags


def txt_text(record: str) -> str:
    """A TXT record's presentation ('"a" "b"') as one string (RFC 7208 3.3 style joining)."""
    parts = re.findall(r'"((?:[^"\\]|\\.)*)"', record)
    if not parts:
        return record
    return ''.join(parts).replace('\\"', '"')


def parse_policy(body: str) -> dict:
    """An MTA-STS policy body: {version, mode, mx: [...], max_age, problems: [...]}."""
    policy = {'version': None, 'mode': None, 'mx': [], 'max_age': None, 'problems': [], 'unknown': []}
    for line in body.replace('\r\n', '\n').split('\n'):
        if not line.strip():
            continue
        if ':' not in line:
            policy['problems'].append(f'line without a key: {line[:80]!r}')
            continue
        key, value = (part.strip() for part in line.split(':', 1))
        if key == 'version':
            policy['version'] = value
        elif key == 'mode':
            policy['mode'] = value
        elif key == 'mx':
            policy['mx'].append(value.lower().rstrip('.'))
        elif key == 'max_age':
            try:
                policy['max_age'] = int(value)
            except ValueError:
                policy['problems'].append(f'max_age {value[:40]!r} is not a number')
        else:
            policy['unknown'].append(key[:40])
    if policy['version'] != 'STSv1':
        policy['problems'].append(f'version is {policy["version"]!r}, not STSv1')
    if policy['mode'] not in ('enforce', 'testing', 'none'):
        policy['problems'].append(f'mode is {policy["mode"]!r}, not enforce, testing or none')
    if policy['max_age'] is None:
        policy['problems'].append('max_age is missing')
    elif not 0 <= policy['max_age'] <= 31557600:
        policy['problems'].append(f'max_age {policy["max_age"]} is outside 0..31557600 seconds')
    if not policy['mx'] and policy['mode'] != 'none':
        policy['problems'].append('no mx line')
    return policy


def fetch_policy(domain: str, lookup: Lookup, ca_file: str | None = None, port: int = 443,
                 timeout: float = DEFAULT_TIMEOUT) -> dict:
    """GET https://mta-sts.DOMAIN/.well-known/mta-sts.txt, the host resolved through `lookup`,
    its certificate verified against `ca_file` or the system store, no redirects (RFC 8461 3.3)."""
    host = f'mta-sts.{domain}'
    result = {'url': f'https://{host}{POLICY_PATH}', 'address': None, 'dns': None, 'status': None,
              'content_type': None, 'body': None, 'sha256': None, 'error': None, 'stage': None,
              'webpki': None, 'ca_file': ca_file}
    resolved = lookup.addresses(host)
    result['dns'] = {'addresses': resolved['addresses'], 'secure': resolved['secure']}
    if not resolved['addresses']:
        result.update(stage='dns', error=f'{host} has no address')
        return result
    context = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
    last_error = None
    for address in resolved['addresses']:
        result['address'] = address
        try:
            raw = socket.create_connection((address, port), timeout=timeout)
        except OSError as exc:
            last_error = ('connect', f'{address}:{port}: {exc}')
            continue
        try:
            try:
                wrapped = context.wrap_socket(raw, server_hostname=host)
            except ssl.SSLCertVerificationError as exc:
                result.update(stage='tls', webpki=False, error=f'{exc.verify_message or exc}')
                raw.close()
                return result
            except (ssl.SSLError, OSError) as exc:
                result.update(stage='tls', error=f'handshake failed: {exc}')
                raw.close()
                return result
            result['webpki'] = True
            connection = http.client.HTTPConnection(host, port, timeout=timeout)
            connection.sock = wrapped
            try:
                connection.request('GET', POLICY_PATH, headers={'Host': host, 'User-Agent': 'mailsec.starttls',
                                                                'Connection': 'close'})
                response = connection.getresponse()
                body = response.read(POLICY_LIMIT + 1)
                result['status'] = response.status
                result['content_type'] = response.getheader('Content-Type')
            finally:
                connection.close()
        except (OSError, http.client.HTTPException) as exc:
            result.update(stage='http', error=f'{type(exc).__name__}: {exc}')
            return result
        if result['status'] != 200:
            result.update(stage='http', error=f'HTTP status {result["status"]} (redirects are not followed)')
            return result
        if len(body) > POLICY_LIMIT:
            result.update(stage='http', error=f'the policy is larger than {POLICY_LIMIT} bytes')
            return result
        result['sha256'] = hashlib.sha256(body).hexdigest()
        result['body'] = body.decode('utf-8', 'replace')
        return result
    result.update(stage=last_error[0], error=last_error[1])
    return result


# -- one domain, one MX ---------------------------------------------------------------------

def resolve_mx_host(mx_name: str, lookup: Lookup, port: int = 25) -> dict:
    tlsa = lookup.query(f'_{port}._tcp.{mx_name.rstrip(".")}', 'TLSA')
    resolved = lookup.addresses(mx_name)
    return {'name': mx_name.rstrip('.').lower(), 'port': port, 'addresses': resolved['addresses'],
            'addresses_secure': resolved['secure'], 'tlsa': tlsa}


def resolve_domain(domain: str, lookup: Lookup, ca_file: str | None = None, https_port: int = 443,
                   timeout: float = DEFAULT_TIMEOUT) -> dict:
    domain = domain.rstrip('.').lower()
    mx_answer = lookup.query(domain, 'MX')
    exchanges = []
    for record in mx_answer['records']:
        parts = record.split()
        if len(parts) == 2:
            exchanges.append({'preference': int(parts[0]), 'name': parts[1].rstrip('.').lower()})
    exchanges.sort(key=lambda item: (item['preference'], item['name']))
    sts_answer = lookup.query(f'_mta-sts.{domain}', 'TXT')
    sts_records = [txt_text(record) for record in sts_answer['records']]
    sts_records = [text for text in sts_records if text.startswith('v=STSv1')]
    tlsrpt_answer = lookup.query(f'_smtp._tls.{domain}', 'TXT')
    tlsrpt = [txt_text(record) for record in tlsrpt_answer['records']]
    result = {'domain': domain, 'mx': mx_answer, 'exchanges': exchanges, 'sts_txt': sts_answer,
              'sts_records': sts_records, 'tlsrpt_txt': tlsrpt_answer,
              'tlsrpt': [text for text in tlsrpt if text.startswith('v=TLSRPTv1')], 'policy': None}
    if sts_records:
        fetched = fetch_policy(domain, lookup, ca_file=ca_file, port=https_port, timeout=timeout)
        if fetched['body'] is not None:
            fetched['parsed'] = parse_policy(fetched['body'])
        result['policy'] = fetched
    return result


def gather(domains: list, mx_names: list, resolvers: list | None = None, ca_file: str | None = None,
           port: int = 25, https_port: int = 443, timeout: float = DEFAULT_TIMEOUT) -> dict:
    """Everything the domains and MX names publish; `asked` lists every question put to the resolver."""
    lookup = Lookup(resolvers, timeout)
    gathered = {'resolvers': [f'{address}:{port_}' for address, port_ in lookup.resolvers], 'domains': [],
                'mx_hosts': {}}
    names = []
    for domain in domains or []:
        record = resolve_domain(domain, lookup, ca_file=ca_file, https_port=https_port, timeout=timeout)
        gathered['domains'].append(record)
        names.extend(exchange['name'] for exchange in record['exchanges'])
    names.extend(name.rstrip('.').lower() for name in mx_names or [])
    for name in names:
        if name and name not in gathered['mx_hosts'] and len(gathered['mx_hosts']) < NAME_LIMIT:
            gathered['mx_hosts'][name] = resolve_mx_host(name, lookup, port)
    gathered['asked'] = lookup.asked
    return gathered
