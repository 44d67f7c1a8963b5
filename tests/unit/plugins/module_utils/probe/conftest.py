# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The probe engine's tests run against the scripted server of tests/unit/plugins/scripted_server.py
(fixtures `scripted` and `server_cert` in tests/unit/plugins/conftest.py); here only what they add."""

from __future__ import annotations

import os
import socket

import pytest


@pytest.fixture(autouse=True)
def fqdn_free(monkeypatch):
    # Tests must not depend on this machine's host name.
    monkeypatch.setattr(socket, 'gethostname', lambda: 'probe-host')
    os.environ.pop('MAILSEC_TEST', None)
