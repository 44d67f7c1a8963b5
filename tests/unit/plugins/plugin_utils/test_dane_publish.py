# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The TLSA records the remediation role prints: per MX of one host, the current and the next key,
which are published already, and what is missing (plugin_utils/_dane.publish_plan, the tlsa_records filter)."""

from __future__ import annotations

import pytest

from ansible_collections.mailsec.starttls.plugins.filter.tlsa import tlsa_records
from ansible_collections.mailsec.starttls.plugins.plugin_utils import _dane
from ansible_collections.mailsec.starttls.tests.unit.plugins.plugin_utils.test_dane import (
    CA, NEW, NEXT, OLD, listener, rec)

CERT = '/etc/letsencrypt/live/mx1/fullchain.pem'
OWNER = '_25._tcp.mx1.example.test.'


def host_result(*next_keys, listeners=None):
    result = {'listeners': listeners or [listener()]}
    if next_keys != (None,):
        result['next_keys'] = list(next_keys)
    return result


def staged(digests=None, **extra):
    digests = NEXT if digests is None else digests
    entry = dict({'path': '/etc/letsencrypt/archive/mx1/privkey2.pem', 'source': 'certbot', 'lineage': 'mx1',
                  'for_certificate': CERT, 'error': None, 'reuse_key': None}, **digests)
    entry.update(extra)
    return entry


def dns_result(records, secure=True, listeners=('mx1|127.0.70.1|25',), status='NOERROR'):
    return {'tlsa': [{'mx': 'mx1.example.test', 'tlsa_owner': OWNER, 'dnssec': secure, 'records': list(records),
                      'listeners': list(listeners)}],
            'mx_hosts': {'mx1.example.test': {'tlsa': {
                'records': list(records), 'secure': secure, 'bogus': False, 'status': status}}}}


def record_line(digests, ttl=3600):
    return f'{OWNER} {ttl} IN TLSA 3 1 1 {digests["spki_sha256"].upper()}'


def comment_before(lines, record):
    return lines[lines.index(record) - 1]


def test_current_and_next_with_what_is_published():
    lines = tlsa_records(host_result(staged()), host='mx1', ttl=3600, dns=dns_result([rec(3, 1, 1, NEW)]))
    assert lines[0].startswith('; MX mx1.example.test (listeners 127.0.70.1:25): 1 TLSA record(s) published, '
                               'DNSSEC-validated')
    current = comment_before(lines, record_line(NEW))
    assert current.startswith('; CURRENT key /etc/letsencrypt/live/mx1/privkey.pem')
    assert 'PUBLISHED' in current and 'then remove it' in current
    upcoming = comment_before(lines, record_line(NEXT))
    assert upcoming.startswith('; NEXT key /etc/letsencrypt/archive/mx1/privkey2.pem (certbot')
    assert 'NOT PUBLISHED: publish it now, two TTLs or more before the renewal' in upcoming
    # Every record line is a zone-file line; everything else is a comment.
    assert all(line.startswith(';') or line.startswith(f'{OWNER} 3600 IN TLSA 3 1 1 ') for line in lines)


def test_a_record_for_an_old_key_is_listed_for_removal_and_an_unusable_one_says_why():
    lines = tlsa_records(host_result(staged()), host='mx1', dns=dns_result(
        [rec(3, 1, 1, NEW), rec(3, 1, 1, NEXT), rec(3, 1, 1, OLD), rec(1, 1, 1, NEW)]))
    text = '\n'.join(lines)
    assert 'NOT PUBLISHED' not in text
    stale = [line for line in lines if OLD['spki_sha256'].upper() in line]
    assert len(stale) == 1 and stale[0].startswith(f'; {OWNER} IN TLSA 3 1 1 ')
    assert 'pins none of these keys' in lines[lines.index(stale[0]) - 1]
    assert 'unusable (usage 1 (PKIX-EE) is unusable for SMTP' in text


def test_dane_ta_and_full_certificate_records_count_as_published_for_the_current_chain():
    groups = _dane.publish_plan(host_result(staged()), host='mx1', dns=dns_result([rec(2, 1, 1, CA)]))
    current, upcoming = groups[0]['keys']
    assert current['published'] == [rec(2, 1, 1, CA)] and upcoming['published'] == []
    assert upcoming['ta_covered'] is True and groups[0]['stale'] == []
    assert 'covered by the DANE-TA record' in '\n'.join(_dane.plan_lines(groups))


def test_no_dns_data_says_publication_is_unknown_and_uses_the_names_given():
    lines = tlsa_records(host_result(staged()), host='lab-host', mx_names=['mx1.example.test', 'mx2.example.test'])
    assert [line for line in lines if line.startswith('; MX ')] == [
        '; MX mx1.example.test (listeners 127.0.70.1:25): published TLSA records unknown (no DNS data: run the audit '
        'with starttls_dns_checks)',
        '; MX mx2.example.test (listeners 127.0.70.1:25): published TLSA records unknown (no DNS data: run the audit '
        'with starttls_dns_checks)']
    assert 'publication unknown (no DNS data)' in comment_before(lines, f'{OWNER} IN TLSA 3 1 1 {NEW["spki_sha256"].upper()}')
    # Without names: the host's own name.
    assert tlsa_records(host_result(staged()), host='mx9.example.test')[0].startswith('; MX mx9.example.test ')


def test_the_mx_names_of_the_dns_step_decide_which_listeners_are_mx_listeners():
    other = dict(listener(), address='127.0.70.9')
    result = host_result(staged(), listeners=[listener(), other])
    groups = _dane.publish_plan(result, host='mx1', mx_names=['ignored.example.test'], dns=dns_result([]))
    assert [(group['mx'], group['listeners']) for group in groups] == [('mx1.example.test', ['127.0.70.1:25'])]
    # Listeners on other ports, and without a bound certificate, are not MX listeners.
    unbound = dict(listener(), binding={}, store={})
    assert _dane.publish_plan(host_result(listeners=[unbound, dict(listener(), port=587)]), host='mx1') == []
    assert tlsa_records(host_result(listeners=[unbound]), host='mx1') == [
        '; no SMTP listener with a bound certificate on the MX port: no TLSA record to publish']


@pytest.mark.parametrize('next_key, words', [
    (None, 'next keys were not looked for'),
    ((), 'NO NEXT KEY staged for the next renewal was found'),
    (({'path': None, 'source': 'certbot', 'lineage': 'mx1', 'unknown_next_key': True, 'for_certificate': CERT,
       'spki_sha256': None},), 'NO NEXT KEY: the certbot lineage mx1 makes a new key at each renewal'),
    ((staged(error='the key is encrypted', spki_sha256=None),), 'NO NEXT KEY from /etc/letsencrypt/archive/mx1/privkey2.pem'),
    ((staged(for_certificate='/etc/ssl/other.pem'),), 'NO NEXT KEY staged'),
])
def test_a_missing_next_key_is_said_clearly(next_key, words):
    result = host_result(None) if next_key is None else host_result(*next_key)
    lines = tlsa_records(result, host='mx1', mx_name='mx1.example.test', dns=dns_result([rec(3, 1, 1, NEW)]))
    assert any(words in line for line in lines), lines
    assert sum(1 for line in lines if not line.startswith(';')) == 1


def test_a_reused_key_is_current_and_next_in_one_record():
    reused = staged(NEW, path='/etc/letsencrypt/live/mx1/privkey.pem', reuse_key=True)
    lines = tlsa_records(host_result(reused), host='mx1', dns=dns_result([rec(3, 1, 1, NEW)]))
    assert [line for line in lines if not line.startswith(';')] == [f'{OWNER} IN TLSA 3 1 1 {NEW["spki_sha256"].upper()}']
    assert 'also the NEXT key: the renewal keeps it' in comment_before(
        lines, f'{OWNER} IN TLSA 3 1 1 {NEW["spki_sha256"].upper()}')


def test_the_same_input_prints_the_same_lines():
    first = tlsa_records(host_result(staged()), host='mx1', dns=dns_result([rec(3, 1, 1, OLD)]), ttl=300)
    assert first == tlsa_records(host_result(staged()), host='mx1', dns=dns_result([rec(3, 1, 1, OLD)]), ttl=300)


def test_an_unanswered_tlsa_query_is_no_publication_state():
    dns = dns_result([], status='SERVFAIL')
    lines = tlsa_records(host_result(staged()), host='mx1', dns=dns)
    assert 'published TLSA records unknown' in lines[0]
    assert any('was SERVFAIL' in line for line in lines)


def test_bad_input_is_a_filter_error():
    from ansible.errors import AnsibleFilterError
    with pytest.raises(AnsibleFilterError):
        tlsa_records(host_result(), dns=['not', 'a', 'dict'], host='mx1')
    with pytest.raises(AnsibleFilterError):
        tlsa_records(host_result())


def test_a_name_without_records_says_dane_is_not_in_effect():
    lines = tlsa_records(host_result(staged()), host='mx1', dns=dns_result([]))
    assert lines[0].endswith('): no TLSA record published (DANE is not in effect for this name)')
    assert all('NOT PUBLISHED' in comment_before(lines, line) for line in lines if not line.startswith(';'))


def test_a_hostile_host_cannot_write_a_record_line():
    honest = listener()
    evil = dict(honest, binding=dict(honest.get('binding') or {}, certificate='/c.pem\n_25._tcp.evil.example. IN TLSA 3 1 1 00',
                                     key='/k.pem\r\n_25._tcp.evil.example. IN TXT x'))
    forged = dict(NEXT, spki_sha256='ab' * 32 + '\n_25._tcp.evil.example. IN TLSA 3 1 1 00', path='/n\n; x')
    lines = tlsa_records(host_result(forged, listeners=[evil, 'not a listener']), host='mx1.example.test', ttl=3600)
    assert [line for line in lines if not line.startswith(';')] == [record_line(NEW)]
    assert not any('\n' in line or '\r' in line for line in lines)
    assert any(line.startswith('; NO NEXT KEY from') for line in lines)


def test_an_ipv6_listener_is_written_in_brackets():
    lines = tlsa_records(host_result(staged(), listeners=[dict(listener(), address='2001:db8::25')]), host='mx1')
    assert lines[0].startswith('; MX mx1 (listeners [2001:db8::25]:25): ')
    assert 'on [2001:db8::25]:25' in lines[1]
