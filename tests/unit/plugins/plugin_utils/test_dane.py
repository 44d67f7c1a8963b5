# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The DANE and MTA-STS judgement on fixture data: what the DNS says against what is served and bound."""

from __future__ import annotations

import copy
import hashlib

import pytest

from ansible_collections.mailsec.starttls.plugins.module_utils import _verdict
from ansible_collections.mailsec.starttls.plugins.plugin_utils import _dane, _mail_dns
from ansible_collections.mailsec.starttls.tests.unit.plugins import scenarios as sc


def digests(tag: str) -> dict:
    """Stand-in digests of a certificate `tag` whose key is `tag`-key."""
    return {'cert_sha256': hashlib.sha256(f'cert-{tag}'.encode()).hexdigest(),
            'cert_sha512': hashlib.sha512(f'cert-{tag}'.encode()).hexdigest(),
            'spki_sha256': hashlib.sha256(f'key-{tag}'.encode()).hexdigest(),
            'spki_sha512': hashlib.sha512(f'key-{tag}'.encode()).hexdigest()}


OLD, NEW, CA, NEXT = digests('old'), digests('new'), digests('ca'), digests('next')


def answer(name, rtype, records, secure=True, status=None, bogus=False):
    return {'name': name, 'type': rtype, 'records': records, 'secure': secure, 'bogus': bogus,
            'status': status or ('NOERROR' if records else 'NODATA'), 'resolver': '127.0.0.1:53', 'error': None}


def mx_host(records, secure=True, bogus=False, status=None):
    return {'name': 'mx1.example.test', 'port': 25, 'addresses': ['127.0.70.1'], 'addresses_secure': secure,
            'tlsa': answer('_25._tcp.mx1.example.test.', 'TLSA', records, secure, status, bogus)}


def listener(disk=None, mta='postfix'):
    disk = disk or NEW
    cert, key = '/etc/letsencrypt/live/mx1/fullchain.pem', '/etc/letsencrypt/live/mx1/privkey.pem'
    bound = dict(sc.store(disk['cert_sha256'], cert=cert, key=key),
                 tlsa={'chain': [disk, CA], 'key': {'spki_sha256': disk['spki_sha256'], 'spki_sha512': disk['spki_sha512']}})
    return sc.listener(mta, '127.0.70.1', 25, 'smtp', cert=cert, key=key, store_record=bound,
                       defined_at='/etc/postfix/master.cf:12', mode='host')


def probe(served=None, vantage='controller', advertised=True, reply='220', sans=('mx1.example.test',), verified=True):
    served = served or NEW
    if not advertised:
        return sc.not_advertised('127.0.70.1', 25, vantage)
    if reply != '220':
        return sc.probe('127.0.70.1', 25, 'smtp', vantage, starttls_reply={'code': reply, 'text': 'TLS not available'})
    served_certificate = dict(sc.presented(served['cert_sha256'], verified=verified, subject=f'CN={sans[0]}',
                                           sans=list(sans)), tlsa_chain=[served, CA])
    return sc.tls_ok('127.0.70.1', 25, 'smtp', vantage, certificate=served_certificate)


def gathered(mx, domain=None):
    return {'mx_hosts': {'mx1.example.test': mx}, 'domains': [domain] if domain else []}


def judge(mx, listeners, probes, domain=None, **options):
    return _dane.judge(gathered(mx, domain), listeners, probes, options)


def ids(outcome):
    return sorted(((finding['id'], finding['vantage'], finding['severity']) for finding in outcome['findings']),
                  key=lambda item: tuple(str(part or '') for part in item))


def rec(usage, selector, matching, tag_digests):
    part = 'cert' if selector == 0 else 'spki'
    return f'{usage} {selector} {matching} {tag_digests[part + ("_sha256" if matching == 1 else "_sha512")]}'


def test_tlsa_matching_served_and_on_disk_gives_nothing():
    outcome = judge(mx_host([rec(3, 1, 1, NEW)]), [listener()], [probe(), probe(vantage='host')])
    assert outcome['findings'] == []
    assert outcome['mx'][0]['dnssec'] is True
    assert outcome['mx'][0]['listeners'] == ['mx1|127.0.70.1|25']


@pytest.mark.parametrize('record', [rec(3, 0, 1, NEW), rec(3, 1, 2, NEW), rec(2, 1, 1, CA), rec(2, 0, 2, CA)])
def test_other_usable_record_forms_match(record):
    assert judge(mx_host([record]), [listener()], [probe()])['findings'] == []


def test_tlsa_pinning_the_old_key_after_renewal_is_critical_from_every_vantage_and_on_disk():
    outcome = judge(mx_host([rec(3, 1, 1, OLD)]), [listener()], [probe(), probe(vantage='jump:edge')])
    assert ids(outcome) == [('tlsa-invalid', None, 'critical'), ('tlsa-invalid', 'controller', 'critical'),
                            ('tlsa-invalid', 'jump:edge', 'critical')]
    finding = outcome['findings'][0]
    # The fix names the record that pins what is served now.
    assert NEW['spki_sha256'].upper() in finding['fix']
    assert finding['evidence']['dns']['secure'] is True


def test_renewed_on_disk_not_reloaded_warns_before_the_reload():
    # The TLSA pins the served (old) certificate; the disk holds the new one that a reload will serve.
    outcome = judge(mx_host([rec(3, 1, 1, OLD)]), [listener(disk=NEW)], [probe(served=OLD)])
    assert ids(outcome) == [('tlsa-invalid', None, 'critical')]
    assert 'next reload' in outcome['findings'][0]['summary']


def test_unsigned_zone_says_dane_is_not_in_effect_and_lowers_the_mismatch():
    outcome = judge(mx_host([rec(3, 1, 1, OLD)], secure=False), [listener()], [probe()])
    assert ('dnssec-invalid', None, 'medium') in ids(outcome)
    assert ('tlsa-invalid', 'controller', 'medium') in ids(outcome)
    dnssec = [finding for finding in outcome['findings'] if finding['id'] == 'dnssec-invalid'][0]
    assert dnssec['host'] == 'mx1.example.test' and 'not DNSSEC-validated' in dnssec['summary']


def test_bogus_answer_is_dnssec_invalid_high():
    outcome = judge(mx_host([], bogus=True, status='SERVFAIL'), [listener()], [probe()])
    assert ids(outcome) == [('dnssec-invalid', None, 'high')]


def test_only_pkix_usages_are_unusable():
    outcome = judge(mx_host([rec(1, 1, 1, NEW)]), [listener()], [probe()])
    assert ids(outcome) == [('tlsa-invalid', None, 'high')]


def test_no_starttls_under_tlsa_is_a_dane_failure():
    outcome = judge(mx_host([rec(3, 1, 1, NEW)]), [listener()], [probe(advertised=False)])
    assert ('tlsa-invalid', 'controller', 'critical') in ids(outcome)


def test_next_key_covered_and_not_covered():
    staged = dict(NEXT, path='/etc/letsencrypt/archive/mx1/privkey2.pem', source='certbot', lineage='mx1',
                  for_certificate='/etc/letsencrypt/live/mx1/fullchain.pem', error=None)
    covered = judge(mx_host([rec(3, 1, 1, NEW), rec(3, 1, 1, NEXT)]), [listener()], [probe()],
                    next_keys={'mx1': [staged]})
    assert covered['findings'] == []
    assert any(NEXT['spki_sha256'].upper() in line for line in covered['mx'][0]['publish'])
    uncovered = judge(mx_host([rec(3, 1, 1, NEW)]), [listener()], [probe()], next_keys={'mx1': [staged]})
    assert ids(uncovered) == [('dane-next-key-unpublished', None, 'high')]
    assert NEXT['spki_sha256'].upper() in uncovered['findings'][0]['fix']
    # Another certificate's lineage does not concern this listener.
    other = dict(staged, for_certificate='/etc/ssl/other.pem')
    assert judge(mx_host([rec(3, 1, 1, NEW)]), [listener()], [probe()], next_keys={'mx1': [other]})['findings'] == []
    # A DANE-TA record for the issuing CA covers any next key the same CA certifies.
    assert judge(mx_host([rec(2, 1, 1, CA)]), [listener()], [probe()], next_keys={'mx1': [staged]})['findings'] == []


def test_next_key_unknown():
    unknown = {'path': None, 'source': 'certbot', 'lineage': 'mx1', 'unknown_next_key': True,
               'for_certificate': '/etc/letsencrypt/live/mx1/fullchain.pem'}
    outcome = judge(mx_host([rec(3, 1, 1, NEW)]), [listener()], [probe()], next_keys={'mx1': [unknown]})
    assert ids(outcome) == [('dane-next-key-unpublished', None, 'medium')]


TLSRPT = 'v=TLSRPTv1; rua=mailto:tlsrpt@example.test'


def sts_domain(policy_text, txt=('v=STSv1; id=20260101',), mx=('mx1.example.test',), webpki=True, body_sha='a' * 64,
               tlsrpt=(TLSRPT,)):
    fetched = {'url': 'https://mta-sts.example.test/.well-known/mta-sts.txt', 'status': 200 if webpki else None,
               'body': policy_text if webpki else None, 'sha256': body_sha if webpki else None,
               'webpki': webpki, 'stage': None if webpki else 'tls',
               'error': None if webpki else 'certificate verify failed: unable to get local issuer certificate'}
    if webpki:
        fetched['parsed'] = _mail_dns.parse_policy(policy_text)
    return {'domain': 'example.test', 'exchanges': [{'preference': 10, 'name': name} for name in mx],
            'mx': answer('example.test.', 'MX', [f'10 {name}.' for name in mx]),
            'sts_txt': answer('_mta-sts.example.test.', 'TXT', [f'"{text}"' for text in txt]),
            'sts_records': list(txt), 'policy': fetched,
            'tlsrpt_txt': answer('_smtp._tls.example.test.', 'TXT', [f'"{text}"' for text in tlsrpt]),
            'tlsrpt': [text for text in tlsrpt if text.startswith('v=TLSRPTv1')]}


ENFORCE = 'version: STSv1\nmode: enforce\nmx: mx1.example.test\nmax_age: 604800\n'


def test_sts_enforce_healthy():
    outcome = judge(mx_host([]), [listener()], [probe()], domain=sts_domain(ENFORCE))
    assert outcome['findings'] == []
    assert outcome['domains'][0]['mode'] == 'enforce' and outcome['domains'][0]['sts_id'] == '20260101'


def test_sts_enforce_with_kb_listener_is_critical():
    outcome = judge(mx_host([]), [listener()], [probe(reply='454')], domain=sts_domain(ENFORCE))
    assert ids(outcome) == [('mta-sts-enforce-without-tls', 'controller', 'critical')]
    assert 'enforce' in outcome['findings'][0]['fix']
    testing = ENFORCE.replace('enforce', 'testing')
    assert judge(mx_host([]), [listener()], [probe(reply='454')], domain=sts_domain(testing))['findings'] == []


def test_sts_enforce_certificate_not_naming_the_mx_merges_with_the_core_finding():
    probes = [probe(sans=('other.example.test',))]
    outcome = judge(mx_host([]), [listener()], probes, domain=sts_domain(ENFORCE))
    assert ids(outcome) == [('validation-failure', 'controller', 'critical')]
    core = [{'id': 'validation-failure', 'severity': 'medium', 'key': outcome['findings'][0]['key'],
             'summary': 'core', 'evidence': {}, 'fix': 'core fix'}]
    merged = _dane.merge(copy.deepcopy(core), outcome['findings'])
    assert len(merged) == 1 and merged[0]['severity'] == 'critical' and 'domain_policy' in merged[0]['evidence']


def test_policy_mx_list_missing_an_mx_and_listing_a_stale_one():
    policy = 'version: STSv1\nmode: enforce\nmx: mx2.example.test\nmax_age: 604800\n'
    outcome = judge(mx_host([]), [listener()], [probe()], domain=sts_domain(policy))
    found = ids(outcome)
    assert ('sts-policy-invalid', 'mta-sts:example.test', 'high') in found
    assert ('sts-policy-invalid', 'mx:mx2.example.test', 'low') in found
    assert outcome['findings'][0]['host'] == 'mx1.example.test'


def test_policy_host_with_a_bad_certificate():
    outcome = judge(mx_host([]), [listener()], [probe()], domain=sts_domain(ENFORCE, webpki=False))
    assert ids(outcome) == [('sts-webpki-invalid', None, 'high')]
    assert outcome['findings'][0]['host'] == 'mta-sts.example.test'


@pytest.mark.parametrize('policy, words', [
    ('version: STSv2\nmode: enforce\nmx: mx1.example.test\nmax_age: 604800\n', 'not STSv1'),
    ('version: STSv1\nmode: strict\nmx: mx1.example.test\nmax_age: 604800\n', 'mode is'),
    ('version: STSv1\nmode: enforce\nmx: mx1.example.test\n', 'max_age is missing'),
    ('version: STSv1\nmode: enforce\nmx: mx1.example.test\nmax_age: 99999999\n', 'outside'),
])
def test_invalid_policies(policy, words):
    outcome = judge(mx_host([]), [listener()], [probe()], domain=sts_domain(policy))
    assert [finding['id'] for finding in outcome['findings']] == ['sts-policy-invalid']
    assert words in outcome['findings'][0]['summary']


def test_short_max_age_bad_id_two_records_and_unchanged_id():
    short = ENFORCE.replace('604800', '3600')
    assert ids(judge(mx_host([]), [listener()], [probe()], domain=sts_domain(short))) == \
        [('sts-policy-invalid', 'max_age', 'low')]
    assert 'not 1 to 32' in judge(mx_host([]), [listener()], [probe()],
                                  domain=sts_domain(ENFORCE, txt=('v=STSv1; id=bad-id!',)))['findings'][0]['summary']
    assert ids(judge(mx_host([]), [listener()], [probe()],
                     domain=sts_domain(ENFORCE, txt=('v=STSv1; id=1', 'v=STSv1; id=2')))) == \
        [('sts-policy-invalid', None, 'high')]
    previous = {'example.test': {'sts_id': '20260101', 'policy_sha256': 'b' * 64}}
    outcome = judge(mx_host([]), [listener()], [probe()], domain=sts_domain(ENFORCE), previous=previous)
    assert ids(outcome) == [('sts-policy-invalid', 'id', 'medium')]
    previous['example.test']['sts_id'] = '20251231'
    assert judge(mx_host([]), [listener()], [probe()], domain=sts_domain(ENFORCE), previous=previous)['findings'] == []


def test_tlsrpt_missing_with_mta_sts_or_dane_and_not_without_either():
    outcome = judge(mx_host([]), [listener()], [probe()], domain=sts_domain(ENFORCE, tlsrpt=()))
    assert ids(outcome) == [('tlsrpt-missing', None, 'low')]
    finding = outcome['findings'][0]
    assert finding['host'] == '_smtp._tls.example.test' and 'MTA-STS' in finding['summary']
    # The fix is the record to publish, for this domain.
    assert '_smtp._tls.example.test. 3600 IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@example.test"' in finding['fix']
    # DANE alone (TLSA at the domain's MX, no MTA-STS) asks for it too; a record of another kind is no TLS-RPT.
    dane_only = dict(sts_domain(ENFORCE, txt=(), tlsrpt=('v=spf1 -all',)), sts_records=[], policy=None)
    outcome = judge(mx_host([rec(3, 1, 1, NEW)]), [listener()], [probe()], domain=dane_only)
    assert ids(outcome) == [('tlsrpt-missing', None, 'low')]
    assert outcome['findings'][0]['evidence']['tlsa_mx'] == ['mx1.example.test']
    # Neither MTA-STS nor TLSA: TLS-RPT is not asked for.
    assert judge(mx_host([]), [listener()], [probe()], domain=dane_only)['findings'] == []
    # No answer (SERVFAIL) is not a missing record.
    unanswered = sts_domain(ENFORCE, tlsrpt=())
    unanswered['tlsrpt_txt'] = answer('_smtp._tls.example.test.', 'TXT', [], status='SERVFAIL')
    assert judge(mx_host([]), [listener()], [probe()], domain=unanswered)['findings'] == []
    # Site policy can raise it.
    raised = judge(mx_host([]), [listener()], [probe()], domain=sts_domain(ENFORCE, tlsrpt=()),
                   severity={'tlsrpt-missing': 'medium'})
    assert ids(raised) == [('tlsrpt-missing', None, 'medium')]


@pytest.mark.parametrize('records, words', [
    (('v=TLSRPTv1; rua=tlsrpt@example.test',), 'neither'),
    (('v=TLSRPTv1;',), 'no `rua=`'),
    (('v=TLSRPTv1 rua=mailto:tlsrpt@example.test',), 'does not start with'),
    (('v=tlsrptv1; rua=mailto:tlsrpt@example.test',), 'does not start with'),
    (('v=TLSRPTv1; rua=mailto:a@example.test', 'v=TLSRPTv1; rua=mailto:b@example.test'), '2 TLS-RPT records'),
    (('v=TLSRPTv1; rua=mailto:a@example.test; bad field',), 'not NAME=VALUE'),
])
def test_tlsrpt_malformed(records, words):
    outcome = judge(mx_host([]), [listener()], [probe()], domain=sts_domain(ENFORCE, tlsrpt=records))
    assert ids(outcome) == [('tlsrpt-invalid', None, 'low')]
    assert words in outcome['findings'][0]['summary'], outcome['findings'][0]['summary']
    assert 'v=TLSRPTv1; rua=mailto:tlsrpt@example.test' in outcome['findings'][0]['fix']


@pytest.mark.parametrize('record', [
    'v=TLSRPTv1; rua=mailto:tlsrpt@example.test',
    'v=TLSRPTv1;rua=mailto:a@example.test,https://reports.example.test/v1/tlsrpt;',
    'v=TLSRPTv1 ; rua=https://reports.example.test/tlsrpt ; ext_1=yes',
])
def test_tlsrpt_well_formed(record):
    assert _dane.tlsrpt_problems(record) == []
    assert judge(mx_host([]), [listener()], [probe()], domain=sts_domain(ENFORCE, tlsrpt=(record,)))['findings'] == []


@pytest.mark.parametrize('pattern, name, expected', [
    ('mx1.example.test', 'MX1.example.test.', True), ('*.example.test', 'mx1.example.test', True),
    ('*.example.test', 'a.mx1.example.test', False), ('*.example.test', 'example.test', False),
])
def test_mx_patterns(pattern, name, expected):
    assert _dane.mx_pattern_matches(pattern, name) is expected


def test_parse_helpers():
    assert _mail_dns.txt_text('"v=STSv1; " "id=1"') == 'v=STSv1; id=1'
    assert _mail_dns.parse_tags('v=STSv1; id=20260101;') == {'v': 'STSv1', 'id': '20260101'}
    assert _mail_dns.parse_resolver('127.0.0.53:5353') == ('127.0.0.53', 5353)
    assert _mail_dns.parse_resolver('[::1]:53') == ('::1', 53)
    assert _mail_dns.parse_resolver('::1') == ('::1', 53)
    with pytest.raises(_mail_dns.MailDnsError):
        _mail_dns.parse_resolver('dns.example')
    parsed = _mail_dns.parse_policy('version: STSv1\r\nmode: testing\r\nmx: *.Example.test.\r\nmax_age: 86400\r\n')
    assert parsed['problems'] == [] and parsed['mx'] == ['*.example.test']


def test_new_rules_are_in_the_catalogue_but_not_applicable_by_default():
    for rule in ('tlsa-invalid', 'dnssec-invalid', 'sts-policy-invalid', 'sts-webpki-invalid',
                 'dane-next-key-unpublished', 'mta-sts-enforce-without-tls', 'validation-failure',
                 'tlsrpt-missing', 'tlsrpt-invalid'):
        assert rule in _verdict.RULES
    assert 'tlsa-invalid' not in _verdict.applicable_rules(listener())
    # Site policy may change their severity too.
    outcome = judge(mx_host([rec(3, 1, 1, OLD)]), [listener()], [probe()], severity={'tlsa-invalid': 'low'})
    assert {finding['severity'] for finding in outcome['findings']} == {'low'}


def test_tlsa_records_filter_prints_current_and_next_keys():
    from ansible_collections.mailsec.starttls.plugins.filter.tlsa import tlsa_records
    result = {'listeners': [dict(listener(), store={'tlsa': {'key': NEW}}),
                            dict(listener(), port=587, store={'tlsa': {'key': OLD}})],
              'next_keys': [dict(NEXT, path='/k/next.key', source='user')]}
    lines = tlsa_records(result, 'mx1.example.test', ttl=3600)
    assert lines == ['; current key: /etc/letsencrypt/live/mx1/privkey.pem',
                     f'_25._tcp.mx1.example.test. 3600 IN TLSA 3 1 1 {NEW["spki_sha256"].upper()}',
                     '; next key: /k/next.key (user)',
                     f'_25._tcp.mx1.example.test. 3600 IN TLSA 3 1 1 {NEXT["spki_sha256"].upper()}']
    assert len(tlsa_records(result, 'mx1.example.test', next_keys=False)) == 2
    assert tlsa_records({'tlsa_publish': ['x']}) == ['x']


def test_dns_findings_go_through_the_report_pipeline_and_schema():
    import json
    from pathlib import Path
    from ansible_collections.mailsec.starttls.plugins.plugin_utils import _reports
    from ansible_collections.mailsec.starttls.tests.unit.plugins.plugin_utils import schema_check
    dns = gathered(mx_host([rec(3, 1, 1, OLD)], secure=False), sts_domain(ENFORCE, webpki=False))

    def hook(listeners, probes, findings):
        return _dane.merge(findings, _dane.judge(dns, listeners, probes, {})['findings'])

    report = _reports.audit([listener()], [probe()], {'now': '2026-06-01T00:00:00Z'},
                            [{'query': "id == 'sts-webpki-invalid'", 'reason': 'policy host moves', 'expires': '2099-01-01'}],
                            None, {}, extra_findings=hook)
    found = {finding['id']: finding for finding in report['findings']}
    assert {'tlsa-invalid', 'dnssec-invalid', 'sts-webpki-invalid'} <= set(found)
    assert found['sts-webpki-invalid']['waived'] is True
    schema = json.loads((Path(__file__).resolve().parents[4] / 'docs' / 'report.schema.json').read_text())
    assert schema_check.validate(report, schema) == []
    # The stand-in listeners of DNS names appear in the report with their findings.
    assert any(item['host'] == 'mta-sts.example.test' for item in report['listeners'])
