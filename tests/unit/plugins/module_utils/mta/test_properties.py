# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Property-based tests: any text as any MTA's configuration yields listeners or warnings, never
an exception, in bounded time, with a bounded result that strict UTF-8 JSON can carry
(tests/fuzz/targets.py says what is checked; tests/fuzz/fuzz_parsers.py fuzzes the same entry)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ansible_collections.mailsec.starttls.plugins.module_utils._mta import exim, opensmtpd, postfix
from ansible_collections.mailsec.starttls.plugins.module_utils._mta.context import HostContext
from ansible_collections.mailsec.starttls.tests.fuzz import targets

# Pieces of every MTA's grammar, so that generated text reaches past the first "cannot parse".
TOKENS = [
    'smtp', 'inet', 'n', '-', 'y', 'smtpd', 'postscreen', '-o', 'smtpd_tls_security_level=may', '{', '}', '=', '==',
    '$smtpd_tls_cert_file', '${a?{x}:{y}}', '$(b)', '$$', 'a', 'b', 'inet_interfaces', 'smtpd_tls_chain_files',
    '127.0.0.1', '[::1]:25', '0.0.0.0', '::', '25', '587', '465', 'submission', 'MACRO', 'M1', '.ifdef', '.ifndef',
    '.else', '.endif', '.include', '.include_if_exists', 'local_interfaces', 'daemon_smtp_ports',
    'tls_certificate', 'tls_advertise_hosts', '${if', 'eq{$received_port}{25}', 'match_ip{$received_ip_address}',
    '{/a}', '{/b}', 'begin', 'acl', 'protocols', 'imap', 'pop3', 'lmtp', 'sieve', 'submission', 'service',
    'imap-login', 'inet_listener', 'port', 'ssl', 'yes', 'no', 'required', 'ssl_cert', 'ssl_key', '<', 'local',
    'protocol', 'local_name', '!include', '!include_try', targets.INCLUDED, 'included.conf', '*.conf', 'listen', 'on',
    'tls', 'tls-require', 'smtps', 'pki', 'cert', 'key', 'hostname', 'family', 'inet4', 'inet6', 'include',
    '"', "'", '\\', '#', '$m', 'm', 'O', 'DaemonPortOptions=Port=smtp,Addr=127.0.0.1,M=S', 'ServerCertFile=/c',
    'D{x}y', '$x', 'é', '\u202e', '\x00', '\t', ' ',
]
LINES = st.lists(st.sampled_from(TOKENS), max_size=12).map(' '.join)
CONFIGS = st.one_of(
    st.lists(LINES, max_size=40).map('\n'.join),
    st.text(max_size=2000),
)
PROPERTY_SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                             suppress_health_check=list(HealthCheck))


@pytest.fixture(scope='module', autouse=True)
def fixture_root():
    yield
    targets.remove_fixture_root()


@pytest.mark.parametrize('mta', targets.MTAS)
def test_any_text_is_listeners_or_warnings(mta):
    @PROPERTY_SETTINGS
    @given(CONFIGS)
    def check(text):
        targets.check_config(mta, text.encode('utf-8', 'surrogatepass'), max_seconds=5.0)

    check()


@PROPERTY_SETTINGS
@given(st.binary(max_size=2000))
def test_any_bytes_are_listeners_or_warnings(data):
    targets.check_input(data)


@PROPERTY_SETTINGS
@given(st.dictionaries(st.from_regex(r'[a-z][a-z0-9_]{0,6}', fullmatch=True), LINES, max_size=12), LINES)
def test_postfix_parameter_expansion_is_bounded(parameters, text):
    main = {name: {'value': value, 'line': 1, 'where': f'main.cf:{index}'}
            for index, (name, value) in enumerate(parameters.items())}
    resolver = postfix.Resolver(main, None)
    for name in list(parameters) + ['smtpd_tls_cert_file']:
        value, _where, unresolved = resolver.value(name)
        assert len(value) <= postfix.MAX_EXPANDED_CHARS and isinstance(unresolved, list)
    expanded, _unresolved = resolver.expand(text)
    assert len(expanded) <= postfix.MAX_EXPANDED_CHARS + len(text)


@PROPERTY_SETTINGS
@given(LINES, st.dictionaries(st.sampled_from(['received_port', 'received_ip_address', 'tls_in_sni']),
                              st.sampled_from(['25', '127.0.0.1', '', 'mail.example'])))
def test_exim_expander_never_raises(text, variables):
    expanded, unresolved, used = exim.evaluate(HostContext(root='/nonexistent'), text, variables)
    assert (expanded is None) != (unresolved is None) and isinstance(used, set)


@PROPERTY_SETTINGS
@given(st.lists(st.sampled_from(TOKENS), max_size=20))
def test_opensmtpd_listen_options_never_raise(words):
    options = opensmtpd.parse_listen(['127.0.0.1'] + words)
    assert options['interface'] == '127.0.0.1' and isinstance(options['unknown'], list)
