# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Each adapter's fix texts (MtaAdapter.fix_text, reload_text): the MTA's own commands, reached by
the verdict through the registry; the general text where an adapter has none of its own."""

from __future__ import annotations

import pytest

from ansible_collections.mailsec.starttls.plugins.module_utils import _verdict
from ansible_collections.mailsec.starttls.plugins.module_utils._mta import MTA_NAMES, get_adapter
from ansible_collections.mailsec.starttls.plugins.module_utils._mta.exim import guarded_value

LISTENER = {'address': '127.0.0.5', 'port': 25, 'protocol': 'smtp', 'service': '127.0.0.5:smtp',
            'binding': {'certificate': '/c.pem', 'key': '/k.pem'}}
ADVERTISED = 'starttls-advertised-without-certificate'
# The rules whose fix differs per MTA: every adapter has its own words for them.
PER_MTA_RULES = (ADVERTISED, 'implicit-tls-without-certificate', 'starttls-not-offered', 'legacy-tls-protocol')


def fix(rule: str, mta, **fields) -> str:
    return _verdict.fix_for(rule, dict(LISTENER, mta=mta, **fields))


@pytest.mark.parametrize('mta, expected', [
    ('postfix', "postconf -P '127.0.0.5:smtp/inet/smtpd_tls_security_level=none'"),
    ('postfix', "postconf -P '127.0.0.5:smtp/inet/smtpd_tls_chain_files=/k.pem,/c.pem'"),
    ('exim', 'tls_advertise_hosts = ${if and{{eq{$received_ip_address}{127.0.0.5}}{eq{$received_port}{25}}}{}{*}}'),
    ('dovecot', 'local 127.0.0.5 { ssl = no }'),
    ('dovecot', 'local 127.0.0.5 { ssl_cert = </c.pem` and `ssl_key = </k.pem }'),
    ('opensmtpd', 'listen on 127.0.0.5 port 25 tls pki mail'),
    ('sendmail', 'add `M=S` to its DaemonPortOptions (Port=25, Addr=127.0.0.5)'),
])
def test_advertising_without_a_certificate_in_each_mtas_language(mta, expected):
    assert expected in fix(ADVERTISED, mta)
    assert expected in get_adapter(mta).fix_text(ADVERTISED, dict(LISTENER, mta=mta), {})


def test_exim_fix_names_the_expansion_the_edit_writes():
    """The fix and mta_tls_config speak one expansion: exim.guarded_value."""
    text = fix(ADVERTISED, 'exim')
    assert f"tls_certificate = {guarded_value('<other certificate>', {'127.0.0.5:25': '/c.pem'})}`" in text
    assert guarded_value('*', {'127.0.0.5:25': ''}) in text


def test_postfix_names_a_secondary_instance_by_its_directory():
    second = fix(ADVERTISED, 'postfix', instance='postfix-b', defined_at='/etc/postfix-b/master.cf:14')
    assert "postconf -c /etc/postfix-b -P '127.0.0.5:smtp/inet/smtpd_tls_security_level=none'" in second
    assert second.endswith('Then `postfix -c /etc/postfix-b check && postfix -c /etc/postfix-b reload`.')
    assert 'postconf -c' not in fix(ADVERTISED, 'postfix', defined_at='/etc/postfix/master.cf:14')
    assert 'postconf -c /srv/mx' in fix('legacy-tls-protocol', 'postfix', config_dir='/srv/mx')
    assert 'postscreen' in fix(ADVERTISED, 'postfix', notes=['postscreen in front of smtpd'])
    assert 'postscreen' not in fix(ADVERTISED, 'postfix')


def test_opensmtpd_names_its_handshake_bug_only_when_the_pki_is_usable():
    listener = dict(LISTENER, mta='opensmtpd')
    assert 'EVP lib' in _verdict.fix_for(ADVERTISED, listener, {'store_usable': True})
    assert 'EVP lib' not in _verdict.fix_for(ADVERTISED, listener, {'store_usable': False})
    # A certificate served with nothing usable bound: the same fix, without the bug.
    differs = _verdict.fix_for('presented-certificate-differs', listener, {'no_bound_certificate': True})
    assert differs == _verdict.fix_for(ADVERTISED, listener, {})


def test_exim_key_owner_is_its_reading_user():
    assert 'chown root:Debian-exim /k.pem && chmod 0640 /k.pem' in fix('private-key-exposed', 'exim')
    assert 'chown root:mailnull /k.pem' in fix('private-key-exposed', 'exim', reader_user='mailnull')
    assert 'chown root:root /k.pem && chmod 0600 /k.pem` (dovecot reads' in fix('private-key-exposed', 'dovecot')


@pytest.mark.parametrize('mta', MTA_NAMES)
def test_every_adapter_has_its_own_words_and_its_reload(mta):
    adapter = get_adapter(mta)
    listener = dict(LISTENER, mta=mta)
    reload_text = adapter.reload_text(listener)
    assert reload_text and reload_text != 'reload the server'
    generic = _verdict.fix_for(ADVERTISED, dict(LISTENER, mta=None))
    for rule in PER_MTA_RULES:
        own = adapter.fix_text(rule, listener, {})
        assert own and own == _verdict.fix_for(rule, listener), rule
        assert own != generic
        assert reload_text in own, rule
    # A rule about the path, not the MTA: the general text, with the MTA's reload where it has one.
    assert adapter.fix_text('middlebox-masking', listener, {}) is None
    assert adapter.fix_text('certificate-expired', listener, {}) is None
    assert reload_text in _verdict.fix_for('certificate-expired', listener)


def test_mta_names_are_read_case_blind_and_unknown_ones_get_the_general_text():
    assert fix('legacy-tls-protocol', 'Dovecot') == fix('legacy-tls-protocol', 'dovecot')
    assert fix('legacy-tls-protocol', 'qmail') == fix('legacy-tls-protocol', None)
    assert 'reload the server' in fix('certificate-expired', 'qmail')
    assert 'Restart-Service MSExchangeTransport' in fix('certificate-expired', 'exchange')
