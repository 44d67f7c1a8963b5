# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One scripted mail server on loopback for every unit test that needs a peer on the wire.

It replays dialogs recorded from real MTAs and middleboxes (research/MTA-BEHAVIOUR.md): the
probe engine's tests, the judgement's tests on the engine's own records and the listener_probe
module's test all talk to it. The fixtures `server_cert` and `scripted` (tests/unit/plugins/
conftest.py) hand it out and stop it after the test.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
import time

# -- recorded dialogs (Postfix 3.7, Dovecot 2.3 in the lab), the parts several tests replay ----------

POSTFIX_GREETING = b'220 mail.test ESMTP Postfix\r\n'
POSTFIX_EHLO = (b'250-mail.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-STARTTLS\r\n'
                b'250-ENHANCEDSTATUSCODES\r\n250 8BITMIME\r\n')
POSTFIX_EHLO_TLS = b'250-mail.test\r\n250-PIPELINING\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n'
POSTFIX_454 = b'454 4.7.0 TLS not available due to local problem\r\n'


def smtp_open(greeting: bytes = POSTFIX_GREETING, ehlo: bytes = POSTFIX_EHLO) -> list:
    """An SMTP dialog up to and including the client's STARTTLS command."""
    return [('send', greeting), ('expect', 'EHLO'), ('send', ehlo), ('expect', 'STARTTLS')]


def smtp_starttls_ok() -> list:
    """Postfix with its certificate: STARTTLS, the handshake, EHLO again, QUIT."""
    return smtp_open() + [('send', b'220 2.0.0 Ready to start TLS\r\n'), ('tls',), ('expect', 'EHLO'),
                          ('send', POSTFIX_EHLO_TLS), ('expect', 'QUIT')]


def smtp_starttls_refused(reply: bytes = POSTFIX_454) -> list:
    """Postfix without a usable certificate (KB Q237327): STARTTLS advertised, then refused."""
    return smtp_open() + [('send', reply), ('expect', 'QUIT')]


def imap_ok_then_bye() -> list:
    """Dovecot on an address without a certificate: OK to STARTTLS, then a plaintext BYE on the
    ClientHello instead of a handshake."""
    return [('send', b'* OK [CAPABILITY IMAP4rev1 STARTTLS] Dovecot ready.\r\n'), ('expect', 'a1 CAPABILITY'),
            ('send', b'* CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS STARTTLS LOGINDISABLED\r\n'
                     b'a1 OK Pre-login capabilities listed, post-login capabilities have more.\r\n'),
            ('expect', 'a2 STARTTLS'), ('send', b'a2 OK Begin TLS negotiation now.\r\n'),
            ('receive',), ('send', b'* BYE [UNAVAILABLE] TLS initialization failed.\r\n'), ('close',)]


def self_signed_certificate(directory, subject: str = '/CN=mail.test',
                            san: str | None = 'DNS:mail.test,IP:127.0.0.1', days: int = 30,
                            key_type: str = 'ec') -> tuple:
    """(certificate path, key path) of a self-signed certificate made with the openssl command in
    directory: an EC P-256 key by default, 'rsa' for an RSA 2048 key (Exim's self-made one)."""
    cert, key = directory / 'cert.pem', directory / 'key.pem'
    if key_type == 'rsa':
        new_key = ['-newkey', 'rsa:2048']
    else:
        new_key = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256']
    command = ['openssl', 'req', '-x509', *new_key, '-nodes', '-keyout', str(key), '-out', str(cert),
               '-days', str(days), '-subj', subject]
    if san:
        command += ['-addext', f'subjectAltName={san}']
    subprocess.run(command, check=True, capture_output=True)
    return str(cert), str(key)


class ScriptedServer:
    """Serves each connection with a script of steps:

    ('send', bytes)        send raw bytes
    ('expect', prefix)     read one line, record it in `received`, and check it starts with prefix
                           (a mismatch is recorded in `errors`; the script goes on)
    ('receive',)           read whatever raw bytes arrive next (a ClientHello, say) and drop them
    ('tls',)               upgrade to TLS with the server's certificate
    ('tls', (cert, key))   upgrade to TLS with that certificate and key
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
                elif kind == 'receive':
                    if not buffer:
                        conn.recv(65536)
                    buffer = b''
                elif kind == 'tls':
                    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                    context.load_cert_chain(*(step[1] if len(step) > 1 else self.cert))
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
