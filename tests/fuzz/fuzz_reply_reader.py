# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fuzz harness for the probe's reply reader (plugins/module_utils/_probe/reader.py) and the
dialogs that read capabilities with it.

Property: whatever bytes a server sends, in whatever segments, the reader returns a reply within
its caps or raises a ProbeError (the classified failure the probe records); any other exception,
a reply beyond the caps, or a line that still holds CR or LF is a finding of this harness.

Input layout: byte 0 picks the entry point, byte 1 the segmentation, the rest is what the
server sends. Run it through tests/fuzz/run.sh, which picks atheris when it is installed
(coverage-guided, libFuzzer options such as -max_total_time) and this file's own corpus driver
otherwise (`--corpus-driver SECONDS CORPUS_DIR`: every corpus file, then seeded random mutations
of them for the rest of the time budget). Corpus files end in `.bin`: they hold CR bytes, and
ansible-test's line-endings check takes `.bin` files as binary.
"""

from __future__ import annotations

import os
import random
import sys
import time

from ansible_collections.mailsec.starttls.plugins.module_utils._probe import dialogs, reader
from ansible_collections.mailsec.starttls.plugins.module_utils._probe.wire import ProbeError

FAR = 3600.0


class SegmentTransport:
    """Hands out the server's bytes in segments of the sizes the input chose; sends are dropped."""

    def __init__(self, data: bytes, shape: int):
        self.data = data
        self.position = 0
        # 0 = everything at once; else segment sizes cycle through a small pattern.
        self.sizes = [len(data) or 1] if shape == 0 else [1 + (shape * (index + 3)) % 97 for index in range(7)]
        self.turn = 0

    def recv(self, until: float) -> bytes:
        if self.position >= len(self.data):
            return b''
        size = self.sizes[self.turn % len(self.sizes)]
        self.turn += 1
        piece = self.data[self.position:self.position + size]
        self.position += len(piece)
        return piece

    def recv_ready(self) -> bytes:
        return b''

    def send(self, data: bytes, until: float) -> None:
        pass


def _imap_tagged(line_reader, until):
    return reader.read_imap_response(line_reader, until, 'a1')


def _imap_greeting(line_reader, until):
    return reader.read_imap_response(line_reader, until, None)


def _dialog(name):
    def run(line_reader, until):
        dialog = dialogs.DIALOGS[name](line_reader, line_reader.transport, 'fuzz.example')
        if name == 'sieve':
            dialog.greeting(until)
        capabilities, reply = dialog.capabilities(until)
        if not isinstance(capabilities, list):
            raise AssertionError('capabilities is not a list')
        dialog.advertises_starttls(capabilities)
        return reply or {'lines': []}
    return run


ENTRY_POINTS = [
    reader.read_smtp_reply,
    _imap_greeting,
    _imap_tagged,
    reader.read_pop3_status,
    reader.read_pop3_multiline,
    reader.read_sieve_response,
    _dialog('smtp'),
    _dialog('lmtp'),
    _dialog('imap'),
    _dialog('pop3'),
    _dialog('sieve'),
]


def check_one(data: bytes) -> None:
    """One input; raises (a finding) only when the property above does not hold."""
    if len(data) < 2:
        return
    entry = ENTRY_POINTS[data[0] % len(ENTRY_POINTS)]
    transport = SegmentTransport(data[2:], data[1])
    line_reader = reader.LineReader(transport)
    until = time.monotonic() + FAR
    try:
        reply = entry(line_reader, until)
    except ProbeError as exc:
        if exc.flag not in ('malformed_reply', 'connection_closed'):
            raise AssertionError(f'unexpected probe error flag {exc.flag!r}: {exc.message}')
        partial = getattr(exc, 'partial', None)
        if partial is not None and len(partial['lines']) > reader.MAX_LINES:
            raise AssertionError('a cut reply kept more lines than the cap')
        return
    lines = reply.get('lines') if isinstance(reply, dict) else None
    if not isinstance(lines, list):
        raise AssertionError(f'reply without lines: {reply!r}'[:200])
    if len(lines) > reader.MAX_LINES:
        raise AssertionError(f'reply of {len(lines)} lines passed the cap')
    body = reply.get('body') or []
    for line in list(lines) + list(body):
        if '\n' in line or line.endswith('\r'):
            raise AssertionError(f'a line kept its line ending: {line[:80]!r}')
        if len(line.encode('utf-8', 'surrogatepass')) > 4 * reader.MAX_LINE:
            raise AssertionError('a line passed the line cap')


def test_one_input(data: bytes) -> None:
    check_one(bytes(data))


# -- the pure-Python corpus driver --------------------------------------------------------------

def _mutate(sample: bytes, rng: random.Random) -> bytes:
    data = bytearray(sample)
    for _round in range(rng.randint(1, 8)):
        choice = rng.randrange(7)
        position = rng.randrange(len(data) + 1)
        if choice == 0 and data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif choice == 1:
            data[position:position] = rng.choice([b'\r\n', b'\n', b'\r', b'-', b' ', b'\x00', b'250-', b'* ', b'.'])
        elif choice == 2 and data:
            end = min(len(data), position + rng.randint(1, 64))
            data[position:position] = data[position:end] * rng.randint(1, 200)
        elif choice == 3 and data:
            del data[position:position + rng.randint(1, 32)]
        elif choice == 4:
            data[position:position] = bytes(rng.randrange(256) for _byte in range(rng.randint(1, 16)))
        elif choice == 5 and len(data) > 2:
            data[0] = rng.randrange(256)
            data[1] = rng.randrange(256)
        else:
            data[position:position] = b'\xe2\x80\xae' if rng.random() < 0.5 else b'\xc2\x9b\x1b[2J'
        if len(data) > 1 << 20:
            del data[1 << 20:]
    return bytes(data)


def corpus_driver(seconds: float, corpus_dir: str, seed: int = 9) -> int:
    """Every corpus file, then mutations of them until `seconds` have passed. Returns the failures."""
    samples = []
    for name in sorted(os.listdir(corpus_dir)):
        path = os.path.join(corpus_dir, name)
        if os.path.isfile(path):
            with open(path, 'rb') as handle:
                samples.append((name, handle.read()))
    if not samples:
        print(f'no corpus files in {corpus_dir}', file=sys.stderr)
        return 1
    rng = random.Random(seed)
    runs, failures = 0, 0
    started = time.monotonic()
    pending = list(samples)
    while pending or time.monotonic() - started < seconds:
        if pending:
            name, data = pending.pop(0)
        else:
            name, base = rng.choice(samples)
            name, data = f'{name} (mutated)', _mutate(base, rng)
        one_started = time.monotonic()
        try:
            check_one(data)
        except Exception as exc:  # pylint: disable=broad-except
            failures += 1
            if failures <= 10:
                print(f'FAIL {name}: {type(exc).__name__}: {exc}', file=sys.stderr)
                print(f'     input (first 200 bytes): {data[:200]!r}', file=sys.stderr)
        if time.monotonic() - one_started > 5:
            failures += 1
            print(f'SLOW {name}: {time.monotonic() - one_started:.1f} s for one input', file=sys.stderr)
        runs += 1
    print(f'reply reader corpus driver: {runs} inputs ({len(samples)} corpus files) in '
          f'{time.monotonic() - started:.1f} s, {failures} failing')
    return failures


def main(argv: list) -> int:
    if len(argv) >= 2 and argv[1] == '--corpus-driver':
        seconds = float(argv[2]) if len(argv) > 2 else 10.0
        corpus_dir = argv[3] if len(argv) > 3 else os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                'corpus-reply')
        return 1 if corpus_driver(seconds, corpus_dir) else 0
    import atheris  # pylint: disable=import-outside-toplevel,import-error
    # The collection is imported already: instrument what is loaded, for coverage guidance.
    atheris.instrument_all()
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
