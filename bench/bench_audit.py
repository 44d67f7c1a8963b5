# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark of the audit playbook over a fleet, against a ping playbook over the same fleet.

The fleet is N inventory hosts that are all the bundled demo mail host (tests/lab profile demo,
real Postfix and Dovecot on 127.0.60.1) reached with the local connection. In the same run, for
each --forks value and --repeat times (interleaved), the bench measures
  ping    a playbook with one `ansible.builtin.ping` task over the inventory
  audit   `ansible-playbook mailsec.starttls.audit` over the same inventory
and reports wall time, CPU of the whole process tree (controller, workers, modules) and the ratio
audit/ping of the median wall times. Every audit run's report is checked: each host has exactly
the demo's findings, and the controller probed each distinct listener once. See bench/README.md.

By default the bench runs in a private network, PID and mount namespace (`unshare`), with its own
demo host in it: nobody else's lab can take its addresses, stop its demo or show up in the host
inspection. --no-isolate uses (or starts) the demo host in the machine's own namespace.
"""

from __future__ import annotations

import argparse
import json
import os
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

AUDIT_PLAYBOOK = 'mailsec.starttls.audit'
# A demo host this bench starts gets a fresh root /tmp/bench-audit-demo-XXXXXXXX, removed afterwards.
DEFAULT_DEMO_ROOT = '/tmp/bench-audit-demo'
# Where a demo host may already run (demo/run.sh, the lab's default, the integration tests' lab).
KNOWN_DEMO_ROOTS = ('/tmp/mailsec-demo', '/tmp/mailsec-lab-it', '/tmp/mailsec-lab')
DEMO_ADDRESS = '127.0.60.1'
DEMO_ENDPOINTS = ((DEMO_ADDRESS, 25), (DEMO_ADDRESS, 587), (DEMO_ADDRESS, 143), (DEMO_ADDRESS, 993))
# The demo host is the KB Q237327 picture: Postfix port 25 advertises STARTTLS while its
# certificate file is absent (the configuration finding, and the 454 seen from both vantages);
# 587 and Dovecot's 143/993 are compliant. Every alias of it must get exactly these.
EXPECTED_DEMO_FINDINGS = frozenset({
    ('certificate-unreadable', DEMO_ADDRESS, 25, None),
    ('starttls-advertised-without-certificate', DEMO_ADDRESS, 25, 'host'),
    ('starttls-advertised-without-certificate', DEMO_ADDRESS, 25, 'controller'),
})
# Issue 11: the audit's wall time at most 1.6x the ping play's, and its CPU per host at most ping's + 0.2 s.
TARGET_RATIO = 1.6
TARGET_EXTRA_CPU_S_PER_HOST = 0.2
DEFAULT_FORKS = 5  # ansible-core's own default

PING_PLAYBOOK = """\
- name: Ping every host of the fleet (the bench's baseline)
  hosts: all
  gather_facts: false
  tasks:
    - name: Ping
      ansible.builtin.ping:
"""

# An aggregate callback, enabled for both playbooks alike: when each task started and ended, each
# mta_tls_info result's `cost`, and fleet_assess's probe count and summary, into one JSON file.
# It keeps a few numbers per result, so it costs the runs next to nothing.
TIMING_CALLBACK = '''\
from __future__ import annotations

DOCUMENTATION = """
name: mailsec_bench_timing
type: aggregate
short_description: task timings and audit figures for bench/bench_audit.py
description: Writes task timings, mta_tls_info costs and the fleet_assess summary to MAILSEC_BENCH_TIMING_OUT.
"""

import json
import os
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'mailsec_bench_timing'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.started = time.monotonic()
        self.tasks = []
        self.costs = []
        self.assess = None
        self.sizes = os.environ.get('MAILSEC_BENCH_RESULT_SIZES') == '1'

    def _now(self):
        return round(time.monotonic() - self.started, 4)

    def v2_playbook_on_task_start(self, task, is_conditional):
        self.tasks.append({'name': task.get_name(), 'action': task.action, 'start': self._now(),
                           'end': None, 'results': 0, 'failed': 0})

    def _record(self, result, failed=False):
        if self.tasks:
            self.tasks[-1]['results'] += 1
            self.tasks[-1]['failed'] += int(failed)
            self.tasks[-1]['end'] = self._now()
        data = result._result
        if self.sizes and self.tasks:
            size = len(json.dumps(data, default=str))
            self.tasks[-1]['result_bytes'] = self.tasks[-1].get('result_bytes', 0) + size
        cost = data.get('cost')
        if isinstance(cost, dict):
            self.costs.append(dict(cost, host=result._host.get_name(),
                                   listeners=len(data.get('listeners') or [])))
        if isinstance(data.get('probes'), int) and isinstance(data.get('summary'), dict):
            self.assess = {'probes': data['probes'], 'summary': data['summary'], 'msg': data.get('msg'),
                           'reports': data.get('reports')}
        if failed:
            self.tasks[-1].setdefault('messages', []).append(str(data.get('msg'))[:300])

    def v2_runner_on_ok(self, result):
        self._record(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, failed=True)

    def v2_runner_on_unreachable(self, result):
        self._record(result, failed=True)

    def v2_runner_on_skipped(self, result):
        self._record(result)

    def v2_playbook_on_stats(self, stats):
        path = os.environ.get('MAILSEC_BENCH_TIMING_OUT')
        if path:
            with open(path, 'w', encoding='utf-8') as output:
                json.dump({'total': self._now(), 'tasks': self.tasks, 'costs': self.costs,
                           'assess': self.assess}, output)
'''


# --------------------------------------------------------------------------------------------
# The demo host
# --------------------------------------------------------------------------------------------

def demo_running_at(root: str) -> bool:
    """A healthy lab at root whose listeners include the demo host's port 25."""
    completed = benchlib.lab_command('status', root, '--json', timeout_s=60)
    try:
        status = json.loads(completed.stdout)
    except ValueError:
        return False
    wanted = f'{DEMO_ADDRESS}:25'
    return bool(status.get('running') and status.get('healthy')
                and any(item['id'].endswith(wanted) for item in status.get('listeners', [])))


class DemoHost:
    """The demo host this bench audits: one already running, or one it starts (and stops)."""

    def __init__(self, root: str, started_here: bool, made_root: bool = False):
        self.root = os.path.realpath(root)
        self.started_here = started_here
        self.made_root = made_root
        self.ca_file = os.path.join(self.root, 'certs', 'lab-ca.crt')
        self.postfix_log = os.path.join(self.root, 'postfix-demo', 'maillog')
        self.dovecot_log = os.path.join(self.root, 'dovecot-demo', 'dovecot.log')

    @classmethod
    def obtain(cls, explicit_root: str | None, isolated: bool) -> DemoHost:
        if isolated and explicit_root and os.path.exists(os.path.join(explicit_root, 'manifest.json')):
            # Its daemons, if any, live outside these namespaces and cannot be seen from here:
            # starting a lab there would rewrite their configuration under them.
            raise RuntimeError(f'a lab runs (or ran) at {explicit_root}; isolated, the bench needs a root of '
                               'its own: leave out --demo-root, or use --no-isolate to audit that demo host')
        candidates = [explicit_root] if explicit_root else []
        if not isolated:
            candidates += [os.environ.get('MAILSEC_DEMO_ROOT') or '', *KNOWN_DEMO_ROOTS]
        for root in dict.fromkeys(candidate for candidate in candidates if candidate):
            if demo_running_at(root):
                return cls(root, started_here=False)
        if benchlib.accepting(DEMO_ADDRESS, 25):
            raise RuntimeError(f'{DEMO_ADDRESS}:25 is taken by a demo host whose lab root is not one of '
                               f'{", ".join(KNOWN_DEMO_ROOTS)}: pass --demo-root, or leave out --no-isolate')
        root = explicit_root or benchlib.private_lab_root(DEFAULT_DEMO_ROOT)
        started = time.monotonic()
        completed = benchlib.lab_command('start', root, '--profile', 'demo')
        if completed.returncode != 0:
            if not explicit_root:
                shutil.rmtree(root, ignore_errors=True)
            raise RuntimeError(f'could not start the demo host at {root}: '
                               f'{(completed.stderr or completed.stdout).strip()[-2000:]}')
        print(f'   started the demo host at {root} in {time.monotonic() - started:.1f} s', flush=True)
        return cls(root, started_here=True, made_root=not explicit_root)

    def up(self) -> bool:
        return all(benchlib.accepting(address, port) for address, port in DEMO_ENDPOINTS)

    def stop(self) -> None:
        if self.started_here:
            completed = benchlib.lab_command('stop', self.root)
            print(f'   {completed.stdout.strip() or completed.stderr.strip()}', flush=True)
            if self.made_root and completed.returncode == 0:
                shutil.rmtree(self.root, ignore_errors=True)

    def connection_counts(self) -> dict:
        """Probe sessions the demo's daemons have logged so far: Postfix sessions that said EHLO,
        Dovecot sessions that logged out (a bare health-check connection is neither)."""
        counts = {}
        for name, path, needles in (('postfix', self.postfix_log, (': disconnect from ', ' ehlo=')),
                                    ('dovecot', self.dovecot_log, ('imap-login: ', 'Aborted login by logging out'))):
            try:
                with open(path, encoding='utf-8', errors='replace') as log:
                    counts[name] = sum(1 for line in log if all(needle in line for needle in needles))
            except OSError:
                counts[name] = None
        return counts

    def settled_connection_counts(self, settle_s: float = 0.3, limit_s: float = 3.0) -> dict:
        """The counts once the daemons' log writers have caught up (unchanged for settle_s)."""
        deadline = time.monotonic() + limit_s
        counts = self.connection_counts()
        while time.monotonic() < deadline:
            time.sleep(settle_s)
            again = self.connection_counts()
            if again == counts:
                break
            counts = again
        return counts


# --------------------------------------------------------------------------------------------
# Checking an audit's report
# --------------------------------------------------------------------------------------------

def finding_signatures(finding: dict) -> list:
    """(id, address, port, vantage) for every sighting of a finding (one finding per fault lists
    all the vantages that saw it)."""
    listener = finding.get('listener') or {}
    vantages = finding.get('vantages') or [finding.get('vantage')]
    return [(finding.get('id'), listener.get('address'), listener.get('port'), vantage) for vantage in vantages]


def on_demo_address(address) -> bool:
    return isinstance(address, str) and address.startswith('127.0.60.')


def check_audit(report_path: str, timing: dict | None, hosts: list) -> dict:
    """Mismatches between one audit run and what N aliases of the demo host must give.

    Findings on the demo's address must be exactly EXPECTED_DEMO_FINDINGS for every host. Findings
    elsewhere come from this machine's other MTA configuration (the distribution's own Dovecot
    configuration, another lab when not isolated): they are not the demo's, but the same machine
    must give every alias the same ones. The controller must probe each distinct listening endpoint
    once (fleet_assess `probes`), and every listening listener must carry exactly one host probe
    and one controller probe.
    """
    problems: list = []
    facts: dict = {}
    try:
        with open(report_path, encoding='utf-8') as report_file:
            report = json.load(report_file)
    except (OSError, ValueError) as error:
        return {'mismatches': 1, 'examples': [f'no report: {error}'], 'facts': facts}
    summary = report.get('summary') or {}
    findings_by_host: dict = {host: set() for host in hosts}
    unknown_hosts = set()
    for finding in report.get('findings') or []:
        host = finding.get('host')
        if host not in findings_by_host:
            unknown_hosts.add(str(host))
            continue
        findings_by_host[host].update(finding_signatures(finding))
    if unknown_hosts:
        problems.append(f'findings for hosts not in the inventory: {sorted(unknown_hosts)[:5]}')
    environment_sets = set()
    for host, signatures in findings_by_host.items():
        demo = {signature for signature in signatures if on_demo_address(signature[1])}
        if demo != EXPECTED_DEMO_FINDINGS:
            missing = sorted(EXPECTED_DEMO_FINDINGS - demo, key=repr)
            extra = sorted(demo - EXPECTED_DEMO_FINDINGS, key=repr)
            problems.append(f'{host}: demo findings differ: missing {missing}, unexpected {extra}')
        environment_sets.add(frozenset(signatures - demo))
    if len(environment_sets) > 1:
        problems.append(f'hosts got {len(environment_sets)} different sets of non-demo findings '
                        '(the same machine must look the same to every alias)')
    environment = sorted(next(iter(environment_sets)), key=repr) if len(environment_sets) == 1 else []
    facts['environment_findings_per_host'] = len(environment)
    facts['environment_finding_ids'] = sorted({signature[0] for signature in environment})
    if summary.get('hosts') != len(hosts):
        problems.append(f"summary.hosts {summary.get('hosts')} != {len(hosts)}")

    listening_endpoints = set()
    attached: dict = {}
    for entry in report.get('listeners') or []:
        if entry.get('listening') is not True:
            continue
        endpoint = (entry.get('address'), entry.get('port'))
        listening_endpoints.add(endpoint)
        vantages = sorted(str(probe.get('vantage')) for probe in entry.get('probes') or [])
        attached[vantages == ['controller', 'host']] = attached.get(vantages == ['controller', 'host'], 0) + 1
        if vantages != ['controller', 'host'] and len(problems) < 50:
            problems.append(f"{entry.get('key')}: probes from {vantages}, want one host and one controller probe")
    missing_demo = sorted(set(DEMO_ENDPOINTS) - listening_endpoints)
    if missing_demo:
        problems.append(f'demo endpoints not seen listening: {missing_demo}')
    listening_listeners = sum(attached.values())
    facts.update(distinct_endpoints=len(listening_endpoints), listening_listeners=listening_listeners,
                 summary_probes=summary.get('probes'), summary_findings=summary.get('findings'),
                 summary_listeners=summary.get('listeners'))
    if summary.get('probes') != 2 * listening_listeners:
        problems.append(f"summary.probes {summary.get('probes')} != 2 x {listening_listeners} listening listeners")
    assess = (timing or {}).get('assess')
    controller_probes = assess.get('probes') if isinstance(assess, dict) else None
    facts['controller_probes'] = controller_probes
    if controller_probes != len(listening_endpoints):
        problems.append(f'fleet_assess probed {controller_probes} times, want once per distinct endpoint '
                        f'({len(listening_endpoints)})')
    return {'mismatches': len(problems), 'examples': problems[:8], 'facts': facts}


def synthetic_audit(hosts: list) -> tuple:
    """A report and callback timing as a correct audit of len(hosts) demo aliases gives them,
    with one environment finding per host, for the checker's own test."""
    findings, listeners = [], []
    for host in hosts:
        for rule, address, port, vantage in sorted(EXPECTED_DEMO_FINDINGS, key=repr):
            findings.append({'id': rule, 'host': host, 'listener': {'address': address, 'port': port},
                             'vantage': vantage})
        findings.append({'id': 'listener-drift', 'host': host, 'listener': {'address': '0.0.0.0', 'port': 110},
                         'vantage': None})
        for address, port in DEMO_ENDPOINTS:
            listeners.append({'key': f'{host}|{address}|{port}', 'address': address, 'port': port, 'listening': True,
                              'probes': [{'vantage': 'host'}, {'vantage': 'controller'}]})
        listeners.append({'key': f'{host}|0.0.0.0|110', 'address': '0.0.0.0', 'port': 110, 'listening': False,
                          'probes': []})
    report = {'summary': {'hosts': len(hosts), 'probes': 2 * len(DEMO_ENDPOINTS) * len(hosts),
                          'findings': len(findings), 'listeners': len(listeners)},
              'findings': findings, 'listeners': listeners}
    return report, {'assess': {'probes': len(DEMO_ENDPOINTS)}}


def checker_self_test(workdir: str) -> list:
    """The checker must pass a correct audit and catch each kind of wrong one; returns what it missed."""
    hosts = ['alias001', 'alias002', 'alias003']
    path = os.path.join(workdir, 'self-test-report.json')

    def mismatches(mutate) -> int:
        report, timing = synthetic_audit(hosts)
        mutate(report, timing)
        with open(path, 'w', encoding='utf-8') as report_file:
            json.dump(report, report_file)
        return check_audit(path, timing, hosts)['mismatches']

    def drop_host_probe_finding(report, _timing):
        report['findings'] = [finding for finding in report['findings'] if not (
            finding['host'] == 'alias002' and finding['vantage'] == 'host')]

    def add_demo_finding(report, _timing):
        report['findings'].append({'id': 'starttls-not-offered', 'host': 'alias003',
                                   'listener': {'address': DEMO_ADDRESS, 'port': 587}, 'vantage': None})

    def controller_probes_per_host(report, timing):
        timing['assess']['probes'] = len(DEMO_ENDPOINTS) * len(hosts)

    def duplicate_controller_probe(report, _timing):
        report['listeners'][0]['probes'].append({'vantage': 'controller'})

    def environment_differs(report, _timing):
        report['findings'].append({'id': 'listener-drift', 'host': 'alias001',
                                   'listener': {'address': '::', 'port': 110}, 'vantage': None})

    def host_missing(report, _timing):
        report['findings'] = [finding for finding in report['findings'] if finding['host'] != 'alias003']
        report['summary']['hosts'] = 2

    missed = []
    if mismatches(lambda _report, _timing: None) != 0:
        missed.append('a correct audit is reported wrong')
    for mutation in (drop_host_probe_finding, add_demo_finding, controller_probes_per_host,
                     duplicate_controller_probe, environment_differs, host_missing):
        if mismatches(mutation) == 0:
            missed.append(f'not caught: {mutation.__name__}')
    return missed


# --------------------------------------------------------------------------------------------
# The runs
# --------------------------------------------------------------------------------------------

def find_playbook_command(explicit: str | None) -> str | None:
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    ansible = benchlib.find_ansible(None)
    if not ansible:
        return None
    candidate = os.path.join(os.path.dirname(ansible), 'ansible-playbook')
    return candidate if os.access(candidate, os.X_OK) else None


class AuditBench:
    def __init__(self, arguments: argparse.Namespace, workdir: str, playbook_command: str, demo: DemoHost):
        self.arguments = arguments
        self.workdir = workdir
        self.playbook_command = playbook_command
        self.demo = demo
        self.collections_parent = benchlib.collection_tree(workdir)
        self.python = arguments.host_python or os.path.join(os.path.dirname(playbook_command), 'python')
        self.hosts = [f'alias{index:03d}' for index in range(1, arguments.hosts + 1)]
        self.run_counter = 0
        callback_dir = os.path.join(workdir, 'callback_plugins')
        os.makedirs(callback_dir, exist_ok=True)
        with open(os.path.join(callback_dir, 'mailsec_bench_timing.py'), 'w', encoding='utf-8') as callback:
            callback.write(TIMING_CALLBACK)
        self.callback_dir = callback_dir
        self.inventory = os.path.join(workdir, 'inventory.yml')
        with open(self.inventory, 'w', encoding='utf-8') as inventory:
            inventory.write(self.inventory_text(self.python))
        # The profiling runs reach the hosts through an interpreter wrapper that appends each module
        # process's own wall, CPU and peak RSS to a log (GNU time, a few ms per process).
        self.module_log = os.path.join(workdir, 'module-processes.log')
        self.profile_python = os.path.join(workdir, 'profile-python')
        with open(self.profile_python, 'w', encoding='utf-8') as wrapper:
            wrapper.write(f'#!/bin/sh\nexec {benchlib.GNU_TIME} -a -o {self.module_log} -f "%e %U %S %M" '
                          f'{self.python} "$@"\n')
        os.chmod(self.profile_python, 0o755)
        self.profile_inventory = os.path.join(workdir, 'inventory-profile.yml')
        with open(self.profile_inventory, 'w', encoding='utf-8') as inventory:
            inventory.write(self.inventory_text(self.profile_python))
        self.ping_playbook = os.path.join(workdir, 'ping.yml')
        with open(self.ping_playbook, 'w', encoding='utf-8') as playbook:
            playbook.write(PING_PLAYBOOK)

    def inventory_text(self, python: str) -> str:
        lines = ['# N aliases of the demo mail host, each reached with the local connection.', 'all:',
                 '  children:', '    fleet:', '      vars:', '        ansible_connection: local',
                 f'        ansible_python_interpreter: {json.dumps(python)}', '      hosts:']
        lines += [f'        {host}: {{}}' for host in self.hosts]
        return '\n'.join(lines) + '\n'

    def environment(self, timing_path: str, profile: bool = False) -> dict:
        return dict(os.environ, MAILSEC_BENCH_RESULT_SIZES='1' if profile else '0',
                    ANSIBLE_COLLECTIONS_PATH=self.collections_parent,
                    ANSIBLE_CALLBACK_PLUGINS=self.callback_dir,
                    ANSIBLE_CALLBACKS_ENABLED='mailsec_bench_timing',
                    MAILSEC_BENCH_TIMING_OUT=timing_path,
                    ANSIBLE_NOCOLOR='1', ANSIBLE_RETRY_FILES_ENABLED='0',
                    ANSIBLE_HOME=os.path.join(self.workdir, 'ansible-home'),
                    ANSIBLE_LOCAL_TEMP=os.path.join(self.workdir, 'ansible-tmp'),
                    ANSIBLE_REMOTE_TEMP=os.path.join(self.workdir, 'ansible-remote-tmp'))

    def raw_path(self, name: str, suffix: str) -> str:
        return os.path.join(self.workdir, f'{self.run_counter:03d}-{name}{suffix}')

    def run(self, playbook: str, forks: int, profile: bool = False, py_spy: str | None = None) -> dict:
        """One measured run. With profile, the hosts' interpreter is the accounting wrapper and the
        callback also measures result sizes; with py_spy, py-spy samples the whole process tree."""
        self.run_counter += 1
        timing_path = self.raw_path(playbook, '-timing.json')
        command = [self.playbook_command, '-i', self.profile_inventory if profile else self.inventory,
                   '-f', str(forks)]
        report_dir = None
        if playbook == 'ping':
            command.append(self.ping_playbook)
        else:
            report_dir = self.raw_path(playbook, '-reports')
            command += [AUDIT_PLAYBOOK, '-e', 'starttls_fail=false', '-e', f'starttls_ca_file={self.demo.ca_file}',
                        '-e', f'starttls_report_dir={report_dir}']
        if py_spy:
            command = [py_spy, 'record', '--subprocesses', '--rate', '100', '--format', 'raw',
                       '-o', self.raw_path(playbook, '-pyspy.txt'), '--'] + command
        if profile and os.path.exists(self.module_log):
            os.unlink(self.module_log)
        demo_up_before = self.demo.up()
        connections_before = self.demo.settled_connection_counts()
        busy_before = benchlib.machine_busy_s()
        measured = benchlib.run_measured(command, self.raw_path(playbook, '.stdout'),
                                         self.raw_path(playbook, '.stderr'), self.arguments.run_timeout,
                                         env=self.environment(timing_path, profile), cwd=self.workdir)
        busy_after = benchlib.machine_busy_s()
        connections_after = self.demo.settled_connection_counts()
        result = dict({'playbook': playbook, 'forks': forks, 'hosts': len(self.hosts)}, **measured.figures(),
                      demo_up_before=demo_up_before)
        # What this run did not use of the machine: other work competing for the cores.
        result['other_cpu_s'], result['machine_share_other'] = benchlib.other_share(
            busy_before, busy_after, measured.cpu_s, measured.wall_s)
        try:
            with open(timing_path, encoding='utf-8') as timing_file:
                timing = json.load(timing_file)
        except (OSError, ValueError):
            timing = None
        result['tasks'] = summarise_tasks(timing, len(self.hosts))
        if profile:
            result['module_processes'] = read_module_log(self.module_log)
        problems = []
        if measured.exit_code != 0 or measured.timed_out:
            problems.append(f'exit {measured.exit_code}{" (timed out)" if measured.timed_out else ""}: '
                            f'{benchlib.tail(self.raw_path(playbook, ".stdout"))}')
        if not demo_up_before:
            problems.append('the demo host was not accepting on all four listeners before the run')
        if timing is None:
            problems.append('no timing from the callback')
        if playbook == 'ping':
            oks = (result['tasks'] or [{}])[-1].get('results') if result['tasks'] else None
            if oks != len(self.hosts):
                problems.append(f'ping answered for {oks} of {len(self.hosts)} hosts')
            result['check'] = {'mismatches': len(problems), 'examples': problems, 'facts': {}}
            return result
        costs = (timing or {}).get('costs') or []
        result['module_cost'] = {
            'hosts': len(costs),
            'cpu_s_total': sum(cost.get('cpu_seconds') or 0.0 for cost in costs),
            'cpu_s_median': statistics.median([cost.get('cpu_seconds') or 0.0 for cost in costs]) if costs else None,
            'wall_s_median': statistics.median([cost.get('wall_seconds') or 0.0 for cost in costs]) if costs else None,
            'listeners_median': statistics.median([cost.get('listeners') or 0 for cost in costs]) if costs else None,
        }
        check = check_audit(os.path.join(report_dir, 'starttls-report.json'), timing, self.hosts)
        check['examples'] = problems + check['examples']
        check['mismatches'] += len(problems)
        sessions = {name: (connections_after[name] - connections_before[name])
                    if connections_after.get(name) is not None and connections_before.get(name) is not None else None
                    for name in connections_after}
        # Each host probes its four listeners, the controller each of them once: N + 1 sessions on
        # each of Postfix's two ports and Dovecot's two. Only judged on a demo host this bench owns:
        # on a shared one, other people's probes land in the same logs.
        expected_sessions = 2 * (len(self.hosts) + 1)
        check['facts']['server_sessions'] = sessions
        check['facts']['server_sessions_expected'] = expected_sessions
        if self.demo.started_here:
            for name, count in sessions.items():
                if count is not None and count != expected_sessions:
                    check['mismatches'] += 1
                    check['examples'].append(f'{name} logged {count} sessions, want {expected_sessions} '
                                             '(N host probes + 1 controller probe per listener)')
        result['check'] = check
        return result


def read_module_log(path: str) -> dict:
    """The accounting wrapper's log: one `wall user sys maxrss_kib` line per module process."""
    cpu, wall, rss = [], [], []
    try:
        with open(path, encoding='ascii', errors='replace') as log:
            for line in log:
                fields = line.split()
                try:
                    wall.append(float(fields[0]))
                    cpu.append(float(fields[1]) + float(fields[2]))
                    rss.append(int(fields[3]))
                except (ValueError, IndexError):
                    continue  # GNU time's own notes (e.g. "Command exited with non-zero status")
    except OSError:
        pass
    return {'count': len(cpu), 'cpu_s_total': sum(cpu), 'cpu_s_median': statistics.median(cpu) if cpu else None,
            'wall_s_median': statistics.median(wall) if wall else None,
            'peak_rss_mib_max': max(rss) / 1024 if rss else None}


def summarise_tasks(timing: dict | None, hosts: int) -> list | None:
    """Per task: wall from its start to the next task's start (the last: to the end of the play)."""
    if not timing:
        return None
    tasks = timing.get('tasks') or []
    rows = []
    for index, task in enumerate(tasks):
        following = tasks[index + 1]['start'] if index + 1 < len(tasks) else timing.get('total')
        rows.append({'name': task['name'], 'action': task['action'], 'results': task['results'],
                     'failed': task['failed'], 'wall_s': (following or task['start']) - task['start'],
                     'start_s': task['start'], 'result_bytes': task.get('result_bytes')})
    return rows


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------

def aggregate(runs: list) -> dict:
    first = runs[0]
    hosts = first['hosts']
    wall_s, cpu_s = benchlib.median_of(runs, 'wall_s'), benchlib.median_of(runs, 'cpu_s')
    other = benchlib.median_of(runs, 'machine_share_other')
    summary = {
        'playbook': first['playbook'], 'forks': first['forks'], 'hosts': hosts, 'runs': len(runs),
        'wall_s': wall_s, 'wall_s_all': [round(run['wall_s'], 2) for run in runs],
        'cpu_s': cpu_s, 'cpu_s_per_host': cpu_s / hosts if cpu_s is not None else None,
        'peak_rss_mib': (benchlib.median_of(runs, 'peak_rss_kib') or 0) / 1024,
        'other_load_percent': 100 * other if other is not None else None,
        'max_mismatches': max(run['check']['mismatches'] for run in runs),
        'mismatch_examples': next((run['check']['examples'] for run in runs if run['check']['mismatches']), []),
    }
    task_walls: dict = {}
    for run in runs:
        for task in run.get('tasks') or []:
            task_walls.setdefault(task['name'], []).append(task['wall_s'])
    summary['task_wall_s'] = {name: statistics.median(values) for name, values in task_walls.items()}
    costs = [run['module_cost'] for run in runs if run.get('module_cost')]
    if costs:
        summary['module_cpu_s_total'] = statistics.median([cost['cpu_s_total'] for cost in costs])
        summary['module_cpu_s_per_host'] = statistics.median([cost['cpu_s_median'] or 0.0 for cost in costs])
        summary['module_wall_s_per_host'] = statistics.median([cost['wall_s_median'] or 0.0 for cost in costs])
        summary['module_listeners_per_host'] = costs[0]['listeners_median']
    facts = [run['check'].get('facts') for run in runs if run['check'].get('facts')]
    if facts:
        summary['check_facts'] = facts[-1]
    return summary


def print_table(summaries: list) -> None:
    header = (f"{'playbook':<8} {'forks':>5} {'hosts':>5} {'wall s':>8} {'cpu s':>8} {'cpu s/host':>10} "
              f"{'RSS MiB':>8} {'other%':>6} {'wrong':>6}  runs (wall s)")
    print(header)
    print('-' * len(header))
    for summary in summaries:
        wrong = summary['max_mismatches']
        print(f"{summary['playbook']:<8} {summary['forks']:>5} {summary['hosts']:>5} "
              f"{benchlib.fmt(summary['wall_s'], '8.2f')} {benchlib.fmt(summary['cpu_s'], '8.2f')} "
              f"{benchlib.fmt(summary['cpu_s_per_host'], '10.3f')} {summary['peak_rss_mib']:8.0f} "
              f"{benchlib.fmt(summary['other_load_percent'], '6.0f')} {wrong:>6}  "
              f"{', '.join(f'{wall:.2f}' for wall in summary['wall_s_all'])}"
              + ('' if wrong == 0 else '  <-- WRONG RESULTS'))
        for example in summary['mismatch_examples'][:5]:
            print(f'         mismatch: {example}')
    benchlib.warn_if_noisy([summary['other_load_percent'] for summary in summaries])


def print_breakdown(ping: dict, audit: dict) -> dict:
    """Where the audit's extra time and CPU go, from the callback's task timings and the module's cost."""
    hosts = audit['hosts']
    breakdown = {'extra_wall_s': audit['wall_s'] - ping['wall_s'], 'extra_cpu_s': audit['cpu_s'] - ping['cpu_s'],
                 'ping_task_wall_s': sum(ping['task_wall_s'].values()), 'audit_task_wall_s': audit['task_wall_s'],
                 'module_cpu_s_total': audit.get('module_cpu_s_total'),
                 'module_cpu_s_per_host': audit.get('module_cpu_s_per_host'),
                 'module_wall_s_per_host': audit.get('module_wall_s_per_host')}
    print(f"   forks {audit['forks']}: audit - ping = {breakdown['extra_wall_s']:+.2f} s wall, "
          f"{breakdown['extra_cpu_s']:+.2f} s CPU ({breakdown['extra_cpu_s'] / hosts:+.3f} s CPU per host)")
    print(f"     ping  task wall: {', '.join(f'{name} {wall:.2f} s' for name, wall in ping['task_wall_s'].items())}")
    for name, wall in audit['task_wall_s'].items():
        print(f'     audit task wall: {wall:7.2f} s  {name}')
    if audit.get('module_cpu_s_total') is not None:
        print(f"     mta_tls_info's own cost (gather_host + host probes, from its `cost`): "
              f"{audit['module_cpu_s_total']:.2f} s CPU in all, {audit['module_cpu_s_per_host']:.3f} s CPU and "
              f"{audit['module_wall_s_per_host']:.3f} s wall per host ({audit.get('module_listeners_per_host')} "
              f"listeners per host); the rest is module start-up (compiling, imports: see --profile), Ansible's "
              f"per-task work and the run-once task")
    return breakdown


def run_profile(bench: AuditBench, arguments: argparse.Namespace, forks: int) -> dict:
    """Extra runs, not part of the medians: where each playbook's CPU goes (module processes vs the
    controller), how big the results are, and with py-spy the hot spots of the whole tree."""
    hosts = len(bench.hosts)
    print(f'\n== profile: one more run of each playbook at forks {forks}, hosts reached through an accounting '
          'wrapper', flush=True)
    profile: dict = {'forks': forks}
    for playbook in ('ping', 'audit'):
        result = bench.run(playbook, forks, profile=True)
        modules = result.get('module_processes') or {}
        controller_cpu = result['cpu_s'] - modules.get('cpu_s_total', 0.0)
        result_bytes = sum(task.get('result_bytes') or 0 for task in result.get('tasks') or [])
        profile[playbook] = {'wall_s': result['wall_s'], 'cpu_s': result['cpu_s'], 'module_processes': modules,
                             'controller_cpu_s': controller_cpu, 'result_bytes_per_host': result_bytes / hosts,
                             'tasks': result.get('tasks'), 'module_cost': result.get('module_cost'),
                             'mismatches': result['check']['mismatches'],
                             'other_load_percent': 100 * result['machine_share_other']}
        own = result.get('module_cost') or {}
        print(f"   {playbook:<5} wall {result['wall_s']:.2f} s, CPU {result['cpu_s']:.2f} s = "
              f"{modules.get('count', 0)} module processes {modules.get('cpu_s_total', 0.0):.2f} s "
              f"({benchlib.fmt(modules.get('cpu_s_median'), '.3f')} s each, "
              f"{benchlib.fmt(modules.get('peak_rss_mib_max'), '.0f')} MiB peak) + controller and workers "
              f"{controller_cpu:.2f} s ({controller_cpu / hosts:.3f} s/host); results "
              f"{result_bytes / hosts / 1024:.1f} KiB/host; others used {100 * result['machine_share_other']:.0f}%"
              + (f"; of each module process, gather_host + probes (`cost`) {own.get('cpu_s_median'):.3f} s"
                 if own.get('cpu_s_median') is not None else ''), flush=True)
    py_spy = benchlib.find_bench_tool('py-spy')
    if py_spy and arguments.py_spy:
        result = bench.run('audit', forks, py_spy=py_spy)
        raw = bench.raw_path('audit', '-pyspy.txt')
        stamp = time.strftime('%Y%m%dT%H%M%S')
        destination = os.path.join(arguments.results_dir, f'pyspy-audit-{stamp}.txt')
        os.makedirs(arguments.results_dir, exist_ok=True)
        if os.path.exists(raw):
            shutil.copy(raw, destination)
            with open(destination + '.top.txt', 'w', encoding='utf-8') as top_file:
                top_file.write(benchlib.collapsed_top(raw))
            profile['py_spy'] = {'samples': destination, 'by_process': samples_by_process(raw)}
            print(f"   py-spy of one audit run (wall {result['wall_s']:.2f} s with the sampler on): {destination}"
                  f"{{,.top.txt}}; samples by process: "
                  + ', '.join(f'{name} {share:.0f}%' for name, share in profile['py_spy']['by_process'].items()),
                  flush=True)
    elif arguments.py_spy:
        print('   py-spy not found (bench/setup.sh installs it)', flush=True)
    if profile.get('ping') and profile.get('audit'):
        profile['breakdown'] = cost_breakdown(profile['ping'], profile['audit'], hosts)
    return profile


def cost_breakdown(ping: dict, audit: dict, hosts: int) -> dict:
    """The audit's CPU per host against ping's, split as far as the profiling runs can tell: the module
    process's start (interpreter, AnsiballZ unpacking, Ansible's module_utils: what ping's module process
    costs), the collection's imports and the result's encoding (the rest of the module process), the
    inspection itself (`cost` of mta_tls_info), and the controller (result transfer and decoding, the
    second per-host task, the run-once tasks: the controller and workers' CPU beyond ping's)."""
    ping_module = (ping['module_processes'] or {}).get('cpu_s_median') or 0.0
    audit_modules = audit['module_processes'] or {}
    audit_module = audit_modules.get('cpu_s_median') or 0.0
    # The audit's module processes: the argument-spec check runs none; mta_tls_info one per host.
    inspection = ((audit.get('module_cost') or {}).get('cpu_s_median')) or 0.0
    rows = {
        'process start (ping module process)': ping_module,
        'collection imports + result encoding': max(0.0, audit_module - ping_module - inspection),
        'inspection (gather_host + host probes)': inspection,
        'controller and workers, per host': audit['controller_cpu_s'] / hosts,
    }
    breakdown = {'audit_cpu_s_per_host': audit['cpu_s'] / hosts, 'ping_cpu_s_per_host': ping['cpu_s'] / hosts,
                 'ping_controller_cpu_s_per_host': ping['controller_cpu_s'] / hosts,
                 'audit_result_kib_per_host': audit['result_bytes_per_host'] / 1024,
                 'ping_result_kib_per_host': ping['result_bytes_per_host'] / 1024, 'rows': rows}
    print(f"   CPU per host: audit {breakdown['audit_cpu_s_per_host']:.3f} s, ping {breakdown['ping_cpu_s_per_host']:.3f} s "
          f"(+{breakdown['audit_cpu_s_per_host'] - breakdown['ping_cpu_s_per_host']:.3f} s); of the audit's:")
    for name, value in rows.items():
        print(f'     {value:6.3f} s  {name}')
    print(f"     (ping: module process {ping_module:.3f} s, controller and workers "
          f"{breakdown['ping_controller_cpu_s_per_host']:.3f} s per host; results "
          f"{breakdown['audit_result_kib_per_host']:.1f} KiB/host for the audit, "
          f"{breakdown['ping_result_kib_per_host']:.1f} KiB/host for ping)", flush=True)
    return breakdown


def samples_by_process(path: str) -> dict:
    """Share of py-spy samples per kind of process, by the innermost `process` frame of each stack
    (py-spy --subprocesses nests them): the controller's main process, its forked workers, the
    shells they start, the module processes (AnsiballZ)."""
    counts: dict = {}
    total = 0
    for frames, count in benchlib.collapsed_stacks(path):
        processes = [frame for frame in frames if frame.startswith('process ')]
        innermost = processes[-1] if processes else ''
        if 'AnsiballZ' in innermost and 'bin/sh' not in innermost:
            kind = 'module processes'
        elif 'bin/sh' in innermost:
            kind = 'shells'
        elif 'ansible-playbook' in innermost:
            kind = 'controller main' if len(processes) == 1 else 'forked workers'
        else:
            kind = 'other'
        counts[kind] = counts.get(kind, 0) + count
        total += count
    return {kind: 100 * count / max(total, 1) for kind, count in sorted(counts.items(), key=lambda item: -item[1])}


def environment_facts(playbook_command: str, isolated: bool, demo: DemoHost) -> dict:
    return dict(benchlib.machine_facts(),
                ansible_playbook=(playbook_command, benchlib.version_of([playbook_command, '--version'])),
                isolated=isolated, demo_root=demo.root, demo_started_here=demo.started_here)


def parse_arguments(argv: list | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--hosts', type=int, help='inventory size (default 100, smoke 5)')
    parser.add_argument('--repeat', type=int, help='runs per playbook and forks value; the median is reported '
                                                   '(default 3, smoke 1)')
    parser.add_argument('--forks', help='comma-separated forks values (default 5,10,20; smoke 5); ping and audit '
                                        'are compared at the same value, the target is judged at 5')
    parser.add_argument('--smoke', action='store_true',
                        help='CI mode: 5 hosts, one run, forks 5, correctness only (the ratio is informative)')
    parser.add_argument('--enforce', action='store_true', help='exit 1 when a target FAILs')
    parser.add_argument('--self-test', action='store_true',
                        help='only check the result checker against synthetic right and wrong audits '
                             '(smoke does it too)')
    parser.add_argument('--no-isolate', dest='isolate', action='store_false',
                        help="run in the machine's network namespace, using a demo host already running there")
    parser.add_argument('--demo-root', help='lab root of the demo host (default: with --no-isolate a running one; '
                                            f'else start one in a fresh {DEFAULT_DEMO_ROOT}-XXXXXXXX, removed after)')
    parser.add_argument('--ansible-playbook', help='ansible-playbook executable (default: test venvs, PATH)')
    parser.add_argument('--host-python', help='ansible_python_interpreter of the aliases (default: the python '
                                              'next to ansible-playbook)')
    parser.add_argument('--run-timeout', type=float, default=900.0, help='seconds before one run is killed')
    parser.add_argument('--profile', action='store_true',
                        help='after the measured runs, one more run of each playbook through an interpreter wrapper '
                             'that accounts each module process: module vs controller CPU, result sizes')
    parser.add_argument('--py-spy', action='store_true',
                        help='with --profile, also sample one audit run with py-spy (bench/setup.sh installs it)')
    parser.add_argument('--results-dir', default=os.path.join(BENCH_DIR, 'results'))
    parser.add_argument('--keep-raw', action='store_true',
                        help='keep every run output and report in the results directory')
    parser.add_argument(benchlib.IN_NAMESPACE_FLAG, dest='in_namespace', action='store_true', help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list | None = None) -> int:
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    arguments = parse_arguments(raw_argv)
    if arguments.self_test:
        with tempfile.TemporaryDirectory(prefix='mailsec-bench-audit-check-') as check_dir:
            missed = checker_self_test(check_dir)
        print(benchlib.self_test_line(missed))
        return 1 if missed else 0
    exit_code = benchlib.isolate(__file__, raw_argv, arguments.isolate, arguments.in_namespace)
    if exit_code is not None:
        return exit_code

    hosts = arguments.hosts or (5 if arguments.smoke else 100)
    arguments.hosts = hosts
    repeat = arguments.repeat or (1 if arguments.smoke else 3)
    forks_values = [int(value) for value in (arguments.forks or ('5' if arguments.smoke else '5,10,20')).split(',')]
    checker_missed = None
    if arguments.smoke:
        with tempfile.TemporaryDirectory(prefix='mailsec-bench-audit-check-') as check_dir:
            checker_missed = checker_self_test(check_dir)
        print(benchlib.self_test_line(checker_missed), flush=True)
    playbook_command = find_playbook_command(arguments.ansible_playbook)
    if not playbook_command:
        print('bench: ansible-playbook not found (--ansible-playbook, tests/setup.sh)', file=sys.stderr)
        return 2
    try:
        demo = DemoHost.obtain(arguments.demo_root, arguments.in_namespace)
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        print(f'bench: {error}', file=sys.stderr)
        return 2
    workdir = tempfile.mkdtemp(prefix='mailsec-bench-audit-')
    runs: dict = {}
    profile = None
    try:
        facts = environment_facts(playbook_command, arguments.in_namespace, demo)
        print(f"mailsec.starttls audit bench, {facts['date']}, {facts['cpu']} x{facts['cores']}, "
              f"{facts['ansible_playbook'][1]}, load average {facts['loadavg_at_start']}", flush=True)
        print(f"== {hosts} aliases of the demo host {DEMO_ADDRESS} (lab root {demo.root}"
              f"{', started by this bench' if demo.started_here else ', already running'}"
              f"{', private namespaces' if arguments.in_namespace else ''}), {repeat} repeat(s), "
              f"forks {', '.join(map(str, forks_values))}", flush=True)
        bench = AuditBench(arguments, workdir, playbook_command, demo)
        for repetition in range(1, repeat + 1):
            for forks in forks_values:
                for playbook in ('ping', 'audit'):
                    result = bench.run(playbook, forks)
                    result['repetition'] = repetition
                    runs.setdefault((forks, playbook), []).append(result)
                    extra = ''
                    if playbook == 'audit':
                        audit_facts = result['check'].get('facts') or {}
                        extra = (f", {audit_facts.get('controller_probes')} controller probes for "
                                 f"{audit_facts.get('distinct_endpoints')} endpoints, module "
                                 f"{benchlib.fmt((result.get('module_cost') or {}).get('cpu_s_median'), '.3f')} "
                                 f"s CPU/host")
                    print(f"   run {repetition} forks {forks:>2} {playbook:<5} wall {result['wall_s']:6.2f} s, "
                          f"cpu {result['cpu_s']:6.2f} s, rss {result['peak_rss_kib'] / 1024:.0f} MiB, "
                          f"{result['check']['mismatches']} wrong{extra}, others used "
                          f"{100 * result['machine_share_other']:.0f}% of the machine", flush=True)
        if arguments.profile:
            profile = run_profile(bench, arguments, forks_values[0] if DEFAULT_FORKS not in forks_values
                                  else DEFAULT_FORKS)
    finally:
        if arguments.keep_raw:
            shutil.copytree(workdir, os.path.join(arguments.results_dir,
                                                  f'raw-audit-{time.strftime("%Y%m%dT%H%M%S")}'), symlinks=True)
        shutil.rmtree(workdir, ignore_errors=True)
        demo.stop()

    summaries = {key: aggregate(key_runs) for key, key_runs in runs.items()}
    print()
    print_table([summaries[key] for key in sorted(summaries)])
    ratios = {}
    breakdowns = {}
    print('\nratio audit/ping (median wall):')
    for forks in forks_values:
        ping, audit = summaries.get((forks, 'ping')), summaries.get((forks, 'audit'))
        if ping and audit and ping['wall_s']:
            ratios[forks] = audit['wall_s'] / ping['wall_s']
            print(f"   forks {forks:>2}: {audit['wall_s']:.2f} / {ping['wall_s']:.2f} s = {ratios[forks]:.2f}x "
                  f"(CPU {audit['cpu_s']:.2f} / {ping['cpu_s']:.2f} s = {audit['cpu_s'] / ping['cpu_s']:.2f}x)")
    print('\nwhere the time goes:')
    for forks in forks_values:
        ping, audit = summaries.get((forks, 'ping')), summaries.get((forks, 'audit'))
        if ping and audit:
            breakdowns[forks] = print_breakdown(ping, audit)
    best = {}
    for playbook in ('ping', 'audit'):
        measured = [(summaries[(forks, playbook)]['wall_s'], forks) for forks in forks_values
                    if (forks, playbook) in summaries]
        if measured:
            best[playbook] = min(measured)[1]
    if len(forks_values) > 1:
        print('\nbest forks (lowest median wall): '
              + ', '.join(f"{playbook} -f {forks} ({summaries[(forks, playbook)]['wall_s']:.2f} s)"
                          for playbook, forks in best.items()))

    verdicts = []

    def add(target: str, ok: bool | None, detail: str) -> None:
        verdicts.append(benchlib.verdict(target, ok, detail))

    if checker_missed is not None:
        verdicts.append(benchlib.self_test_verdict(
            checker_missed, 'a correct synthetic audit passes, six kinds of wrong one are caught'))
    for forks in forks_values:
        for playbook in ('ping', 'audit'):
            verdicts.append(benchlib.correctness_verdict(f'{playbook} -f {forks} results correct',
                                                         summaries.get((forks, playbook))))
    judged_forks = DEFAULT_FORKS if DEFAULT_FORKS in ratios else (forks_values[0] if forks_values else None)
    for forks, ratio in ratios.items():
        judged = forks == judged_forks and not arguments.smoke
        detail = (f"{summaries[(forks, 'audit')]['wall_s']:.2f} s vs {summaries[(forks, 'ping')]['wall_s']:.2f} s "
                  f"= {ratio:.2f}x at N={hosts}")
        add(f'audit wall <= {TARGET_RATIO}x ping wall, -f {forks}' + ('' if judged else ' (informative)'),
            (ratio <= TARGET_RATIO) if judged else None, detail)
        extra_cpu = summaries[(forks, 'audit')]['cpu_s_per_host'] - summaries[(forks, 'ping')]['cpu_s_per_host']
        add(f'audit CPU per host <= ping + {TARGET_EXTRA_CPU_S_PER_HOST} s, -f {forks}'
            + ('' if judged else ' (informative)'),
            (extra_cpu <= TARGET_EXTRA_CPU_S_PER_HOST) if judged else None,
            f"{summaries[(forks, 'audit')]['cpu_s_per_host']:.3f} s vs {summaries[(forks, 'ping')]['cpu_s_per_host']:.3f} s "
            f"= {extra_cpu:+.3f} s per host")

    return benchlib.finish(verdicts, arguments, f"bench-audit{'-smoke' if arguments.smoke else ''}",
                           {'environment': facts, 'arguments': dict(vars(arguments)),
                            'summaries': list(summaries.values()), 'ratios': ratios, 'best_forks': best,
                            'breakdowns': breakdowns, 'profile': profile,
                            'runs': [run for key_runs in runs.values() for run in key_runs]})


if __name__ == '__main__':
    sys.exit(main())
