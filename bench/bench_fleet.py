# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark of the controller at fleet scale: judging and reporting 10,000 hosts.

  capture   (root, the lab installed) starts the whole real-MTA lab (tests/lab) in private
            network, PID and mount namespaces, inspects it as mta_tls_info does (gather_host with
            the host's own probes and the certificate stores) and probes every listener from the
            "controller"; writes both to bench/data/lab-capture.json. Run once; the file is
            checked in, so the bench itself needs no lab.
  run       (default) builds --hosts host results from that capture: every host a copy of one of
            the lab's MTA instances with its own name, addresses, certificate fingerprints and
            subjects, most of them healthy and some with the lab's faults, then times the
            controller's work on them (the judgement with waivers and the failure rule, the
            comparison with a previous report, and each of the four reports written), reports
            the peak RSS and the size of each report, and (--browser) opens the HTML report in
            headless Chromium and checks that it renders and that its filters work.

Targets (issue 11): at most 60 s and 2 GiB peak for 10,000 hosts. See bench/README.md.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
COLLECTION_ROOT = os.path.dirname(BENCH_DIR)
DEFAULT_CAPTURE = os.path.join(BENCH_DIR, 'data', 'lab-capture.json')
TARGET_SECONDS = 60.0
TARGET_PEAK_MIB = 2048.0
sys.path.insert(0, BENCH_DIR)

import benchlib  # noqa: E402  (after the path change above)


def collections_parent() -> str:
    """A directory whose ansible_collections/mailsec/starttls is this checkout."""
    parent = os.path.normpath(os.path.join(COLLECTION_ROOT, '..', '..', '..'))
    if os.path.basename(os.path.dirname(os.path.dirname(COLLECTION_ROOT))) == 'ansible_collections':
        return parent
    made = tempfile.mkdtemp(prefix='mailsec-bench-fleet-collections-')
    atexit.register(shutil.rmtree, made, True)
    os.makedirs(os.path.join(made, 'ansible_collections', 'mailsec'))
    os.symlink(COLLECTION_ROOT, os.path.join(made, 'ansible_collections', 'mailsec', 'starttls'))
    return made


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --------------------------------------------------------------------------------------------
# capture: real inspection results from the lab
# --------------------------------------------------------------------------------------------

def capture(path: str) -> int:
    sys.path.insert(0, collections_parent())
    # pylint: disable=import-outside-toplevel
    from ansible_collections.mailsec.starttls.plugins.module_utils._certs import StoreInspector
    from ansible_collections.mailsec.starttls.plugins.module_utils._host import gather_host
    from ansible_collections.mailsec.starttls.plugins.module_utils._probe.engine import normalise_options, probe_many
    from ansible_collections.mailsec.starttls.plugins.modules.mta_tls_info import host_prober

    root = benchlib.private_lab_root('/tmp/bench-fleet-lab')
    started = benchlib.lab_command('start', root, '--json', timeout_s=600)
    if started.returncode != 0:
        print(f'bench: could not start the lab: {(started.stderr or started.stdout)[-2000:]}', file=sys.stderr)
        return 1
    try:
        manifest = json.loads(started.stdout)
        ca_file = os.path.join(root, 'certs', 'lab-ca.crt')
        config_paths: dict = {}
        for daemon in manifest.get('daemons') or []:
            if not daemon.get('started') and daemon.get('config_file'):
                config_paths.setdefault(daemon['mta'], []).append(daemon['config_file'])
        inspector = StoreInspector(ca_file=ca_file, ca_path=None)

        class Inspector:
            @staticmethod
            def inspect(cert_path, key_path, chain_paths, reader_user, expected_names):
                return inspector.inspect(cert_path, key_path, chain_paths, reader_user, expected_names,
                                         expiring_days=30)

        probe_options = {'timeout': 5, 'deadline': 20, 'ca_file': ca_file}
        options = {'mtas': None, 'config_paths': config_paths, 'binaries': {}, 'use_tools': 'auto',
                   'scan_sockets': True, 'extra_mail_ports': [], 'host': 'lab-host'}
        gathered = gather_host(options, probe=host_prober(normalise_options(dict(probe_options, vantage='host'))),
                               store_inspector=Inspector())
        gathered.pop('commands', None)
        targets, seen = [], set()
        for listener in gathered.get('listeners') or []:
            if listener.get('listening') is False or not listener.get('port'):
                continue
            address = listener.get('probe_address') or listener.get('address')
            key = (address, listener['port'], listener.get('protocol'))
            if address and key not in seen:
                seen.add(key)
                targets.append({'address': address, 'port': listener['port'], 'protocol': listener.get('protocol')})
        probes = probe_many(targets, normalise_options(dict(probe_options, vantage='controller')))
    finally:
        benchlib.lab_command('stop', root, timeout_s=300)
        shutil.rmtree(root, ignore_errors=True)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as output:
        json.dump({'captured_at': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), 'lab_root': root,
                   'host': gathered, 'controller_probes': probes}, output, indent=1, sort_keys=True, default=str)
        output.write('\n')
    print(f'bench: captured {len(gathered.get("listeners") or [])} listeners and {len(probes)} controller probes '
          f'into {path}')
    return 0


# --------------------------------------------------------------------------------------------
# run: a fleet made from the capture
# --------------------------------------------------------------------------------------------

def _replace_everywhere(value, replacements: list):
    """The same record with every string rewritten (addresses, names, paths, fingerprints)."""
    if isinstance(value, str):
        for old, new in replacements:
            if old in value:
                value = value.replace(old, new)
        return value
    if isinstance(value, dict):
        return {key: _replace_everywhere(item, replacements) for key, item in value.items()}
    if isinstance(value, list):
        return [_replace_everywhere(item, replacements) for item in value]
    return value


def instances(capture_record: dict) -> list:
    """The capture split per lab address (one MTA instance each): [(address, listeners, probes)]."""
    by_address: dict = {}
    for listener in capture_record['host'].get('listeners') or []:
        address = listener.get('probe_address') or listener.get('address')
        if not address or not str(address).startswith('127.'):
            continue
        by_address.setdefault(address, {'listeners': [], 'probes': []})['listeners'].append(listener)
    for probe in capture_record.get('controller_probes') or []:
        address = (probe.get('target') or {}).get('address')
        if address in by_address:
            by_address[address]['probes'].append(probe)
    return [(address, group['listeners'], group['probes']) for address, group in sorted(by_address.items())]


def fingerprints_in(value, found: set) -> set:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ('sha256', 'sha1') and isinstance(item, str) and len(item) >= 40:
                found.add(item)
            else:
                fingerprints_in(item, found)
    elif isinstance(value, list):
        for item in value:
            fingerprints_in(item, found)
    return found


def healthy(listeners: list, probes: list) -> bool:
    """No fault in this instance, judged alone."""
    # pylint: disable=import-outside-toplevel
    from ansible_collections.mailsec.starttls.plugins.module_utils import _verdict
    findings = _verdict.judge([dict(listener, host='probe') for listener in listeners], probes, {})
    return not [finding for finding in findings if finding['severity'] in ('critical', 'high', 'medium')]


def build_fleet(capture_record: dict, hosts: int, seed: int, faulty_share: float) -> tuple:
    """(listeners, probes, host names): `hosts` hosts, each a renamed copy of one lab instance."""
    groups = instances(capture_record)
    good = [group for group in groups if healthy(group[1], group[2])]
    bad = [group for group in groups if group not in good]
    if not good or not bad:
        raise RuntimeError('the capture needs healthy and faulty MTA instances')
    randomness = random.Random(seed)
    regions = ('eu-west', 'eu-central', 'us-east', 'us-west', 'ap-south', 'ap-east', 'sa-east')
    roles = ('mx', 'relay', 'submit', 'imap', 'edge', 'smarthost')
    listeners, probes, names = [], [], []
    for number in range(hosts):
        address, group_listeners, group_probes = (randomness.choice(bad) if randomness.random() < faulty_share
                                                  else randomness.choice(good))
        name = f'{randomness.choice(roles)}{number:05d}.{randomness.choice(regions)}.mail.example'
        new_address = f'10.{(number >> 16) & 255}.{(number >> 8) & 255}.{number & 255}'
        replacements = [(address, new_address), ('lab-host', name), ('mail.lab.test', name.split('.', 1)[0] + '.lab.test')]
        # Each host its own certificates: every fingerprint of the instance rewritten per host.
        for fingerprint in sorted(fingerprints_in([group_listeners, group_probes], set()), key=len, reverse=True):
            digest = hashlib.sha256(f'{fingerprint}/{number}'.encode()).hexdigest()
            replacements.append((fingerprint, digest[:len(fingerprint)] if fingerprint.islower()
                                 else digest[:len(fingerprint)].upper()))
        for listener in _replace_everywhere(group_listeners, replacements):
            listener['host'] = name
            listeners.append(listener)
        probes.extend(_replace_everywhere(group_probes, replacements))
        names.append(name)
    return listeners, probes, names


def file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def run(arguments: argparse.Namespace) -> int:
    sys.path.insert(0, collections_parent())
    # pylint: disable=import-outside-toplevel
    from ansible_collections.mailsec.starttls.plugins.plugin_utils import _reports

    with open(arguments.capture, encoding='utf-8') as capture_file:
        capture_record = json.load(capture_file)
    started = time.perf_counter()
    listeners, probes, names = build_fleet(capture_record, arguments.hosts, arguments.seed, arguments.faulty_share)
    # What Ansible hands fleet_assess: one registered mta_tls_info result per host.
    host_results: dict = {}
    for listener in listeners:
        host_results.setdefault(listener['host'], {'host': listener['host'], 'listeners': []})['listeners'].append(listener)
    build_s = time.perf_counter() - started
    rss_inputs = peak_rss_mib()
    print(f'bench: {len(names)} hosts, {len(listeners)} listeners, {len(probes)} controller probes built from '
          f'{arguments.capture} in {build_s:.1f} s (peak RSS so far {rss_inputs:.0f} MiB)', flush=True)

    out = arguments.out or tempfile.mkdtemp(prefix='mailsec-bench-fleet-')
    os.makedirs(out, exist_ok=True)
    waivers = [{'query': "id=='certificate-expiring'", 'reason': 'renewal scheduled'},
               {'query': "vantage=='controller' && id=='probe-failed'", 'reason': 'firewalled from the controller'}]
    previous = None
    if arguments.previous:
        with open(arguments.previous, encoding='utf-8') as previous_file:
            previous = json.load(previous_file)
    phases, cpu = {}, {}
    clock, cpu_clock = time.perf_counter(), time.process_time()
    report = _reports.audit(list(host_results.values()), probes, {'host_addresses': {}}, waivers, None,
                            {'hosts': len(names), 'vantages': ['controller']}, previous=previous,
                            assessed_hosts=names)
    phases['judge, waive, compare, build'] = time.perf_counter() - clock
    cpu['judge, waive, compare, build'] = time.process_time() - cpu_clock
    written = {}
    for name in _reports.FORMATS:
        clock, cpu_clock = time.perf_counter(), time.process_time()
        written.update(_reports.write_reports(report, out, [name]))
        phases[f'write {name}'] = time.perf_counter() - clock
        cpu[f'write {name}'] = time.process_time() - cpu_clock
    total = sum(phases.values())
    peak = peak_rss_mib()
    summary = report['summary']
    figures = {
        'hosts': len(names), 'listeners': summary['listeners'], 'probes': summary['probes'],
        'findings': summary['findings'], 'unwaived': summary['unwaived'], 'failed': summary['failed'],
        'by_severity': summary['by_severity'], 'phases_s': {key: round(value, 2) for key, value in phases.items()},
        'phases_cpu_s': {key: round(value, 2) for key, value in cpu.items()},
        'controller_s': round(total, 2), 'controller_cpu_s': round(sum(cpu.values()), 2),
        'peak_rss_mib': round(peak, 1), 'inputs_rss_mib': round(rss_inputs, 1),
        'sizes_bytes': {name: file_size(path) for name, path in written.items()}, 'reports': written,
        'load_average': os.getloadavg(),
    }
    del report
    print(json.dumps(figures, indent=1), flush=True)
    if arguments.browser:
        import bench_html_check  # noqa: E402  pylint: disable=import-outside-toplevel
        try:
            figures['browser'] = bench_html_check.check(written['html'], json_path=written['json'])
        except Exception as error:  # pylint: disable=broad-except
            figures['browser'] = {'problems': [f'Chromium check failed: {type(error).__name__}: {error}']}
        print(json.dumps({'browser': figures['browser']}, indent=1))
    if arguments.results:
        with open(arguments.results, 'w', encoding='utf-8') as results_file:
            json.dump(figures, results_file, indent=1)
    problems = []
    if total > arguments.target_seconds:
        problems.append(f'controller time {total:.1f} s > {arguments.target_seconds:.0f} s')
    if peak > TARGET_PEAK_MIB:
        problems.append(f'peak RSS {peak:.0f} MiB > {TARGET_PEAK_MIB:.0f} MiB')
    if figures.get('browser') and figures['browser'].get('problems'):
        problems.extend(figures['browser']['problems'])
    for problem in problems:
        print(f'bench: TARGET MISSED: {problem}', file=sys.stderr)
    if not arguments.out:
        shutil.rmtree(out, ignore_errors=True)
    return 1 if problems and arguments.enforce else 0


def parse_arguments(argv: list | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('mode', nargs='?', choices=('run', 'capture'), default='run')
    parser.add_argument('--capture', default=DEFAULT_CAPTURE, help='the lab capture (run), or where to write it')
    parser.add_argument('--hosts', type=int, default=10000)
    parser.add_argument('--faulty-share', type=float, default=0.15, help='share of hosts copied from a faulty instance')
    parser.add_argument('--seed', type=int, default=11)
    parser.add_argument('--previous', help='a previous report to compare with')
    parser.add_argument('--out', help='keep the reports in this directory (default: a temporary one, removed)')
    parser.add_argument('--results', help='write the figures (JSON) here')
    parser.add_argument('--browser', action='store_true', help='check the HTML report in headless Chromium')
    parser.add_argument('--target-seconds', type=float, default=TARGET_SECONDS)
    parser.add_argument('--enforce', action='store_true', help='exit 1 when a target is missed')
    parser.add_argument('--smoke', action='store_true', help='a small fleet (400 hosts: above 1000 listeners, so the HTML is the fleet page), for CI')
    parser.add_argument(benchlib.IN_NAMESPACE_FLAG, dest='in_namespace', action='store_true', help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.smoke:
        arguments.hosts = min(arguments.hosts, 400)
    return arguments


def main(argv: list | None = None) -> int:
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    arguments = parse_arguments(raw_argv)
    if arguments.mode == 'capture':
        exit_code = benchlib.isolate(__file__, raw_argv, True, arguments.in_namespace)
        if exit_code is not None:
            return exit_code
        return capture(arguments.capture)
    return run(arguments)


if __name__ == '__main__':
    sys.exit(main())
