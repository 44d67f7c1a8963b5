# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checks of the bench itself: the fixture behaves as its manifest says, and the result checkers
catch wrong answers (a benchmark that cannot tell a wrong result from a right one measures nothing).

Run: python3 -m pytest bench/test_bench.py
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import signal
import smtplib
import ssl
import subprocess
import sys
import time

import pytest

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)

import bench_probe  # noqa: E402  (after the path change above)
import benchlib  # noqa: E402

FIXTURE_PORT = 20900
FIXTURE_N = 10


def start_fixture(workdir, n: int, base_port: int, distinct_certs: int, max_lifetime_s: int,
                  *extra: str) -> subprocess.Popen:
    """bench/fixture.py with its manifest at WORKDIR/manifest.json, once it says READY."""
    process = subprocess.Popen(
        [sys.executable, os.path.join(BENCH_DIR, 'fixture.py'), '--n', str(n), '--base-port', str(base_port),
         '--manifest', str(workdir / 'manifest.json'), '--workdir', str(workdir / 'certs'),
         '--distinct-certs', str(distinct_certs), '--max-lifetime', str(max_lifetime_s), *extra],
        stdout=subprocess.PIPE, text=True)
    ready = process.stdout.readline()
    if not ready.startswith('READY '):
        process.kill()
        process.wait(10)
    assert ready.startswith('READY '), ready
    return process


def stop_fixture(process: subprocess.Popen) -> None:
    """SIGTERM: the fixture stops cleanly and says why."""
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0
    assert 'STOPPED signal' in process.stdout.read()


@pytest.fixture(scope='module')
def fixture_manifest(tmp_path_factory):
    workdir = tmp_path_factory.mktemp('fixture')
    process = start_fixture(workdir, FIXTURE_N, FIXTURE_PORT, 3, 120)
    try:
        yield json.loads((workdir / 'manifest.json').read_text())
    finally:
        stop_fixture(process)


def smtplib_probe(listener: dict) -> dict:
    return bench_probe.smtplib_session(listener)


def test_manifest_mix_and_no_key_material(fixture_manifest):
    kinds = [listener['kind'] for listener in fixture_manifest['listeners']]
    assert kinds.count('starttls') == 8 and kinds.count('no_starttls') == 1 and kinds.count('starttls_454') == 1
    assert [listener['port'] for listener in fixture_manifest['listeners']] == list(
        range(FIXTURE_PORT, FIXTURE_PORT + FIXTURE_N))
    assert 'PRIVATE KEY' not in json.dumps(fixture_manifest)
    assert len({listener['cert_sha256'] for listener in fixture_manifest['listeners']
                if listener['kind'] == 'starttls'}) == 3


def test_fixture_serves_what_the_manifest_says(fixture_manifest):
    probes = [smtplib_probe(listener) for listener in fixture_manifest['listeners']]
    assert bench_probe.check_probes(fixture_manifest, probes)['mismatches'] == 0
    by_kind = {listener['kind']: probe for listener, probe in zip(fixture_manifest['listeners'], probes)}
    assert by_kind['starttls_454']['starttls_reply']['code'] == 454
    assert by_kind['no_starttls']['starttls_advertised'] is False


def test_fixture_certificate_verifies_against_bench_ca(fixture_manifest):
    listener = fixture_manifest['listeners'][0]
    context = ssl.create_default_context(cafile=fixture_manifest['ca_file'])
    context.check_hostname = False
    with smtplib.SMTP(listener['address'], listener['port'], timeout=5) as client:
        client.starttls(context=context)
        der = client.sock.getpeercert(True)
        client.ehlo()
        assert not client.has_extn('starttls'), 'STARTTLS must not be offered again after TLS'
    assert hashlib.sha256(der).hexdigest() == listener['cert_sha256']


def test_fixture_delay_applies_to_every_reply(tmp_path):
    process = start_fixture(tmp_path, 1, FIXTURE_PORT + 50, 1, 60, '--delay-ms', '100')
    try:
        started = time.monotonic()
        with smtplib.SMTP('127.0.70.1', FIXTURE_PORT + 50, timeout=5) as client:  # greeting
            client.ehlo()
            client.noop()
        # greeting + EHLO + NOOP + QUIT replies, 100 ms each
        assert time.monotonic() - started >= 0.4
    finally:
        stop_fixture(process)


def sample_manifest() -> dict:
    listeners = []
    for index, kind in enumerate(('starttls', 'no_starttls', 'starttls_454')):
        listener = {'address': '127.0.70.1', 'port': 20000 + index, 'kind': kind,
                    'starttls_advertised': kind != 'no_starttls', 'tls_established': kind == 'starttls'}
        if kind == 'starttls':
            listener.update(cert_sha256='ab' * 32, cert_sha1='cd' * 20, subject_cn='bench-00.mailsec.test')
        listeners.append(listener)
    return {'address': '127.0.70.1', 'listeners': listeners}


def correct_probes() -> list:
    def probe(port, advertised, code, established, sha256):
        return {'target': {'address': '127.0.70.1', 'port': port}, 'starttls_advertised': advertised,
                'starttls_reply': None if code is None else {'code': code, 'text': ''},
                'tls': {'established': established}, 'certificate': sha256 and {'sha256': sha256}, 'error': None}
    return [probe(20000, True, '220', True, ':'.join(['AB'] * 32)),
            probe(20001, False, None, False, None),
            probe(20002, True, '454', False, None)]


def test_check_probes_accepts_right_answers():
    assert bench_probe.check_probes(sample_manifest(), correct_probes())['mismatches'] == 0


@pytest.mark.parametrize('mutate, expected_fragment', [
    (lambda probes: probes[0]['certificate'].update(sha256='00' * 32), 'certificate sha256'),
    (lambda probes: probes[0]['tls'].update(established=False), 'no TLS'),
    (lambda probes: probes[1].update(starttls_advertised=True), 'starttls_advertised'),
    (lambda probes: probes[2]['starttls_reply'].update(code='220'), 'STARTTLS reply'),
    (lambda probes: probes[2]['tls'].update(established=True), 'TLS established on a broken listener'),
    (lambda probes: probes.reverse(), 'out of order'),
    (lambda probes: probes.pop(), 'expected 3 probes'),
])
def test_check_probes_flags_wrong_answers(mutate, expected_fragment):
    probes = copy.deepcopy(correct_probes())
    mutate(probes)
    summary = bench_probe.check_probes(sample_manifest(), probes)
    assert summary['mismatches'] >= 1
    assert any(expected_fragment in example for example in summary['examples']), summary


def test_check_probes_flags_missing_output():
    assert bench_probe.check_probes(sample_manifest(), None)['mismatches'] == 1


NMAP_XML = """<?xml version="1.0"?><nmaprun><host><address addr="127.0.70.1" addrtype="ipv4"/><ports>
<port protocol="tcp" portid="20000"><script id="smtp-commands" output="bench, PIPELINING, STARTTLS"/>
<script id="ssl-cert" output="..."><elem key="pem">{pem}</elem></script></port>
<port protocol="tcp" portid="20001"><script id="smtp-commands" output="bench, PIPELINING"/></port>
<port protocol="tcp" portid="20002"><script id="smtp-commands" output="bench, STARTTLS"/></port>
</ports></host></nmaprun>"""


def test_check_nmap(tmp_path, fixture_manifest):
    listener = fixture_manifest['listeners'][0]
    certificate_file = os.path.join(os.path.dirname(fixture_manifest['ca_file']), 'leaf-00.pem')
    with open(certificate_file, encoding='ascii') as pem_file:
        pem = pem_file.read()
    manifest = sample_manifest()
    manifest['listeners'][0]['cert_sha256'] = listener['cert_sha256']
    xml_path = tmp_path / 'nmap.xml'
    xml_path.write_text(NMAP_XML.format(pem=pem))
    assert bench_probe.check_nmap(manifest, str(xml_path))['mismatches'] == 0
    manifest['listeners'][0]['cert_sha256'] = '00' * 32
    assert bench_probe.check_nmap(manifest, str(xml_path))['mismatches'] == 1
    xml_path.write_text(NMAP_XML.format(pem=pem).replace('bench, STARTTLS"', 'bench"'))
    manifest['listeners'][0]['cert_sha256'] = listener['cert_sha256']
    assert bench_probe.check_nmap(manifest, str(xml_path))['mismatches'] == 1


def test_check_sslyze(tmp_path, fixture_manifest):
    certificate_file = os.path.join(os.path.dirname(fixture_manifest['ca_file']), 'leaf-00.pem')
    with open(certificate_file, encoding='ascii') as pem_file:
        pem = pem_file.read()
    manifest = sample_manifest()
    manifest['listeners'][0]['cert_sha256'] = fixture_manifest['listeners'][0]['cert_sha256']

    def result(port, completed):
        entry = {'server_location': {'ip_address': '127.0.70.1', 'hostname': '127.0.70.1', 'port': port},
                 'scan_status': 'COMPLETED' if completed else 'ERROR_NO_CONNECTIVITY'}
        if completed:
            entry['scan_result'] = {'certificate_info': {'result': {'certificate_deployments': [
                {'received_certificate_chain': [{'as_pem': pem}]}]}}}
        else:
            entry['connectivity_error_trace'] = 'ServerRejectedOpportunisticTlsNegotiation: ...'
        return entry
    json_path = tmp_path / 'sslyze.json'
    json_path.write_text(json.dumps({'server_scan_results': [result(20000, True), result(20001, False),
                                                             result(20002, False)]}))
    assert bench_probe.check_sslyze(manifest, str(json_path))['mismatches'] == 0
    json_path.write_text(json.dumps({'server_scan_results': [result(20000, False), result(20001, True)]}))
    assert bench_probe.check_sslyze(manifest, str(json_path))['mismatches'] == 3


def test_checkers_tell_addresses_apart(tmp_path, fixture_manifest):
    """Listeners on different addresses share port numbers: a result is matched by address and port."""
    manifest = sample_manifest()
    manifest['listeners'][1]['address'] = '127.0.70.2'
    probes = correct_probes()
    assert bench_probe.check_probes(manifest, probes)['mismatches'] == 1
    probes[1]['target']['address'] = '127.0.70.2'
    assert bench_probe.check_probes(manifest, probes)['mismatches'] == 0
    certificate_file = os.path.join(os.path.dirname(fixture_manifest['ca_file']), 'leaf-00.pem')
    with open(certificate_file, encoding='ascii') as pem_file:
        pem = pem_file.read()
    manifest['listeners'][0]['cert_sha256'] = fixture_manifest['listeners'][0]['cert_sha256']
    xml_path = tmp_path / 'nmap.xml'
    xml_path.write_text(NMAP_XML.format(pem=pem))
    # Port 20001 was scanned on 127.0.70.1 only: the listener on 127.0.70.2 has no result.
    assert bench_probe.check_nmap(manifest, str(xml_path))['mismatches'] == 1


def test_fixture_spreads_listeners_over_addresses_and_processes(tmp_path):
    manifest_path = tmp_path / 'manifest.json'
    process = start_fixture(tmp_path, 6, FIXTURE_PORT + 60, 1, 60, '--addresses', '3', '--processes', '2')
    try:
        manifest = json.loads(manifest_path.read_text())
        assert [(item['address'], item['port']) for item in manifest['listeners']] == [
            ('127.0.70.1', FIXTURE_PORT + 60), ('127.0.70.2', FIXTURE_PORT + 60), ('127.0.70.3', FIXTURE_PORT + 60),
            ('127.0.70.1', FIXTURE_PORT + 61), ('127.0.70.2', FIXTURE_PORT + 61), ('127.0.70.3', FIXTURE_PORT + 61)]
        for _round in range(2):
            probes = [smtplib_probe(listener) for listener in manifest['listeners']]
            assert bench_probe.check_probes(manifest, probes)['mismatches'] == 0
        fixture = bench_probe.FixtureProcess.__new__(bench_probe.FixtureProcess)
        fixture.process, fixture.stats_path, fixture.signals_sent = process, str(manifest_path) + '.stats', 0
        stats = fixture.stats()
        # Both serving processes counted: 12 sessions, each process's CPU reported.
        assert stats['connections'] == 12 and stats['active'] == 0
        assert len(stats['process_cpu_s']) == 2
    finally:
        stop_fixture(process)


def test_port_spec():
    assert bench_probe.port_spec([1, 2, 3, 5, 7, 8]) == '1-3,5,7-8'
    assert bench_probe.port_spec([20000]) == '20000'


def test_run_measured_reports_the_child_not_the_parent(tmp_path):
    ballast = bytearray(200 * 1024 * 1024)
    ballast[::4096] = b'\1' * len(ballast[::4096])
    child = 'x = bytearray(30 * 1024 * 1024); x[::4096] = b"\\1" * len(x[::4096])'
    measured = benchlib.run_measured([sys.executable, '-c', child], str(tmp_path / 'out'), str(tmp_path / 'err'), 30)
    assert measured.exit_code == 0
    # The child touched ~30 MiB on top of an interpreter; the 200 MiB of this process must not show.
    assert 30 * 1024 < measured.peak_rss_kib < 120 * 1024
    assert measured.cpu_s > 0
    del ballast


def test_judge_fails_slow_engine():
    summaries = {'engine': {'listeners_per_s': 40.0, 'max_mismatches': 0, 'client_cpu_ms_per_listener': 1.0,
                            'peak_rss_mib': 40.0}}
    verdicts = bench_probe.judge('slow', {'n': 200, 'delay_ms': 50.0}, summaries, ['engine'], smoke=False)
    assert [verdict['result'] for verdict in verdicts if 'listeners/s' in verdict['target']] == ['FAIL']


def test_fleet_hosts_are_distinct_copies_of_real_lab_instances():
    import bench_fleet  # noqa: E402  pylint: disable=import-outside-toplevel
    sys.path.insert(0, bench_fleet.collections_parent())
    with open(bench_fleet.DEFAULT_CAPTURE, encoding='utf-8') as capture_file:
        capture = json.load(capture_file)
    listeners, probes, names = bench_fleet.build_fleet(capture, 40, seed=3, faulty_share=0.5)
    assert len(names) == len(set(names)) == 40
    assert {listener['host'] for listener in listeners} == set(names)
    # Every host has its own address and its own certificates, and no lab address is left.
    addresses = {}
    for listener in listeners:
        addresses.setdefault(listener['host'], set()).add(listener.get('probe_address') or listener.get('address'))
    assert all(len(owned) == 1 for owned in addresses.values())
    assert len({next(iter(owned)) for owned in addresses.values()}) == 40
    assert not [listener for listener in listeners if str(listener.get('address')).startswith('127.')]
    assert not [probe for probe in probes if str(probe['target']['address']).startswith('127.')]
    by_host: dict = {}
    for listener in listeners:
        bench_fleet.fingerprints_in(listener, by_host.setdefault(listener['host'], set()))
    # No two hosts share a certificate fingerprint (a host's listeners may).
    assert sum(len(found) for found in by_host.values()) == len(set().union(*by_host.values())) > 0
    # Healthy and faulty hosts both occur, judged by the real judgement.
    from ansible_collections.mailsec.starttls.plugins.module_utils import _verdict  # pylint: disable=import-outside-toplevel
    findings = _verdict.judge(listeners, probes, {})
    serious = {finding['host'] for finding in findings if finding['severity'] in ('critical', 'high')}
    assert 0 < len(serious) < 40


def test_benchlib_measures_the_whole_tree_and_reports_targets(tmp_path):
    # A grandchild that burns CPU and exits before its parent: still counted.
    burn = 'import time; end = time.process_time() + 0.3\nwhile time.process_time() < end: pass'
    parent = f'import subprocess, sys; subprocess.run([sys.executable, "-c", {burn!r}], check=True)'
    measured = benchlib.run_measured([sys.executable, '-c', parent], str(tmp_path / 'out'), str(tmp_path / 'err'), 60)
    assert measured.exit_code == 0 and not measured.timed_out
    assert measured.cpu_s >= 0.3
    assert benchlib.correctness_verdict('x correct', None)['result'] == 'FAIL'
    wrong = {'max_mismatches': 2, 'runs': 3, 'mismatch_examples': ['bad fingerprint']}
    assert benchlib.correctness_verdict('x correct', wrong)['detail'] == \
        '2 mismatches in the worst of 3 run(s): bad fingerprint'
    assert benchlib.self_test_verdict([], 'all caught')['result'] == 'PASS'

    class Arguments:
        results_dir = str(tmp_path / 'results')
        enforce = True

    assert benchlib.finish([benchlib.verdict('a', None, 'informative')], Arguments, 't', {}) == 0
    assert benchlib.finish([benchlib.correctness_verdict('b', wrong)], Arguments, 't', {}) == 1
    assert len(os.listdir(tmp_path / 'results')) >= 1


def test_benchlib_helpers_bench_probe_shares(tmp_path, monkeypatch):
    log = tmp_path / 'stderr'
    log.write_text('first line\n' + 'x' * 40 + '\nlast line\n')
    assert benchlib.tail(str(log)).endswith('x | last line')
    assert benchlib.tail(str(log), 20, one_line=False) == 'xxxxxxxxx\nlast line'
    assert benchlib.tail(str(tmp_path / 'absent')) == ''
    assert benchlib.adhoc_result('localhost | SUCCESS => {"changed": false, "probes": []}') == {
        'changed': False, 'probes': []}
    assert benchlib.adhoc_result('localhost | FAILED! => ["not", "a", "host result"]') is None
    assert benchlib.adhoc_result('ERROR! no hosts matched') is None
    # Busy 10 s over a 2 s run, 3 s of it the measured tree and the bench's own server: 7 s were others'.
    other_cpu_s, share = benchlib.other_share(100.0, 110.0, 3.0, 2.0)
    assert other_cpu_s == pytest.approx(7.0)
    assert share == pytest.approx(7.0 / ((os.cpu_count() or 1) * 2.0))
    assert benchlib.other_share(100.0, 101.0, 3.0, 2.0) == (0.0, 0.0)
    measured = benchlib.Measured(3, 1.5, 0.25, 2048, True)
    assert measured.figures() == {'wall_s': 1.5, 'cpu_s': 0.25, 'peak_rss_kib': 2048, 'exit_code': 3, 'timed_out': True}
    tool = tmp_path / 'bin' / 'mailsec-bench-tool'
    tool.parent.mkdir()
    tool.write_text('#!/bin/sh\n')
    assert benchlib.find_bench_tool('mailsec-bench-tool', str(tool)) is None  # not executable
    tool.chmod(0o755)
    assert benchlib.find_bench_tool('mailsec-bench-tool', str(tool)) == str(tool)
    monkeypatch.setenv('MAILSEC_BENCH_VENV', str(tmp_path))
    assert benchlib.find_bench_tool('mailsec-bench-tool') == str(tool)


def test_module_profile_replays_the_recorded_result(tmp_path):
    """The stand-in module returns the result the module printed, so that the controller's handling of
    that result is what the replayed row measures; a failed or unreadable recording is not replayed."""
    ansible = benchlib.find_ansible(None)
    if not ansible:
        pytest.skip('ansible not found')
    bench = type('BenchStub', (), {'ansible': ansible, 'workdir': str(tmp_path)})()
    recorded = {'changed': False, 'detail': 'compact', 'probes': [{'target': {'address': '192.0.2.7', 'port': 25}}],
                'invocation': {'module_args': {'targets': ['192.0.2.7:25']}}}
    (tmp_path / 'profile-module-compact-0.out').write_text(json.dumps(recorded))
    (tmp_path / 'profile-module-full-0.out').write_text(json.dumps({'failed': True, 'msg': 'boom'}))
    (tmp_path / 'profile-module-empty-0.out').write_text('Traceback (most recent call last):')
    assert bench_probe.recorded_output(bench, 'module-full') is None
    assert bench_probe.recorded_output(bench, 'module-empty') is None
    path = bench_probe.recorded_output(bench, 'module-compact')
    assert path == str(tmp_path / 'profile-module-compact-0.out')
    env = dict(os.environ, ANSIBLE_HOME=str(tmp_path / 'home'), ANSIBLE_LOCAL_TEMP=str(tmp_path / 'tmp'),
               ANSIBLE_LOCALHOST_WARNING='0', ANSIBLE_INVENTORY_UNPARSED_WARNING='0', ANSIBLE_NOCOLOR='1')
    completed = subprocess.run(bench_probe.replay_command(bench, path), env=env, capture_output=True, text=True,
                               timeout=120, check=False)
    result = benchlib.adhoc_result(completed.stdout)
    assert result is not None, completed.stdout + completed.stderr
    assert result['probes'] == recorded['probes']
    assert result['detail'] == 'compact'
    # Without a recording of the empty run there is nothing to subtract from: no replayed figures.
    assert bench_probe.replay_result_handling(bench, 1, env) == {}


def test_module_phases_take_the_replayed_row_less_exit_json():
    inside = {'imports': {'wall_s': 0.2, 'cpu_s': 0.2}, 'probing': {'wall_s': 1.0, 'cpu_s': 1.1},
              'serialisation': {'wall_s': 0.1, 'cpu_s': 0.1}}
    profile = {'ping': {'wall_s': 1.0, 'cpu_s': 1.0}, 'adhoc_empty': {'wall_s': 1.5, 'cpu_s': 1.5},
               'module_empty': {'wall_s': 0.3, 'cpu_s': 0.3},
               'compact': {'adhoc': {'wall_s': 3.0, 'cpu_s': 3.1}, 'module': {'wall_s': 1.5, 'cpu_s': 1.6, 'output_bytes': 10},
                           'inside': inside, 'replay': {'wall_s': 0.6, 'cpu_s': 0.7, 'rounds': 5}}}
    rows = bench_probe.module_phases(profile)
    replayed = rows['compact']['controller: result handling (decode, copy, callback output), replayed']
    assert replayed == {'wall_s': pytest.approx(0.5), 'cpu_s': pytest.approx(0.6)}
    assert rows['compact']['module process: interpreter, unzip, compile, imports, arguments'] == {
        'wall_s': pytest.approx(0.4), 'cpu_s': pytest.approx(0.4)}
    # No replay (no ansible, a failed recording): the row says so instead of a made-up figure.
    assert rows['full']['controller: result handling (decode, copy, callback output), replayed'] == {
        'wall_s': None, 'cpu_s': None}
