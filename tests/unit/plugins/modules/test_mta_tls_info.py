# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""mta_tls_info as Ansible runs it: the module's whole JSON output (result and warnings) for
configurations that include a private key or point config_paths at one, and for a file name that
is not UTF-8."""

from __future__ import annotations

import json
import os

from ansible_collections.mailsec.starttls.plugins.modules import mta_tls_info
from ansible_collections.mailsec.starttls.tests.unit.plugins.module_utils.mta.bounded import (
    fake_private_key,
    leaked_key_pieces,
)


def test_no_piece_of_an_included_key_in_the_module_output(run_module, tmp_path):
    key_text, lines = fake_private_key()
    key = tmp_path / 'mail.key'
    key.write_text(key_text)
    dovecot = tmp_path / 'dovecot.conf'
    dovecot.write_text(f'protocols = imap\nlisten = 127.0.30.1\n!include_try {key}\n')
    exim = tmp_path / 'exim.conf'
    exim.write_text(f'local_interfaces = 127.0.20.1\n.include {key}\n')
    smtpd = tmp_path / 'smtpd.conf'
    smtpd.write_text(f'listen on 127.0.40.1 tls\ninclude "{key}"\n')
    result = run_module(mta_tls_info, {
        'mtas': ['dovecot', 'exim', 'opensmtpd'], 'use_tools': 'never', 'probe': False, 'scan_sockets': False,
        'config_paths': {'dovecot': [str(dovecot)], 'exim': [str(exim), str(key)],
                         'opensmtpd': [str(smtpd), str(key)]}})
    assert result.get('failed') is not True
    assert not leaked_key_pieces(run_module.output, lines)
    refused = [item for item in result['warning_details'] if item['message'].startswith(f'{key} holds')]
    assert {item['mta'] for item in refused} == {'dovecot', 'exim', 'opensmtpd'}
    ours = [item for item in result['listeners'] if item['address'] in ('127.0.30.1', '127.0.20.1', '127.0.40.1')]
    assert {item['mta'] for item in ours} == {'dovecot', 'exim', 'opensmtpd'}


def test_a_file_name_that_is_not_utf8_does_not_fail_the_task(run_module, tmp_path):
    conf_d = os.fsencode(str(tmp_path / 'conf.d'))
    os.makedirs(conf_d)
    with open(os.path.join(conf_d, b'\xff-listen.conf'), 'wb') as handle:
        handle.write(b'listen = 127.0.30.1\nssl = odd\n')
    dovecot = tmp_path / 'dovecot.conf'
    dovecot.write_text('protocols = imap\n!include conf.d/*.conf\n')
    result = run_module(mta_tls_info, {'mtas': ['dovecot'], 'use_tools': 'never', 'probe': False,
                                       'scan_sockets': False, 'config_paths': {'dovecot': [str(dovecot)]}})
    assert result.get('failed') is not True
    run_module.output.encode('utf-8')
    assert any('\\xff-listen.conf' in (item['where'] or '') for item in result['warning_details'])


def test_each_certificate_is_returned_once_and_read_back_whole(run_module, tmp_path):
    from ansible_collections.mailsec.starttls.plugins.module_utils._host_result import expand  # pylint: disable=import-outside-toplevel
    fixtures = os.path.join(os.path.dirname(__file__), '..', 'module_utils', 'fixtures', 'certs')
    certificate, key = os.path.realpath(os.path.join(fixtures, 'leaf-rsa.pem')), os.path.realpath(
        os.path.join(fixtures, 'leaf-rsa.key'))
    (tmp_path / 'main.cf').write_text('inet_interfaces = 127.0.10.7\ninet_protocols = ipv4\nsmtpd_tls_security_level = may\n'
                                      f'smtpd_tls_cert_file = {certificate}\nsmtpd_tls_key_file = {key}\n')
    (tmp_path / 'master.cf').write_text('smtp inet n - y - - smtpd\nsubmission inet n - y - - smtpd\n')
    result = run_module(mta_tls_info, {'mtas': ['postfix'], 'use_tools': 'never', 'probe': False,
                                       'scan_sockets': False, 'config_paths': {'postfix': [str(tmp_path)]}})
    ours = [item for item in result['listeners'] if item['address'] == '127.0.10.7']
    assert len(ours) == 2 and all('tls_settings' not in item for item in ours)
    # Both listeners are bound to one store: it is returned once, and they name it by its key.
    assert isinstance(ours[0]['store'], str) and ours[0]['store'] == ours[1]['store']
    assert [name for name, store in result['stores'].items() if store['key']['path'] == key] == [ours[0]['store']]
    references = [result['stores'][item['store']]['certificate']['describe'] for item in ours]
    assert 'subject' not in references[0]
    assert references[0]['sha256'] in result['certificates']
    subject = result['certificates'][references[0]['sha256']]['subject']
    assert run_module.output.count(json.dumps(subject)) == 1
    whole = [item for item in expand(result)['listeners'] if item['address'] == '127.0.10.7']
    assert all(item['store']['certificate']['describe']['subject'] == subject for item in whole)
