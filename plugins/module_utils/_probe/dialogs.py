# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One lockstep dialog per protocol: greeting, capabilities, STARTTLS, capabilities again.

Every dialog waits for the server's greeting before it says anything (postscreen and
greet_pause punish early talkers) and sends one command at a time (pipelined EHLO+STARTTLS
makes Exim answer 554 synchronization error, testssl.sh #218).
"""

from __future__ import annotations

import re

from ansible_collections.mailsec.starttls.plugins.module_utils._probe.reader import (
    ReplyCapReached,
    read_imap_response,
    read_pop3_multiline,
    read_pop3_status,
    read_sieve_response,
    read_smtp_reply,
)
from ansible_collections.mailsec.starttls.plugins.module_utils._probe.wire import ProbeError

# Cisco ASA ESMTP inspection rewrites a keyword it does not allow to X's with the last letter kept
# ('STARTTLS' -> 'XXXXXXXA') and `mask-banner` replaces the banner text with asterisks.
MASKED_KEYWORD = re.compile(r'^X{3,}[A-Z]?$')


def reply_summary(reply: dict | None) -> dict | None:
    if reply is None:
        return None
    text = reply.get('text')
    if text is None:
        text = '\n'.join(reply['lines'])
    return {'code': reply['code'], 'text': text}


def masked_banner(text: str) -> bool:
    stripped = text.replace(' ', '')
    return len(stripped) >= 4 and stripped.count('*') * 2 >= len(stripped)


class Dialog:
    """The shared shape; subclasses fill in the protocol's commands and framings."""

    starttls_keyword = 'STARTTLS'
    greeting_ok = ('220',)
    starttls_ok = ('220',)

    def __init__(self, reader, transport, ehlo_name: str):
        self.reader = reader
        self.transport = transport
        self.ehlo_name = ehlo_name
        self.flags: list = []

    def send(self, line: str, until: float) -> None:
        # The options are checked before any connection (validate.py); this is the last line of
        # defence: a line break inside a command would make it two commands (RFC 5321 2.3.8).
        if '\r' in line or '\n' in line or '\x00' in line:
            raise ProbeError('refusing to send a command that contains CR, LF or NUL')
        try:
            data = line.encode('ascii')
        except UnicodeEncodeError:
            raise ProbeError('refusing to send a command that is not ASCII')
        self.transport.send(data + b'\r\n', until)

    def use(self, transport) -> None:
        self.transport = transport
        self.reader.switch(transport)

    def advertises_starttls(self, capabilities: list) -> bool:
        return any(c.split(' ', 1)[0].upper() == self.starttls_keyword for c in capabilities)

    def note_masking(self, capabilities: list) -> None:
        if any(MASKED_KEYWORD.match(c.split(' ', 1)[0].upper()) for c in capabilities):
            self.flag('masked')

    def flag(self, name: str) -> None:
        if name not in self.flags:
            self.flags.append(name)

    # Subclasses implement these.
    def greeting(self, until: float) -> dict:
        raise NotImplementedError  # pragma: no cover

    def capabilities(self, until: float):
        """Returns (capability lines, the reply that carried them)."""
        raise NotImplementedError  # pragma: no cover

    def starttls_command(self) -> str:
        return 'STARTTLS'

    def injection_command(self) -> str:
        return 'NOOP'

    def read_starttls_reply(self, until: float) -> dict:
        raise NotImplementedError  # pragma: no cover

    def capabilities_after_tls(self, until: float):
        return self.capabilities(until)

    def goodbye(self) -> str:
        return 'QUIT'


class SmtpDialog(Dialog):
    hello = 'EHLO'

    def greeting(self, until: float) -> dict:
        reply = read_smtp_reply(self.reader, until)
        if masked_banner(' '.join(reply['lines'])):
            self.flag('masked')
        return reply

    def capabilities(self, until: float):
        self.send(f'{self.hello} {self.ehlo_name}', until)
        try:
            reply = read_smtp_reply(self.reader, until)
        except ReplyCapReached as exc:
            # Keep the keywords read before the cap (a 100,000-line EHLO reply may list STARTTLS second).
            if exc.partial['code'] == '250':
                exc.capabilities = exc.partial['lines'][1:]
                self.note_masking(exc.capabilities)
            raise
        if reply['code'] != '250':
            self.flag('ehlo_rejected')
            return [], reply
        keywords = reply['lines'][1:]
        self.note_masking(keywords)
        return keywords, reply

    def read_starttls_reply(self, until: float) -> dict:
        return read_smtp_reply(self.reader, until)


class LmtpDialog(SmtpDialog):
    hello = 'LHLO'


class ImapDialog(Dialog):
    greeting_ok = ('OK', 'PREAUTH')
    starttls_ok = ('OK',)

    def __init__(self, reader, transport, ehlo_name: str):
        super().__init__(reader, transport, ehlo_name)
        self.sequence = 0
        self.starttls_tag = ''

    def tag(self) -> str:
        self.sequence += 1
        return f'a{self.sequence}'

    def greeting(self, until: float) -> dict:
        return read_imap_response(self.reader, until, None)

    def capabilities(self, until: float):
        tag = self.tag()
        self.send(f'{tag} CAPABILITY', until)
        try:
            reply = read_imap_response(self.reader, until, tag)
        except ReplyCapReached as exc:
            exc.capabilities = self.words(exc.partial['lines'])
            raise
        return self.words(reply['lines']), reply

    @staticmethod
    def words(lines: list) -> list:
        found: list = []
        for line in lines:
            if line.upper().startswith('* CAPABILITY '):
                found.extend(line.split()[2:])
        return found

    def starttls_command(self) -> str:
        self.starttls_tag = self.tag()
        return f'{self.starttls_tag} STARTTLS'

    def injection_command(self) -> str:
        return f'{self.tag()} NOOP'

    def read_starttls_reply(self, until: float) -> dict:
        return read_imap_response(self.reader, until, self.starttls_tag)

    def goodbye(self) -> str:
        return f'{self.tag()} LOGOUT'


class Pop3Dialog(Dialog):
    starttls_keyword = 'STLS'
    greeting_ok = ('+OK',)
    starttls_ok = ('+OK',)

    def greeting(self, until: float) -> dict:
        return read_pop3_status(self.reader, until)

    def capabilities(self, until: float):
        self.send('CAPA', until)
        try:
            reply = read_pop3_multiline(self.reader, until)
        except ReplyCapReached as exc:
            exc.partial['code'] = '+OK'
            exc.capabilities = exc.partial['lines']
            raise
        return reply.get('body', []), reply

    def starttls_command(self) -> str:
        return 'STLS'

    def read_starttls_reply(self, until: float) -> dict:
        return read_pop3_status(self.reader, until)


class SieveDialog(Dialog):
    greeting_ok = ('OK',)
    starttls_ok = ('OK',)

    def __init__(self, reader, transport, ehlo_name: str):
        super().__init__(reader, transport, ehlo_name)
        self.greeting_capabilities: list = []

    @staticmethod
    def parse(lines: list) -> list:
        words = []
        for line in lines:
            parts = [part for part in line.split('"') if part.strip()]
            words.append(' '.join(part.strip() for part in parts))
        return words

    def greeting(self, until: float) -> dict:
        # ManageSieve greets with its capability list (RFC 5804 1.7).
        reply = read_sieve_response(self.reader, until)
        self.greeting_capabilities = self.parse(reply['lines'])
        return reply

    def capabilities(self, until: float):
        return self.greeting_capabilities, None

    def read_starttls_reply(self, until: float) -> dict:
        return read_sieve_response(self.reader, until)

    def capabilities_after_tls(self, until: float):
        # The server re-issues its capabilities unasked after TLS (RFC 5804 2.2).
        reply = read_sieve_response(self.reader, until)
        return self.parse(reply['lines']), reply

    def goodbye(self) -> str:
        return 'LOGOUT'


DIALOGS = {
    'smtp': SmtpDialog,
    'lmtp': LmtpDialog,
    'imap': ImapDialog,
    'pop3': Pop3Dialog,
    'sieve': SieveDialog,
}
