# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sendmail read from its m4 source (sendmail.mc), alone or beside the compiled sendmail.cf."""

from __future__ import annotations

import os
import subprocess

import pytest

from ansible_collections.mailsec.starttls.plugins.module_utils._mta.sendmail import (
    is_mc_text,
    m4_expand,
)

# Written for these tests: the shapes site .mc files use (dnl, # comments, nested quotes,
# macros built from other macros, an include, ifdef).
SITE_MC = """
    divert(-1)dnl
    # DAEMON_OPTIONS(`Port=9999, Name=InAComment')
    divert(0)dnl
    VERSIONID(`site mc for tests')dnl
    OSTYPE(`debian')dnl
    DOMAIN(`generic')dnl
    define(`CERT_DIR', `MAIL_SETTINGS_DIR`'tls')dnl
    define(`confSERVER_CERT', `CERT_DIR/mail.crt')dnl
    define(`confSERVER_KEY', `CERT_DIR/mail.key')dnl   dnl the key beside it
    define(`confCACERT_PATH', `/etc/ssl/certs')dnl
    include(`/etc/mail/tls.m4')dnl
    FEATURE(`no_default_msa')dnl
    dnl DAEMON_OPTIONS(`Port=2626, Name=Commented')
    DAEMON_OPTIONS(`Family=inet, Name=MTA-v4, Port=smtp, Addr=127.0.50.1')dnl
    DAEMON_OPTIONS(`Family=inet, Name=MSP-v4, Port=submission, M=Ea, Addr=127.0.50.1')dnl
    DAEMON_OPTIONS(`Family=inet6, Name=NoTLS, Port=2525, Addr=::1, M=S')dnl
    ifdef(`WANT_SMTPS', `DAEMON_OPTIONS(`Port=smtps, Name=TLSMTA, M=s, Addr=127.0.50.1')', `dnl')
    DAEMON_OPTIONS(`Family=local, Name=Local, Addr=/run/sendmail.sock')dnl
    MAILER(`local')dnl
    MAILER(`smtp')dnl
"""
TLS_M4 = """
    define(`WANT_SMTPS', `yes')dnl
    define(`confCACERT', `CERT_DIR/ca.crt')dnl
"""


def gather_mc(host, files: dict) -> tuple:
    """(result, listeners by endpoint) of Sendmail read from /etc/mail/sendmail.mc among `files`."""
    host.files(files)
    result = host.gather(mtas=['sendmail'], config_paths={'sendmail': ['/etc/mail/sendmail.mc']})
    return result, host.by_endpoint(result)


def test_mc_daemon_options_and_tls_defines(host):
    result, listeners = gather_mc(host, {'/etc/mail/sendmail.mc': SITE_MC, '/etc/mail/tls.m4': TLS_M4})
    assert sorted(listeners) == ['127.0.50.1:25', '127.0.50.1:465', '127.0.50.1:587', '[::1]:2525']
    mta = listeners['127.0.50.1:25']
    assert mta['binding']['certificate'] == '/etc/mail/tls/mail.crt'
    assert mta['binding']['key'] == '/etc/mail/tls/mail.key'
    assert mta['binding']['source'] == '/etc/mail/sendmail.mc:8 ServerCertFile'
    assert mta['defined_at'] == '/etc/mail/sendmail.mc:14'
    assert (mta['protocol'], mta['offers_starttls']) == ('smtp', True)
    assert mta['tls_settings']['CACertFile']['value'] == '/etc/mail/tls/ca.crt'
    assert mta['tls_settings']['CACertPath']['value'] == '/etc/ssl/certs'
    assert listeners['127.0.50.1:587']['protocol'] == 'submission'
    smtps = listeners['127.0.50.1:465']
    assert (smtps['protocol'], smtps['tls_mode']) == ('smtps', 'implicit')
    no_tls = listeners['[::1]:2525']
    assert (no_tls['offers_starttls'], no_tls['tls_mode']) == (False, 'none')
    assert no_tls['binding']['certificate'] == '/etc/mail/tls/mail.crt'
    assert any('m4 source' in note for note in result['mtas'][0]['notes'])
    assert result['mtas'][0]['config_files'] == ['/etc/mail/sendmail.mc', '/etc/mail/tls.m4']


def test_mc_defaults_mta_and_msa(host):
    _result, listeners = gather_mc(host, {'/etc/mail/sendmail.mc': "OSTYPE(`linux')dnl\nMAILER(`smtp')dnl\n"})
    assert sorted(listeners) == ['0.0.0.0:25', '0.0.0.0:587']
    assert 'no DAEMON_OPTIONS' in listeners['0.0.0.0:25']['defined_at']
    assert listeners['0.0.0.0:587']['protocol'] == 'submission'
    assert 'no_default_msa' in listeners['0.0.0.0:587']['defined_at']
    assert listeners['0.0.0.0:25']['offers_starttls'] is False


def test_mc_no_default_msa_and_old_style_daemon_options(host):
    _result, listeners = gather_mc(host, {'/etc/mail/sendmail.mc': "FEATURE(`no_default_msa')\n"
                                                                   "define(`confDAEMON_OPTIONS', `Port=2500, Addr=127.0.50.9')\n"})
    assert sorted(listeners) == ['127.0.50.9:2500']


def test_compiled_cf_preferred_and_disagreement_warned(host):
    host.files({
        '/etc/mail/sendmail.mc': SITE_MC, '/etc/mail/tls.m4': TLS_M4,
        '/etc/mail/sendmail.cf': """
            O DaemonPortOptions=Family=inet, Name=MTA-v4, Port=smtp, Addr=127.0.50.1
            O ServerCertFile=/etc/mail/tls/mail.crt
            O ServerKeyFile=/etc/mail/tls/mail.key
        """})
    result = host.gather(mtas=['sendmail'], config_paths={'sendmail': ['/etc/mail/sendmail.mc']})
    assert sorted(host.by_endpoint(result)) == ['127.0.50.1:25']
    text = host.warnings_text(result)
    assert '/etc/mail/sendmail.cf and /etc/mail/sendmail.mc disagree' in text
    assert '127.0.50.1:465' in text
    # The default path (.cf) finds its .mc beside it all the same.
    result = host.gather(mtas=['sendmail'])
    assert 'disagree' in host.warnings_text(result)


def test_compiled_cf_that_agrees_gives_no_warning(host):
    host.files({
        '/etc/mail/sendmail.mc': "FEATURE(`no_default_msa')dnl\nDAEMON_OPTIONS(`Port=smtp, Addr=127.0.50.1, Name=MTA')dnl\n",
        '/etc/mail/sendmail.cf': 'O DaemonPortOptions=Port=smtp, Addr=127.0.50.1, Name=MTA\n'})
    result = host.gather(mtas=['sendmail'])
    assert result['warnings'] == []


def test_mc_given_under_a_cf_name_is_recognised(host):
    host.write('/srv/sendmail.cf', "divert(0)dnl\nDAEMON_OPTIONS(`Port=2525, Addr=127.0.50.3, Name=MTA')dnl\n"
                                   "FEATURE(`no_default_msa')dnl\n")
    listeners = host.by_endpoint(host.gather(mtas=['sendmail'], config_paths={'sendmail': ['/srv/sendmail.cf']}))
    assert sorted(listeners) == ['127.0.50.3:2525']


def test_host_name_in_addr_is_kept_as_unknown(host):
    host.files({'/etc/hosts': '127.0.50.4 relay.lab.test\n',
                '/etc/mail/sendmail.cf': 'O DaemonPortOptions=Port=smtp, Addr=relay.lab.test, Name=MTA\n'
                                         'O DaemonPortOptions=Port=2525, Addr=nowhere.lab.test, Name=X\n'})
    listeners = host.by_endpoint(host.gather(mtas=['sendmail']))
    assert sorted(listeners) == ['127.0.50.4:25', 'unknown:2525']
    unknown = listeners['unknown:2525']
    assert unknown['probe_address'] is None
    assert unknown['uncertain'][0]['what'] == 'address'
    assert 'nowhere.lab.test' in unknown['uncertain'][0]['reason']


def test_m4_helpers():
    assert m4_expand("A`'B", {'A': '/x/', 'B': 'never'}) == '/x/never'
    assert m4_expand("`A'/y", {'A': 'no'}) == 'A/y'
    assert m4_expand('LOOP', {'LOOP': 'LOOP'}).startswith('LOOP')
    assert is_mc_text("divert(-1)\nFEATURE(`x')\n")
    assert not is_mc_text('O DaemonPortOptions=Port=smtp\nV10/Berkeley\n')


# The shape of a Debian sendmail.mc (written for this test): the m4 library included first, four
# loopback daemons, and the TLS settings in a file of their own.
DEBIAN_STYLE_MC = """
    divert(-1)dnl
    include(`/usr/share/sendmail/cf/m4/cf.m4')dnl
    VERSIONID(`$Id: sendmail.mc test fixture $')
    OSTYPE(`debian')dnl
    DOMAIN(`debian-mta')dnl
    undefine(`confHOST_STATUS_DIRECTORY')dnl
    FEATURE(`no_default_msa')dnl
    DAEMON_OPTIONS(`Family=inet6, Name=MTA-v6, Port=smtp, Addr=::1')dnl
    DAEMON_OPTIONS(`Family=inet,  Name=MTA-v4, Port=smtp, Addr=127.0.0.1')dnl
    DAEMON_OPTIONS(`Family=inet6, Name=MSP-v6, Port=submission, M=Ea, Addr=::1')dnl
    DAEMON_OPTIONS(`Family=inet,  Name=MSP-v4, Port=submission, M=Ea, Addr=127.0.0.1')dnl
    define(`confPRIVACY_FLAGS',dnl
    `needmailhelo,needexpnhelo,needvrfyhelo,restrictqrun,restrictexpand,nobodyreturn,authwarnings')dnl
    sinclude(`/etc/mail/m4/dialup.m4')dnl
    include(`/etc/mail/tls/starttls.m4')dnl
    MAILER_DEFINITIONS
    MAILER(`local')dnl
    MAILER(`smtp')dnl
"""
STARTTLS_M4 = """
    define(`confCACERT_PATH', `/etc/mail/tls')dnl
    define(`confCACERT', `/etc/mail/tls/sendmail-ca.crt')dnl
    define(`confSERVER_CERT', `/etc/mail/tls/sendmail-server.crt')dnl
    define(`confSERVER_KEY', `/etc/mail/tls/sendmail-common.key')dnl
"""


def test_debian_style_mc(host):
    result, listeners = gather_mc(host, {'/etc/mail/sendmail.mc': DEBIAN_STYLE_MC,
                                         '/etc/mail/tls/starttls.m4': STARTTLS_M4})
    assert sorted(listeners) == ['127.0.0.1:25', '127.0.0.1:587', '[::1]:25', '[::1]:587']
    assert {item['binding']['certificate'] for item in listeners.values()} == {'/etc/mail/tls/sendmail-server.crt'}
    assert all(item['offers_starttls'] is True for item in listeners.values())
    assert result['warnings'] == []


def test_explicit_msa_without_no_default_msa_is_not_doubled(host):
    result, listeners = gather_mc(host, {'/etc/mail/sendmail.mc': "DAEMON_OPTIONS(`Port=smtp, Name=MTA')dnl\n"
                                                                  "DAEMON_OPTIONS(`Port=submission, Name=MSA, M=Ea')dnl\n"})
    assert sorted(listeners) == ['0.0.0.0:25', '0.0.0.0:587']
    assert 'cannot bind' in host.warnings_text(result)


# Each case as real m4 1.4.19 with Debian's sendmail-cf 8.17.1.9 compiles it (the sendmail.cf lines
# that decide are quoted): the .mc reading must say what the compiled .cf says.
M4_CASES = {
    # define's name is quoted: a second define replaces the value (O ServerCertFile=/etc/mail/new.crt).
    'redefine': ("define(`confSERVER_CERT', `/etc/mail/old.crt')dnl\ndefine(`confSERVER_KEY', `/etc/mail/k.key')dnl\n"
                 "define(`confSERVER_CERT', `/etc/mail/new.crt')dnl\n",
                 {'0.0.0.0:25': ('/etc/mail/new.crt', True), '0.0.0.0:587': ('/etc/mail/new.crt', True)}, []),
    # undefine removes it (#O ServerCertFile): no certificate, no STARTTLS.
    'undefine': ("define(`confSERVER_CERT', `/etc/mail/a.crt')dnl\nundefine(`confSERVER_CERT')dnl\n",
                 {'0.0.0.0:25': (None, False), '0.0.0.0:587': (None, False)}, []),
    # An unquoted list is several arguments; cfhead.m4 writes $1 only (O DaemonPortOptions=Port=2527).
    'unquoted list': ("define(`confSERVER_CERT', `/etc/mail/a.crt')dnl\ndefine(`confSERVER_KEY', `/etc/mail/a.key')dnl\n"
                      "FEATURE(`no_default_msa')dnl\n"
                      "DAEMON_OPTIONS(`Port=2527', `Name=MTA, M=S')dnl\n",
                      {'0.0.0.0:2527': ('/etc/mail/a.crt', True)}, ['DAEMON_OPTIONS takes one argument']),
    # LOCAL_CONFIG's raw O line comes first in the .cf; the define's line after it wins.
    'raw option and define': ("define(`confSERVER_CERT', `/etc/mail/a.crt')dnl\ndefine(`confSERVER_KEY', `/etc/mail/a.key')dnl\n"
                              "FEATURE(`no_default_msa')dnl\n"
                              'LOCAL_CONFIG\nO ServerCertFile=/etc/mail/b.crt\n',
                              {'0.0.0.0:25': ('/etc/mail/a.crt', True)}, []),
    # proto.m4 writes the old confDAEMON_OPTIONS beside DAEMON_OPTIONS.
    'old and new daemon options': ("FEATURE(`no_default_msa')dnl\ndefine(`confDAEMON_OPTIONS', `Port=2525, Name=Old')dnl\n"
                                   "DAEMON_OPTIONS(`Port=smtp, Name=MTA')dnl\n",
                                   {'0.0.0.0:25': (None, False), '0.0.0.0:2525': (None, False)}, []),
    # submit.mc: O DaemonPortOptions=Name=NoMTA, Addr=127.0.0.1, M=E and no MSA.
    'msp': ("FEATURE(`msp', `[127.0.0.1]')dnl\n", {'127.0.0.1:25': (None, False)},
            ["the mail submission program's configuration"]),
}


@pytest.mark.parametrize('case', sorted(M4_CASES))
def test_mc_reads_as_m4_compiles(host, case):
    text, expected, warned = M4_CASES[case]
    result, listeners = gather_mc(host, {'/etc/mail/sendmail.mc': "OSTYPE(`linux')dnl\n" + text + "MAILER(`smtp')dnl\n"})
    got = {endpoint: (item['binding']['certificate'], item['offers_starttls']) for endpoint, item in listeners.items()}
    assert got == expected
    text = host.warnings_text(result)
    assert all(phrase in text for phrase in warned), text


def test_cf_daemon_on_a_port_bound_already_is_one_listener(host):
    # m4 writes the default MSA beside an explicit daemon on 587 without no_default_msa; sendmail binds
    # the first and logs "Address already in use" for the second.
    cf_text = ('O DaemonPortOptions=Port=smtp, Name=MTA\n'
               'O DaemonPortOptions=Port=submission, Name=MSA, M=Ea\n'
               'O DaemonPortOptions=Port=587, Name=MSA, M=E\n')
    host.files({'/etc/mail/sendmail.cf': cf_text})
    result = host.gather(mtas=['sendmail'], config_paths={'sendmail': ['/etc/mail/sendmail.cf']})
    assert sorted(host.by_endpoint(result)) == ['0.0.0.0:25', '0.0.0.0:587']
    assert len(result['listeners']) == 2
    assert "0.0.0.0:587 is bound already by 'Port=submission, Name=MSA, M=Ea'" in host.warnings_text(result)


LAB_ROOT = os.environ.get('MAILSEC_LAB_PKGROOT', '/opt/mailsec-lab/root')
M4 = os.path.join(LAB_ROOT, 'usr/bin/m4')
CF_DIR = os.path.join(LAB_ROOT, 'usr/share/sendmail/cf')


@pytest.mark.parametrize('case', sorted(M4_CASES))
def test_mc_cases_as_real_m4_compiles_them(host, tmp_path, case):
    # The cases above through real m4 and Sendmail's cf macros (tests/lab/install.sh unpacks both):
    # the compiled sendmail.cf, read as sendmail reads it, gives the same listeners as the .mc reading.
    if not (os.access(M4, os.X_OK) and os.path.isfile(os.path.join(CF_DIR, 'm4/cf.m4'))):
        pytest.skip(f'no m4 and sendmail-cf under {LAB_ROOT} (tests/lab/install.sh unpacks them)')
    text, expected, _warned = M4_CASES[case]
    source = tmp_path / 'case.mc'
    source.write_text("OSTYPE(`linux')dnl\n" + text + "MAILER(`smtp')dnl\n")
    compiled = subprocess.run([M4, f'-D_CF_DIR_={CF_DIR}/', f'{CF_DIR}/m4/cf.m4', str(source)], check=True,
                              capture_output=True, text=True, timeout=60).stdout
    assert 'O DaemonPortOptions=' in compiled
    host.files({'/etc/mail/sendmail.cf': compiled})
    result = host.gather(mtas=['sendmail'], config_paths={'sendmail': ['/etc/mail/sendmail.cf']})
    got = {endpoint: (item['binding']['certificate'], item['offers_starttls'])
           for endpoint, item in host.by_endpoint(result).items()}
    assert got == expected
