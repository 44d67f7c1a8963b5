# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""TcpTransport's deadlines, with the kernel's socket timeouts and with Python's."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from ansible_collections.mailsec.starttls.plugins.module_utils._probe import wire


@pytest.fixture(params=['kernel', 'python'])
def timeouts(request, monkeypatch):
    if request.param == 'kernel' and not wire.KERNEL_TIMEOUTS:
        pytest.skip('SO_RCVTIMEO/SO_SNDTIMEO are used only where struct timeval is two longs (64-bit Linux)')
    monkeypatch.setattr(wire, 'KERNEL_TIMEOUTS', request.param == 'kernel')
    return request.param


@pytest.fixture
def pair(timeouts):
    """A TcpTransport connected to a socket of the test's own: (transport, the server side)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(('127.0.0.1', 0))
    server.listen(4)
    transport = wire.TcpTransport.connect('127.0.0.1', server.getsockname()[1], time.monotonic() + 5)
    peer, _address = server.accept()
    assert transport.kernel_timeouts is (timeouts == 'kernel')
    yield transport, peer
    transport.close()
    peer.close()
    server.close()


def test_a_silent_server_times_out_at_the_deadline(pair):
    transport, _peer = pair
    started = time.monotonic()
    with pytest.raises(wire.ProbeTimeout):
        transport.recv(started + 0.3)
    waited = time.monotonic() - started
    assert 0.25 <= waited < 2.0
    with pytest.raises(wire.ProbeTimeout):
        transport.recv(time.monotonic() - 1)  # a deadline already past: no wait at all


def test_a_server_that_reads_nothing_times_out_a_send(pair):
    transport, _peer = pair
    transport.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    chunk = b'x' * 65536
    started = time.monotonic()
    with pytest.raises(wire.ProbeTimeout):
        for _round in range(1000):  # the buffers fill up long before: the peer never reads
            transport.send(chunk, started + 0.5)
    assert time.monotonic() - started < 5


def test_data_and_waiting_bytes_arrive_as_sent(pair):
    transport, peer = pair
    assert transport.recv_ready() == b''
    peer.sendall(b'220 ready\r\n')
    assert transport.recv(time.monotonic() + 2) == b'220 ready\r\n'
    transport.send(b'EHLO probe\r\n', time.monotonic() + 2)
    assert peer.recv(100) == b'EHLO probe\r\n'
    peer.sendall(b'250 surplus\r\n')
    deadline = time.monotonic() + 2
    extra = b''
    while not extra and time.monotonic() < deadline:
        extra = transport.recv_ready()
    assert extra == b'250 surplus\r\n'
    peer.shutdown(socket.SHUT_WR)
    assert transport.recv(time.monotonic() + 2) == b''  # closed by the peer, not a timeout


def test_a_kernel_timeout_is_never_zero():
    # 0 seconds and 0 microseconds would mean no bound at all.
    assert struct.unpack('@ll', wire._timeval(0.0)) == (0, 1)
    assert struct.unpack('@ll', wire._timeval(2.5)) == (2, 500000)
    assert struct.unpack('@ll', wire._timeval(1e-9)) == (0, 1)
