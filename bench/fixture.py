# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark fixture: one asyncio process serving N SMTP listeners on loopback.

Listener i listens on ADDRESS:BASE_PORT+i and behaves by its kind:
  starttls      advertises STARTTLS and completes TLS with a certificate issued by a bench CA
  no_starttls   does not advertise STARTTLS (answers 502 if a client sends it anyway)
  starttls_454  advertises STARTTLS, then answers 454 (Postfix's reply when no certificate loads)
Kinds repeat every ten listeners: eight working, one of each broken kind (80/10/10).

The fixture writes a JSON manifest (ports, kinds, expected certificate fingerprints; never key
material), prints one line `READY <manifest>` on stdout, serves until SIGTERM/SIGINT or its
maximum lifetime, and on SIGUSR1 writes its counters to `<manifest>.stats`.

It is deliberately small: every benchmarked client shares the machine's two cores with it, so
its per-session cost sets the ceiling of the whole benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

KINDS_PER_TEN = ('starttls',) * 8 + ('no_starttls', 'starttls_454')
LINE_LIMIT = 4096
IDLE_TIMEOUT_S = 30.0
CERT_DOMAIN = 'mailsec.test'
SERVER_NAME = f'bench.{CERT_DOMAIN}'


def listener_kind(index: int) -> str:
    return KINDS_PER_TEN[index % len(KINDS_PER_TEN)]


def run_openssl(*args: str, cwd: str) -> None:
    completed = subprocess.run(('openssl',) + args, cwd=cwd, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {completed.stderr.strip()}")


def make_certificates(workdir: str, count: int) -> tuple[str, list[dict]]:
    """Create a bench CA and `count` leaf certificates that share one RSA-2048 key.

    Distinct leaves (serial and subject differ) let a checker tell listeners apart without paying
    for one RSA key generation per listener. Returns the CA path and one record per leaf.
    """
    run_openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem',
                '-days', '2', '-subj', '/O=mailsec bench/CN=mailsec bench CA',
                '-addext', 'basicConstraints=critical,CA:TRUE',
                '-addext', 'keyUsage=critical,keyCertSign,cRLSign', cwd=workdir)
    run_openssl('genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', 'leaf.key',
                cwd=workdir)
    run_openssl('pkey', '-in', 'leaf.key', '-pubout', '-out', 'leaf.pub', cwd=workdir)

    def issue(number: int) -> dict:
        common_name = f'bench-{number:02d}.{CERT_DOMAIN}'
        stem = f'leaf-{number:02d}'
        with open(os.path.join(workdir, f'{stem}.ext'), 'w', encoding='ascii') as extensions:
            extensions.write(
                'basicConstraints=critical,CA:FALSE\n'
                'keyUsage=critical,digitalSignature,keyEncipherment\n'
                'extendedKeyUsage=serverAuth\n'
                f'subjectAltName=DNS:{common_name},DNS:{SERVER_NAME},IP:127.0.70.1\n')
        signing = ('-CA', 'ca.pem', '-CAkey', 'ca.key', '-set_serial', str(1000 + number), '-days', '2',
                   '-sha256', '-extfile', f'{stem}.ext', '-out', f'{stem}.pem')
        subject = f'/O=mailsec bench/CN={common_name}'
        try:
            # OpenSSL 3: one process per leaf, straight from the shared public key.
            run_openssl('x509', '-new', '-subj', subject, '-force_pubkey', 'leaf.pub', *signing, cwd=workdir)
        except RuntimeError:
            run_openssl('req', '-new', '-key', 'leaf.key', '-subj', subject, '-out', f'{stem}.csr', cwd=workdir)
            run_openssl('x509', '-req', '-in', f'{stem}.csr', *signing, cwd=workdir)
        pem_path = os.path.join(workdir, f'{stem}.pem')
        with open(pem_path, encoding='ascii') as pem_file:
            der = ssl.PEM_cert_to_DER_cert(pem_file.read())
        return {
            'cert_file': pem_path,
            'subject_cn': common_name,
            'sha256': hashlib.sha256(der).hexdigest(),
            'sha1': hashlib.sha1(der).hexdigest(),
        }

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        leaves = list(pool.map(issue, range(count)))
    return os.path.join(workdir, 'ca.pem'), leaves


class Counters:
    __slots__ = ('connections', 'active', 'ehlo', 'starttls_commands', 'handshakes',
                 'handshake_failures', 'refused_454', 'quit', 'errors')

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__slots__}


def ehlo_reply(advertise_starttls: bool) -> bytes:
    lines = [SERVER_NAME, 'PIPELINING', 'SIZE 10240000', '8BITMIME']
    if advertise_starttls:
        lines.append('STARTTLS')
    lines.append('ENHANCEDSTATUSCODES')
    return ''.join(f'250-{line}\r\n' for line in lines[:-1]).encode() + f'250 {lines[-1]}\r\n'.encode()


EHLO_WITH_STARTTLS = ehlo_reply(True)
EHLO_WITHOUT_STARTTLS = ehlo_reply(False)


class Fixture:
    def __init__(self, delay_s: float, contexts: list[ssl.SSLContext]) -> None:
        self.delay_s = delay_s
        self.contexts = contexts
        self.counters = Counters()

    def handler(self, index: int):
        kind = listener_kind(index)
        context = self.contexts[index % len(self.contexts)]

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self.session(kind, context, reader, writer)
        return serve

    async def reply(self, writer: asyncio.StreamWriter, payload: bytes) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        writer.write(payload)
        await writer.drain()

    async def session(self, kind: str, context: ssl.SSLContext,
                      reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        counters = self.counters
        counters.connections += 1
        counters.active += 1
        in_tls = False
        try:
            await self.reply(writer, f'220 {SERVER_NAME} ESMTP mailsec bench\r\n'.encode())
            while True:
                line = await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT_S)
                if not line:
                    return
                verb = line[:8].split(b' ', 1)[0].strip().upper()
                if verb == b'EHLO':
                    counters.ehlo += 1
                    advertise = kind != 'no_starttls' and not in_tls
                    await self.reply(writer, EHLO_WITH_STARTTLS if advertise else EHLO_WITHOUT_STARTTLS)
                elif verb == b'HELO':
                    await self.reply(writer, f'250 {SERVER_NAME}\r\n'.encode())
                elif verb == b'STARTTLS':
                    counters.starttls_commands += 1
                    if in_tls:
                        await self.reply(writer, b'503 5.5.1 Error: TLS already active\r\n')
                    elif kind == 'no_starttls':
                        await self.reply(writer, b'502 5.5.1 Error: command not implemented\r\n')
                    elif kind == 'starttls_454':
                        counters.refused_454 += 1
                        await self.reply(writer, b'454 4.7.0 TLS not available due to local problem\r\n')
                    else:
                        await self.reply(writer, b'220 2.0.0 Ready to start TLS\r\n')
                        try:
                            await writer.start_tls(context)
                        except (ssl.SSLError, OSError, ConnectionError, asyncio.TimeoutError):
                            counters.handshake_failures += 1
                            return
                        counters.handshakes += 1
                        in_tls = True
                elif verb == b'QUIT':
                    counters.quit += 1
                    await self.reply(writer, b'221 2.0.0 Bye\r\n')
                    return
                elif verb in (b'NOOP', b'RSET'):
                    await self.reply(writer, b'250 2.0.0 Ok\r\n')
                else:
                    await self.reply(writer, b'502 5.5.2 Error: command not recognized\r\n')
        except (asyncio.TimeoutError, asyncio.LimitOverrunError, ValueError):
            counters.errors += 1
        except (ConnectionError, OSError, ssl.SSLError):
            # Scanners hang up mid-dialog all the time; that is not the fixture's problem.
            pass
        finally:
            counters.active -= 1
            writer.close()


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    # Session tickets would let a rescanning client skip the full handshake and flatter it.
    context.options |= ssl.OP_NO_TICKET
    return context


def say(line: str) -> None:
    # Whoever started the fixture may have stopped reading; that must not turn a stop into a crash.
    try:
        print(line, flush=True)
    except (BrokenPipeError, OSError):
        pass


def write_json_atomically(path: str, document: dict) -> None:
    partial = f'{path}.partial'
    with open(partial, 'w', encoding='utf-8') as output:
        json.dump(document, output, indent=1)
    os.replace(partial, path)


async def serve_all(arguments: argparse.Namespace, workdir: str) -> int:
    ca_file, leaves = make_certificates(workdir, arguments.distinct_certs)
    key_file = os.path.join(workdir, 'leaf.key')
    contexts = [server_context(leaf['cert_file'], key_file) for leaf in leaves]
    fixture = Fixture(arguments.delay_ms / 1000.0, contexts)

    servers = []
    listeners = []
    for index in range(arguments.n):
        port = arguments.base_port + index
        servers.append(await asyncio.start_server(
            fixture.handler(index), arguments.address, port, backlog=arguments.backlog,
            limit=LINE_LIMIT, reuse_address=True))
        kind = listener_kind(index)
        leaf = leaves[index % len(leaves)]
        listener = {'address': arguments.address, 'port': port, 'kind': kind,
                    'starttls_advertised': kind != 'no_starttls',
                    'tls_established': kind == 'starttls',
                    'starttls_code': {'starttls': 220, 'no_starttls': 502, 'starttls_454': 454}[kind]}
        if kind == 'starttls':
            listener.update(cert_sha256=leaf['sha256'], cert_sha1=leaf['sha1'], subject_cn=leaf['subject_cn'])
        listeners.append(listener)

    manifest_path = arguments.manifest
    write_json_atomically(manifest_path, {
        'pid': os.getpid(), 'address': arguments.address, 'base_port': arguments.base_port,
        'n': arguments.n, 'delay_ms': arguments.delay_ms, 'ca_file': ca_file,
        'server_name': SERVER_NAME, 'python': sys.version.split()[0], 'openssl': ssl.OPENSSL_VERSION,
        'listeners': listeners,
    })

    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    stats_sequence = 0

    def write_stats() -> None:
        nonlocal stats_sequence
        stats_sequence += 1
        usage = os.times()
        write_json_atomically(f'{manifest_path}.stats', {
            'sequence': stats_sequence, 'cpu_s': usage.user + usage.system, **fixture.counters.as_dict()})

    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, lambda: stop.done() or stop.set_result('signal'))
    loop.add_signal_handler(signal.SIGUSR1, write_stats)
    loop.call_later(arguments.max_lifetime, lambda: stop.done() or stop.set_result('max lifetime'))
    write_stats()
    say(f'READY {manifest_path}')

    reason = await stop
    for server in servers:
        server.close()
    write_stats()
    say(f'STOPPED {reason} {json.dumps(fixture.counters.as_dict())}')
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--n', type=int, default=500, help='number of listeners')
    parser.add_argument('--address', default='127.0.70.1', help='loopback address to bind')
    parser.add_argument('--base-port', type=int, default=20000, help='port of listener 0')
    parser.add_argument('--delay-ms', type=float, default=0.0, help='pause before every server reply')
    parser.add_argument('--manifest', help='where to write the JSON manifest (default: in the work dir)')
    parser.add_argument('--workdir', help='directory for certificates (default: a new temporary one, removed)')
    parser.add_argument('--distinct-certs', type=int, default=16, help='distinct leaf certificates, reused round-robin')
    parser.add_argument('--max-lifetime', type=float, default=1800.0, help='seconds before the fixture stops itself')
    parser.add_argument('--backlog', type=int, default=512)
    arguments = parser.parse_args(argv)
    if not arguments.address.startswith('127.') and arguments.address != '::1':
        parser.error('the fixture binds loopback addresses only')
    if arguments.n < 1 or arguments.base_port + arguments.n > 65536:
        parser.error('listeners do not fit in the port range')

    own_workdir = arguments.workdir is None
    workdir = tempfile.mkdtemp(prefix='mailsec-bench-fixture-') if own_workdir else arguments.workdir
    os.makedirs(workdir, exist_ok=True)
    if arguments.manifest is None:
        arguments.manifest = os.path.join(workdir, 'manifest.json')
    try:
        return asyncio.run(serve_all(arguments, workdir))
    except (RuntimeError, OSError) as error:
        say(f'FAILED {error}')
        return 1
    finally:
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
