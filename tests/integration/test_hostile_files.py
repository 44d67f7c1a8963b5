# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""mta_tls_info in a real ansible-playbook run at -vvv over configurations that include a real
private key, with the MTAs' own tools (exim -bP, doveconf -n) allowed to read them too: no piece of
the key may appear in the console output or the registered result (issue 9)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

LAB_TOOLS = ('/opt/mailsec-lab/root/usr/sbin', '/usr/sbin', '/usr/bin')


def find_tool(*names: str) -> str | None:
    for directory in LAB_TOOLS:
        for name in names:
            candidate = os.path.join(directory, name)
            if os.access(candidate, os.X_OK):
                return candidate
    return None


def key_pieces(text: str, body_lines: list, window: int = 12) -> list:
    return [line[start:start + window] for line in body_lines
            for start in range(0, len(line) - window + 1) if line[start:start + window] in text]


def test_included_private_key_never_reaches_output_at_vvv(run_mta_tls_info, tmp_path):
    if not shutil.which('openssl'):
        pytest.skip('openssl is needed to make a real key')
    key = tmp_path / 'mail.key'
    subprocess.run(['openssl', 'genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', str(key)],
                   check=True, capture_output=True)
    body = [line for line in key.read_text().splitlines() if line and not line.startswith('-----')]
    bare = tmp_path / 'bare.key'
    bare.write_text('\n'.join(body) + '\n')
    (tmp_path / 'dovecot.conf').write_text(f'protocols = imap\nlisten = 127.0.30.9\n!include_try {key}\n'
                                           f'!include_try {bare}\n')
    (tmp_path / 'exim.conf').write_text(f'local_interfaces = 127.0.20.9\n.include {key}\n')
    (tmp_path / 'exim-bare.conf').write_text(f'local_interfaces = 127.0.20.8\n.include {bare}\n')
    (tmp_path / 'smtpd.conf').write_text(f'listen on 127.0.40.9 tls\ninclude "{key}"\n')
    binaries = {name: path for name, path in (('exim', find_tool('exim4', 'exim')), ('doveconf', find_tool('doveconf')))
                if path}
    config_paths = {'dovecot': [str(tmp_path / 'dovecot.conf')],
                    'exim': [str(tmp_path / 'exim.conf'), str(tmp_path / 'exim-bare.conf'), str(key)],
                    'opensmtpd': [str(tmp_path / 'smtpd.conf'), str(key)]}
    options = {'mtas': ['dovecot', 'exim', 'opensmtpd'], 'use_tools': 'always', 'probe': False, 'scan_sockets': False,
               'binaries': binaries, 'config_paths': config_paths}
    outcome = run_mta_tls_info(options, args=('-vvv',))
    everything = outcome['stdout'] + outcome['stderr'] + str(outcome.get('result'))
    assert key_pieces(everything, body) == []
    assert 'holds PEM or private key material' in outcome['stdout']
    found = {(item['mta'], item['address']) for item in outcome['result']['listeners']}
    assert {('dovecot', '127.0.30.9'), ('exim', '127.0.20.9'), ('opensmtpd', '127.0.40.9')} <= found
