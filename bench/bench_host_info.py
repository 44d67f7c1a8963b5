# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark of host inspection: what one run of mta_tls_info costs on a host with several MTAs.

The bench starts a subset of the real-MTA lab (tests/lab, default --only postfix,exim,dovecot)
and measures, --repeat times (interleaved), the same inspection three ways:
  adhoc     `ansible localhost -m mailsec.starttls.mta_tls_info`, end to end (controller included)
  module    the module's own process: the AnsiballZ file Ansible sent, run directly with the
            target's Python (interpreter start-up, unpacking, imports, gather_host, host probes)
  exploded  the same module unpacked (AnsiballZ `explode`/`execute`) with bytecode caching on:
            what the module process would cost without compiling its sources on every run
and reads `cost.cpu_seconds` (gather_host + host probes, as the module measures it) from each.
It then splits gather_host into phases (discovery and configuration, certificate stores, host
probes), each in a fresh process, and times the module process's imports (`python -X importtime`).
See bench/README.md.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
COLLECTION_ROOT = os.path.dirname(BENCH_DIR)
sys.path.insert(0, BENCH_DIR)

import benchlib  # noqa: E402  (after the path change above)

MODULE_NAME = 'mailsec.starttls.mta_tls_info'
DEFAULT_LAB_ROOT = '/tmp/bench-hostinfo-lab'
DEFAULT_ONLY = 'postfix,exim,dovecot'
HOST_NAME = 'bench-host'
TARGET_CPU_S = 0.3
WAYS = ('adhoc', 'module', 'exploded')
PHASES = ('discovery', 'stores', 'full')
PHASE_TITLES = {
    'discovery': 'processes, sockets, MTA configuration (no stores, no probes)',
    'stores': '+ certificate store inspection',
    'full': '+ host probes (everything the module does)',
}
IMPORT_GROUPS = (('ansible_collections.mailsec', 'mailsec.starttls module_utils'),
                 ('ansible', 'ansible (module_utils, AnsiballZ loader)'),
                 ('cryptography', 'cryptography'), ('', 'standard library and the rest'))


# --------------------------------------------------------------------------------------------
# The lab
# --------------------------------------------------------------------------------------------

class LabSubset:
    def __init__(self, root: str | None, only: str):
        self.made_root = root is None
        self.root = os.path.realpath(root or benchlib.private_lab_root(DEFAULT_LAB_ROOT))
        self.only = only
        self.started_here = False
        self.manifest: dict = {}

    def start(self, isolated: bool) -> None:
        if isolated and not self.made_root and os.path.exists(os.path.join(self.root, 'manifest.json')):
            # Its daemons, if any, live outside these namespaces and cannot be seen from here:
            # starting a lab there would rewrite their configuration under them.
            raise RuntimeError(f'a lab runs (or ran) at {self.root}; isolated, the bench needs a root of its own: '
                               'leave out --lab-root')
        already = benchlib.lab_command('status', self.root, '--json', timeout_s=60)
        try:
            was_running = bool(json.loads(already.stdout).get('healthy'))
        except ValueError:
            was_running = False
        started = time.monotonic()
        completed = benchlib.lab_command('start', self.root, '--only', self.only, '--json', timeout_s=300)
        if completed.returncode != 0:
            raise RuntimeError(f'could not start the lab at {self.root} (--only {self.only}): '
                               f'{(completed.stderr or completed.stdout).strip()[-2000:]}')
        self.manifest = json.loads(completed.stdout)
        self.started_here = not was_running
        print(f"   lab at {self.root} (--only {self.only}) "
              f"{'started' if self.started_here else 'already running'} in {time.monotonic() - started:.1f} s",
              flush=True)

    def stop(self) -> None:
        completed = None
        if self.started_here:
            completed = benchlib.lab_command('stop', self.root)
            print(f'   {completed.stdout.strip() or completed.stderr.strip()}', flush=True)
        if self.made_root and (completed is None or completed.returncode == 0):
            shutil.rmtree(self.root, ignore_errors=True)

    @property
    def ca_file(self) -> str:
        return os.path.join(self.root, 'certs', 'lab-ca.crt')

    def shape(self) -> dict:
        daemons = self.manifest.get('daemons') or []
        listeners = self.manifest.get('listeners') or []
        return {'mtas': sorted({listener['mta'] for listener in listeners}),
                'instances': len(daemons),
                'instances_running': sum(1 for daemon in daemons if daemon.get('expect_starts')),
                'listeners_planned': len(listeners),
                'listeners_accepting': sum(1 for listener in listeners if listener['expect']['starts'])}


# --------------------------------------------------------------------------------------------
# Checking a result against the lab
# --------------------------------------------------------------------------------------------

def check_result(manifest: dict, result: dict | None) -> dict:
    """Every listener of a lab daemon that runs must be in the result, listening exactly when the
    lab says it accepts, and with the host's own probe when it does. A daemon that refuses to start
    (the lab's cert-missing Dovecot) has no process to be found from: its listeners are not asked for."""
    problems = []
    if not isinstance(result, dict) or not isinstance(result.get('listeners'), list):
        return {'mismatches': 1, 'examples': ['no module result'], 'facts': {}}
    if result.get('failed'):
        problems.append(f"module failed: {str(result.get('msg'))[:300]}")
    seen: dict = {}
    for record in result['listeners']:
        seen.setdefault((record.get('address'), record.get('port')), []).append(record)
    running_instances = {daemon['instance'] for daemon in manifest.get('daemons') or [] if daemon.get('expect_starts')}
    for listener in manifest.get('listeners') or []:
        if listener['instance'] not in running_instances:
            continue
        records = seen.get((listener['address'], listener['port']), [])
        where = listener['id']
        if not records:
            problems.append(f'{where}: not in the result')
            continue
        listening = any(record.get('listening') for record in records)
        if listening is not listener['expect']['starts']:
            problems.append(f"{where}: listening={listening}, the lab says {listener['expect']['starts']}")
        if listener['expect']['starts'] and not any(record.get('probe') for record in records):
            problems.append(f'{where}: no host probe attached')
    running = [mta for mta in result.get('mtas') or [] if mta.get('running')]
    facts = {
        'listener_records': len(result['listeners']),
        'listening': sum(1 for record in result['listeners'] if record.get('listening')),
        'probed': sum(1 for record in result['listeners'] if record.get('probe')),
        'mtas_running': sorted({mta.get('name') for mta in running}),
        'instances_running': len(running),
        'result_kib': len(json.dumps(result, default=str)) / 1024,
    }
    return {'mismatches': len(problems), 'examples': problems[:8], 'facts': facts}


def checker_self_test() -> list:
    """check_result must pass a correct result and catch each kind of wrong one; returns what it missed."""
    manifest = {
        'daemons': [{'instance': 'postfix-a', 'expect_starts': True},
                    {'instance': 'dovecot-broken', 'expect_starts': False}],
        'listeners': [
            {'id': 'postfix-a/127.0.10.1:25', 'instance': 'postfix-a', 'address': '127.0.10.1', 'port': 25,
             'expect': {'starts': True}},
            {'id': 'postfix-a/127.0.10.7:465', 'instance': 'postfix-a', 'address': '127.0.10.7', 'port': 465,
             'expect': {'starts': False}},
            {'id': 'dovecot-broken/127.0.30.2:143', 'instance': 'dovecot-broken', 'address': '127.0.30.2',
             'port': 143, 'expect': {'starts': False}},
        ]}

    def result() -> dict:
        return {'mtas': [{'name': 'postfix', 'running': True}], 'listeners': [
            {'address': '127.0.10.1', 'port': 25, 'listening': True, 'probe': {'starttls_advertised': True}},
            {'address': '127.0.10.7', 'port': 465, 'listening': False, 'probe': None}]}

    def without_listener(item: dict) -> dict:
        item['listeners'] = item['listeners'][1:]
        return item

    def not_listening(item: dict) -> dict:
        item['listeners'][0]['listening'] = False
        return item

    def without_probe(item: dict) -> dict:
        item['listeners'][0]['probe'] = None
        return item

    def dead_one_listening(item: dict) -> dict:
        item['listeners'][1]['listening'] = True
        return item

    def failed(item: dict) -> dict:
        item['failed'] = True
        return item

    missed = []
    if check_result(manifest, result())['mismatches'] != 0:
        missed.append('a correct result is reported wrong')
    for mutation in (without_listener, not_listening, without_probe, dead_one_listening, failed):
        if check_result(manifest, mutation(result()))['mismatches'] == 0:
            missed.append(f'not caught: {mutation.__name__}')
    if check_result(manifest, None)['mismatches'] == 0:
        missed.append('not caught: no result')
    return missed


def parse_module_output(text: str) -> dict | None:
    """A module process prints its result as one JSON document (possibly after other noise)."""
    start = text.find('{')
    while start != -1:
        try:
            return json.loads(text[start:])
        except ValueError:
            start = text.find('{', start + 1)
    return None


# --------------------------------------------------------------------------------------------
# The runs
# --------------------------------------------------------------------------------------------

class HostInfoBench:
    def __init__(self, arguments: argparse.Namespace, workdir: str, ansible: str, lab: LabSubset):
        self.arguments = arguments
        self.workdir = workdir
        self.ansible = ansible
        self.lab = lab
        self.python = arguments.host_python or os.path.join(os.path.dirname(ansible), 'python')
        self.collections_parent = benchlib.collection_tree(workdir)
        self.module_args = {'host': HOST_NAME, 'ca_file': lab.ca_file}
        self.run_counter = 0
        self.ansiballz: str | None = None

    def raw_path(self, name: str, suffix: str) -> str:
        return os.path.join(self.workdir, f'{self.run_counter:03d}-{name}{suffix}')

    def ansible_environment(self, keep_remote_files: bool = False) -> dict:
        return dict(os.environ,
                    ANSIBLE_COLLECTIONS_PATH=self.collections_parent, ANSIBLE_PYTHON_INTERPRETER=self.python,
                    ANSIBLE_STDOUT_CALLBACK='minimal', ANSIBLE_LOAD_CALLBACK_PLUGINS='0',
                    ANSIBLE_LOCALHOST_WARNING='0', ANSIBLE_INVENTORY_UNPARSED_WARNING='0', ANSIBLE_NOCOLOR='1',
                    ANSIBLE_HOME=os.path.join(self.workdir, 'ansible-home'),
                    ANSIBLE_LOCAL_TEMP=os.path.join(self.workdir, 'ansible-tmp'),
                    ANSIBLE_REMOTE_TEMP=os.path.join(self.workdir, 'remote-tmp'),
                    ANSIBLE_KEEP_REMOTE_FILES='1' if keep_remote_files else '0')

    def measure(self, way: str, command: list, env: dict | None = None) -> tuple:
        self.run_counter += 1
        stdout_path = self.raw_path(way, '.stdout')
        busy_before = benchlib.machine_busy_s()
        measured = benchlib.run_measured(command, stdout_path, self.raw_path(way, '.stderr'),
                                         self.arguments.run_timeout, env=env, cwd=self.workdir)
        busy_after = benchlib.machine_busy_s()
        with open(stdout_path, encoding='utf-8', errors='replace') as stdout_file:
            text = stdout_file.read()
        other_cpu_s, machine_share_other = benchlib.other_share(busy_before, busy_after, measured.cpu_s,
                                                                measured.wall_s)
        run = dict({'way': way}, **measured.figures(), other_cpu_s=other_cpu_s,
                   machine_share_other=machine_share_other)
        return run, text

    def adhoc_command(self) -> list:
        return [self.ansible, 'localhost', '-m', MODULE_NAME, '-a', json.dumps(self.module_args)]

    def prepare_module_file(self) -> None:
        """One unmeasured ad hoc run that keeps the AnsiballZ file; then unpack a copy of it and
        run it once so that the exploded variant's bytecode is cached."""
        run, text = self.measure('keep', self.adhoc_command(), env=self.ansible_environment(keep_remote_files=True))
        found = sorted(glob.glob(os.path.join(self.workdir, 'remote-tmp', '*', 'AnsiballZ_mta_tls_info.py')))
        if not found:
            raise RuntimeError(f'no AnsiballZ file kept (exit {run["exit_code"]}): {text.strip()[-500:]}')
        self.ansiballz = os.path.join(self.workdir, 'AnsiballZ_mta_tls_info.py')
        shutil.copy(found[-1], self.ansiballz)
        exploded_dir = os.path.join(self.workdir, 'exploded')
        os.makedirs(exploded_dir, exist_ok=True)
        self.exploded = os.path.join(exploded_dir, 'AnsiballZ_mta_tls_info.py')
        shutil.copy(found[-1], self.exploded)
        subprocess.run([self.python, self.exploded, 'explode'], check=True, capture_output=True, cwd=exploded_dir)
        subprocess.run([self.python, self.exploded, 'execute'], check=False, capture_output=True, cwd=exploded_dir,
                       env=self.bytecode_environment())

    @staticmethod
    def bytecode_environment() -> dict:
        env = dict(os.environ)
        env.pop('PYTHONDONTWRITEBYTECODE', None)
        return env

    def run(self, way: str) -> dict:
        if way == 'adhoc':
            run, text = self.measure(way, self.adhoc_command(), env=self.ansible_environment())
            result = benchlib.adhoc_result(text)
        elif way == 'module':
            # The environment Ansible gives a module process: the controller's, as with the local connection.
            run, text = self.measure(way, [self.python, self.ansiballz], env=dict(os.environ))
            result = parse_module_output(text)
        else:
            run, text = self.measure(way, [self.python, self.exploded, 'execute'], env=self.bytecode_environment())
            result = parse_module_output(text)
        cost = (result or {}).get('cost') or {}
        run['cost_cpu_s'] = cost.get('cpu_seconds')
        run['cost_wall_s'] = cost.get('wall_seconds')
        run['check'] = check_result(self.lab.manifest, result)
        if run['exit_code'] != 0 or run['timed_out']:
            run['check']['mismatches'] += 1
            run['check']['examples'].insert(0, f"exit {run['exit_code']}: {text.strip()[-300:]}")
        return run

    def run_phase(self, phase: str, profile_path: str | None = None) -> dict:
        """gather_host in a fresh process of the target's Python, with only the parts of a phase."""
        self.run_counter += 1
        job_path = self.raw_path(f'phase-{phase}', '-job.json')
        output_path = self.raw_path(f'phase-{phase}', '-out.json')
        with open(job_path, 'w', encoding='utf-8') as job_file:
            json.dump({'collections_parent': self.collections_parent, 'phase': phase, 'output': output_path,
                       'module_args': self.module_args, 'profile': profile_path}, job_file)
        completed = subprocess.run([self.python, os.path.abspath(__file__), '--phase-worker', job_path],
                                   capture_output=True, text=True, timeout=self.arguments.run_timeout, check=False)
        try:
            with open(output_path, encoding='utf-8') as output_file:
                return json.load(output_file)
        except (OSError, ValueError):
            return {'phase': phase, 'error': (completed.stderr or completed.stdout).strip()[-500:]}

    def import_times(self) -> dict:
        """Self import time per group in one module process (`-X importtime`), microseconds."""
        completed = subprocess.run([self.python, '-X', 'importtime', self.ansiballz], capture_output=True, text=True,
                                   timeout=self.arguments.run_timeout, check=False, env=dict(os.environ))
        groups = {title: 0 for _prefix, title in IMPORT_GROUPS}
        by_module: dict = {}
        modules = 0
        for line in completed.stderr.splitlines():
            if not line.startswith('import time:') or 'self [us]' in line:
                continue
            try:
                self_text, _cumulative, name = line.split(':', 1)[1].split('|')
                self_us, name = int(self_text), name.strip()
            except ValueError:
                continue
            modules += 1
            by_module[name] = by_module.get(name, 0) + self_us
            for prefix, title in IMPORT_GROUPS:
                if not prefix or name == prefix or name.startswith(prefix + '.'):
                    groups[title] += self_us
                    break
        slowest = sorted(by_module.items(), key=lambda item: -item[1])[:12]
        return {'modules': modules, 'self_us_by_group': groups, 'slowest_self_us': dict(slowest)}


def phase_worker(job_path: str) -> int:
    """Runs in the target's Python: gather_host wired as the module wires it, minus the parts a
    phase leaves out; CPU (self + children) and wall around gather_host alone, after imports."""
    with open(job_path, encoding='utf-8') as job_file:
        job = json.load(job_file)
    sys.path.insert(0, job['collections_parent'])
    output: dict = {'phase': job['phase']}
    try:
        from ansible_collections.mailsec.starttls.plugins.module_utils._certs import StoreInspector
        from ansible_collections.mailsec.starttls.plugins.module_utils._host import gather_host
        from ansible_collections.mailsec.starttls.plugins.module_utils._probe.engine import normalise_options
        from ansible_collections.mailsec.starttls.plugins.modules.mta_tls_info import host_prober
    except Exception as error:  # the collection may be half-written while others work on it
        output['error'] = f'import failed: {type(error).__name__}: {error}'
        with open(job['output'], 'w', encoding='utf-8') as output_file:
            json.dump(output, output_file)
        return 0
    inspector = StoreInspector(ca_file=job['module_args'].get('ca_file'), ca_path=None)

    class Inspector:
        @staticmethod
        def inspect(cert_path, key_path, chain_paths, reader_user, expected_names):
            return inspector.inspect(cert_path, key_path, chain_paths, reader_user, expected_names, expiring_days=30)

    phase = job['phase']
    probe = host_prober(normalise_options({'vantage': 'host'})) if phase == 'full' else None
    store_inspector = Inspector() if phase in ('stores', 'full') else None
    options = {'mtas': None, 'config_paths': {}, 'binaries': {}, 'use_tools': 'auto', 'scan_sockets': True,
               'extra_mail_ports': [], 'host': job['module_args'].get('host')}
    profiler = None
    if job.get('profile'):
        import cProfile
        profiler = cProfile.Profile()

    def cpu_now() -> tuple:
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime

    (own_before, children_before), started = cpu_now(), time.perf_counter()
    if profiler:
        profiler.enable()
    gathered = gather_host(options, probe=probe, store_inspector=store_inspector)
    if profiler:
        profiler.disable()
    own_after, children_after = cpu_now()
    tools: dict = {}
    for command in gathered.get('commands') or []:
        tool = os.path.basename(str((command.get('argv') or ['?'])[0]))
        entry = tools.setdefault(tool, {'count': 0, 'wall_s': 0.0})
        entry['count'] += 1
        entry['wall_s'] += command.get('seconds') or 0.0
    output.update(cpu_s=(own_after - own_before) + (children_after - children_before),
                  children_cpu_s=children_after - children_before, wall_s=time.perf_counter() - started,
                  cost=gathered.get('cost'), listeners=len(gathered.get('listeners') or []), tools=tools)
    if profiler:
        import io
        import pstats
        profiler.dump_stats(job['profile'] + '.prof')
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        stats.sort_stats('cumulative').print_stats(40)
        stats.sort_stats('tottime').print_stats(30)
        with open(job['profile'], 'w', encoding='utf-8') as profile_file:
            profile_file.write(text.getvalue())
    with open(job['output'], 'w', encoding='utf-8') as output_file:
        json.dump(output, output_file, default=repr)
    return 0


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------

def aggregate(way: str, runs: list) -> dict:
    other = benchlib.median_of(runs, 'machine_share_other')
    return {
        'way': way, 'runs': len(runs), 'wall_s': benchlib.median_of(runs, 'wall_s'), 'cpu_s': benchlib.median_of(runs, 'cpu_s'),
        'cost_cpu_s': benchlib.median_of(runs, 'cost_cpu_s'), 'cost_wall_s': benchlib.median_of(runs, 'cost_wall_s'),
        'cost_cpu_s_all': [run.get('cost_cpu_s') for run in runs],
        'peak_rss_mib': (benchlib.median_of(runs, 'peak_rss_kib') or 0) / 1024,
        'other_load_percent': 100 * other if other is not None else None,
        'max_mismatches': max(run['check']['mismatches'] for run in runs),
        'mismatch_examples': next((run['check']['examples'] for run in runs if run['check']['mismatches']), []),
        'facts': runs[-1]['check'].get('facts'),
    }


WAY_TITLES = {'adhoc': 'ansible ad hoc, whole tree', 'module': 'module process (AnsiballZ zip)',
              'exploded': 'module process, unzipped + .pyc'}


def print_table(summaries: list) -> None:
    header = (f"{'way':<34} {'runs':>4} {'wall s':>7} {'CPU s':>7} {'cost.cpu_s':>10} {'cost.wall_s':>11} "
              f"{'RSS MiB':>8} {'other%':>6} {'wrong':>5}")
    print(header)
    print('-' * len(header))
    for summary in summaries:
        fmt = benchlib.fmt
        print(f"{WAY_TITLES[summary['way']]:<34} {summary['runs']:>4} {fmt(summary['wall_s'], '7.2f')} "
              f"{fmt(summary['cpu_s'], '7.3f')} {fmt(summary['cost_cpu_s'], '10.3f')} "
              f"{fmt(summary['cost_wall_s'], '11.3f')} {summary['peak_rss_mib']:8.0f} "
              f"{fmt(summary['other_load_percent'], '6.0f')} {summary['max_mismatches']:>5}"
              + ('' if summary['max_mismatches'] == 0 else '  <-- WRONG RESULTS'))
        for example in summary['mismatch_examples'][:5]:
            print(f'         mismatch: {example}')
    benchlib.warn_if_noisy([summary['other_load_percent'] for summary in summaries])


def environment_facts(ansible: str, python: str, isolated: bool, lab: LabSubset) -> dict:
    return dict(benchlib.machine_facts(),
                ansible=(ansible, benchlib.version_of([ansible, '--version'])),
                target_python=(python, benchlib.version_of([python, '--version'])),
                cryptography=benchlib.version_of([python, '-c', 'import cryptography; print(cryptography.__version__)']),
                isolated=isolated, lab_root=lab.root, lab_only=lab.only)


def parse_arguments(argv: list | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--repeat', type=int,
                        help='runs per way and phase; the median is reported (default 5, smoke 1)')
    parser.add_argument('--smoke', action='store_true', help='CI mode: one run each, correctness only')
    parser.add_argument('--enforce', action='store_true', help='exit 1 when a target FAILs')
    parser.add_argument('--self-test', action='store_true',
                        help='only check the result checker against synthetic right and wrong results '
                             '(smoke does it too)')
    parser.add_argument('--no-isolate', dest='isolate', action='store_false',
                        help="run in the machine's network namespace (fails while another lab holds the addresses, "
                             'and the inspection then sees every other MTA on the machine too)')
    parser.add_argument('--lab-root', help=f'lab root (default: a fresh {DEFAULT_LAB_ROOT}-XXXXXXXX, removed after)')
    parser.add_argument('--only', default=DEFAULT_ONLY, help=f'MTAs of the lab to start (default {DEFAULT_ONLY})')
    parser.add_argument('--ansible', help='ansible executable (default: test venvs, PATH)')
    parser.add_argument('--host-python', help="the target's Python (default: the python next to ansible)")
    parser.add_argument('--profile', action='store_true',
                        help='also write a cProfile of one full gather_host to the results directory')
    parser.add_argument('--run-timeout', type=float, default=300.0)
    parser.add_argument('--results-dir', default=os.path.join(BENCH_DIR, 'results'))
    parser.add_argument('--keep-raw', action='store_true', help='keep every output in the results directory')
    parser.add_argument(benchlib.IN_NAMESPACE_FLAG, dest='in_namespace', action='store_true',
                        help=argparse.SUPPRESS)
    parser.add_argument('--phase-worker', metavar='JOB', help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list | None = None) -> int:
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    arguments = parse_arguments(raw_argv)
    if arguments.phase_worker:
        return phase_worker(arguments.phase_worker)
    if arguments.self_test:
        missed = checker_self_test()
        print(benchlib.self_test_line(missed))
        return 1 if missed else 0
    exit_code = benchlib.isolate(__file__, raw_argv, arguments.isolate, arguments.in_namespace)
    if exit_code is not None:
        return exit_code

    repeat = arguments.repeat or (1 if arguments.smoke else 5)
    checker_missed = checker_self_test() if arguments.smoke else None
    if checker_missed is not None:
        print(benchlib.self_test_line(checker_missed), flush=True)
    ansible = benchlib.find_ansible(arguments.ansible)
    if not ansible:
        print('bench: ansible not found (--ansible, tests/setup.sh)', file=sys.stderr)
        return 2
    lab = LabSubset(arguments.lab_root, arguments.only)
    workdir = tempfile.mkdtemp(prefix='mailsec-bench-hostinfo-')
    runs: dict = {way: [] for way in WAYS}
    phases: dict = {phase: [] for phase in PHASES}
    imports: dict = {}
    profile_path = None
    try:
        lab.start(arguments.in_namespace)
        bench = HostInfoBench(arguments, workdir, ansible, lab)
        facts = environment_facts(ansible, bench.python, arguments.in_namespace, lab)
        shape = lab.shape()
        print(f"mailsec.starttls host inspection bench, {facts['date']}, {facts['cpu']} x{facts['cores']}, "
              f"{facts['ansible'][1]}, target {facts['target_python'][1]}, cryptography {facts['cryptography']}, "
              f"load average {facts['loadavg_at_start']}", flush=True)
        print(f"== lab subset {lab.only}: {len(shape['mtas'])} MTAs ({', '.join(shape['mtas'])}), "
              f"{shape['instances_running']} running instances, {shape['listeners_accepting']} accepting listeners "
              f"({shape['listeners_planned']} configured){', private namespaces' if arguments.in_namespace else ''}; "
              f"{repeat} repeat(s)", flush=True)
        bench.prepare_module_file()
        for repetition in range(1, repeat + 1):
            for way in WAYS:
                run = bench.run(way)
                run['repetition'] = repetition
                runs[way].append(run)
                print(f"   run {repetition} {way:<8} wall {run['wall_s']:5.2f} s, CPU {run['cpu_s']:.3f} s, "
                      f"cost.cpu_seconds {benchlib.fmt(run['cost_cpu_s'], '.3f')}, "
                      f"rss {run['peak_rss_kib'] / 1024:.0f} MiB, {run['check']['mismatches']} wrong, "
                      f"others used {100 * run['machine_share_other']:.0f}% of the machine", flush=True)
            for phase in PHASES:
                phases[phase].append(bench.run_phase(phase))
        imports = bench.import_times()
        if arguments.profile:
            os.makedirs(arguments.results_dir, exist_ok=True)
            profile_path = os.path.join(arguments.results_dir, f'profile-hostinfo-{time.strftime("%Y%m%dT%H%M%S")}.txt')
            bench.run_phase('full', profile_path=profile_path)
    except (RuntimeError, subprocess.SubprocessError, OSError) as error:
        print(f'bench: {error}', file=sys.stderr)
        return 2
    finally:
        if arguments.keep_raw:
            shutil.copytree(workdir, os.path.join(arguments.results_dir,
                                                  f'raw-hostinfo-{time.strftime("%Y%m%dT%H%M%S")}'), symlinks=True)
        shutil.rmtree(workdir, ignore_errors=True)
        lab.stop()

    summaries = {way: aggregate(way, way_runs) for way, way_runs in runs.items() if way_runs}
    print()
    print_table(list(summaries.values()))
    result_facts = (summaries.get('adhoc') or {}).get('facts') or {}
    print(f"   the module found {len(result_facts.get('mtas_running', []))} running MTAs "
          f"({', '.join(result_facts.get('mtas_running', []))}) in {result_facts.get('instances_running')} instances, "
          f"{result_facts.get('listener_records')} listener records ({result_facts.get('listening')} listening, "
          f"{result_facts.get('probed')} probed from the host); "
          f"result {benchlib.fmt(result_facts.get('result_kib'), '.0f')} KiB")

    phase_summary = {}
    print('\nphases of gather_host (fresh process each, CPU self + children around gather_host alone):')
    previous = 0.0
    for phase in PHASES:
        values = [item['cpu_s'] for item in phases[phase] if isinstance(item.get('cpu_s'), (int, float))]
        errors = sorted({item['error'] for item in phases[phase] if item.get('error')})
        if not values:
            print(f'   {PHASE_TITLES[phase]:<62} no result: {errors[:1]}')
            continue
        cpu = statistics.median(values)
        phase_summary[phase] = {
            'cpu_s': cpu, 'step_cpu_s': cpu - previous,
            'wall_s': statistics.median(item['wall_s'] for item in phases[phase] if 'wall_s' in item),
            'children_cpu_s': statistics.median(item.get('children_cpu_s') or 0.0 for item in phases[phase]
                                                if 'cpu_s' in item),
            'tools': next((item['tools'] for item in phases[phase] if item.get('tools')), {})}
        print(f"   {PHASE_TITLES[phase]:<62} {cpu:.3f} s CPU ({cpu - previous:+.3f}), "
              f"{phase_summary[phase]['wall_s']:.3f} s wall; of the CPU, commands run: "
              f"{phase_summary[phase]['children_cpu_s']:.3f} s")
        previous = cpu
    tools = (phase_summary.get('discovery') or {}).get('tools') or {}
    if tools:
        print('   commands run by the discovery (count, wall): '
              + ', '.join(f"{tool} {entry['count']}x {entry['wall_s']:.3f} s"
                          for tool, entry in sorted(tools.items(), key=lambda item: -item[1]['wall_s'])))
    if imports:
        total_us = sum(imports['self_us_by_group'].values())
        print(f"\nimports of one module process (python -X importtime, {imports['modules']} modules, "
              f"{total_us / 1e6:.3f} s wall in all, compiling from the zip included):")
        for title, microseconds in imports['self_us_by_group'].items():
            print(f'   {title:<40} {microseconds / 1e6:.3f} s')
        print('   slowest single modules (self): ' + ', '.join(
            f"{name.replace('ansible_collections.mailsec.starttls.plugins.', '')} {microseconds / 1000:.0f} ms"
            for name, microseconds in imports['slowest_self_us'].items()))
    if profile_path:
        print(f'\ncProfile of one full gather_host: {profile_path} (+ .prof)')

    verdicts = []

    def add(target: str, ok: bool | None, detail: str) -> None:
        verdicts.append(benchlib.verdict(target, ok, detail))

    if checker_missed is not None:
        verdicts.append(benchlib.self_test_verdict(
            checker_missed, 'a correct synthetic result passes, six kinds of wrong one are caught'))
    for way, summary in summaries.items():
        verdicts.append(benchlib.correctness_verdict(f'{way} results correct', summary))
    adhoc = summaries.get('adhoc') or {}
    listening = result_facts.get('listening') or 0
    cost = adhoc.get('cost_cpu_s')
    shape_text = f"{len(result_facts.get('mtas_running', []))} MTAs, {listening} listening listeners"
    add(f'gather_host + probes (cost.cpu_seconds) <= {TARGET_CPU_S} s CPU per host'
        + (' (informative in smoke mode)' if arguments.smoke else ''),
        None if arguments.smoke or cost is None else cost <= TARGET_CPU_S,
        f"{benchlib.fmt(cost, '.3f')} s ({shape_text}"
        + (f', {1000 * cost / listening:.1f} ms per listener)' if cost and listening else ')'))
    module = summaries.get('module') or {}
    add(f'whole module process <= {TARGET_CPU_S} s CPU per host (informative)', None,
        f"{benchlib.fmt(module.get('cpu_s'), '.3f')} s (AnsiballZ zip), "
        f"{benchlib.fmt((summaries.get('exploded') or {}).get('cpu_s'), '.3f')} s unzipped with .pyc")

    return benchlib.finish(verdicts, arguments, f"bench-hostinfo{'-smoke' if arguments.smoke else ''}",
                           {'environment': facts, 'lab': shape, 'arguments': vars(arguments),
                            'summaries': summaries, 'phases': phase_summary, 'phase_runs': phases,
                            'imports': imports, 'runs': runs})


if __name__ == '__main__':
    sys.exit(main())
