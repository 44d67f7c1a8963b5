# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the bench scripts share: measuring a process tree, the machine's load, finding the tools,
the collection tree Ansible loads, private namespaces and lab roots, and reporting targets.

Standard library only; runs on the controller's Python.
"""

from __future__ import annotations

import datetime
import glob
import json
import os
import platform
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
COLLECTION_ROOT = os.path.dirname(BENCH_DIR)
CACHE_DIR = os.environ.get('MAILSEC_CACHE', os.path.expanduser('~/.cache/mailsec-starttls'))
LAB_SCRIPT = os.path.join(COLLECTION_ROOT, 'tests', 'lab', 'mta_lab.py')
# Above this share of the machine used by other work, wall times are depressed: the tables say so.
NOISY_LOAD_PERCENT = 15.0
# The argument a bench script gets when it runs again inside its own namespaces.
IN_NAMESPACE_FLAG = '--in-namespace'


# --------------------------------------------------------------------------------------------
# Measuring one child process tree
# --------------------------------------------------------------------------------------------

class Measured:
    """What one run of one process cost, from the kernel's accounting of its tree."""

    def __init__(self, exit_code: int, wall_s: float, cpu_s: float, peak_rss_kib: int, timed_out: bool):
        self.exit_code = exit_code
        self.wall_s = wall_s
        self.cpu_s = cpu_s
        self.peak_rss_kib = peak_rss_kib
        self.timed_out = timed_out

    def figures(self) -> dict:
        """The figures of one run, as a bench records them in its results."""
        return {'wall_s': self.wall_s, 'cpu_s': self.cpu_s, 'peak_rss_kib': self.peak_rss_kib,
                'exit_code': self.exit_code, 'timed_out': self.timed_out}


# A child forked from this (large) process starts with this process's peak RSS as its own and keeps it
# across exec (Linux carries the old high-water mark into signal->maxrss), so wait4 on a direct child
# over-reports its peak. A tiny launcher in between (GNU time, else a bare Python) measures it instead.
GNU_TIME = '/usr/bin/time'
LAUNCHER = (
    'import os, sys\n'
    'pid = os.fork()\n'
    'if pid == 0:\n'
    '    os.execvp(sys.argv[2], sys.argv[2:])\n'
    '_pid, status, usage = os.wait4(pid, 0)\n'
    'open(sys.argv[1], "w").write(str(usage.ru_maxrss))\n'
    'sys.exit(os.waitstatus_to_exitcode(status) & 255)\n'
)


def run_measured(command: list, stdout_path: str, stderr_path: str, timeout_s: float,
                 env: dict | None = None, cwd: str | None = None) -> Measured:
    """Run a command to completion: wall time, CPU (user + sys of every process of its tree that was
    waited for, from wait4 on the launcher, whose own share is a few milliseconds) and the peak RSS of
    its largest single process (the launcher's report, as with /usr/bin/time -v)."""
    rss_path = f'{stdout_path}.maxrss'
    if os.access(GNU_TIME, os.X_OK):
        launched = [GNU_TIME, '-q', '-f', '%M', '-o', rss_path] + command
    else:
        launched = [sys.executable, '-S', '-c', LAUNCHER, rss_path] + command
    with open(stdout_path, 'wb') as stdout, open(stderr_path, 'wb') as stderr:
        started = time.monotonic()
        process = subprocess.Popen(launched, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
                                   env=env, cwd=cwd, start_new_session=True)
        timed_out = threading.Event()

        def kill_tree() -> None:
            timed_out.set()
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        timer = threading.Timer(timeout_s, kill_tree)
        timer.start()
        try:
            _pid, status, usage = os.wait4(process.pid, 0)
        finally:
            timer.cancel()
        wall_s = time.monotonic() - started
        process.returncode = os.waitstatus_to_exitcode(status)
    try:
        with open(rss_path, encoding='ascii') as rss_file:
            peak_rss_kib = int(rss_file.read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        peak_rss_kib = usage.ru_maxrss
    return Measured(process.returncode, wall_s, usage.ru_utime + usage.ru_stime, peak_rss_kib, timed_out.is_set())


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores, from /proc/stat)."""
    try:
        with open('/proc/stat', encoding='ascii') as proc_stat:
            fields = [int(value) for value in proc_stat.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    # user nice system idle iowait irq softirq steal: everything but idle and iowait is busy.
    busy = sum(fields[:8]) - fields[3] - fields[4]
    return busy / os.sysconf('SC_CLK_TCK')


def other_share(busy_before: float, busy_after: float, ours_cpu_s: float, wall_s: float) -> tuple:
    """(CPU seconds other work used during a run, that as a share of the whole machine): what the
    machine was busy with beyond `ours_cpu_s` (the measured tree, and a bench's own servers)."""
    other_cpu_s = max(0.0, busy_after - busy_before - ours_cpu_s)
    return other_cpu_s, other_cpu_s / max(1e-9, (os.cpu_count() or 1) * wall_s)


# --------------------------------------------------------------------------------------------
# Tools and the collection
# --------------------------------------------------------------------------------------------

def collection_tree(workdir: str) -> str:
    """A directory D with D/ansible_collections/mailsec/starttls -> this checkout."""
    parent = os.path.join(workdir, 'collections')
    namespace_dir = os.path.join(parent, 'ansible_collections', 'mailsec')
    os.makedirs(namespace_dir, exist_ok=True)
    link = os.path.join(namespace_dir, 'starttls')
    if not os.path.islink(link):
        os.symlink(COLLECTION_ROOT, link)
    return parent


def find_ansible(explicit: str | None, program: str = 'ansible') -> str | None:
    """An ansible (or ansible-playbook, ...) executable: the one given, the test venvs', PATH, the bench venvs'."""
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    candidates = sorted(glob.glob(os.path.join(CACHE_DIR, 'venv-core-*', 'bin', program)))
    on_path = shutil.which(program)
    if on_path:
        candidates.append(on_path)
    candidates += sorted(glob.glob(os.path.join(CACHE_DIR, 'bench-*venv', 'bin', program)))
    return next((candidate for candidate in candidates if os.access(candidate, os.X_OK)), None)


def find_bench_tool(program: str, explicit: str | None = None) -> str | None:
    """A tool that bench/setup.sh installs (sslyze, py-spy): the one given, the bench venv's, PATH."""
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    bench_venv = os.environ.get('MAILSEC_BENCH_VENV', os.path.join(CACHE_DIR, 'bench-venv'))
    in_bench_venv = os.path.join(bench_venv, 'bin', program)
    return in_bench_venv if os.access(in_bench_venv, os.X_OK) else shutil.which(program)


def version_of(command: list) -> str:
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f'unknown ({error})'
    lines = (completed.stdout or completed.stderr).strip().splitlines()
    return lines[0].strip() if lines else 'unknown'


def machine_facts() -> dict:
    """The machine a figure was measured on, and its load when the bench began."""
    cpu_model = 'unknown'
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as cpuinfo:
            cpu_model = next((line.split(':', 1)[1].strip() for line in cpuinfo if line.startswith('model name')),
                             'unknown')
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'host': platform.node(), 'cpu': cpu_model, 'cores': os.cpu_count(), 'kernel': platform.release(),
        'python': sys.version.split()[0], 'openssl': ssl.OPENSSL_VERSION, 'loadavg_at_start': load,
        'git': version_of(['git', '-C', COLLECTION_ROOT, 'rev-parse', '--short', 'HEAD']),
    }


# --------------------------------------------------------------------------------------------
# Private namespaces and lab roots
# --------------------------------------------------------------------------------------------

def run_isolated(script: str, argv: list) -> int:
    """Run a bench script again inside new network, PID and mount namespaces; return its exit code.

    There it sees only its own lab: no other lab's daemons in the host inspection, no clash over the
    lab's addresses, nobody else's start or stop of a lab. /proc/stat stays machine-wide, so the
    load of other work is still measured."""
    if shutil.which('unshare') is None or os.geteuid() != 0:
        print('bench: isolation needs root and unshare (util-linux); use --no-isolate', file=sys.stderr)
        return 2
    command = ['unshare', '--net', '--pid', '--fork', '--mount-proc', '--kill-child',
               sys.executable, os.path.abspath(script), *argv, IN_NAMESPACE_FLAG]
    return subprocess.call(command)


def loopback_up() -> None:
    """In a new network namespace only loopback exists, and it is down."""
    subprocess.run([shutil.which('ip') or '/usr/sbin/ip', 'link', 'set', 'lo', 'up'], check=True)


def namespace_init() -> int | None:
    """In a new PID namespace this process is PID 1: bring loopback up, then fork the bench and
    reap every orphan (the lab's daemons are re-parented here) until the bench ends. Returns the
    bench's exit code in the parent, None in the child that goes on to run the bench."""
    loopback_up()
    if os.getpid() != 1:
        return None
    child = os.fork()
    if child == 0:
        return None
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda _signum, _frame: os.kill(child, signal.SIGTERM))
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 1
        except InterruptedError:
            continue
        if pid == child:
            return os.waitstatus_to_exitcode(status) & 255


def isolate(script: str, argv: list, wanted: bool, in_namespace: bool) -> int | None:
    """A bench script's first step: None to go on here (not wanted, or already inside), else the exit
    code to return: the isolated run's, or (as PID 1 of the namespace) the bench child's."""
    if not in_namespace:
        return run_isolated(script, argv) if wanted else None
    return namespace_init()


def self_test_line(missed: list) -> str:
    """How a result checker's self-test went, in one line."""
    return f"checker self-test: {'PASS' if not missed else 'FAIL ' + '; '.join(missed)}"


def accepting(address: str, port: int, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def lab_command(action: str, root: str, *extra: str, timeout_s: float = 180.0) -> subprocess.CompletedProcess:
    """tests/lab/mta_lab.py ACTION --root ROOT ..."""
    return subprocess.run([sys.executable, LAB_SCRIPT, action, '--root', root, *extra],
                          capture_output=True, text=True, timeout=timeout_s, check=False)


def private_lab_root(prefix: str) -> str:
    """A fresh lab root for this run alone (PREFIX-XXXXXXXX): two bench runs at once, each in its
    own namespaces, would otherwise regenerate each other's configuration and certificates."""
    root = tempfile.mkdtemp(prefix=os.path.basename(prefix) + '-', dir=os.path.dirname(prefix))
    # The daemons' unprivileged users (dovecot, Debian-exim) read the lab's files below it.
    os.chmod(root, 0o755)
    return root


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------

def median_of(runs: list, key: str):
    values = [run[key] for run in runs if isinstance(run.get(key), (int, float))]
    return statistics.median(values) if values else None


def fmt(value, spec: str) -> str:
    return '-' if value is None else format(value, spec)


def tail(path: str, size: int = 600, one_line: bool = True) -> str:
    """The end of a log file, for a failure message: on one line unless one_line is false."""
    try:
        with open(path, 'rb') as stream:
            stream.seek(0, os.SEEK_END)
            stream.seek(max(0, stream.tell() - size))
            text = stream.read().decode(errors='replace').strip()
    except OSError:
        return ''
    return text.replace('\n', ' | ') if one_line else text


def adhoc_result(text: str) -> dict | None:
    """The host result that ad hoc `ansible` printed with its default callback (minimal):
    `localhost | SUCCESS => {...}` (the json callback left ansible-core for ansible.posix in 2.19)."""
    try:
        host_result = json.loads(text[text.index(' => ') + 4:])
    except ValueError:
        return None
    return host_result if isinstance(host_result, dict) else None


def warn_if_noisy(load_percents: list, what: str = 'wall times are depressed') -> None:
    noisy = [value for value in load_percents if (value or 0) > NOISY_LOAD_PERCENT]
    if noisy:
        print(f'WARNING: other processes used up to {max(noisy):.0f}% of the machine during these runs (column '
              f'other%); {what}. Rerun on a quiet machine for figures to keep.')


def verdict(target: str, ok: bool | None, detail: str, **extra) -> dict:
    """One target's outcome: PASS, FAIL, or SKIP when `ok` is None (informative only)."""
    return dict(extra, target=target, result='SKIP' if ok is None else 'PASS' if ok else 'FAIL', detail=detail)


def finish(verdicts: list, arguments, label: str, payload: dict) -> int:
    """Print the targets, write the results JSON (payload plus the verdicts) and the closing line;
    returns the exit code (1 only for a FAIL under --enforce)."""
    print('\nTargets:')
    for item in verdicts:
        scenario = f"[{item['scenario']}] " if item.get('scenario') else ''
        print(f"  {item['result']:<4} {scenario}{item['target']}: {item['detail']}")
    failed = [item for item in verdicts if item['result'] == 'FAIL']
    os.makedirs(arguments.results_dir, exist_ok=True)
    results_path = os.path.join(arguments.results_dir, f"{label}-{time.strftime('%Y%m%dT%H%M%S')}.json")
    with open(results_path, 'w', encoding='utf-8') as results_file:
        json.dump(dict(payload, verdicts=verdicts), results_file, indent=1, default=repr)
    print(f'\nresults: {results_path}')
    print(f"{'FAIL' if failed else 'PASS'}: {len(failed)} target(s) failed"
          + ('' if arguments.enforce or not failed else ' (not enforced; use --enforce)'))
    return 1 if failed and arguments.enforce else 0


def correctness_verdict(target: str, summary: dict | None) -> dict:
    """`target` PASSes when no run of a summary (max_mismatches, runs, mismatch_examples) was wrong."""
    if summary is None:
        return verdict(target, False, 'not run')
    return verdict(target, summary['max_mismatches'] == 0,
                   f"{summary['max_mismatches']} mismatches in the worst of {summary['runs']} run(s)"
                   + (f": {summary['mismatch_examples'][0]}" if summary['mismatch_examples'] else ''))


def self_test_verdict(missed: list, passing: str) -> dict:
    """The result checker's self-test as a target: `passing` says what it proved."""
    return verdict('result checker catches wrong results (self-test)', not missed, '; '.join(missed) or passing)


def collapsed_stacks(path: str):
    """(frames, sample count) of each line of py-spy's collapsed (raw) output."""
    with open(path, encoding='utf-8', errors='replace') as collapsed:
        for line in collapsed:
            stack, _separator, count_text = line.rstrip('\n').rpartition(' ')
            if count_text.isdigit():
                yield stack.split(';'), int(count_text)


def collapsed_top(path: str, limit: int = 40) -> str:
    """Self and inclusive sample counts per function from py-spy's collapsed stacks."""
    own: dict = {}
    inclusive: dict = {}
    total = 0
    for frames, count in collapsed_stacks(path):
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    lines = [f'{total} samples', '', 'self %  function']
    for frame, count in sorted(own.items(), key=lambda item: -item[1])[:limit]:
        lines.append(f'{100 * count / max(total, 1):6.1f}  {frame}')
    lines += ['', 'incl %  function']
    for frame, count in sorted(inclusive.items(), key=lambda item: -item[1])[:limit]:
        lines.append(f'{100 * count / max(total, 1):6.1f}  {frame}')
    return '\n'.join(lines) + '\n'
