# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A bounded line reader and the reply framings of SMTP, IMAP, POP3 and ManageSieve.

The probe frames replies itself on the raw stream so that it knows exactly where one reply
ends: bytes beyond the STARTTLS reply are the response-injection evidence (NO STARTTLS,
USENIX Security 2021) and must never reach the TLS layer.
"""

from __future__ import annotations

import re

from ansible_collections.mailsec.starttls.plugins.module_utils._probe.wire import ConnectionClosed, ProbeError

# RFC 5321 4.5.3.1.5 allows 512 octets a reply line; real servers exceed it, hostile ones never stop.
MAX_LINE = 4096
MAX_LINES = 100
MAX_REPLY = 64 * 1024

SMTP_LINE = re.compile(r'^([0-9]{3})([ -]|$)(.*)$')


class MalformedReply(ProbeError):
    """A reply the probe cannot use as sent. `partial` is what was read of it before a cap stopped
    the reading ({'code', 'lines'}), so that the lines already read are not forgotten."""

    def __init__(self, message: str, partial: dict | None = None):
        super().__init__(message, 'malformed_reply')
        self.partial = partial
        # Set by a dialog: the capabilities it could read from `partial`.
        self.capabilities = None


class ReplyCapReached(MalformedReply):
    """A reply longer than MAX_LINES lines or MAX_REPLY bytes: the reading stopped there."""


class LineReader:
    """Reads CRLF terminated lines from a transport under hard caps.

    A line ending in a bare LF (or in several CRs, or with a CR inside it) is read as a line, its
    trailing CRs removed (servers and proxies that get it wrong are real), but remembered in
    `bad_line_ending`: the probe flags the reply `malformed_reply` (RFC 5321 2.3.8, RFC 3501 2.2:
    lines end in CRLF and nowhere else).
    """

    def __init__(self, transport):
        self.transport = transport
        self.buffer = bytearray()
        self.bad_line_ending = False

    def switch(self, transport) -> None:
        self.transport = transport
        self.buffer = bytearray()

    def read_line(self, until: float) -> str:
        while True:
            end = self.buffer.find(b'\n')
            if end >= 0:
                if end > MAX_LINE:
                    raise MalformedReply(f'reply line longer than {MAX_LINE} bytes')
                raw = bytes(self.buffer[:end])
                del self.buffer[:end + 1]
                line = raw.rstrip(b'\r')
                if len(raw) - len(line) != 1 or b'\r' in line:
                    # A bare LF, CR CR LF, or a CR inside the line: readable, but not CRLF framing.
                    self.bad_line_ending = True
                return line.decode('utf-8', 'replace')
            if len(self.buffer) > MAX_LINE:
                raise MalformedReply(f'reply line longer than {MAX_LINE} bytes')
            data = self.transport.recv(until)
            if not data:
                if self.buffer:
                    raise ConnectionClosed('connection closed in the middle of a reply line')
                raise ConnectionClosed()
            self.buffer.extend(data)

    def surplus(self) -> bytes:
        """Bytes received beyond the last complete reply, plus any already waiting; then forgotten."""
        extra = bytes(self.buffer) + self.transport.recv_ready()
        self.buffer = bytearray()
        return extra


class Lines:
    """Counts lines and bytes of one reply against the caps."""

    def __init__(self):
        self.lines: list = []
        self.size = 0
        self.code = None

    def add(self, line: str) -> None:
        """Keeps the line, or raises ReplyCapReached carrying the lines kept so far (not this one)."""
        if len(self.lines) >= MAX_LINES:
            raise ReplyCapReached(f'reply longer than {MAX_LINES} lines; the first {MAX_LINES} were kept',
                                  self.partial())
        if self.size + len(line) + 2 > MAX_REPLY:
            raise ReplyCapReached(f'reply larger than {MAX_REPLY} bytes; the first {len(self.lines)} lines were kept',
                                  self.partial())
        self.lines.append(line)
        self.size += len(line) + 2

    def partial(self) -> dict:
        return {'code': self.code, 'lines': list(self.lines)}


def read_smtp_reply(reader: LineReader, until: float) -> dict:
    """One SMTP reply: `250-` continuation lines up to a `250 ` last line (RFC 5321 4.2.1)."""
    collected = Lines()
    while True:
        line = reader.read_line(until)
        match = SMTP_LINE.match(line)
        if not match:
            raise MalformedReply(f'not an SMTP reply line: {line[:80]!r}')
        if collected.code is None:
            collected.code = match.group(1)
        elif match.group(1) != collected.code:
            raise MalformedReply(f'reply code changed from {collected.code} to {match.group(1)} within one reply')
        collected.add(match.group(3))
        if match.group(2) != '-':
            return {'code': collected.code, 'lines': collected.lines}


def read_imap_response(reader: LineReader, until: float, tag: str | None) -> dict:
    """Untagged lines up to the tagged completion (or the greeting when tag is None)."""
    collected = Lines()
    while True:
        line = reader.read_line(until)
        collected.add(line)
        head, _sep, rest = line.partition(' ')
        if tag is None or head == tag:
            if tag is None:
                if head != '*':
                    raise MalformedReply(f'IMAP greeting is not untagged: {line[:80]!r}')
                head, _sep, rest = rest.partition(' ')
            status = head.upper() if tag is None else rest.partition(' ')[0].upper()
            text = rest if tag is None else rest.partition(' ')[2]
            if status not in ('OK', 'NO', 'BAD', 'BYE', 'PREAUTH'):
                raise MalformedReply(f'unexpected IMAP status {status[:20]!r}')
            return {'code': status, 'lines': collected.lines, 'text': text}
        if head == '*' and rest.upper().startswith('BYE'):
            # The server is leaving before it completes our command (Dovecot after a failed TLS init).
            return {'code': 'BYE', 'lines': collected.lines, 'text': rest[3:].strip()}
        if head not in ('*', '+'):
            raise MalformedReply(f'unexpected IMAP line: {line[:80]!r}')


def read_pop3_status(reader: LineReader, until: float) -> dict:
    line = reader.read_line(until)
    status, _sep, text = line.partition(' ')
    if status not in ('+OK', '-ERR'):
        raise MalformedReply(f'not a POP3 status line: {line[:80]!r}')
    return {'code': status, 'lines': [line], 'text': text}


def read_pop3_multiline(reader: LineReader, until: float) -> dict:
    """A status line, and when it is +OK the lines up to a lone '.' (RFC 1939 3)."""
    reply = read_pop3_status(reader, until)
    if reply['code'] != '+OK':
        return reply
    collected = Lines()
    while True:
        line = reader.read_line(until)
        if line == '.':
            reply['body'] = collected.lines
            return reply
        collected.add(line[1:] if line.startswith('..') else line)


def read_sieve_response(reader: LineReader, until: float) -> dict:
    """Capability-style lines up to an OK, NO or BYE line (RFC 5804 1.2, 2.2)."""
    collected = Lines()
    while True:
        line = reader.read_line(until)
        word = line.split(' ', 1)[0].upper()
        if word in ('OK', 'NO', 'BYE'):
            return {'code': word, 'lines': collected.lines, 'text': line[len(word):].strip()}
        if not line.startswith('"'):
            raise MalformedReply(f'unexpected ManageSieve line: {line[:80]!r}')
        collected.add(line)
