# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark of the listener probe against its peers, all on one fixture in one run.

For each scenario the bench starts bench/fixture.py (N SMTP listeners on 127.0.70.1), then measures
in turn, repeat after repeat, against the same listeners:
  engine   probe_many() in a worker process that runs nothing else (its rusage is its own)
  module   `ansible localhost -m mailsec.starttls.listener_probe`, end to end
  nmap     `nmap -Pn -n -p PORTS --script ssl-cert,smtp-commands`
  sslyze   `sslyze --starttls smtp --certinfo` (from bench/setup.sh's virtual environment)
Wall time, client CPU (user+sys of the client's process tree, from wait4) and peak RSS are taken
per run, the median over --repeat runs is reported, and every run's findings are checked against
the fixture's manifest. See bench/README.md.
"""

from __future__ import annotations

import argparse
import base64
import glob
import hashlib
import json
import os
import resource
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from xml.etree import ElementTree

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
COLLECTION_ROOT = os.path.dirname(BENCH_DIR)
sys.path.insert(0, BENCH_DIR)

import benchlib  # noqa: E402  (after the path change above)
from benchlib import fmt, median_of, verdict  # noqa: E402

ENGINE_MODULE = 'ansible_collections.mailsec.starttls.plugins.module_utils._probe.engine'
ENGINE_FILE = os.path.join(COLLECTION_ROOT, 'plugins', 'module_utils', '_probe', 'engine.py')
MODULE_NAME = 'mailsec.starttls.listener_probe'
EHLO_NAME = 'bench-client.mailsec.test'
TOOLS = ('engine', 'module', 'module:full', 'nmap', 'sslyze', 'smtplib')
MIB = 1024 * 1024

# Listeners spread over many loopback addresses (two or four ports each) and served by several
# processes: a fleet of separate servers, probed with the engine's default per-address limit.
SCENARIOS = {
    'throughput': {'n': 500, 'delay_ms': 0.0, 'addresses': 250, 'processes': 4},
    'slow': {'n': 200, 'delay_ms': 50.0, 'addresses': 100, 'processes': 2},
    'smoke': {'n': 40, 'delay_ms': 0.0, 'addresses': 20, 'processes': 2},
}
# Figures from /work/shared/research/PERFORMANCE-ANCHORS.md (same machine class), used only when a
# peer could not be measured in this run.
ANCHOR_LISTENERS_PER_S = {('nmap', 500, 0.0): 238.0, ('sslyze', 500, 0.0): 53.0,
                          ('nmap', 200, 50.0): 5.5, ('sslyze', 200, 50.0): 29.0}
TARGET_VS_NMAP = 2.5
TARGET_VS_SSLYZE = 10.0
TARGET_MODULE_VS_NMAP = 1.5
# A fixture process busier than this share of one core may be what limits the client.
FIXTURE_SATURATED_PERCENT = 90.0
TARGET_SLOW_LISTENERS_PER_S = 250.0
TARGET_CPU_MS_PER_LISTENER = 1.5
TARGET_PEAK_RSS_MIB = 100.0
EXPECTED_THROUGHPUT = 600.0


# --------------------------------------------------------------------------------------------
# The fixture
# --------------------------------------------------------------------------------------------

class FixtureProcess:
    def __init__(self, python: str, n: int, delay_ms: float, base_port: int, workdir: str,
                 max_lifetime_s: float, distinct_certs: int, addresses: int = 1, processes: int = 1):
        self.manifest_path = os.path.join(workdir, 'manifest.json')
        self.stats_path = f'{self.manifest_path}.stats'
        self.log_path = os.path.join(workdir, 'fixture.log')
        self.log = open(self.log_path, 'w+b')
        self.process = subprocess.Popen(
            [python, os.path.join(BENCH_DIR, 'fixture.py'), '--n', str(n), '--delay-ms', str(delay_ms),
             '--base-port', str(base_port), '--manifest', self.manifest_path,
             '--workdir', os.path.join(workdir, 'fixture'), '--max-lifetime', str(int(max_lifetime_s)),
             '--distinct-certs', str(distinct_certs), '--addresses', str(addresses),
             '--processes', str(processes)],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.manifest: dict = {}
        self.signals_sent = 0

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.log.seek(0)
            output = self.log.read().decode(errors='replace')
            if 'READY ' in output:
                with open(self.manifest_path, encoding='utf-8') as manifest:
                    self.manifest = json.load(manifest)
                self.stats()
                return
            if 'FAILED' in output or self.process.poll() is not None:
                raise RuntimeError(f'fixture did not start: {output.strip()[-2000:]}')
            time.sleep(0.05)
        raise RuntimeError('fixture did not become ready in time')

    def stats(self, settle_s: float = 5.0) -> dict:
        """Ask the fixture for its counters; wait until the previous client's sessions are gone.

        The fixture numbers its stats files: 1 at start, then one more per SIGUSR1. One signal is
        outstanding at a time, so none coalesce and the wanted number is always known.
        """
        deadline = time.monotonic() + settle_s
        while True:
            os.kill(self.process.pid, signal.SIGUSR1)
            self.signals_sent += 1
            wanted = 1 + self.signals_sent
            answer_deadline = time.monotonic() + 10
            while True:
                try:
                    with open(self.stats_path, encoding='utf-8') as stats_file:
                        stats = json.load(stats_file)
                except (OSError, ValueError):
                    stats = {'sequence': -1}
                if stats['sequence'] >= wanted:
                    break
                if time.monotonic() > answer_deadline:
                    raise RuntimeError('fixture stopped answering SIGUSR1')
                time.sleep(0.005)
            if stats['active'] == 0 or time.monotonic() > deadline:
                return stats
            time.sleep(0.05)

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.seek(0)
        return self.log.read().decode(errors='replace')


# --------------------------------------------------------------------------------------------
# Checking results against the manifest
# --------------------------------------------------------------------------------------------

def normalise_fingerprint(value) -> str | None:
    if not isinstance(value, str):
        return None
    return value.replace(':', '').strip().lower()


def pem_sha256(pem: str) -> str | None:
    try:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem.strip() + '\n')).hexdigest()
    except (ValueError, TypeError):
        return None


class Verdicts:
    """Mismatches between one tool's findings and the manifest, by listener kind."""

    def __init__(self) -> None:
        self.checked = 0
        self.mismatches: list = []

    def expect(self, listener: dict, condition: bool, what: str) -> None:
        if not condition:
            self.mismatches.append(f"{listener.get('address', '?')}:{listener['port']}/{listener['kind']}: {what}")

    def summary(self) -> dict:
        return {'checked': self.checked, 'mismatches': len(self.mismatches), 'examples': self.mismatches[:5]}


def check_probes(manifest: dict, probes) -> dict:
    verdicts = Verdicts()
    listeners = manifest['listeners']
    if not isinstance(probes, list) or len(probes) != len(listeners):
        verdicts.mismatches.append(f'expected {len(listeners)} probes, got '
                                   f'{len(probes) if isinstance(probes, list) else type(probes).__name__}')
        return verdicts.summary()
    for listener, probe in zip(listeners, probes):
        verdicts.checked += 1
        if not isinstance(probe, dict):
            verdicts.expect(listener, False, 'probe is not a dict')
            continue
        target = probe.get('target') or {}
        if target.get('port') != listener['port'] or target.get('address', listener['address']) != listener['address']:
            verdicts.expect(listener, False, f"probe out of order ({target.get('address')} port {target.get('port')})")
            continue
        tls = probe.get('tls') or {}
        established = bool(tls.get('established'))
        reply = probe.get('starttls_reply') or {}
        kind = listener['kind']
        verdicts.expect(listener, probe.get('starttls_advertised') is listener['starttls_advertised'],
                        f"starttls_advertised={probe.get('starttls_advertised')} error={probe.get('error')}")
        if kind == 'starttls':
            certificate = probe.get('certificate') or {}
            verdicts.expect(listener, established, f"no TLS: {tls.get('error') or probe.get('error')}")
            verdicts.expect(listener, normalise_fingerprint(certificate.get('sha256')) == listener['cert_sha256'],
                            f"certificate sha256 {certificate.get('sha256')}")
        else:
            verdicts.expect(listener, not established, 'TLS established on a broken listener')
            if kind == 'starttls_454':
                verdicts.expect(listener, str(reply.get('code')) == '454', f'STARTTLS reply {reply}')
    return verdicts.summary()


def check_nmap(manifest: dict, xml_path: str) -> dict:
    verdicts = Verdicts()
    try:
        root = ElementTree.parse(xml_path).getroot()
    except (OSError, ElementTree.ParseError) as error:
        verdicts.mismatches.append(f'unreadable nmap XML: {error}')
        return verdicts.summary()
    scripts_by_listener: dict = {}
    for host in root.iter('host'):
        address = next((item.get('addr') for item in host.iter('address') if item.get('addrtype') in ('ipv4', 'ipv6')),
                       None)
        for port in host.iter('port'):
            scripts_by_listener[(address, int(port.get('portid')))] = {
                script.get('id'): script for script in port.iter('script')}
    for listener in manifest['listeners']:
        verdicts.checked += 1
        scripts = scripts_by_listener.get((listener['address'], listener['port']), {})
        commands = scripts.get('smtp-commands')
        if commands is None:
            verdicts.expect(listener, False, 'no smtp-commands output')
            continue
        advertised = 'STARTTLS' in (commands.get('output') or '').upper().replace(' ', '').split(',')
        verdicts.expect(listener, advertised is listener['starttls_advertised'], f'STARTTLS advertised={advertised}')
        certificate = scripts.get('ssl-cert')
        if listener['kind'] == 'starttls':
            pem = None
            if certificate is not None:
                pem = next((elem.text for elem in certificate.iter('elem') if elem.get('key') == 'pem'), None)
            verdicts.expect(listener, pem is not None and pem_sha256(pem) == listener['cert_sha256'],
                            'certificate missing or different')
        else:
            verdicts.expect(listener, certificate is None, 'certificate reported on a broken listener')
    return verdicts.summary()


def check_sslyze(manifest: dict, json_path: str) -> dict:
    verdicts = Verdicts()
    try:
        with open(json_path, encoding='utf-8') as json_file:
            document = json.load(json_file)
    except (OSError, ValueError) as error:
        verdicts.mismatches.append(f'unreadable sslyze JSON: {error}')
        return verdicts.summary()
    by_listener = {}
    for result in document.get('server_scan_results', []):
        location = result['server_location']
        by_listener[(location.get('ip_address') or location.get('hostname'), location['port'])] = result
    for listener in manifest['listeners']:
        verdicts.checked += 1
        result = by_listener.get((listener['address'], listener['port']))
        if result is None:
            verdicts.expect(listener, False, 'not in sslyze output')
            continue
        completed = result.get('scan_status') == 'COMPLETED'
        if listener['kind'] == 'starttls':
            sha256 = None
            try:
                deployment = result['scan_result']['certificate_info']['result']['certificate_deployments'][0]
                leaf = deployment['received_certificate_chain'][0]
                sha256 = pem_sha256(leaf['as_pem'])
                if sha256 is None and leaf.get('fingerprint_sha256'):
                    sha256 = base64.b64decode(leaf['fingerprint_sha256']).hex()
            except (KeyError, IndexError, TypeError):
                pass
            verdicts.expect(listener, completed and sha256 == listener['cert_sha256'],
                            f"scan {result.get('scan_status')}, certificate {sha256}")
        else:
            # sslyze has no "advertised but refused" outcome: both broken kinds end in a
            # connectivity error (ServerRejectedOpportunisticTlsNegotiation).
            trace = result.get('connectivity_error_trace') or ''
            verdicts.expect(listener, not completed and 'Opportunistic' in trace,
                            f"scan {result.get('scan_status')}")
    return verdicts.summary()


# --------------------------------------------------------------------------------------------
# The tools
# --------------------------------------------------------------------------------------------

def target_strings(manifest: dict) -> list:
    return [f"{listener['address']}:{listener['port']}/smtp" for listener in manifest['listeners']]


def port_spec(ports: list) -> str:
    ranges = []
    start = previous = ports[0]
    for port in ports[1:] + [None]:
        if port is not None and port == previous + 1:
            previous = port
            continue
        ranges.append(str(start) if start == previous else f'{start}-{previous}')
        if port is not None:
            start = previous = port
    return ','.join(ranges)


def parse_assignments(assignments: list) -> dict:
    """KEY=VALUE strings to a dict; VALUE is read as JSON when it is JSON (numbers, true, null)."""
    options = {}
    for assignment in assignments:
        key, _separator, value = assignment.partition('=')
        try:
            options[key.strip()] = json.loads(value)
        except ValueError:
            options[key.strip()] = value
    return options


class Bench:
    def __init__(self, arguments: argparse.Namespace, workdir: str):
        self.arguments = arguments
        self.workdir = workdir
        self.collections_parent = benchlib.collection_tree(workdir)
        self.ansible = benchlib.find_ansible(arguments.ansible)
        self.sslyze = benchlib.find_bench_tool('sslyze', arguments.sslyze)
        self.nmap = arguments.nmap or shutil.which('nmap')
        self.run_counter = 0
        self._engine_env: dict | None = None

    def engine_options(self, manifest: dict, variant: str | None = None) -> dict:
        # The engine's defaults (concurrency, per-address limit) as a user gets them: the listeners
        # are spread over many addresses as a fleet's are. Only the bench CA is given, for `verified`.
        options = {'ca_file': manifest['ca_file']}
        options.update(parse_assignments(self.arguments.engine_option))
        if variant:
            options.update(self.arguments.variants[variant])
        return options

    def raw_path(self, tool: str, suffix: str) -> str:
        return os.path.join(self.workdir, f"{self.run_counter:03d}-{tool.replace(':', '-')}{suffix}")

    def available(self, tool: str) -> str | None:
        """None when the tool can run, else why not."""
        if tool == 'engine' or tool.startswith('engine:'):
            return None if os.path.exists(ENGINE_FILE) else f'{os.path.relpath(ENGINE_FILE, COLLECTION_ROOT)} missing'
        if tool in ('module', 'module:full'):
            if not os.path.exists(os.path.join(COLLECTION_ROOT, 'plugins', 'modules', 'listener_probe.py')):
                return 'plugins/modules/listener_probe.py missing'
            return None if self.ansible else 'ansible not found (--ansible, bench/setup.sh --with-ansible)'
        if tool == 'nmap':
            return None if self.nmap else 'nmap not found'
        if tool == 'sslyze':
            return None if self.sslyze else 'sslyze not found (run bench/setup.sh)'
        if tool == 'smtplib':
            return None
        return 'unknown tool'

    def run(self, tool: str, manifest: dict) -> dict:
        self.run_counter += 1
        if tool.startswith('engine:'):
            return self.run_engine(manifest, variant=tool.split(':', 1)[1])
        if tool == 'module:full':
            return self.run_module(manifest, detail='full')
        runner = getattr(self, f'run_{tool}')
        return runner(manifest)

    def run_engine(self, manifest: dict, profile: str | None = None, variant: str | None = None) -> dict:
        job_path = self.raw_path('engine', '-job.json')
        output_path = self.raw_path('engine', '-out.json')
        options = self.engine_options(manifest, variant)
        if profile == 'cprofile':
            # cProfile sees only the thread that enables it: run the targets one after another in
            # the calling thread. The CPU per listener is what matters here, not the wall time.
            options['concurrency'] = 1
        with open(job_path, 'w', encoding='utf-8') as job_file:
            json.dump({'collections_parent': self.collections_parent, 'targets': target_strings(manifest),
                       'options': options, 'output': output_path,
                       'profile': profile}, job_file)
        command = [self.arguments.engine_python, os.path.join(BENCH_DIR, 'engine_worker.py'), job_path]
        if profile == 'py-spy':
            py_spy = benchlib.find_bench_tool('py-spy') or 'py-spy'
            command = [py_spy, 'record', '--rate', '250', '--format', 'raw', '--native',
                       '-o', self.raw_path('engine', '-pyspy.txt'), '--'] + command
        measured = benchlib.run_measured(command, self.raw_path('engine', '.stdout'),
                                         self.raw_path('engine', '.stderr'), self.arguments.tool_timeout,
                                         env=self.engine_environment())
        result = {'options': options, 'process_wall_s': measured.wall_s, 'process_cpu_s': measured.cpu_s,
                  'peak_rss_kib': measured.peak_rss_kib, 'exit_code': measured.exit_code,
                  'timed_out': measured.timed_out}
        try:
            with open(output_path, encoding='utf-8') as output_file:
                worker = json.load(output_file)
        except (OSError, ValueError):
            result['error'] = self.tail(self.raw_path('engine', '.stderr'))
            result['check'] = {'checked': 0, 'mismatches': len(manifest['listeners']), 'examples': ['no output']}
            return result
        if worker.get('error'):
            result['error'] = worker['error']
        # The engine as a program that uses it runs it: the whole process, interpreter start-up and
        # imports included (wall_s, cpu_s); call_* are probe_many alone.
        result.update(wall_s=measured.wall_s, cpu_s=measured.cpu_s,
                      call_wall_s=worker.get('wall_s'), call_cpu_s=worker.get('cpu_s'),
                      peak_rss_kib=worker.get('peak_rss_kib', measured.peak_rss_kib),
                      rss_before_kib=worker.get('rss_before_kib'),
                      gc_collections=worker.get('gc_collections'), gc_s=worker.get('gc_s'),
                      user_s=worker.get('user_s'), sys_s=worker.get('sys_s'),
                      voluntary_switches=worker.get('voluntary_switches'),
                      involuntary_switches=worker.get('involuntary_switches'))
        result['check'] = check_probes(manifest, worker.get('probes'))
        result['outcomes'] = summarise_outcomes(worker.get('probes'))
        return result

    def engine_environment(self) -> dict:
        """The engine worker's environment: bytecode cached in the bench's own directory, as an installed
        Python program has it (pip compiles at install time). Without it, a machine that sets
        PYTHONDONTWRITEBYTECODE (or a checkout whose caches are stale) compiles the engine's modules in
        every run, 30-50 ms that no installed program pays. The first call imports the engine once to
        fill the cache."""
        if self._engine_env is None:
            env = dict(os.environ, PYTHONPYCACHEPREFIX=os.path.join(self.workdir, 'pycache'))
            env.pop('PYTHONDONTWRITEBYTECODE', None)
            subprocess.run([self.arguments.engine_python, '-c', 'import sys; sys.path.insert(0, sys.argv[1]); '
                            'import ansible_collections.mailsec.starttls.plugins.module_utils._probe.engine',
                            self.collections_parent], env=env, check=False, capture_output=True, timeout=120)
            self._engine_env = env
        return self._engine_env

    def ansible_environment(self, **extra) -> dict:
        """What a user's shell would have: the collection on the path, nothing tuned for speed.
        Ad-hoc `ansible` prints with its default callback (minimal); the warnings about an implicit
        localhost only add noise to the output the bench reads."""
        return dict(os.environ,
                    ANSIBLE_COLLECTIONS_PATH=self.collections_parent,
                    ANSIBLE_LOCALHOST_WARNING='0', ANSIBLE_INVENTORY_UNPARSED_WARNING='0',
                    ANSIBLE_NOCOLOR='1', ANSIBLE_HOME=os.path.join(self.workdir, 'ansible-home'),
                    ANSIBLE_LOCAL_TEMP=os.path.join(self.workdir, 'ansible-tmp'), **extra)

    def module_command(self, manifest: dict, detail: str | None = None, targets: list | None = None) -> list:
        """`ansible localhost -m mailsec.starttls.listener_probe -a '{"targets": [...]}'` as a user types
        it: every target inline in the JSON arguments, and the options the engine gets."""
        module_args = {'targets': target_strings(manifest) if targets is None else targets}
        module_args.update(self.engine_options(manifest))
        if detail:
            module_args['detail'] = detail
        return [self.ansible, 'localhost', '-m', MODULE_NAME, '-a', json.dumps(module_args)]

    def run_module(self, manifest: dict, detail: str | None = None) -> dict:
        name = 'module' if detail is None else f'module-{detail}'
        stdout_path = self.raw_path(name, '.stdout')
        measured = benchlib.run_measured(self.module_command(manifest, detail), stdout_path,
                                         self.raw_path(name, '.stderr'), self.arguments.tool_timeout,
                                         env=self.ansible_environment(), cwd=self.workdir)
        result = measured.figures()
        host_result = parse_adhoc(stdout_path)
        probes = None
        if host_result is None:
            result['error'] = f'unreadable ansible output: {self.tail(self.raw_path(name, ".stderr"))}'
        else:
            probes = host_result.get('probes')
            result['output_bytes'] = os.path.getsize(stdout_path)
            if host_result.get('failed'):
                result['error'] = str(host_result.get('msg'))[:500]
        result['check'] = check_probes(manifest, probes)
        result['outcomes'] = summarise_outcomes(probes)
        return result

    def run_nmap(self, manifest: dict) -> dict:
        # nmap picks scripts by port rule: ssl-cert and smtp-commands run (and ssl-cert speaks
        # STARTTLS) only on ports whose service is smtp. A private data directory whose
        # nmap-services names the bench ports smtp gives them what port 25 would get, with no
        # version scan (-sV) to pay for; every other data file comes from nmap's own directory.
        datadir = os.path.join(self.workdir, 'nmap-data')
        os.makedirs(datadir, exist_ok=True)
        ports = sorted({listener['port'] for listener in manifest['listeners']})
        with open(os.path.join(datadir, 'nmap-services'), 'w', encoding='ascii') as services:
            services.writelines(f'smtp\t{port}/tcp\t0.5\n' for port in ports)
        xml_path = self.raw_path('nmap', '.xml')
        # Every address with every port: where the listener count is not a multiple of the address
        # count, the last port is closed on some addresses (nmap reports it closed, no script runs).
        addresses = list(dict.fromkeys(listener['address'] for listener in manifest['listeners']))
        command = [self.nmap, '-Pn', '-n', '-p', port_spec(ports), '--datadir', datadir,
                   '--script', 'ssl-cert,smtp-commands', '-oX', xml_path] + addresses
        measured = benchlib.run_measured(command, self.raw_path('nmap', '.stdout'), self.raw_path('nmap', '.stderr'),
                                         self.arguments.tool_timeout, cwd=datadir)
        return dict(measured.figures(), check=check_nmap(manifest, xml_path))

    def run_sslyze(self, manifest: dict) -> dict:
        json_path = self.raw_path('sslyze', '.json')
        servers = [f"{listener['address']}:{listener['port']}" for listener in manifest['listeners']]
        command = [self.sslyze, '--starttls', 'smtp', '--certinfo', f'--json_out={json_path}'] + servers
        measured = benchlib.run_measured(command, self.raw_path('sslyze', '.stdout'),
                                         self.raw_path('sslyze', '.stderr'), self.arguments.tool_timeout,
                                         cwd=self.workdir)
        return dict(measured.figures(), check=check_sslyze(manifest, json_path))

    def run_smtplib(self, manifest: dict) -> dict:
        job_path = self.raw_path('smtplib', '-job.json')
        output_path = self.raw_path('smtplib', '-out.json')
        with open(job_path, 'w', encoding='utf-8') as job_file:
            # The anchors' ceiling sketches: 32 threads without delay, 128 with slow replies.
            threads = self.arguments.smtplib_threads or (32 if not manifest['delay_ms'] else 128)
            json.dump({'listeners': manifest['listeners'], 'threads': threads,
                       'output': output_path}, job_file)
        measured = benchlib.run_measured([sys.executable, os.path.abspath(__file__), '--smtplib-worker', job_path],
                                         self.raw_path('smtplib', '.stdout'), self.raw_path('smtplib', '.stderr'),
                                         self.arguments.tool_timeout)
        result = measured.figures()
        try:
            with open(output_path, encoding='utf-8') as output_file:
                worker = json.load(output_file)
        except (OSError, ValueError):
            worker = {}
            result['error'] = self.tail(self.raw_path('smtplib', '.stderr'))
        result.update(wall_s=worker.get('wall_s'), cpu_s=worker.get('cpu_s'))
        result['check'] = check_probes(manifest, worker.get('probes'))
        return result

    @staticmethod
    def tail(path: str) -> str:
        """A failed tool's stderr, its lines kept, for the results."""
        return benchlib.tail(path, 1500, one_line=False)


def parse_adhoc(stdout_path: str) -> dict | None:
    """The host result in the saved output of an ad hoc `ansible` run."""
    try:
        with open(stdout_path, encoding='utf-8') as stdout_file:
            return benchlib.adhoc_result(stdout_file.read())
    except (OSError, ValueError):
        return None


def summarise_outcomes(probes) -> dict:
    """Counts of what a probe list says, to spot a systematic failure at a glance."""
    if not isinstance(probes, list):
        return {}
    outcomes: dict = {}
    for probe in probes:
        if not isinstance(probe, dict):
            key = 'not-a-dict'
        elif (probe.get('tls') or {}).get('established'):
            key = 'tls'
        elif probe.get('error'):
            error = probe['error']
            key = 'error:' + (error.get('stage', '?') if isinstance(error, dict) else str(error)[:40])
        else:
            key = f"starttls_reply:{(probe.get('starttls_reply') or {}).get('code')}"
        outcomes[key] = outcomes.get(key, 0) + 1
    return outcomes


def smtplib_session(listener: dict) -> dict:
    """The simplest correct client (greeting, EHLO, STARTTLS, handshake, QUIT), shaped like a probe."""
    import smtplib
    probe = {'target': {'address': listener['address'], 'port': listener['port']}, 'tls': None,
             'certificate': None, 'starttls_advertised': None, 'starttls_reply': None, 'error': None}
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        client = smtplib.SMTP(listener['address'], listener['port'], local_hostname=EHLO_NAME, timeout=10)
        try:
            client.ehlo()
            probe['starttls_advertised'] = client.has_extn('starttls')
            if probe['starttls_advertised']:
                code, text = client.docmd('STARTTLS')
                probe['starttls_reply'] = {'code': code, 'text': text.decode(errors='replace')}
                if code == 220:
                    client.sock = context.wrap_socket(client.sock)
                    client.file = None
                    der = client.sock.getpeercert(True)
                    probe['tls'] = {'established': True, 'version': client.sock.version()}
                    probe['certificate'] = {'sha256': hashlib.sha256(der).hexdigest()}
            client.quit()
        finally:
            client.close()
    except (OSError, smtplib.SMTPException) as error:
        probe['error'] = f'{type(error).__name__}: {error}'
    return probe


def smtplib_worker(job_path: str) -> int:
    from concurrent.futures import ThreadPoolExecutor
    with open(job_path, encoding='utf-8') as job_file:
        job = json.load(job_file)
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    with ThreadPoolExecutor(job['threads']) as pool:
        probes = list(pool.map(smtplib_session, job['listeners']))
    wall_s = time.perf_counter() - started
    usage_after = resource.getrusage(resource.RUSAGE_SELF)
    with open(job['output'], 'w', encoding='utf-8') as output_file:
        json.dump({'wall_s': wall_s, 'probes': probes,
                   'cpu_s': (usage_after.ru_utime - usage_before.ru_utime)
                   + (usage_after.ru_stime - usage_before.ru_stime)}, output_file)
    return 0


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------

def aggregate(scenario: dict, tool: str, runs: list) -> dict:
    n = scenario['n']
    wall_s = median_of(runs, 'wall_s')
    cpu_s = median_of(runs, 'cpu_s')
    rss_kib = median_of(runs, 'peak_rss_kib')
    server_cpu_s = median_of(runs, 'server_cpu_s')
    handshakes = median_of(runs, 'server_handshakes')
    mismatches = max((run['check']['mismatches'] for run in runs), default=None)
    other_share = median_of(runs, 'machine_share_other')
    call_wall_s = median_of(runs, 'call_wall_s')
    call_cpu_s = median_of(runs, 'call_cpu_s')
    busiest = [run['server_busiest_percent'] for run in runs if run.get('server_busiest_percent') is not None]
    output_bytes = median_of(runs, 'output_bytes')
    return {
        'tool': tool, 'n': n, 'delay_ms': scenario['delay_ms'], 'runs': len(runs),
        'wall_s': wall_s,
        'listeners_per_s': (n / wall_s) if wall_s else None,
        'client_cpu_ms_per_listener': (cpu_s * 1000 / n) if cpu_s is not None else None,
        'peak_rss_mib': (rss_kib / 1024) if rss_kib is not None else None,
        'server_cpu_ms_per_listener': (server_cpu_s * 1000 / n) if server_cpu_s is not None else None,
        'server_handshakes_per_working_listener': (handshakes / scenario['working'])
        if handshakes is not None and scenario['working'] else None,
        'other_load_percent': (100 * other_share) if other_share is not None else None,
        'max_mismatches': mismatches,
        'mismatch_examples': next((run['check']['examples'] for run in runs if run['check']['mismatches']), []),
        'errors': sorted({str(run['error'])[:300] for run in runs if run.get('error')}),
        'timed_out': any(run.get('timed_out') for run in runs),
        # probe_many alone (engine rows): without interpreter start-up, imports and output.
        'call_listeners_per_s': (n / call_wall_s) if call_wall_s else None,
        'call_cpu_ms_per_listener': (call_cpu_s * 1000 / n) if call_cpu_s is not None else None,
        'server_busiest_percent': max(busiest) if busiest else None,
        'output_bytes_per_listener': (output_bytes / n) if output_bytes else None,
    }


def paired_ratios(runs: dict, n: int) -> dict:
    """Each tool's listeners/s over a peer's within the same repetition: the tools of one repetition
    run back to back, so a ratio of the two is less at the mercy of load that drifts between
    repetitions than the ratio of the medians."""
    paired = {}
    for tool in ('engine', 'module', 'module:full'):
        for peer in ('nmap', 'sslyze'):
            each = []
            for mine, theirs in zip(runs.get(tool, []), runs.get(peer, [])):
                if mine.get('wall_s') and theirs.get('wall_s') and not mine['check']['mismatches']:
                    each.append((n / mine['wall_s']) / (n / theirs['wall_s']))
            if each:
                paired[f'{tool}/{peer}'] = {'median': statistics.median(each), 'each': each}
    return paired


def summaries_of(scenario: dict, runs: dict) -> dict:
    return {tool: aggregate(scenario, tool, tool_runs) for tool, tool_runs in runs.items() if tool_runs}


def fixture_busiest_percent(before: dict, after: dict, wall_s: float | None) -> float | None:
    """The busiest fixture process's CPU during a run, in percent of one core: near 100 the fixture,
    not the client, may set the pace."""
    first, last = before.get('process_cpu_s'), after.get('process_cpu_s')
    if not wall_s or not isinstance(first, list) or not isinstance(last, list) or len(first) != len(last):
        return None
    return 100 * max(end - start for start, end in zip(first, last)) / wall_s


def print_table(summaries: list, skipped: dict) -> None:
    header = (f"{'tool':<14} {'N':>5} {'delay':>6} {'wall s':>8} {'lst/s':>8} {'cpu ms/l':>9} {'RSS MiB':>8} "
              f"{'srv ms/l':>9} {'srv max%':>8} {'hs/lst':>7} {'other%':>6} {'wrong':>6}")
    print(header)
    print('-' * len(header))
    for summary in summaries:
        wrong = summary['max_mismatches']
        flag = '' if wrong == 0 else '  <-- WRONG RESULTS' if wrong else '  <-- NO RESULT'
        print(f"{summary['tool']:<14} {summary['n']:>5} {summary['delay_ms']:>4.0f}ms "
              f"{fmt(summary['wall_s'], '8.2f')} {fmt(summary['listeners_per_s'], '8.1f')} "
              f"{fmt(summary['client_cpu_ms_per_listener'], '9.2f')} {fmt(summary['peak_rss_mib'], '8.1f')} "
              f"{fmt(summary['server_cpu_ms_per_listener'], '9.2f')} "
              f"{fmt(summary.get('server_busiest_percent'), '8.0f')} "
              f"{fmt(summary['server_handshakes_per_working_listener'], '7.2f')} "
              f"{fmt(summary['other_load_percent'], '6.0f')} {fmt(wrong, '6d')}{flag}")
        if summary.get('call_listeners_per_s'):
            print(f"         probe_many alone: {summary['call_listeners_per_s']:.1f} listeners/s, "
                  f"{fmt(summary['call_cpu_ms_per_listener'], '.2f')} ms CPU/listener (the row: the whole process)")
        if summary.get('output_bytes_per_listener'):
            print(f"         output: {summary['output_bytes_per_listener']:.0f} bytes per listener")
        for error in summary['errors']:
            print(f'         error: {error}')
        for example in summary['mismatch_examples']:
            print(f'         mismatch: {example}')
    for tool, reason in skipped.items():
        print(f'{tool:<14} skipped: {reason}')
    saturated = [summary['tool'] for summary in summaries
                 if (summary.get('server_busiest_percent') or 0) > FIXTURE_SATURATED_PERCENT]
    if saturated:
        print(f"WARNING: a fixture process used more than {FIXTURE_SATURATED_PERCENT:.0f}% of a core during the runs "
              f"of {', '.join(saturated)}: the fixture may have set their pace (raise --processes).")
    benchlib.warn_if_noisy([summary.get('other_load_percent') for summary in summaries],
                           'wall times and listeners/s are depressed')


def judge(scenario_name: str, scenario: dict, summaries: dict, tools: list, smoke: bool,
          require_module: bool = False, skipped: dict | None = None) -> list:
    """PASS/FAIL lines for the targets that apply to this scenario."""
    verdicts = []
    engine = summaries.get('engine')

    def add(name: str, ok: bool | None, detail: str) -> None:
        verdicts.append(verdict(name, ok, detail, scenario=scenario_name))

    for tool in ('engine', 'module', 'module:full'):
        if tool not in tools:
            continue
        summary = summaries.get(tool)
        if summary is None:
            optional = tool.startswith('module') and not require_module
            add(f'{tool} results correct', None if optional else False,
                f"not run: {(skipped or {}).get(tool, 'no result')}")
        else:
            add(f'{tool} results correct', summary['max_mismatches'] == 0,
                f"{summary['max_mismatches']} mismatches over {scenario['n']} listeners")
    for tool in ('nmap', 'sslyze'):
        summary = summaries.get(tool)
        if summary is not None and summary['max_mismatches']:
            verdicts.append({'scenario': scenario_name, 'target': f'{tool} results correct', 'result': 'FLAG',
                             'detail': f"{summary['max_mismatches']} mismatches (peer, not enforced)"})
    busiest = max((summary.get('server_busiest_percent') or 0 for summary in summaries.values()), default=0)
    if busiest:
        add(f'fixture not saturated (busiest process <= {FIXTURE_SATURATED_PERCENT:.0f}% of a core)',
            None if busiest <= FIXTURE_SATURATED_PERCENT or smoke else False, f'{busiest:.0f}% at most')
    if smoke or engine is None or not engine['listeners_per_s']:
        return verdicts
    rate = engine['listeners_per_s']
    n, delay = scenario['n'], scenario['delay_ms']

    def peer_rate(tool: str) -> tuple:
        summary = summaries.get(tool)
        if summary and summary['listeners_per_s'] and summary['max_mismatches'] == 0:
            return summary['listeners_per_s'], 'this run'
        anchor = ANCHOR_LISTENERS_PER_S.get((tool, n, delay))
        return anchor, 'anchor figure'

    if delay == 0 and n >= 500:
        module = summaries.get('module')
        for tool, factor, who, who_rate in (('nmap', TARGET_VS_NMAP, 'engine', rate),
                                            ('sslyze', TARGET_VS_SSLYZE, 'engine', rate),
                                            ('nmap', TARGET_MODULE_VS_NMAP, 'module (ad hoc)',
                                             (module or {}).get('listeners_per_s'))):
            if who_rate is None:
                continue
            peer, source = peer_rate(tool)
            if peer:
                add(f'{who} >= {factor}x {tool} listeners/s', who_rate >= factor * peer,
                    f'{who_rate:.0f}/s vs {peer:.0f}/s ({source}): {who_rate / peer:.2f}x')
            else:
                add(f'{who} >= {factor}x {tool} listeners/s', None, f'{tool} not measured, no anchor')
        add(f'engine about {EXPECTED_THROUGHPUT:.0f} listeners/s (informative)', None, f'{rate:.0f}/s')
        # The CPU target is the probing's own (probe_many alone), as it was set.
        cpu = engine.get('call_cpu_ms_per_listener')
        if cpu is None:
            cpu = engine['client_cpu_ms_per_listener']
        add(f'engine client CPU <= {TARGET_CPU_MS_PER_LISTENER} ms/listener (probe_many alone)', cpu is not None
            and cpu <= TARGET_CPU_MS_PER_LISTENER, f'{fmt(cpu, ".2f")} ms/listener')
        rss = engine['peak_rss_mib']
        add(f'engine peak RSS <= {TARGET_PEAK_RSS_MIB:.0f} MiB at N={n}', rss is not None
            and rss <= TARGET_PEAK_RSS_MIB, f'{fmt(rss, ".1f")} MiB')
    elif delay >= 50 and n >= 200:
        add(f'engine >= {TARGET_SLOW_LISTENERS_PER_S:.0f} listeners/s with {delay:.0f} ms replies',
            rate >= TARGET_SLOW_LISTENERS_PER_S, f'{rate:.0f}/s')
        for tool in ('nmap', 'sslyze'):
            peer, source = peer_rate(tool)
            if peer:
                add(f'engine vs {tool} (informative)', None, f'{rate / peer:.1f}x ({source})')
    return verdicts


def environment_facts(bench: Bench, arguments: argparse.Namespace) -> dict:
    version_of = benchlib.version_of
    return dict(
        benchlib.machine_facts(),
        engine_python=version_of([arguments.engine_python, '--version']),
        fixture_python=version_of([arguments.fixture_python, '--version']),
        ansible=(bench.ansible, version_of([bench.ansible, '--version']) if bench.ansible else None),
        nmap=(bench.nmap, version_of([bench.nmap, '--version']) if bench.nmap else None),
        sslyze=(bench.sslyze, version_of([os.path.join(os.path.dirname(bench.sslyze), 'python'), '-c',
                                          'import importlib.metadata as m; print("sslyze", m.version("sslyze"))'])
                if bench.sslyze else None))


# --------------------------------------------------------------------------------------------
# Driving a scenario
# --------------------------------------------------------------------------------------------

def run_scenario(bench: Bench, name: str, scenario: dict, tools: list, repeat: int) -> dict:
    arguments = bench.arguments
    skipped = {tool: reason for tool in tools if (reason := bench.available(tool))}
    active_tools = [tool for tool in tools if tool not in skipped]
    max_lifetime = min(4 * 3600, 120 + repeat * len(active_tools) * arguments.tool_timeout)
    fixture_dir = os.path.join(bench.workdir, f'fixture-{name}')
    os.makedirs(fixture_dir, exist_ok=True)
    fixture = FixtureProcess(arguments.fixture_python, scenario['n'], scenario['delay_ms'], arguments.base_port,
                             fixture_dir, max_lifetime, arguments.distinct_certs,
                             scenario.get('addresses', 1), scenario.get('processes', 1))
    runs: dict = {tool: [] for tool in active_tools}
    module_profile = None
    try:
        fixture.wait_ready()
        manifest = fixture.manifest
        scenario = dict(scenario, working=sum(1 for listener in manifest['listeners']
                                              if listener['kind'] == 'starttls'))
        print(f"\n== {name}: {scenario['n']} listeners on {scenario.get('addresses', 1)} address(es) from "
              f"{manifest['address']}, ports {manifest['base_port']}+, served by {scenario.get('processes', 1)} "
              f"process(es), {scenario['delay_ms']:.0f} ms per reply, {repeat} repeat(s), "
              f"tools: {', '.join(active_tools)}", flush=True)
        for repetition in range(1, repeat + 1):
            for tool in active_tools:
                before = fixture.stats()
                busy_before = benchlib.machine_busy_s()
                result = bench.run(tool, manifest)
                busy_after = benchlib.machine_busy_s()
                after = fixture.stats()
                # What neither the client nor the fixture used: other work on the machine that
                # competed for the cores during this run (noise to report, not to subtract).
                result['other_cpu_s'], result['machine_share_other'] = benchlib.other_share(
                    busy_before, busy_after,
                    (after['cpu_s'] - before['cpu_s']) + (result.get('process_cpu_s') or result.get('cpu_s') or 0.0),
                    result.get('process_wall_s') or result.get('wall_s') or 1e-9)
                result['server_cpu_s'] = after['cpu_s'] - before['cpu_s']
                result['server_handshakes'] = after['handshakes'] - before['handshakes']
                result['server_connections'] = after['connections'] - before['connections']
                result['server_busiest_percent'] = fixture_busiest_percent(
                    before, after, result.get('process_wall_s') or result.get('wall_s'))
                result['repetition'] = repetition
                runs[tool].append(result)
                wall = result.get('wall_s')
                print(f"   run {repetition} {tool:<12} wall {fmt(wall, '.2f')} s, "
                      f"cpu {fmt(result.get('cpu_s'), '.2f')} s, "
                      f"rss {fmt((result.get('peak_rss_kib') or 0) / 1024, '.0f')} MiB, "
                      f"{result['server_connections']} connections, {result['server_handshakes']} handshakes, "
                      f"busiest fixture process {fmt(result['server_busiest_percent'], '.0f')}% of a core, "
                      f"{result['check']['mismatches']} wrong, others used "
                      f"{100 * result['machine_share_other']:.0f}% of the machine", flush=True)
        if arguments.profile:
            bench.run_counter += 1
            profile_result = bench.run_engine(manifest, profile=arguments.profile)
            save_profile(bench, name, profile_result)
        if 'module' in active_tools and not arguments.smoke and not arguments.no_module_profile:
            module_profile = profile_module_path(bench, manifest, summaries_of(scenario, runs))
    finally:
        fixture_output = fixture.stop()
    summaries = summaries_of(scenario, runs)
    print()
    print_table(list(summaries.values()), skipped)
    if module_profile:
        print_module_profile(module_profile)
    ratios = {}
    for tool in ('engine', 'module', 'module:full'):
        for peer in ('nmap', 'sslyze'):
            if (summaries.get(tool) or {}).get('listeners_per_s') and (summaries.get(peer) or {}).get('listeners_per_s'):
                ratios[f'{tool}/{peer}'] = summaries[tool]['listeners_per_s'] / summaries[peer]['listeners_per_s']
    if ratios:
        print('ratios (listeners/s, of the medians): '
              + ', '.join(f'{key} {value:.2f}x' for key, value in ratios.items()))
    paired = paired_ratios(runs, scenario['n'])
    if paired:
        print('ratios within each repetition (tools interleaved under the same load), median [each]: '
              + ', '.join(f"{key} {value['median']:.2f}x {[round(item, 2) for item in value['each']]}"
                          for key, value in paired.items()))
    verdicts = judge(name, scenario, summaries, tools, arguments.smoke, arguments.require_module, skipped)
    return {'scenario': name, 'n': scenario['n'], 'delay_ms': scenario['delay_ms'], 'repeat': repeat,
            'summaries': summaries, 'ratios': ratios, 'verdicts': verdicts, 'skipped': skipped,
            'module_profile': module_profile, 'paired_ratios': paired,
            'runs': runs, 'fixture_log_tail': fixture_output.strip().splitlines()[-3:]}


# --------------------------------------------------------------------------------------------
# Where the ad-hoc module path spends its time
# --------------------------------------------------------------------------------------------

# Run inside an unpacked AnsiballZ module (`explode`): the module's main() with probe_many and
# exit_json timed (wall and process CPU, all threads), imports timed from the first line.
MODULE_HARNESS = r'''
import json, os, resource, sys, time


def cpu():
    # This process and the probe processes it forked and reaped.
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


marks = {'start': (time.perf_counter(), cpu())}
sys.path.insert(0, sys.argv[1])
sys.argv = [sys.argv[0], os.path.join(sys.argv[1], 'args')]
from ansible_collections.mailsec.starttls.plugins.modules import listener_probe as module
from ansible.module_utils.basic import AnsibleModule
marks['imported'] = (time.perf_counter(), cpu())
probe_many = module.probe_many
def timed_probe_many(*args, **kwargs):
    marks['probe_start'] = (time.perf_counter(), cpu())
    try:
        return probe_many(*args, **kwargs)
    finally:
        marks['probe_end'] = (time.perf_counter(), cpu())
module.probe_many = timed_probe_many
exit_json = AnsibleModule.exit_json
def timed_exit_json(self, **kwargs):
    marks['exit_start'] = (time.perf_counter(), cpu())
    try:
        exit_json(self, **kwargs)
    finally:
        marks['exit_end'] = (time.perf_counter(), cpu())
        with open(os.environ['MAILSEC_BENCH_MARKS'], 'w') as marks_file:
            json.dump(marks, marks_file)
AnsibleModule.exit_json = timed_exit_json
module.main()
'''


# A stand-in module for measuring what the controller does with a result alone: it returns a
# recorded result of listener_probe (the JSON its module process printed) without probing anything.
# Ad-hoc runs of it with the recorded full-size result and with the recorded result of an empty run
# differ by the controller's handling of the larger result (decoding, copying, the callback's
# transform and output) and by the stand-in's own reading and output of it.
REPLAY_MODULE_NAME = 'mailsec_bench_replay'
REPLAY_MODULE = r'''#!/usr/bin/python
from __future__ import annotations

import json

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(argument_spec={'path': {'type': 'path', 'required': True}}, supports_check_mode=True)
    with open(module.params['path'], encoding='utf-8') as recorded:
        result = json.load(recorded)
    result.pop('changed', None)
    module.exit_json(changed=False, **result)


if __name__ == '__main__':
    main()
'''


def replay_command(bench: Bench, recorded: str) -> list:
    library = os.path.join(bench.workdir, 'replay-library')
    os.makedirs(library, exist_ok=True)
    with open(os.path.join(library, f'{REPLAY_MODULE_NAME}.py'), 'w', encoding='utf-8') as module_file:
        module_file.write(REPLAY_MODULE)
    return [bench.ansible, 'localhost', '-M', library, '-m', REPLAY_MODULE_NAME, '-a', json.dumps({'path': recorded})]


def recorded_output(bench: Bench, label: str) -> str | None:
    """The result a kept module run printed (measure_median keeps its first run's output), when it is
    one JSON object."""
    path = os.path.join(bench.workdir, f'profile-{label}-0.out')
    try:
        with open(path, encoding='utf-8') as output:
            result = json.load(output)
    except (OSError, ValueError):
        return None
    return path if isinstance(result, dict) and not result.get('failed') else None


def replay_result_handling(bench: Bench, repeat: int, env: dict) -> dict:
    """Per detail level, what an ad-hoc run of the stand-in costs with the module's recorded result
    beyond the same run with the recorded result of the empty run: runs interleaved round by round
    (empty, compact, full), the median of each round's difference, so that a slow stretch of the
    machine hits both sides of a difference alike."""
    recorded = {label: recorded_output(bench, f'module-{label}') for label in ('empty', 'compact', 'full')}
    if not recorded['empty']:
        return {}
    commands = {label: replay_command(bench, path) for label, path in recorded.items() if path}
    rounds: dict = {label: [] for label in commands}
    for attempt in range(repeat):
        for label, command in commands.items():
            measured = benchlib.run_measured(command, os.path.join(bench.workdir, f'replay-{label}-{attempt}.out'),
                                             os.path.join(bench.workdir, f'replay-{label}-{attempt}.err'),
                                             bench.arguments.tool_timeout, env=env, cwd=bench.workdir)
            rounds[label].append(measured if measured.exit_code == 0 else None)
    differences = {}
    for label in ('compact', 'full'):
        pairs = [(run, base) for run, base in zip(rounds.get(label, []), rounds['empty']) if run and base]
        if pairs:
            differences[label] = {'wall_s': statistics.median(run.wall_s - base.wall_s for run, base in pairs),
                                  'cpu_s': statistics.median(run.cpu_s - base.cpu_s for run, base in pairs),
                                  'rounds': len(pairs)}
    return differences


def keep_module_file(bench: Bench, manifest: dict, label: str, targets: list | None, detail: str | None) -> str | None:
    """One unmeasured ad-hoc run that keeps its AnsiballZ file; returns a copy of it."""
    remote_tmp = os.path.join(bench.workdir, f'remote-tmp-{label}')
    shutil.rmtree(remote_tmp, ignore_errors=True)
    env = bench.ansible_environment(ANSIBLE_KEEP_REMOTE_FILES='1', ANSIBLE_REMOTE_TMP=remote_tmp)
    subprocess.run(bench.module_command(manifest, detail, targets), env=env, cwd=bench.workdir,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=bench.arguments.tool_timeout,
                   check=False)
    found = sorted(glob.glob(os.path.join(remote_tmp, '**', 'AnsiballZ_listener_probe.py'), recursive=True))
    if not found:
        return None
    kept = os.path.join(bench.workdir, f'AnsiballZ-{label}.py')
    shutil.copy(found[-1], kept)
    return kept


def module_interpreter(ansiballz: str) -> str:
    with open(ansiballz, encoding='utf-8') as module_file:
        first = module_file.readline()
    return first[2:].strip().split()[0] if first.startswith('#!') else sys.executable


def measure_median(bench: Bench, label: str, command: list, repeat: int, env: dict | None = None,
                   cwd: str | None = None) -> dict:
    walls, cpus = [], []
    for attempt in range(repeat):
        measured = benchlib.run_measured(command, os.path.join(bench.workdir, f'profile-{label}-{attempt}.out'),
                                         os.path.join(bench.workdir, f'profile-{label}-{attempt}.err'),
                                         bench.arguments.tool_timeout, env=env, cwd=cwd or bench.workdir)
        if measured.exit_code == 0:
            walls.append(measured.wall_s)
            cpus.append(measured.cpu_s)
    if not walls:
        return {'wall_s': None, 'cpu_s': None, 'error': bench.tail(os.path.join(bench.workdir, f'profile-{label}-0.err'))}
    return {'wall_s': statistics.median(walls), 'cpu_s': statistics.median(cpus),
            'output_bytes': os.path.getsize(os.path.join(bench.workdir, f'profile-{label}-0.out'))}


def inside_module(bench: Bench, ansiballz: str, label: str, repeat: int) -> dict:
    """The module's own phases, unpacked with cached bytecode: imports, probe_many, exit_json."""
    python = module_interpreter(ansiballz)
    exploded = os.path.join(bench.workdir, f'exploded-{label}')
    os.makedirs(exploded, exist_ok=True)
    shutil.copy(ansiballz, os.path.join(exploded, 'AnsiballZ.py'))
    subprocess.run([python, 'AnsiballZ.py', 'explode'], cwd=exploded, check=True, capture_output=True, timeout=120)
    debug_dir = os.path.join(exploded, 'debug_dir')
    harness = os.path.join(bench.workdir, 'module_harness.py')
    with open(harness, 'w', encoding='utf-8') as harness_file:
        harness_file.write(MODULE_HARNESS)
    phases: dict = {}
    for attempt in range(repeat + 1):
        marks_path = os.path.join(bench.workdir, f'marks-{label}.json')
        env = dict(os.environ, MAILSEC_BENCH_MARKS=marks_path)
        completed = subprocess.run([python, harness, debug_dir], cwd=exploded, env=env, capture_output=True,
                                   timeout=bench.arguments.tool_timeout, check=False)
        if attempt == 0:
            continue  # the first run writes the bytecode caches
        try:
            with open(marks_path, encoding='utf-8') as marks_file:
                marks = json.load(marks_file)
        except (OSError, ValueError):
            return {'error': completed.stderr.decode(errors='replace')[-500:]}
        for phase, (start, end) in (('imports', ('start', 'imported')), ('probing', ('probe_start', 'probe_end')),
                                    ('serialisation', ('exit_start', 'exit_end'))):
            if start in marks and end in marks:
                phases.setdefault(phase, []).append((marks[end][0] - marks[start][0], marks[end][1] - marks[start][1]))
    return {phase: {'wall_s': statistics.median(item[0] for item in values),
                    'cpu_s': statistics.median(item[1] for item in values)} for phase, values in phases.items()}


def profile_module_path(bench: Bench, manifest: dict, summaries: dict) -> dict:
    """Split the ad-hoc module run into Ansible's start-up, the controller's handling of the task, the
    module process's start-up (unpacking, compiling, importing), the probing, the result's
    serialisation and the controller's handling of the result, by differences of runs made now (median
    of --profile-repeat each). The last is measured on its own: a stand-in module returns the result
    the module printed, once full-size and once from an empty run (REPLAY_MODULE)."""
    repeat = bench.arguments.profile_repeat
    n = len(manifest['listeners'])
    env = bench.ansible_environment()
    print(f'   profiling the module path ({repeat} run(s) per step)...', flush=True)
    profile: dict = {'n': n, 'repeat': repeat}
    profile['ping'] = measure_median(bench, 'ping', [bench.ansible, 'localhost', '-m', 'ansible.builtin.ping'],
                                     repeat, env=env)
    profile['adhoc_empty'] = measure_median(bench, 'adhoc-empty', bench.module_command(manifest, None, []), repeat,
                                            env=env)
    empty_file = keep_module_file(bench, manifest, 'empty', [], None)
    if empty_file:
        profile['module_empty'] = measure_median(bench, 'module-empty', [module_interpreter(empty_file), empty_file],
                                                 repeat)
    for detail in ('compact', 'full'):
        summary = summaries.get('module' if detail == 'compact' else 'module:full') or {}
        adhoc = {'wall_s': summary.get('wall_s'),
                 'cpu_s': (summary.get('client_cpu_ms_per_listener') or 0) * n / 1000 or None}
        if adhoc['wall_s'] is None:
            adhoc = measure_median(bench, f'adhoc-{detail}', bench.module_command(manifest, detail), repeat, env=env)
        full_file = keep_module_file(bench, manifest, detail, None, detail)
        entry = {'adhoc': adhoc}
        if full_file:
            entry['module'] = measure_median(bench, f'module-{detail}', [module_interpreter(full_file), full_file],
                                             repeat)
            entry['inside'] = inside_module(bench, full_file, detail, repeat)
        profile[detail] = entry
    replayed = replay_result_handling(bench, max(repeat, 5), env)
    for detail, figures in replayed.items():
        profile[detail]['replay'] = figures
    profile['phases'] = module_phases(profile)
    return profile


def _minus(first: dict | None, *others: dict | None) -> dict:
    result = {}
    for key in ('wall_s', 'cpu_s'):
        values = [item.get(key) if item else None for item in (first,) + others]
        result[key] = None if any(value is None for value in values) else values[0] - sum(values[1:])
    return result


def module_phases(profile: dict) -> dict:
    """Per detail level: the phases of one ad-hoc run, as differences of the measured runs."""
    phases: dict = {}
    controller_empty = _minus(profile.get('adhoc_empty'), profile.get('module_empty'))
    for detail in ('compact', 'full'):
        entry = profile.get(detail) or {}
        inside = entry.get('inside') or {}
        module = entry.get('module')
        probing = inside.get('probing')
        serialisation = inside.get('serialisation')
        phases[detail] = {
            'ansible start-up and a trivial module (ping, for reference)': profile.get('ping'),
            'controller: start-up, task, AnsiballZ packing (empty run minus its module process)': controller_empty,
            'module process: interpreter, unzip, compile, imports, arguments': _minus(module, probing, serialisation),
            'of which imports (unpacked, bytecode cached)': inside.get('imports'),
            'module process: probing (probe_many)': probing,
            'module process: result serialisation and output (exit_json)': serialisation,
            'controller: result handling (decode, copy, callback output), replayed':
                _minus(entry.get('replay'), serialisation),
            'whole ad-hoc run': entry.get('adhoc'),
            'result bytes printed by the module': {'bytes': (module or {}).get('output_bytes')},
        }
    return phases


def print_module_profile(profile: dict) -> None:
    print(f"\nwhere the ad-hoc module path spends its time (N={profile['n']}, median of {profile['repeat']}; "
          'differences of runs, so a row may be off by the noise of the others):')
    for detail, rows in profile['phases'].items():
        print(f'  detail={detail}:')
        for name, figures in rows.items():
            figures = figures or {}
            if 'bytes' in figures:
                print(f"    {name:<86} {fmt(figures['bytes'], 'd') if figures['bytes'] is not None else '-'} bytes")
                continue
            print(f"    {name:<86} wall {fmt(figures.get('wall_s'), '6.3f')} s  CPU {fmt(figures.get('cpu_s'), '6.3f')} s")


def save_profile(bench: Bench, scenario_name: str, profile_result: dict) -> None:
    results_dir = bench.arguments.results_dir
    os.makedirs(results_dir, exist_ok=True)
    stamp = time.strftime('%Y%m%dT%H%M%S')
    if bench.arguments.profile == 'cprofile':
        output_path = bench.raw_path('engine', '-out.json')
        try:
            with open(output_path, encoding='utf-8') as output_file:
                text = json.load(output_file).get('profile_text', '')
        except (OSError, ValueError):
            text = ''
        destination = os.path.join(results_dir, f'profile-{scenario_name}-{stamp}.txt')
        with open(destination, 'w', encoding='utf-8') as profile_file:
            profile_file.write(text)
        if os.path.exists(output_path + '.prof'):
            shutil.copy(output_path + '.prof', destination[:-4] + '.prof')
    else:
        raw = bench.raw_path('engine', '-pyspy.txt')
        destination = os.path.join(results_dir, f'pyspy-{scenario_name}-{stamp}.txt')
        if os.path.exists(raw):
            shutil.copy(raw, destination)
            with open(destination + '.top.txt', 'w', encoding='utf-8') as top_file:
                top_file.write(benchlib.collapsed_top(raw))
    print(f'   profile ({bench.arguments.profile}) of one engine run written to {destination} '
          f"(wall {fmt(profile_result.get('wall_s'), '.2f')} s with the profiler on)")


def parse_arguments(argv: list | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--scenario', choices=('all',) + tuple(SCENARIOS), default='all',
                        help='all = throughput (N=500, 0 ms) then slow (N=200, 50 ms)')
    parser.add_argument('--n', type=int, help='custom scenario: number of listeners')
    parser.add_argument('--delay-ms', type=float, help='custom scenario: pause before every server reply')
    parser.add_argument('--repeat', type=int, help='runs per tool; the median is reported (default 3, smoke 1)')
    parser.add_argument('--tools', default=','.join(TOOLS), help='comma-separated subset of ' + ','.join(TOOLS))
    parser.add_argument('--no-peers', action='store_true', help='engine and module only')
    parser.add_argument('--smoke', action='store_true',
                        help='CI mode: N=40, one run, engine + module (+ peers when installed), correctness only')
    parser.add_argument('--enforce', action='store_true', help='exit 1 when a target FAILs')
    parser.add_argument('--require-module', action='store_true',
                        help='a module that cannot run (no ansible found) is a FAIL, not a SKIP')
    parser.add_argument('--ansible', help='ansible executable (default: test venvs, PATH, bench venv)')
    parser.add_argument('--sslyze', help='sslyze executable (default: bench venv from bench/setup.sh, PATH)')
    parser.add_argument('--nmap', help='nmap executable (default: PATH)')
    parser.add_argument('--engine-python', default=sys.executable, help='interpreter for the engine worker')
    parser.add_argument('--fixture-python', default=sys.executable, help='interpreter for the fixture (3.11+)')
    parser.add_argument('--engine-option', action='append', default=[], metavar='KEY=JSON',
                        help='extra probe option for engine and module, e.g. concurrency=256 (repeatable)')
    parser.add_argument('--base-port', type=int, default=20000)
    parser.add_argument('--distinct-certs', type=int, default=16,
                        help='distinct leaf certificates in the fixture, reused round-robin; a fleet of unique '
                             'certificates (e.g. 400) shows the per-certificate cost of describing and verifying')
    parser.add_argument('--tool-timeout', type=float, default=600.0, help='seconds before one tool run is killed')
    parser.add_argument('--profile', choices=('cprofile', 'py-spy'),
                        help='after the measured runs, profile one engine run into the results directory')
    parser.add_argument('--results-dir', default=os.path.join(BENCH_DIR, 'results'))
    parser.add_argument('--keep-raw', action='store_true', help='keep every tool output in the results directory')
    parser.add_argument('--smtplib-threads', type=int,
                        help='threads of the smtplib reference client (default 32, or 128 with --delay-ms)')
    parser.add_argument('--engine-variant', action='append', default=[], metavar='LABEL:KEY=JSON[,KEY=JSON]',
                        help='also measure the engine with other options, as tool engine:LABEL in the same '
                             'runs, e.g. wide:per_host_limit=256,concurrency=256 (repeatable)')
    parser.add_argument('--addresses', type=int,
                        help='spread the listeners over this many loopback addresses (default: per scenario)')
    parser.add_argument('--processes', type=int, help='fixture processes (default: per scenario)')
    parser.add_argument('--no-module-profile', action='store_true',
                        help='skip the profile of the ad-hoc module path after the measured runs')
    parser.add_argument('--profile-repeat', type=int, default=3, help='runs per step of the module-path profile')
    parser.add_argument('--smtplib-worker', metavar='JOB', help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list | None = None) -> int:
    arguments = parse_arguments(argv)
    if arguments.smtplib_worker:
        return smtplib_worker(arguments.smtplib_worker)

    tools = [tool.strip() for tool in arguments.tools.split(',') if tool.strip()]
    unknown = [tool for tool in tools if tool not in TOOLS]
    if unknown:
        print(f'unknown tools: {unknown}', file=sys.stderr)
        return 2
    arguments.variants = {}
    for definition in arguments.engine_variant:
        label, _separator, assignments = definition.partition(':')
        if not label or not assignments:
            print(f'--engine-variant wants LABEL:KEY=VALUE[,KEY=VALUE], not {definition!r}', file=sys.stderr)
            return 2
        arguments.variants[label] = parse_assignments(assignments.split(','))
    variant_tools = [f'engine:{label}' for label in arguments.variants]
    position = tools.index('engine') + 1 if 'engine' in tools else 0
    tools[position:position] = variant_tools
    if arguments.no_peers:
        tools = [tool for tool in tools if tool.startswith(('engine', 'module'))]
    if arguments.n is not None or arguments.delay_ms is not None:
        n = arguments.n or 500
        scenarios = {'custom': {'n': n, 'delay_ms': arguments.delay_ms or 0.0, 'addresses': max(1, n // 2),
                                'processes': 4}}
    elif arguments.smoke:
        scenarios = {'smoke': dict(SCENARIOS['smoke'])}
    elif arguments.scenario == 'all':
        scenarios = {name: dict(SCENARIOS[name]) for name in ('throughput', 'slow')}
    else:
        scenarios = {arguments.scenario: dict(SCENARIOS[arguments.scenario])}
    repeat = arguments.repeat or (1 if arguments.smoke else 3)
    for scenario in scenarios.values():
        if arguments.addresses:
            scenario['addresses'] = arguments.addresses
        if arguments.processes:
            scenario['processes'] = arguments.processes

    workdir = tempfile.mkdtemp(prefix='mailsec-bench-')
    bench = Bench(arguments, workdir)
    if arguments.smoke:
        # Peers only when they are already installed; the smoke run never installs anything.
        tools = [tool for tool in tools if tool in ('engine', 'module') or tool.startswith('engine:')
                 or (tool in ('nmap', 'sslyze') and bench.available(tool) is None)]
    facts = environment_facts(bench, arguments)
    print(f"mailsec.starttls listener probe bench, {facts['date']}, {facts['cpu']} x{facts['cores']}, "
          f"python {facts['python']}, {facts['openssl']}", flush=True)
    results = []
    try:
        for name, scenario in scenarios.items():
            results.append(run_scenario(bench, name, scenario, tools, repeat))
    except RuntimeError as error:
        # The fixture could not start or stopped answering (ports taken by another run, say).
        print(f'bench: {error}', file=sys.stderr)
        return 2
    finally:
        if arguments.keep_raw:
            shutil.copytree(workdir, os.path.join(arguments.results_dir, f'raw-{time.strftime("%Y%m%dT%H%M%S")}'),
                            symlinks=True)
        shutil.rmtree(workdir, ignore_errors=True)

    verdicts = [item for result in results for item in result['verdicts']]
    label = 'smoke' if arguments.smoke else '-'.join(results_name for results_name in scenarios)
    return benchlib.finish(verdicts, arguments, f'bench-{label}',
                           {'environment': facts, 'arguments': {key: value for key, value in vars(arguments).items()
                                                                if not key.endswith('_worker')},
                            'scenarios': results})


if __name__ == '__main__':
    sys.exit(main())
