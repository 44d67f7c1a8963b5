# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host inspection against real daemons and binaries: a certificate held but not used by a real
OpenSMTPD, and the Exim version (so the default of tls_advertise_hosts) from the real binary."""

from __future__ import annotations

import os
import re

import pytest

from ansible_collections.mailsec.starttls.plugins.module_utils._host import gather_host
from ansible_collections.mailsec.starttls.plugins.module_utils._host_result import expand
from ansible_collections.mailsec.starttls.plugins.module_utils._verdict import judge

PKGROOT = os.environ.get('MAILSEC_LAB_PKGROOT', '/opt/mailsec-lab/root')
EXIM = os.path.join(PKGROOT, 'usr/sbin/exim4')


def test_opensmtpd_hostname_without_tls_is_starttls_not_offered(lab, run_mta_tls_info):  # pylint: disable=unused-argument
    options = {'host': 'lab', 'mtas': ['opensmtpd'], 'probe_options': {'timeout': 5, 'deadline': 20}}
    result = expand(run_mta_tls_info(options, args=('--check',))['result'])
    held = [item for item in result['listeners'] if (item['address'], item['port']) == ('127.0.40.8', 25)]
    assert len(held) == 1, [item['id'] for item in result['listeners']]
    listener = held[0]
    assert listener['listening'] is True
    assert (listener['offers_starttls'], listener['tls_mode']) == (False, 'none')
    assert 'pki smtpd.lab.test' in listener['binding']['source']
    assert listener['store']['usable'] is True
    assert listener['probe']['starttls_advertised'] is False
    findings = judge([listener], [listener['probe']], {})
    assert {(finding['id'], finding['vantage']) for finding in findings} == {('starttls-not-offered', 'host')}


@pytest.mark.skipif(not os.access(EXIM, os.X_OK), reason='the lab Exim is not installed (tests/lab/install.sh)')
def test_exim_version_from_the_real_binary_chooses_the_default(tmp_path):
    config = tmp_path / 'exim4.conf'
    config.write_text('local_interfaces = 127.0.20.250\ndaemon_smtp_ports = 2525\nbegin routers\n')
    result = gather_host({'mtas': ['exim'], 'config_paths': {'exim': [str(config)]}, 'binaries': {'exim': EXIM},
                          'use_tools': 'always', 'scan_sockets': False})
    instance = [item for item in result['mtas'] if item['config_path'] == str(config)][0]
    packaged = ''
    with open(os.path.join(PKGROOT, '.mailsec-lab-packages')) as handle:
        for line in handle:
            if line.startswith('exim4-daemon-light='):
                packaged = line.split('=', 1)[1]
    # Debian's version 4.96-15+deb12u7 is Exim 4.96.
    assert instance['version'] and packaged.startswith(instance['version'])
    assert 'exim -bV' in instance['tools_used']
    listener = [item for item in result['listeners'] if item['instance'] == instance['instance']][0]
    assert listener['offers_starttls'] is True
    # exim -bP prints the compiled-in value itself; the version is there for the record.
    assert re.search(r'\(exim -b[PV]\)', listener['offers_starttls_reason'])
    assert not any('version could not be established' in note for note in listener['notes'])
    files_only = gather_host({'mtas': ['exim'], 'config_paths': {'exim': [str(config)]}, 'use_tools': 'never',
                              'scan_sockets': False})
    assumed = [item for item in files_only['listeners'] if item['port'] == 2525][0]
    assert assumed['offers_starttls'] is True
    assert any('version could not be established' in note for note in assumed['notes'])
