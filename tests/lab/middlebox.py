# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A middlebox for the lab: a real TCP relay in front of a real lab MTA, which does to the SMTP
dialog what firewalls and "secure mail gateways" in the field do.

Modes (KB Q237327 and the research in /work/shared/research/PEERS-AND-MTAS.md):

- ``transparent``: bytes pass unchanged both ways (a NAT or port forward).
- ``mask``: Cisco ASA/PIX ESMTP inspection (``_default_esmtp_map``: ``no allow-tls``, ``mask-banner``).
  The STARTTLS keyword in EHLO replies is overwritten (``XXXXXXXA``), a STARTTLS the client sends
  anyway reaches the server as ``XXXXXXXX`` (an unknown command); with ``starred_banner`` the
  greeting's text is overwritten with ``*`` as well (banner masking).
- ``terminate``: the relay answers STARTTLS itself (``220``), completes TLS with the client with a
  certificate of its own, and relays the plaintext to the server, which never sees STARTTLS; STARTTLS
  is taken out of the server's EHLO replies inside TLS.
- ``refuse``: STARTTLS stays advertised, but the relay answers the command itself with
  ``554 5.7.3 Unable to initialize security subsystem`` (an Exchange/ISA-style gateway without a
  certificate: the KB Q237327 case seen through a middlebox).
- ``strip``: the STARTTLS line is removed from EHLO replies, for the client source addresses in
  ``strip_for`` only (every address when ``strip_for`` is empty); others pass transparently.

After a STARTTLS the server accepted (220 to a STARTTLS the relay passed on), the relay passes bytes
unchanged: the TLS session is then between the client and the server.

Run it standalone: ``python3 tests/lab/middlebox.py --listen 127.0.90.1:25 --upstream 127.0.10.1:25
--mode mask --starred-banner``.
"""

from __future__ import annotations

import argparse
import re
import select
import socket
import ssl
import threading
import time

MODES = ('transparent', 'mask', 'terminate', 'refuse', 'strip')
REFUSAL = b'554 5.7.3 Unable to initialize security subsystem\r\n'
IDLE_SECONDS = 30.0
MAX_LINE = 4096

_EHLO_LINE = re.compile(rb'^(250[- ])(.*)$', re.DOTALL)


def _mask_keyword(keyword: bytes) -> bytes:
    # The shape field reports show for ASA ESMTP inspection with `no allow-tls`: X's over the keyword,
    # ending in A (STARTTLS -> XXXXXXXA).
    if len(keyword) < 2:
        return b'X' * len(keyword)
    return b'X' * (len(keyword) - 1) + b'A'


class _Session:
    """One client connection and its connection to the server, relayed in one thread."""

    def __init__(self, relay: 'Middlebox', client: socket.socket, source: str):
        self.relay = relay
        self.client = client
        self.source = source
        self.server = socket.create_connection(relay.upstream, timeout=5)
        self.server.settimeout(None)
        mode = relay.mode
        if mode == 'strip' and relay.strip_for and source not in relay.strip_for:
            mode = 'transparent'
        self.mode = mode
        self.raw = mode == 'transparent'
        self.client_buffer = b''
        self.server_buffer = b''
        self.greeted = False
        self.starttls_passed = False
        self.in_tls = False
        self.in_ehlo_reply = False

    # -- lines from the server ---------------------------------------------------------------------
    def _server_line(self, line: bytes) -> bytes | None:
        if not self.greeted:
            if line[3:4] == b' ' or len(line) < 5:
                self.greeted = True
            if self.mode == 'mask' and self.relay.starred_banner and line[:3].isdigit():
                text = line[4:].rstrip(b'\r\n')
                return line[:4] + b'*' * len(text) + b'\r\n'
            return line
        if self.starttls_passed:
            if line.startswith(b'220'):
                # The server agreed: from here on TLS runs between client and server, untouched.
                self.raw = True
            self.starttls_passed = False
            return line
        match = _EHLO_LINE.match(line)
        if not match:
            return line
        keyword = match.group(2).rstrip(b'\r\n')
        if keyword.upper() != b'STARTTLS':
            return line
        if self.mode == 'mask':
            return match.group(1) + _mask_keyword(keyword) + b'\r\n'
        if self.mode == 'strip' or (self.mode == 'terminate' and self.in_tls):
            return b''  # removed; the continuation markers are repaired in _flush_ehlo
        return line

    def _server_lines(self, lines: list) -> bytes:
        out = []
        for line in lines:
            rewritten = self._server_line(line)
            if rewritten is None:
                continue
            out.append(rewritten)
        # A removed last line leaves "250-" on the new last line of the reply: make it "250 ".
        result = [line for line in out if line != b'']
        if result and len(result) < len(out) and out[-1] == b'' and result[-1][3:4] == b'-':
            result[-1] = result[-1][:3] + b' ' + result[-1][4:]
        return b''.join(result)

    # -- lines from the client ---------------------------------------------------------------------
    def _client_line(self, line: bytes) -> bytes | None:
        command = line.strip().upper()
        if command != b'STARTTLS':
            return line
        if self.mode == 'mask':
            return b'XXXXXXXX\r\n'
        if self.mode == 'refuse':
            self._to_client(REFUSAL)
            return None
        if self.mode == 'terminate' and not self.in_tls:
            self._to_client(b'220 2.0.0 Ready to start TLS\r\n')
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.relay.certificate)
            self.client.settimeout(10)
            self.client = context.wrap_socket(self.client, server_side=True)
            self.client.settimeout(None)
            self.in_tls = True
            return None
        self.starttls_passed = True
        return line

    def _to_client(self, data: bytes) -> None:
        if data:
            self.client.sendall(data)

    @staticmethod
    def _split(buffer: bytes) -> tuple:
        lines = []
        while True:
            end = buffer.find(b'\n')
            if end < 0:
                if len(buffer) > MAX_LINE:
                    lines.append(buffer)
                    buffer = b''
                return lines, buffer
            lines.append(buffer[:end + 1])
            buffer = buffer[end + 1:]

    def run(self) -> None:
        try:
            self._loop()
        except (OSError, ssl.SSLError):
            pass
        finally:
            for sock in (self.client, self.server):
                try:
                    sock.close()
                except OSError:
                    pass

    def _readable(self) -> list:
        if isinstance(self.client, ssl.SSLSocket) and self.client.pending():
            return [self.client]
        ready, _w, _x = select.select([self.client, self.server], [], [], IDLE_SECONDS)
        return ready

    def _loop(self) -> None:
        while not self.relay.stopping:
            ready = self._readable()
            if not ready:
                return
            for sock in ready:
                data = sock.recv(65536)
                if not data:
                    return
                if sock is self.server:
                    if self.raw:
                        self._to_client(data)
                        continue
                    lines, self.server_buffer = self._split(self.server_buffer + data)
                    self._to_client(self._server_lines(lines))
                    if self.raw and self.server_buffer:
                        self._to_client(self.server_buffer)
                        self.server_buffer = b''
                else:
                    if self.raw:
                        self.server.sendall(data)
                        continue
                    lines, self.client_buffer = self._split(self.client_buffer + data)
                    for line in lines:
                        forwarded = self._client_line(line)
                        if forwarded:
                            self.server.sendall(forwarded)
                    if self.raw and self.client_buffer:
                        self.server.sendall(self.client_buffer)
                        self.client_buffer = b''


class Middlebox:
    """A relay listening on `listen` (address, port) in front of `upstream` (address, port)."""

    def __init__(self, listen: tuple, upstream: tuple, mode: str = 'transparent', starred_banner: bool = False,
                 certificate: tuple | None = None, strip_for: tuple = ()):
        if mode not in MODES:
            raise ValueError(f'unknown middlebox mode {mode!r} (one of {", ".join(MODES)})')
        if mode == 'terminate' and not certificate:
            raise ValueError('mode terminate needs a certificate (certificate file, key file)')
        self.listen = listen
        self.upstream = upstream
        self.mode = mode
        self.starred_banner = starred_banner
        self.certificate = certificate
        self.strip_for = set(strip_for)
        self.stopping = False
        self.sessions = 0
        family = socket.AF_INET6 if ':' in listen[0] else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(listen)
        self.sock.listen(128)
        self.sock.settimeout(0.2)
        self.thread = threading.Thread(target=self._accept, name=f'middlebox-{mode}', daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def _accept(self) -> None:
        while not self.stopping:
            try:
                client, peer = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            client.settimeout(None)
            self.sessions += 1
            try:
                session = _Session(self, client, peer[0])
            except OSError:
                client.close()  # the server is down: the client sees the connection closed
                continue
            threading.Thread(target=session.run, daemon=True).start()

    def stop(self) -> None:
        self.stopping = True
        self.sock.close()
        self.thread.join(2)

    def __enter__(self) -> 'Middlebox':
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _endpoint(text: str) -> tuple:
    address, _sep, port = text.rpartition(':')
    return address.strip('[]'), int(port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--listen', required=True, help='address:port to listen on')
    parser.add_argument('--upstream', required=True, help='address:port of the real MTA')
    parser.add_argument('--mode', choices=MODES, default='transparent')
    parser.add_argument('--starred-banner', action='store_true')
    parser.add_argument('--cert', help='certificate file (mode terminate)')
    parser.add_argument('--key', help='key file (mode terminate)')
    parser.add_argument('--strip-for', action='append', default=[], help='source address to strip STARTTLS for')
    args = parser.parse_args()
    relay = Middlebox(_endpoint(args.listen), _endpoint(args.upstream), args.mode, args.starred_banner,
                      (args.cert, args.key) if args.cert else None, tuple(args.strip_for))
    print(f'middlebox {args.mode} on {args.listen} -> {args.upstream}', flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        relay.stop()


if __name__ == '__main__':
    main()
