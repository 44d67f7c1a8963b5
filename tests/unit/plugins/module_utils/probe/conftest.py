# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A scripted mail server on loopback that replays dialogs recorded from real MTAs and middleboxes."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import threading
import time

import pytest


@pytest.fixture(scope='session')
def server_cert(tmp_path_factory):
    """A self-signed certificate for mail.test with an IP SAN, made with the openssl command."""
    directory = tmp_path_factory.mktemp('certs')
    cert, key = directory / 'cert.pem', directory / 'key.pem'
    subprocess.run(
        ['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
         '-keyout', str(key), '-out', str(cert), '-days', '30', '-subj', '/CN=mail.test',
         '-addext', 'subjectAltName=DNS:mail.test,IP:127.0.0.1'],
        check=True, capture_output=True)
    return str(cert), str(key)


class ScriptedServer:
    """Serves each connection with a script of steps:

    ('send', bytes)        send raw bytes
    ('expect', prefix)     read one line, record it, and check it starts with prefix
    ('tls',)               upgrade to TLS with the test certificate
    ('sleep', seconds)     stay silent
    ('trickle', bytes, s)  send byte by byte, s seconds apart
    ('close',)             close the connection

    A callable script is called with the connection number and returns the steps.
    """

    def __init__(self, script, cert=None):
        self.script = script
        self.cert = cert
        self.received: list = []
        self.errors: list = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        self.connections = 0
        self.handlers: list = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        self.sock.settimeout(0.2)
        while not self.stopping:
            try:
                conn, _peer = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            handler = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            self.handlers.append(handler)
            handler.start()

    def _handle(self, conn):
        conn.settimeout(10)
        buffer = b''
        script = self.script
        if callable(script):
            script = script(self.connections)
        self.connections += 1
        try:
            for step in script:
                kind = step[0]
                if kind == 'send':
                    conn.sendall(step[1])
                elif kind == 'expect':
                    while b'\n' not in buffer:
                        chunk = conn.recv(4096)
                        if not chunk:
                            raise EOFError('client closed')
                        buffer += chunk
                    line, buffer = buffer.split(b'\n', 1)
                    self.received.append(line.rstrip(b'\r').decode())
                    if not line.startswith(step[1].encode()):
                        self.errors.append(f'expected {step[1]!r}, got {line!r}')
                elif kind == 'tls':
                    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                    context.load_cert_chain(*self.cert)
                    conn = context.wrap_socket(conn, server_side=True)
                    buffer = b''
                elif kind == 'sleep':
                    time.sleep(step[1])
                elif kind == 'trickle':
                    for byte in step[1]:
                        conn.sendall(bytes([byte]))
                        time.sleep(step[2])
                elif kind == 'close':
                    break
        except Exception as exc:  # pylint: disable=broad-except
            self.errors.append(f'{type(exc).__name__}: {exc}')
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def finished(self, timeout: float = 5.0):
        """Waits until every connection's script has run, so that `received` is complete."""
        for handler in list(self.handlers):
            handler.join(timeout)
        return self

    def stop(self):
        self.stopping = True
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def scripted(server_cert):
    servers = []

    def start(script):
        server = ScriptedServer(script, server_cert)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(autouse=True)
def fqdn_free(monkeypatch):
    # Tests must not depend on this machine's host name.
    monkeypatch.setattr(socket, 'gethostname', lambda: 'probe-host')
    os.environ.pop('MAILSEC_TEST', None)
