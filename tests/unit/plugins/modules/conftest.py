# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running a module as Ansible does: arguments in, the one JSON document it prints out."""

from __future__ import annotations

import json

import pytest

from ansible.module_utils.testing import patch_module_args


class ModuleRunner:
    """run_module(module, arguments, check_mode=False, diff=False) -> the module's result; the
    text it printed stays in `output` (for tests that look at every byte of it), its standard error in `errors`
    (where ansible-core 2.19+ displays module warnings once controller code is loaded in the same process)."""

    def __init__(self, capsys):
        self.capsys = capsys
        self.output = ''
        self.errors = ''

    def __call__(self, module, arguments: dict, check_mode: bool = False, diff: bool = False) -> dict:
        arguments = dict(arguments)
        if check_mode:
            arguments['_ansible_check_mode'] = True
        if diff:
            arguments['_ansible_diff'] = True
        with patch_module_args(arguments):
            with pytest.raises(SystemExit):
                module.main()
        captured = self.capsys.readouterr()
        self.output, self.errors = captured.out, captured.err
        return json.loads(self.output)


@pytest.fixture
def run_module(capsys):
    return ModuleRunner(capsys)
