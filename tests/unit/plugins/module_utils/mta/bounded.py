# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run a piece of host inspection in a forked child with a time and memory bound.

A hostile configuration must finish within 15 s and 512 MiB: the child's address space is limited
to what it had plus the memory bound (so a runaway expansion ends in MemoryError instead of eating
the machine), the parent kills it at the deadline, and the result comes back as strict UTF-8 JSON
(as Ansible would send it), so a string that JSON cannot carry fails the run.
"""

from __future__ import annotations

import base64
import json
import os
import random
import resource
import select
import signal
import time

SECONDS = 15.0
MEMORY = 512 << 20


def _vm_size() -> int:
    with open('/proc/self/status') as handle:
        for line in handle:
            if line.startswith('VmSize:'):
                return int(line.split()[1]) * 1024
    return 0


def run_bounded(function, seconds: float = SECONDS, memory: int = MEMORY) -> dict:
    """{'result': function(), 'seconds': wall time, 'json': the result as sent} or
    {'error': why}: a timeout, a MemoryError, any exception, or a result JSON cannot encode."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read_end)
            limit = _vm_size() + memory
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            started = time.monotonic()
            result = function()
            elapsed = time.monotonic() - started
            text = json.dumps(result, ensure_ascii=False, sort_keys=True, default=str)
            payload = json.dumps({'result': result, 'seconds': elapsed, 'json': text},
                                 ensure_ascii=False, default=str).encode('utf-8')
        except BaseException as exc:  # everything is reported to the parent
            payload = json.dumps({'error': f'{type(exc).__name__}: {str(exc)[:2000]}'}).encode('utf-8')
        try:
            view = memoryview(payload)
            while view:
                written = os.write(write_end, view)
                view = view[written:]
        finally:
            os._exit(0)
    os.close(write_end)
    deadline = time.monotonic() + seconds
    chunks = []
    timed_out = False
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            ready, _unused, _unused2 = select.select([read_end], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(read_end, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
        if timed_out:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    if timed_out:
        return {'error': f'did not finish within {seconds} s'}
    try:
        return json.loads(b''.join(chunks).decode('utf-8'))
    except ValueError as exc:
        return {'error': f'child sent no result ({exc})'}


def fake_private_key(armour: bool = True) -> tuple:
    """(PEM text, body lines) of a key-shaped file: random bytes (fixed seed) in base64 lines."""
    raw = random.Random(9).getrandbits(8 * 1190).to_bytes(1190, 'big')
    body = base64.b64encode(raw).decode('ascii')
    lines = [body[index:index + 64] for index in range(0, len(body), 64)]
    text = '\n'.join(lines) + '\n'
    if armour:
        text = f'-----BEGIN PRIVATE KEY-----\n{text}-----END PRIVATE KEY-----\n'
    return text, lines


def leaked_key_pieces(text: str, lines: list, window: int = 12) -> list:
    """Every `window`-character piece of the key body that occurs in `text`."""
    found = []
    for line in lines:
        for start in range(0, max(1, len(line) - window + 1)):
            piece = line[start:start + window]
            if piece in text:
                found.append(piece)
    return found


def junk_lines(count: int, seed: int = 80) -> str:
    """`count` lines of configuration-shaped junk: words, assignments, braces, macros, quotes,
    continuation backslashes, directives, and bytes that are not ASCII."""
    generator = random.Random(seed)
    words = ['listen', 'on', 'smtp', 'inet', 'n', '-', 'y', 'ssl', '=', '{', '}', '$x', '${y}', 'MACRO', '.endif',
             '"quoted', "'", '\\', '#', 'include', 'pki', 'tls', '127.0.0.1', '::1', '25', 'é', '\t', 'O',
             'DaemonPortOptions=Port=25', 'local', 'protocol', 'inet_listener', 'port', '!include_try']
    lines = []
    for number in range(count):
        shape = number % 7
        if shape == 0:
            lines.append(f'J{number} = junk{generator.randrange(1000)}')
        elif shape == 1:
            lines.append(f'junk_{number} = ${{undefined_{number}}}')
        else:
            lines.append(' '.join(generator.choice(words) for _unused in range(generator.randrange(1, 9))) +
                         f' z{number}')
    return '\n'.join(lines) + '\n'
