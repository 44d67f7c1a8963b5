# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fuzz the MTA configuration parsers through host inspection (tests/fuzz/targets.py).

Coverage-guided with atheris (libFuzzer) when it imports; otherwise, or with --fallback, a
pure-Python driver that runs the seed corpus and then random mutations of it for the same time
budget. Either way an input that breaks an invariant (an adapter exception, a result JSON cannot
carry, too many warnings, too slow) stops the run with exit status 1 and is saved under --work.

Seeds are plain configuration files in tests/fuzz/corpus/<mta>/; a fuzz input is one byte that
chooses the MTA followed by the configuration. Run it through tests/fuzz/run.sh, which sets up the
import path and the budget.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import traceback

MTAS = ('postfix', 'exim', 'dovecot', 'opensmtpd', 'sendmail')
TOKENS = (b'\n', b' ', b'=', b'{', b'}', b'$', b'${', b'\\\n', b'"', b"'", b'#', b'!include ', b'.include ',
          b'include ', b'listen on ', b'inet ', b'smtpd', b'ssl = yes', b'-o ', b'.ifdef X', b'.endif', b'\xff',
          b'/etc/included.conf', b'127.0.0.1', b'[::1]:25', b'A = A A', b'$a $a', b'\x00')


def seed_inputs(corpus: str) -> list:
    """(name, fuzz input) of every seed: the MTA's index byte, then the file's bytes."""
    seeds = []
    for index, mta in enumerate(MTAS):
        directory = os.path.join(corpus, mta)
        if not os.path.isdir(directory):
            continue
        for name in sorted(os.listdir(directory)):
            with open(os.path.join(directory, name), 'rb') as handle:
                seeds.append((f'{mta}/{name}', bytes([index]) + handle.read()))
    return seeds


def save(work: str, name: str, data: bytes) -> str:
    os.makedirs(work, exist_ok=True)
    path = os.path.join(work, name)
    with open(path, 'wb') as handle:
        handle.write(data)
    return path


def mutate(generator: random.Random, data: bytes, seeds: list) -> bytes:
    """One random edit: flip, insert a grammar token, duplicate or drop a slice, splice a seed."""
    body = bytearray(data[1:])
    for _unused in range(generator.randrange(1, 6)):
        choice = generator.randrange(6)
        position = generator.randrange(len(body) + 1)
        if choice == 0 and body:
            body[min(position, len(body) - 1)] = generator.randrange(256)
        elif choice == 1:
            body[position:position] = generator.choice(TOKENS)
        elif choice == 2 and body:
            end = min(len(body), position + generator.randrange(1, 200))
            body[position:position] = body[position:end] * generator.randrange(1, 4)
        elif choice == 3 and body:
            del body[position:position + generator.randrange(1, 50)]
        elif choice == 4:
            other = generator.choice(seeds)[1][1:]
            start = generator.randrange(len(other) + 1)
            body[position:position] = other[start:start + generator.randrange(1, 400)]
        else:
            body += b'\n' + generator.choice(TOKENS)
    return bytes([generator.choice((data[0], generator.randrange(len(MTAS))))]) + bytes(body[:64 * 1024])


def fallback(check_input, seeds: list, seconds: float, work: str, seed: int) -> int:
    """The pure-Python driver: every seed once, then mutations until the budget is spent."""
    generator = random.Random(seed)
    started = time.monotonic()
    runs = 0
    pool = [data for _name, data in seeds] or [bytes([index]) for index in range(len(MTAS))]
    queue = list(seeds)
    while queue or time.monotonic() - started < seconds:
        if queue:
            name, data = queue.pop(0)
        else:
            name, data = f'mutation-{runs}', mutate(generator, generator.choice(pool), seeds or [('', b'\0')])
        try:
            check_input(data)
        except Exception:  # every failure is a finding: report it and keep the input
            path = save(work, f'crash-{runs}', data)
            print(f'FAILED on {name} (saved as {path}):\n{traceback.format_exc()}', file=sys.stderr)
            return 1
        runs += 1
        if runs % 50 == 0 and len(pool) < 500:
            pool.append(data)
    print(f'fuzz (pure-Python fallback): {runs} inputs in {time.monotonic() - started:.0f} s, no failure')
    return 0


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seconds', type=float, default=40.0, help='time budget')
    parser.add_argument('--seed-corpus', default=os.path.join(os.path.dirname(os.path.abspath(__file__)), 'corpus'))
    parser.add_argument('--work', required=True, help='writable directory: working corpus and failing inputs')
    parser.add_argument('--fallback', action='store_true', help='use the pure-Python driver even with atheris')
    parser.add_argument('--seed', type=int, default=9, help='random seed of the fallback driver')
    options, libfuzzer_args = parser.parse_known_args(argv[1:])
    seeds = seed_inputs(options.seed_corpus)
    try:
        import atheris  # pylint: disable=import-outside-toplevel
    except ImportError:
        atheris = None
    if atheris is None or options.fallback:
        from ansible_collections.mailsec.starttls.tests.fuzz import targets  # pylint: disable=import-outside-toplevel
        if atheris is None:
            print('atheris is not installed: pure-Python fallback driver', file=sys.stderr)
        try:
            return fallback(targets.check_input, seeds, options.seconds, options.work, options.seed)
        finally:
            targets.remove_fixture_root()
    with atheris.instrument_imports():
        from ansible_collections.mailsec.starttls.tests.fuzz import targets  # pylint: disable=import-outside-toplevel
    working = os.path.join(options.work, 'corpus')
    for name, data in seeds:
        save(working, name.replace('/', '-'), data)
    args = [argv[0], f'-max_total_time={int(options.seconds)}', '-rss_limit_mb=512', '-timeout=15',
            f'-artifact_prefix={options.work}/', '-print_final_stats=1'] + libfuzzer_args + [working]
    print(f'fuzz (atheris): {len(seeds)} seeds, {int(options.seconds)} s', file=sys.stderr)
    atheris.Setup(args, targets.check_input)
    atheris.Fuzz()
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
