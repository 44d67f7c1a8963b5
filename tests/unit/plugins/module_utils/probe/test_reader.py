# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The bounded reply reader: odd but honest servers, and properties over arbitrary input (hypothesis)."""

from __future__ import annotations

import time

import pytest

from hypothesis import HealthCheck, given, settings, strategies as st

from ansible_collections.mailsec.starttls.plugins.module_utils import _verdict
from ansible_collections.mailsec.starttls.plugins.module_utils._probe.engine import probe_many
from ansible_collections.mailsec.starttls.plugins.module_utils._probe.reader import (
    MAX_LINE,
    MAX_LINES,
    MAX_REPLY,
    LineReader,
    MalformedReply,
    ReplyCapReached,
    read_imap_response,
    read_pop3_multiline,
    read_pop3_status,
    read_sieve_response,
    read_smtp_reply,
)
from ansible_collections.mailsec.starttls.plugins.module_utils._probe.wire import ConnectionClosed, ProbeError


class ChunkTransport:
    """Hands out prepared chunks, then end of stream."""

    def __init__(self, chunks):
        self.chunks = [bytes(chunk) for chunk in chunks if chunk]

    def recv(self, until):
        return self.chunks.pop(0) if self.chunks else b''

    def recv_ready(self):
        return b''


def split(data: bytes, cuts) -> list:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    pieces, last = [], 0
    for point in points + [len(data)]:
        pieces.append(data[last:point])
        last = point
    return pieces


def far():
    return time.monotonic() + 60


# -- odd but honest servers, end to end -------------------------------------------------------

def test_huge_ehlo_reply_is_cut_at_the_cap_and_keeps_what_was_read(scripted):
    lines = [b'250-mail.test', b'250-STARTTLS'] + [b'250-X-FILLER-%d' % index for index in range(100000 - 3)]
    reply = b'\r\n'.join(lines) + b'\r\n250 8BITMIME\r\n'
    server = scripted([('send', b'220 mail.test ESMTP\r\n'), ('expect', 'EHLO'), ('send', reply), ('sleep', 1)])
    started = time.monotonic()
    result = probe_many([f'127.0.0.1:{server.port}/smtp'], {'timeout': 5})[0]
    assert time.monotonic() - started < 5
    assert result['starttls_advertised'] is True
    assert result['capabilities'][0] == 'STARTTLS'
    assert len(result['capabilities']) == MAX_LINES - 1
    assert 'malformed_reply' in result['flags']
    assert result['error']['stage'] == 'capabilities'
    assert f'longer than {MAX_LINES} lines' in result['error']['message']
    assert result['capabilities_reply']['code'] == '250'
    # STARTTLS was never asked for, so the judgement must not call it a failed STARTTLS.
    assert _verdict.classify_probe(result) == 'incomplete'
    findings = _verdict.judge([], [result], {'now': '2026-12-01T00:00:00Z'})
    assert 'starttls-advertised-without-certificate' not in {finding['id'] for finding in findings}


def test_bare_lf_replies_are_parsed_but_flagged(scripted):
    server = scripted([('send', b'220 mail.test ESMTP\n'), ('expect', 'EHLO'),
                       ('send', b'250-mail.test\n250-PIPELINING\n250 8BITMIME\n'), ('expect', 'QUIT')])
    result = probe_many([f'127.0.0.1:{server.port}/smtp'], {'timeout': 3})[0]
    assert result['error'] is None
    assert result['greeting'] == {'code': '220', 'lines': ['mail.test ESMTP']}
    assert result['capabilities'] == ['PIPELINING', '8BITMIME']
    assert result['starttls_advertised'] is False
    assert 'malformed_reply' in result['flags']


@pytest.mark.parametrize('wire, lines', [
    (b'250-mail.test\r\r\n250 STARTTLS\r\n', ['mail.test', 'STARTTLS']),
    (b'250-mail.test\r\n250 STARTTLS\r\r\r\n', ['mail.test', 'STARTTLS']),
    (b'250-mail\r.test\r\n250 STARTTLS\r\n', ['mail\r.test', 'STARTTLS']),
])
def test_other_line_ending_faults_are_read_and_remembered(wire, lines):
    line_reader = LineReader(ChunkTransport([wire]))
    assert read_smtp_reply(line_reader, far())['lines'] == lines
    assert line_reader.bad_line_ending is True


def test_crlf_replies_are_not_flagged(scripted):
    server = scripted([('send', b'220 mail.test ESMTP\r\n'), ('expect', 'EHLO'),
                       ('send', b'250-mail.test\r\n250 8BITMIME\r\n'), ('expect', 'QUIT')])
    result = probe_many([f'127.0.0.1:{server.port}/smtp'], {'timeout': 3})[0]
    assert result['flags'] == []


def test_huge_pop3_capa_keeps_stls(scripted):
    body = b'STLS\r\n' + b''.join(b'X-CAPA-%d\r\n' % index for index in range(5000)) + b'.\r\n'
    server = scripted([('send', b'+OK ready\r\n'), ('expect', 'CAPA'), ('send', b'+OK\r\n' + body), ('sleep', 1)])
    result = probe_many([f'127.0.0.1:{server.port}/pop3'], {'timeout': 3})[0]
    assert result['starttls_advertised'] is True
    assert 'malformed_reply' in result['flags']
    assert len(result['capabilities']) == MAX_LINES


# -- the reader on its own ------------------------------------------------------------------

def test_cap_by_bytes_keeps_the_lines_before_it():
    line = b'250-' + b'k' * 1000 + b'\r\n'
    reader = LineReader(ChunkTransport([line * 80 + b'250 end\r\n']))
    with pytest.raises(ReplyCapReached) as caught:
        read_smtp_reply(reader, far())
    kept = caught.value.partial['lines']
    assert 0 < len(kept) < 80
    assert sum(len(item) + 2 for item in kept) <= MAX_REPLY
    assert caught.value.flag == 'malformed_reply'


# -- properties -----------------------------------------------------------------------------

READERS = {
    'smtp': read_smtp_reply,
    'imap-greeting': lambda reader, until: read_imap_response(reader, until, None),
    'imap-tagged': lambda reader, until: read_imap_response(reader, until, 'a1'),
    'pop3': read_pop3_status,
    'pop3-multiline': read_pop3_multiline,
    'sieve': read_sieve_response,
}

reply_text = st.text(st.characters(blacklist_categories=('Cs',), blacklist_characters='\r\n'), max_size=60)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=4096), cuts=st.lists(st.integers(min_value=0), max_size=8),
       which=st.sampled_from(sorted(READERS)))
def test_any_bytes_give_a_reply_or_a_probe_error(data, cuts, which):
    reader = LineReader(ChunkTransport(split(data, cuts)))
    try:
        reply = READERS[which](reader, far())
    except ProbeError as exc:
        assert exc.flag in ('malformed_reply', 'connection_closed')
        return
    assert isinstance(reply['lines'], list)
    assert len(reply['lines']) <= MAX_LINES
    assert all('\n' not in line and not line.endswith('\r') for line in reply['lines'])


@settings(max_examples=200, deadline=None)
@given(code=st.integers(min_value=200, max_value=599), lines=st.lists(reply_text, min_size=1, max_size=MAX_LINES),
       cuts=st.lists(st.integers(min_value=0), max_size=10), bare=st.booleans())
def test_well_formed_smtp_replies_read_back_whatever_the_segmentation(code, lines, cuts, bare):
    ending = b'\n' if bare else b'\r\n'
    encoded = [line.encode('utf-8') for line in lines]
    wire = b''.join(b'%d%s%s%s' % (code, b'-' if index < len(lines) - 1 else b' ', text, ending)
                    for index, text in enumerate(encoded))
    if any(len(item) + 4 > MAX_LINE for item in encoded) or sum(len(item) + 2 for item in lines) > MAX_REPLY:
        return
    reader = LineReader(ChunkTransport(split(wire, cuts)))
    reply = read_smtp_reply(reader, far())
    assert reply == {'code': str(code), 'lines': lines}
    assert reader.bad_line_ending is bare


@settings(max_examples=50, deadline=None)
@given(extra=st.integers(min_value=1, max_value=2000), starttls_at=st.integers(min_value=1, max_value=MAX_LINES - 1))
def test_long_replies_stop_at_the_cap_with_the_first_lines_kept(extra, starttls_at):
    lines = ['mail.test'] + [f'X-{index}' for index in range(MAX_LINES + extra)]
    lines[starttls_at] = 'STARTTLS'
    wire = ''.join(f'250-{line}\r\n' for line in lines).encode() + b'250 LAST\r\n'
    with pytest.raises(ReplyCapReached) as caught:
        read_smtp_reply(LineReader(ChunkTransport([wire])), far())
    assert caught.value.partial['lines'] == lines[:MAX_LINES]
    assert caught.value.partial['code'] == '250'
    assert 'STARTTLS' in caught.value.partial['lines']


@settings(max_examples=100, deadline=None)
@given(piece=st.binary(min_size=1, max_size=64).filter(lambda value: b'\n' not in value),
       repeat=st.integers(min_value=1, max_value=3))
def test_a_line_without_end_is_refused_at_the_line_cap(piece, repeat):
    junk = piece * (repeat * MAX_LINE // len(piece) + 2)
    reader = LineReader(ChunkTransport([junk[index:index + 1000] for index in range(0, len(junk), 1000)]))
    with pytest.raises(MalformedReply, match='longer than'):
        reader.read_line(far())


def test_end_of_stream_mid_line_is_a_closed_connection():
    with pytest.raises(ConnectionClosed, match='middle of a reply line'):
        read_smtp_reply(LineReader(ChunkTransport([b'250-partial'])), far())
