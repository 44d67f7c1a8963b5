# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host inspection imports no edit code: mta_tls_info compiles every module it imports on every host."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PACKAGE = 'ansible_collections.mailsec.starttls.plugins.module_utils'
EDIT_MODULES = ('_transaction', '_mta.postfix_edit', '_mta.dovecot_edit')


def imported_after(statement: str) -> set:
    """The collection's modules loaded after STATEMENT in a fresh interpreter (this one has imported everything)."""
    script = (f'import sys\n{statement}\n'
              f'print("\\n".join(name for name in sys.modules if name.startswith("{PACKAGE}.")))')
    completed = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, check=True,
                               env=dict(os.environ, PYTHONPATH=os.pathsep.join(path for path in sys.path if path)))
    return {name[len(PACKAGE) + 1:] for name in completed.stdout.split()}


@pytest.mark.parametrize('adapter', ['postfix', 'dovecot'])
def test_adapter_for_inspection_imports_no_edit_code(adapter):
    loaded = imported_after(f'from {PACKAGE}._mta import ADAPTERS\nADAPTERS["{adapter}"]\n'
                            f'import {PACKAGE}._host')
    assert f'_mta.{adapter}' in loaded
    assert not loaded & set(EDIT_MODULES)


@pytest.mark.parametrize('adapter', ['postfix', 'dovecot'])
def test_planning_an_edit_imports_it(adapter):
    loaded = imported_after(f'from {PACKAGE}._mta import {adapter}_edit')
    assert {'_transaction', f'_mta.{adapter}_edit'} <= loaded
