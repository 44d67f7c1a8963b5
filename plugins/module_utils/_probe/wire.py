# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Byte transports with deadlines, and TLS layered over any of them through memory BIOs.

TLS runs over ssl.MemoryBIO rather than a wrapped socket so that the same code serves a TCP
socket and an SSH direct-tcpip channel, and so that the raw bytes a server sends during the
handshake can be seen (Dovecot answers a failed STARTTLS with a plaintext BYE).
"""

from __future__ import annotations

import _ssl
import socket
import ssl
import struct
import sys
import time

RECV_SIZE = 16384
# A certificate chain larger than this is hostile or broken; stop reading (research: huge chains).
MAX_HANDSHAKE_BYTES = 256 * 1024
PLAINTEXT_SAMPLE = 200
# Plaintext lines a server sends after a positive STARTTLS reply and before its first TLS record are
# held back from the TLS library, up to this much (beyond it, the bytes go to TLS and fail there).
MAX_PRE_TLS_PLAINTEXT = 4096
# How long held-back plaintext waits for a TLS record before it goes to TLS (and fails the handshake
# there): a server that follows injected lines with its ServerHello sends both as it processes our
# ClientHello; one that never starts TLS (answers the ClientHello with 500 lines) need not cost a timeout.
PLAINTEXT_GRACE = 2.0
# First bytes of TLS records: change_cipher_spec, alert, handshake, application_data (RFC 8446 5.1).
TLS_RECORD_TYPES = (0x14, 0x15, 0x16, 0x17)


class ProbeError(Exception):
    """A failure of one stage of one probe; becomes the probe's `error`, never a traceback."""

    def __init__(self, message: str, flag: str | None = None):
        super().__init__(message)
        self.message = message
        self.flag = flag


class ProbeTimeout(ProbeError):
    def __init__(self, message: str = 'timed out'):
        super().__init__(message, 'timeout')


class ConnectionClosed(ProbeError):
    def __init__(self, message: str = 'connection closed by peer'):
        super().__init__(message, 'connection_closed')


class Deadline:
    """An absolute per-target deadline from which each phase takes a bounded slice."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def phase(self, seconds: float) -> float:
        return min(self.end, time.monotonic() + seconds)


def remaining(until: float) -> float:
    left = until - time.monotonic()
    if left <= 0:
        raise ProbeTimeout()
    return left


# Where `struct timeval` is two C longs (Linux on 64-bit machines), a connected socket stays in
# blocking mode and each send or receive is bounded by SO_SNDTIMEO / SO_RCVTIMEO, set to what is left
# of the deadline. A socket with a Python timeout polls before every call and lets go of the
# interpreter twice per call; with a hundred probe threads that handover cost more CPU than the
# dialog's own Python (bench/README.md, issue 15). Elsewhere, the Python timeout as before.
KERNEL_TIMEOUTS = sys.platform.startswith('linux') and struct.calcsize('l') == 8
_TIMEVAL = struct.Struct('@ll')


def _timeval(seconds: float) -> bytes:
    whole = int(seconds)
    micro = int((seconds - whole) * 1000000)
    # Never 0 and 0: that would mean no bound at all.
    return _TIMEVAL.pack(whole, micro if whole or micro else 1)


class TcpTransport:
    """A connected TCP socket; every read waits at most until the caller's deadline."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.kernel_timeouts = KERNEL_TIMEOUTS
        if self.kernel_timeouts:
            sock.settimeout(None)

    def _bound(self, option: int, until: float) -> None:
        if self.kernel_timeouts:
            self.sock.setsockopt(socket.SOL_SOCKET, option, _timeval(remaining(until)))
        else:
            self.sock.settimeout(remaining(until))

    @classmethod
    def connect(cls, address: str, port: int, until: float, resolve: bool = False,
                source: str | None = None) -> 'TcpTransport':
        flags = 0 if resolve else socket.AI_NUMERICHOST
        try:
            infos = socket.getaddrinfo(address, port, 0, socket.SOCK_STREAM, 0, flags)
        except socket.gaierror as exc:
            raise ProbeError(f'cannot resolve {address}: {exc.strerror}')
        last = None
        for family, socktype, proto, _name, sockaddr in infos:
            if source and (':' in source) != (family == socket.AF_INET6):
                last = ProbeError(f'source address {source} cannot reach {sockaddr[0]} (other address family)')
                continue
            sock = socket.socket(family, socktype, proto)
            try:
                if source:
                    # A vantage with an address of its own (a firewall rule or a relay that tells
                    # clients apart by source address).
                    sock.bind((source, 0))
                sock.settimeout(remaining(until))
                sock.connect(sockaddr)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return cls(sock)
            except socket.timeout:
                sock.close()
                last = ProbeTimeout(f'connect to {sockaddr[0]} port {port} timed out')
            except OSError as exc:
                sock.close()
                last = ProbeError(f'connect to {sockaddr[0]} port {port}: {exc.strerror or exc}')
        raise last or ProbeError('no address to connect to')

    def peer(self) -> str | None:
        try:
            return self.sock.getpeername()[0]
        except OSError:
            return None

    def local(self) -> str | None:
        try:
            return self.sock.getsockname()[0]
        except OSError:
            return None

    def send(self, data: bytes, until: float) -> None:
        try:
            self._bound(socket.SO_SNDTIMEO, until)
            self.sock.sendall(data)
        except (socket.timeout, BlockingIOError):
            # BlockingIOError: SO_SNDTIMEO ran out (EAGAIN from a blocking socket).
            raise ProbeTimeout('send timed out')
        except OSError as exc:
            raise ConnectionClosed(f'send failed: {exc.strerror or exc}')

    def recv(self, until: float) -> bytes:
        try:
            self._bound(socket.SO_RCVTIMEO, until)
            return self.sock.recv(RECV_SIZE)
        except (socket.timeout, BlockingIOError):
            raise ProbeTimeout()
        except OSError as exc:
            raise ConnectionClosed(f'connection reset: {exc.strerror or exc}')

    def recv_ready(self) -> bytes:
        """Whatever has already arrived, without waiting (b'' when nothing has)."""
        if self.kernel_timeouts:
            try:
                return self.sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
            except OSError:
                return b''
        # A socket with a timeout polls before recv even with MSG_DONTWAIT: go non-blocking.
        try:
            self.sock.setblocking(False)
            return self.sock.recv(RECV_SIZE)
        except OSError:
            return b''
        finally:
            try:
                self.sock.setblocking(True)
            except OSError:
                pass

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class ChannelTransport:
    """A paramiko direct-tcpip channel through a jump host (the jump host needs no Python)."""

    def __init__(self, channel, peer: str | None = None, on_close=None):
        self.channel = channel
        self._peer = peer
        self._on_close = on_close

    def peer(self) -> str | None:
        return self._peer

    def local(self) -> str | None:
        return None

    def send(self, data: bytes, until: float) -> None:
        try:
            self.channel.settimeout(remaining(until))
            self.channel.sendall(data)
        except socket.timeout:
            raise ProbeTimeout('send timed out')
        except OSError as exc:
            raise ConnectionClosed(f'send failed: {exc}')

    def recv(self, until: float) -> bytes:
        try:
            self.channel.settimeout(remaining(until))
            return self.channel.recv(RECV_SIZE)
        except socket.timeout:
            raise ProbeTimeout()
        except OSError as exc:
            raise ConnectionClosed(f'channel failed: {exc}')

    def recv_ready(self) -> bytes:
        if self.channel.recv_ready():
            return self.channel.recv(RECV_SIZE)
        return b''

    def close(self) -> None:
        try:
            self.channel.close()
        except Exception:  # paramiko raises various errors on an already broken channel
            pass
        if self._on_close is not None:
            # Once: the jump host's channel count goes down when the probe is done with it.
            on_close, self._on_close = self._on_close, None
            on_close()


class TlsLayer:
    """A TLS client over a raw transport; it looks like a transport to the dialogs above it."""

    def __init__(self, raw, context: ssl.SSLContext, server_hostname: str | None, hold_plaintext: bool = False):
        self.raw = raw
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_side=False,
                                    server_hostname=server_hostname)
        self.received = 0
        self.first_bytes = b''
        self.established = False
        self.peer_closed = False
        # Bytes not yet known to be TLS, and the plaintext lines taken out before the first record:
        # the same response injection as bytes queued behind the STARTTLS reply, only later on the wire,
        # so that whether it is seen does not depend on when it arrives.
        self.pending = b''
        self.records_started = not hold_plaintext
        self.pre_tls_plaintext = b''

    def _flush(self, until: float) -> None:
        pending = self.outgoing.read()
        if pending:
            self.raw.send(pending, until)

    def _feed(self, until: float) -> None:
        if self.records_started or not (self.pending or self.pre_tls_plaintext):
            data = self.raw.recv(until)
        else:
            try:
                data = self.raw.recv(min(until, time.monotonic() + PLAINTEXT_GRACE))
            except ProbeTimeout:
                if time.monotonic() >= until:
                    raise
                # Plaintext and no TLS after it: let the TLS library see it and fail the handshake.
                self._start_records(with_lines=True)
                return
        if not data:
            if not self.records_started:
                # Closed without a TLS record: plaintext only (Dovecot's BYE); the handshake fails on EOF.
                self.records_started = True
                self.incoming.write(self.pending)
                self.pending = b''
            self.incoming.write_eof()
            self.peer_closed = True
            return
        if len(self.first_bytes) < PLAINTEXT_SAMPLE:
            self.first_bytes += data[:PLAINTEXT_SAMPLE - len(self.first_bytes)]
        self.received += len(data)
        if self.received > MAX_HANDSHAKE_BYTES and not self.established:
            raise ProbeError(f'handshake exceeded {MAX_HANDSHAKE_BYTES} bytes', 'malformed_reply')
        if self.records_started:
            self.incoming.write(data)
            return
        self.pending += data
        while self.pending:
            if self.pending[0] in TLS_RECORD_TYPES:
                self._start_records()
                return
            end = self.pending.find(b'\n')
            if end < 0:
                if len(self.pending) > MAX_PRE_TLS_PLAINTEXT:
                    self._start_records()
                return
            self.pre_tls_plaintext += self.pending[:end + 1]
            self.pending = self.pending[end + 1:]
            if len(self.pre_tls_plaintext) > MAX_PRE_TLS_PLAINTEXT:
                self._start_records()
                return

    def _start_records(self, with_lines: bool = False) -> None:
        self.records_started = True
        if with_lines:
            # Not injection before TLS after all, only plaintext: the handshake is to fail on it.
            self.pending = self.pre_tls_plaintext + self.pending
            self.pre_tls_plaintext = b''
        self.incoming.write(self.pending)
        self.pending = b''

    def handshake(self, until: float) -> None:
        while True:
            try:
                self.obj.do_handshake()
                self._flush(until)
                self.established = True
                return
            except ssl.SSLWantReadError:
                self._flush(until)
                if self.peer_closed:
                    raise ConnectionClosed('connection closed during the TLS handshake')
                self._feed(until)
            except ssl.SSLError as exc:
                # Send our alert if there is one; the peer may be gone already.
                try:
                    self._flush(until)
                except ProbeError:
                    pass
                if self.peer_closed or isinstance(exc, ssl.SSLEOFError):
                    raise ConnectionClosed(f'connection closed during the TLS handshake ({describe_ssl_error(exc)})')
                raise ProbeError(describe_ssl_error(exc))

    def plaintext_sample(self) -> str | None:
        """The server's first bytes when they were text, not a TLS record (0x14-0x17 first byte)."""
        if not self.first_bytes or self.first_bytes[0] in (0x14, 0x15, 0x16, 0x17):
            return None
        return self.first_bytes.decode('ascii', 'replace').strip()

    def send(self, data: bytes, until: float) -> None:
        try:
            self.obj.write(data)
        except ssl.SSLError as exc:
            raise ConnectionClosed(describe_ssl_error(exc))
        self._flush(until)

    def recv(self, until: float) -> bytes:
        while True:
            try:
                return self.obj.read(RECV_SIZE)
            except ssl.SSLWantReadError:
                if self.peer_closed:
                    return b''
                self._feed(until)
            except ssl.SSLZeroReturnError:
                return b''
            except ssl.SSLError as exc:
                raise ConnectionClosed(describe_ssl_error(exc))

    def recv_ready(self) -> bytes:
        extra = self.raw.recv_ready()
        if extra:
            self.incoming.write(extra)
        try:
            return self.obj.read(RECV_SIZE)
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            return b''
        except ssl.SSLError:
            return b''

    def peer(self) -> str | None:
        return self.raw.peer()

    def local(self) -> str | None:
        return self.raw.local()

    def close(self) -> None:
        self.raw.close()

    def chain_der(self) -> list:
        """The certificates the server sent, leaf first (only the leaf before Python 3.10)."""
        getter = getattr(self.obj, 'get_unverified_chain', None)
        if getter is None:
            getter = getattr(getattr(self.obj, '_sslobj', None), 'get_unverified_chain', None)
        if getter is not None:
            try:
                chain = getter() or []
                return [_cert_der(cert) for cert in chain]
            except (ssl.SSLError, ValueError, AttributeError):
                pass
        leaf = self.obj.getpeercert(binary_form=True)
        return [leaf] if leaf else []


def _cert_der(cert) -> bytes:
    if isinstance(cert, bytes):
        return cert
    return cert.public_bytes(_ssl.ENCODING_DER)


def describe_ssl_error(exc: ssl.SSLError) -> str:
    reason = getattr(exc, 'reason', None)
    library = getattr(exc, 'library', None)
    text = str(exc)
    if reason:
        text = f'{library}: {reason}' if library else reason
    return text.replace('_', ' ').lower() if text.isupper() else text


def observing_context(minimum_legacy: bool = True) -> ssl.SSLContext:
    """The context for observing what a server does: no verification (done afterwards, without
    another handshake), and legacy protocols allowed so that they can be reported."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if minimum_legacy:
        try:
            context.set_ciphers('ALL:@SECLEVEL=0')
            context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        except (ssl.SSLError, ValueError):
            pass
    return context
