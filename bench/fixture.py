# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark fixture: asyncio processes serving N SMTP listeners on loopback.

Listener i listens on the (i mod A)-th address from ADDRESS on (A = --addresses) and on port
BASE_PORT + i div A, so that 500 listeners over 250 addresses are two ports on each address; with
one address (the default) listener i is ADDRESS:BASE_PORT+i. It behaves by its kind:
  starttls      advertises STARTTLS and completes TLS with a certificate issued by a bench CA
  no_starttls   does not advertise STARTTLS (answers 502 if a client sends it anyway)
  starttls_454  advertises STARTTLS, then answers 454 (Postfix's reply when no certificate loads)
Kinds repeat every ten listeners: eight working, one of each broken kind (80/10/10).

With --processes P above 1, P forked processes each bind every listener (SO_REUSEPORT: the kernel
spreads the connections over them), so that one process's CPU does not cap the client; the first
process only creates the certificates, starts them, and sums their counters.

The fixture writes a JSON manifest (addresses, ports, kinds, expected certificate fingerprints; never
key material), prints one line `READY <manifest>` on stdout, serves until SIGTERM/SIGINT or its
maximum lifetime, and on SIGUSR1 writes its counters to `<manifest>.stats` (with the CPU time of
each serving process, so that a saturated fixture shows).

It is deliberately small: every benchmarked client shares the machine's two cores with it, so
its per-session cost sets the ceiling of the whole benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import ipaddress
import json
import os
import resource
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
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


def listener_address(first: str, index: int, addresses: int) -> str:
    return str(ipaddress.ip_address(first) + index % addresses)


def plan_listeners(arguments: argparse.Namespace, leaves: list) -> list:
    """Every listener's address, port, kind and expected certificate, in index order."""
    listeners = []
    for index in range(arguments.n):
        kind = listener_kind(index)
        leaf = leaves[index % len(leaves)]
        listener = {'address': listener_address(arguments.address, index, arguments.addresses),
                    'port': arguments.base_port + index // arguments.addresses, 'kind': kind,
                    'starttls_advertised': kind != 'no_starttls',
                    'tls_established': kind == 'starttls',
                    'starttls_code': {'starttls': 220, 'no_starttls': 502, 'starttls_454': 454}[kind]}
        if kind == 'starttls':
            listener.update(cert_sha256=leaf['sha256'], cert_sha1=leaf['sha1'], subject_cn=leaf['subject_cn'])
        listeners.append(listener)
    return listeners


def process_cpu_s() -> float:
    usage = os.times()
    return usage.user + usage.system


async def serve(arguments: argparse.Namespace, listeners: list, contexts: list, stats_path: str,
                reuse_port: bool, on_ready) -> dict:
    """Serve every listener until SIGTERM/SIGINT or the maximum lifetime; returns the counters.

    On SIGUSR1 the counters go to `stats_path`, numbered: 1 when serving starts, one more per signal.
    """
    fixture = Fixture(arguments.delay_ms / 1000.0, contexts)
    servers = []
    for index, listener in enumerate(listeners):
        servers.append(await asyncio.start_server(
            fixture.handler(index), listener['address'], listener['port'], backlog=arguments.backlog,
            limit=LINE_LIMIT, reuse_address=True, reuse_port=reuse_port or None))

    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    stats_sequence = 0

    def write_stats() -> None:
        nonlocal stats_sequence
        stats_sequence += 1
        write_json_atomically(stats_path, {'sequence': stats_sequence, 'cpu_s': process_cpu_s(),
                                           'process_cpu_s': [process_cpu_s()], **fixture.counters.as_dict()})

    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, lambda: stop.done() or stop.set_result('signal'))
    loop.add_signal_handler(signal.SIGUSR1, write_stats)
    loop.call_later(arguments.max_lifetime, lambda: stop.done() or stop.set_result('max lifetime'))
    write_stats()
    on_ready()
    reason = await stop
    for server in servers:
        server.close()
    write_stats()
    return dict(fixture.counters.as_dict(), reason=reason)


def write_manifest(arguments: argparse.Namespace, ca_file: str, listeners: list) -> None:
    write_json_atomically(arguments.manifest, {
        'pid': os.getpid(), 'address': arguments.address, 'addresses': arguments.addresses,
        'processes': arguments.processes, 'base_port': arguments.base_port,
        'n': arguments.n, 'delay_ms': arguments.delay_ms, 'ca_file': ca_file,
        'server_name': SERVER_NAME, 'python': sys.version.split()[0], 'openssl': ssl.OPENSSL_VERSION,
        'listeners': listeners,
    })


def serve_in_this_process(arguments: argparse.Namespace, ca_file: str, listeners: list, contexts: list) -> int:
    def ready() -> None:
        # Written once every listener is bound: a client that reads it finds them all listening.
        write_manifest(arguments, ca_file, listeners)
        say(f'READY {arguments.manifest}')
    counters = asyncio.run(serve(arguments, listeners, contexts, f'{arguments.manifest}.stats', False, ready))
    reason = counters.pop('reason')
    say(f'STOPPED {reason} {json.dumps(counters)}')
    return 0


PARENT_SIGNALS = {signal.SIGUSR1, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}


def read_stats(path: str) -> dict:
    try:
        with open(path, encoding='utf-8') as stats_file:
            return json.load(stats_file)
    except (OSError, ValueError):
        return {'sequence': -1}


class ServingProcesses:
    """P forked processes serving every listener (SO_REUSEPORT); this one sums their counters."""

    def __init__(self, arguments: argparse.Namespace, listeners: list, contexts: list):
        self.arguments = arguments
        self.stats_path = f'{arguments.manifest}.stats'
        self.pids: list = []
        self.forwarded = 0
        self.sequence = 0
        ready_read, ready_write = os.pipe()
        for number in range(arguments.processes):
            pid = os.fork()
            if pid == 0:
                os.close(ready_read)
                os._exit(self.child(number, listeners, contexts, ready_write))  # pylint: disable=protected-access
            self.pids.append(pid)
        os.close(ready_write)
        self.wait_ready(ready_read)

    def child(self, number: int, listeners: list, contexts: list, ready_write: int) -> int:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, PARENT_SIGNALS)
        try:
            asyncio.run(serve(self.arguments, listeners, contexts, self.child_stats(number), True,
                              lambda: os.write(ready_write, b'1')))
        except (RuntimeError, OSError) as error:
            say(f'FAILED serving process {number}: {error}')
            return 1
        return 0

    def child_stats(self, number: int) -> str:
        return f'{self.stats_path}.{number}'

    def wait_ready(self, ready_read: int) -> None:
        ready = b''
        while len(ready) < len(self.pids):
            chunk = os.read(ready_read, 64)
            if not chunk:
                self.stop_children()
                raise RuntimeError('a serving process stopped before it was ready')
            ready += chunk
        os.close(ready_read)

    def collect(self) -> dict:
        """Ask every process for its counters (one signal each) and sum them."""
        self.forwarded += 1
        for pid in self.pids:
            os.kill(pid, signal.SIGUSR1)
        return self.sum_stats(1 + self.forwarded, deadline_s=10.0)

    def sum_stats(self, wanted: int, deadline_s: float) -> dict:
        deadline = time.monotonic() + deadline_s
        while True:
            stats = [read_stats(self.child_stats(number)) for number in range(len(self.pids))]
            if all(item['sequence'] >= wanted for item in stats) or time.monotonic() > deadline:
                break
            time.sleep(0.002)
        total = {name: sum(item.get(name, 0) for item in stats) for name in Counters.__slots__}
        total['process_cpu_s'] = [item.get('cpu_s', 0.0) for item in stats]
        total['cpu_s'] = sum(total['process_cpu_s']) + process_cpu_s()
        return total

    def write(self, total: dict) -> None:
        self.sequence += 1
        write_json_atomically(self.stats_path, dict(total, sequence=self.sequence))

    def stop_children(self) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in self.pids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass

    def run(self) -> int:
        self.write(self.sum_stats(1, deadline_s=10.0))
        say(f'READY {self.arguments.manifest}')
        end = time.monotonic() + self.arguments.max_lifetime
        reason = 'max lifetime'
        while time.monotonic() < end:
            received = signal.sigtimedwait(PARENT_SIGNALS, max(0.0, min(1.0, end - time.monotonic())))
            if received is None:
                continue
            if received.si_signo == signal.SIGUSR1:
                self.write(self.collect())
            elif received.si_signo == signal.SIGCHLD:
                if any(os.waitpid(pid, os.WNOHANG)[0] for pid in self.pids):
                    reason = 'a serving process stopped'
                    break
            else:
                reason = 'signal'
                break
        total = self.collect()
        self.stop_children()
        self.write(total)
        counters = {name: total[name] for name in Counters.__slots__}
        say(f'STOPPED {reason} {json.dumps(counters)}')
        return 0 if reason != 'a serving process stopped' else 1


def serve_all(arguments: argparse.Namespace, workdir: str) -> int:
    ca_file, leaves = make_certificates(workdir, arguments.distinct_certs)
    key_file = os.path.join(workdir, 'leaf.key')
    contexts = [server_context(leaf['cert_file'], key_file) for leaf in leaves]
    listeners = plan_listeners(arguments, leaves)
    if arguments.processes == 1:
        return serve_in_this_process(arguments, ca_file, listeners, contexts)
    # Signals wait for sigtimedwait in this process; each child unblocks them for its event loop.
    signal.pthread_sigmask(signal.SIG_BLOCK, PARENT_SIGNALS)
    processes = ServingProcesses(arguments, listeners, contexts)
    write_manifest(arguments, ca_file, listeners)
    return processes.run()


def raise_file_limit() -> None:
    """Every serving process holds every listening socket plus the sessions in flight."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--n', type=int, default=500, help='number of listeners')
    parser.add_argument('--address', default='127.0.70.1', help='first loopback address to bind')
    parser.add_argument('--addresses', type=int, default=1,
                        help='spread the listeners over this many consecutive addresses from --address')
    parser.add_argument('--processes', type=int, default=1, help='serving processes (SO_REUSEPORT)')
    parser.add_argument('--base-port', type=int, default=20000, help='port of listener 0')
    parser.add_argument('--delay-ms', type=float, default=0.0, help='pause before every server reply')
    parser.add_argument('--manifest', help='where to write the JSON manifest (default: in the work dir)')
    parser.add_argument('--workdir', help='directory for certificates (default: a new temporary one, removed)')
    parser.add_argument('--distinct-certs', type=int, default=16, help='distinct leaf certificates, reused round-robin')
    parser.add_argument('--max-lifetime', type=float, default=1800.0, help='seconds before the fixture stops itself')
    parser.add_argument('--backlog', type=int, default=512)
    arguments = parser.parse_args(argv)
    try:
        first = ipaddress.ip_address(arguments.address)
        last = first + max(0, arguments.addresses - 1)
    except ValueError as error:
        parser.error(str(error))
    loopback = ipaddress.ip_network('127.0.0.0/8')
    if not ((first in loopback and last in loopback) or (arguments.address == '::1' and arguments.addresses == 1)):
        parser.error('the fixture binds loopback addresses only (127.0.0.0/8, or ::1 alone)')
    if arguments.addresses < 1 or arguments.processes < 1:
        parser.error('--addresses and --processes are at least 1')
    ports = -(-arguments.n // arguments.addresses)
    if arguments.n < 1 or arguments.base_port + ports > 65536:
        parser.error('listeners do not fit in the port range')
    raise_file_limit()

    own_workdir = arguments.workdir is None
    workdir = tempfile.mkdtemp(prefix='mailsec-bench-fixture-') if own_workdir else arguments.workdir
    os.makedirs(workdir, exist_ok=True)
    if arguments.manifest is None:
        arguments.manifest = os.path.join(workdir, 'manifest.json')
    pid = os.getpid()
    try:
        return serve_all(arguments, workdir)
    except (RuntimeError, OSError) as error:
        say(f'FAILED {error}')
        return 1
    finally:
        if own_workdir and os.getpid() == pid:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
