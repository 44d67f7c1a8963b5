# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The MTAs' own tools on this machine (postconf, doveconf, exim), configurations for them in a
test's directory, and host inspection that may run them: shared by the adapters' tool and edit
tests and the mta_tls_config module test. A test that needs a tool skips when it is missing."""

from __future__ import annotations

import os
import shutil

import pytest

from ansible_collections.mailsec.starttls.plugins.module_utils._host import gather_host
from ansible_collections.mailsec.starttls.plugins.module_utils._mta.context import HostContext

POSTCONF = shutil.which('postconf', path='/usr/sbin:/usr/bin:/sbin')
DOVECONF = shutil.which('doveconf', path='/usr/bin:/usr/sbin')
EXIM = next((path for path in ('/usr/sbin/exim4', '/usr/sbin/exim', '/opt/mailsec-lab/root/usr/sbin/exim4')
             if os.access(path, os.X_OK)), None)


def need(tool: str | None, name: str) -> None:
    if tool is None:
        pytest.skip(f'{name} is not installed')


def postfix_directory(directory, main_cf: str, master_cf: str):
    """A Postfix configuration directory (main.cf, master.cf) at `directory` (a pathlib.Path)."""
    directory.mkdir()
    (directory / 'main.cf').write_text(main_cf)
    (directory / 'master.cf').write_text(master_cf)
    return directory


def gather_with_tools(tmp_path, options: dict, use_tools: str = 'always', fib_trie: str | None = None) -> tuple:
    """(ctx, result) of host inspection on this machine's paths, tools as `use_tools` says, and a
    /proc of its own under tmp_path: no process or socket of this machine is looked at."""
    fake_net = tmp_path / 'proc' / 'net'
    fake_net.mkdir(parents=True, exist_ok=True)
    if fib_trie is not None:
        (fake_net / 'fib_trie').write_text(fib_trie)
    ctx = HostContext(root='/', use_tools=use_tools, proc_root=str(tmp_path / 'proc'))
    return ctx, gather_host(dict(options, use_tools=use_tools), ctx=ctx)
