# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures shared by every unit test: the scripted mail server on loopback and its certificate."""

from __future__ import annotations

import pytest

from ansible_collections.mailsec.starttls.tests.unit.plugins.scripted_server import (
    ScriptedServer,
    self_signed_certificate,
)


@pytest.fixture(scope='session')
def server_cert(tmp_path_factory):
    """A self-signed certificate for mail.test with an IP SAN, made with the openssl command."""
    return self_signed_certificate(tmp_path_factory.mktemp('certs'))


@pytest.fixture
def scripted(server_cert):
    """start(script) -> a running ScriptedServer; every server started is stopped after the test."""
    servers = []

    def start(script):
        server = ScriptedServer(script, server_cert)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
