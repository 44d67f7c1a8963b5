# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The report and its renderings: schema, JUnit structure, Markdown, HTML escaping, atomic writes."""

from __future__ import annotations

import copy
import html.parser
import json
import os
import re
import stat
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ansible_collections.mailsec.starttls.plugins.filter.judge import FilterModule
from ansible_collections.mailsec.starttls.plugins.module_utils import _verdict
from ansible_collections.mailsec.starttls.plugins.plugin_utils import _policy, _report_html, _report_json, _report_junit, _report_markdown, _reports
from ansible_collections.mailsec.starttls.tests.unit.plugins import scenarios as sc
from ansible_collections.mailsec.starttls.tests.unit.plugins.plugin_utils import schema_check

SCHEMA_PATH = Path(__file__).resolve().parents[4] / 'docs' / 'report.schema.json'
HOSTILE = '<script>alert("x")</script> | `` ``` <img src=x onerror=alert(1)> \x1b[2J\x00 ]]> &amp; **bold**'


def fleet(*names) -> tuple:
    cases = sc.scenarios()
    listeners, probes, sockets = [], [], []
    for name in names or sorted(cases):
        case = copy.deepcopy(cases[name])
        listeners += case['listeners']
        probes += case['probes']
        sockets += case['options'].get('unmatched_sockets') or []
    return listeners, probes, {'now': sc.NOW, 'unmatched_sockets': sockets,
                               'host_addresses': {'mx2': ['127.0.60.9']}}


def hostile_fleet() -> tuple:
    listeners, probes, options = fleet('postfix-missing-file-454', 'exim-self-made-certificate', 'injection',
                                       'blackbox-554', 'listener-drift', 'postfix-good', 'starttls-stripped')
    evil = sc.refused_454('127.0.60.66', 25, text=HOSTILE)
    evil['greeting'] = {'code': '220', 'lines': [HOSTILE]}
    listeners.append(sc.blackbox('127.0.60.66', 25, 'smtp', host='evil|<b>host</b>'))
    probes.append(evil)
    return listeners, probes, options


WAIVERS = [{'query': "id=='pre-tls-surplus'", 'reason': 'lab <b>test</b>', 'expires': '2027-01-01'},
           {'query': "id=='probe-failed'", 'reason': 'old', 'expires': '2026-01-01'}]


@pytest.fixture(scope='module')
def report():
    listeners, probes, options = hostile_fleet()
    return _reports.audit(listeners, probes, options, WAIVERS, meta={'collection_version': '0.1.0', 'run': 'unit',
                                                                     'generated_at': '2026-11-28T12:00:00Z'})


def test_the_report_validates_against_the_published_schema(report):
    schema = json.loads(SCHEMA_PATH.read_text())
    assert schema_check.unsupported_keywords(schema) == []
    assert schema_check.validate(report, schema) == []
    everything = _reports.audit(*fleet())
    assert schema_check.validate(json.loads(_report_json.render_json(everything)), schema) == []


def test_the_schema_checker_can_fail(report):
    schema = json.loads(SCHEMA_PATH.read_text())
    broken = copy.deepcopy(report)
    broken['summary']['failed'] = 'yes'
    del broken['findings'][0]['key']
    broken['findings'][1]['severity'] = 'catastrophic'
    broken['surprise'] = 1
    errors = schema_check.validate(broken, schema)
    assert any('summary.failed' in error for error in errors)
    assert any("missing required 'key'" in error for error in errors)
    assert any('findings[1].severity' in error for error in errors)
    assert any("unexpected property 'surprise'" in error for error in errors)


def test_summary_counts_agree_with_the_findings(report):
    summary, findings = report['summary'], report['findings']
    assert report['schema_version'] == 1 and report['generator'] == {'name': 'mailsec.starttls', 'version': '0.1.0'}
    assert report['generated_at'] == '2026-11-28T12:00:00Z' and report['meta'] == {'run': 'unit'}
    assert summary['findings'] == len(findings) == sum(summary['by_severity'].values())
    assert summary['waived'] == sum(1 for f in findings if f['waived']) == 1
    assert summary['unwaived'] == sum(summary['unwaived_by_severity'].values())
    assert summary['listeners'] == len(report['listeners'])
    assert summary['hosts'] == len(report['hosts']) == len({item['host'] for item in report['listeners']})
    assert sum(host['findings'] for host in report['hosts']) == len(findings)
    keys = {f['key'] for f in findings}
    listed = [key for item in report['listeners'] for key in item['findings']]
    assert sorted(listed) == sorted(keys), 'every finding belongs to exactly one listener'
    ranks = [_verdict.SEVERITY_RANK[f['severity']] for f in findings]
    assert ranks == sorted(ranks)
    assert summary['failed'] is True and 'critical or high' in summary['fail_reason']
    assert [w['state'] for w in report['policy']['waivers']] == ['active', 'expired']
    assert report['waivers_expired'][0]['index'] == 1
    assert json.loads(_report_json.render_json(report)) == report


def test_probe_and_socket_listeners_are_kept(report):
    modes = {item['key']: item['mode'] for item in report['listeners']}
    assert modes['mx1|0.0.0.0|2525'] == 'socket'
    assert modes['partner|127.0.60.2|25'] == 'black-box'
    clean = next(item for item in report['listeners'] if item['key'] == 'mx1|127.0.10.1|25')
    assert clean['status'] == 'clean' and clean['worst'] is None
    assert {probe['vantage'] for probe in clean['probes']} == {'host', 'controller'}
    assert 'starttls-advertised-without-certificate' in clean['rules']


def test_junit_one_case_per_listener_and_rule(report):
    text = _report_junit.render_junit(report)
    root = ET.fromstring(text.encode('utf-8'))
    assert root.tag == 'testsuites'
    cases = root.findall('./testsuite/testcase')
    expected = sum(len(item['rules']) for item in report['listeners'])
    assert len(cases) == expected == int(root.get('tests'))
    names = {(case.get('classname'), case.get('name')) for case in cases}
    assert len(names) == len(cases), 'test case names are unique'
    assert ('mx1', 'listener 127.0.10.2:25/smtp :: starttls-advertised-without-certificate') in names
    failing = {case.get('name'): case for case in cases if case.find('failure') is not None}
    skipped = {case.get('name'): case for case in cases if case.find('skipped') is not None}
    open_rules = {(f['host'], f['listener']['address'], f['id']) for f in report['findings'] if not f['waived']}
    assert len(failing) == len(open_rules) == int(root.get('failures'))
    assert len(skipped) == int(root.get('skipped')) == 1
    skip = next(iter(skipped.values())).find('skipped')
    assert skip.get('message') == 'waived: lab <b>test</b> (until 2027-01-01)'
    failure = failing['listener 127.0.10.2:25/smtp :: starttls-advertised-without-certificate'].find('failure')
    assert failure.get('type') == 'critical'
    assert '454 4.7.0 TLS not available' in failure.text and 'postconf -P' in failure.text
    for suite in root.findall('testsuite'):
        assert int(suite.get('tests')) == len(suite.findall('testcase'))
        assert all(case.get('classname') == suite.get('name') for case in suite.findall('testcase'))
    # Hostile text survives as text (control characters made visible, XML still well-formed).
    evil = [case for case in cases if case.get('classname') == 'evil|<b>host</b>']
    assert evil and any('<script>' in (case.find('failure').text or '') for case in evil if case.find('failure') is not None)


def test_junit_is_well_formed_with_characters_xml_forbids():
    findings = [{'id': 'probe-failed', 'severity': 'medium', 'host': 'h\x01', 'key': 'k',
                 'listener': {'address': '127.0.0.1', 'port': 25, 'protocol': 'smtp'}, 'vantage': 'v',
                 'summary': 'bad \x00 \x1b byte', 'evidence': {'raw': '\x02'}, 'fix': 'x', 'waived': False, 'waiver': None}]
    report = _reports.build_report(findings, [], [], {'generated_at': 'now'})
    root = ET.fromstring(_report_junit.render_junit(report))
    failure = root.find('./testsuite/testcase/failure')
    # Visible escapes (the report escapes terminal controls before XML sees them).
    assert '\\x00' in failure.get('message') and '\\x1b' in failure.get('message')
    assert root.find('testsuite').get('name') == 'h\\x01'


def test_markdown_escapes_hostile_text(report):
    text = _report_markdown.render_markdown(report)
    assert text.startswith('# STARTTLS audit report\n')
    assert '**Result: FAILED.**' in text
    assert '<script>' not in text and '<img' not in text and '<b>' not in text
    assert '&lt;script&gt;' in text  # in prose
    assert '\\u003cscript\\u003e' in text  # in evidence (JSON with markup characters escaped)
    assert '\x1b' not in text and '\x00' not in text
    host_rows = [line for line in text.splitlines() if line.startswith('| evil')]
    # Ten cells: the pipe in the hostile host name is escaped, not a cell border.
    assert len(host_rows) == 1 and host_rows[0].count('|') - host_rows[0].count('\\|') == 11
    assert host_rows[0].startswith('| evil\\|&lt;b&gt;host')
    # Evidence fences are longer than any backtick run inside them: no block ends early.
    lines = [line.strip() for line in text.splitlines()]
    blocks = 0
    index = 0
    while index < len(lines):
        if lines[index].startswith('```') and lines[index].endswith('json'):
            fence = lines[index][:-4]
            end = lines.index(fence, index + 1)
            inside = lines[index + 1:end]
            assert not any(line.startswith(fence) for line in inside)
            assert json.loads('\n'.join(inside)) is not None
            blocks += 1
            index = end
        index += 1
    assert blocks == len(report['findings'])
    assert '````json' in text  # the hostile evidence holds a run of three backticks
    assert 'Waiver 1 expired on 2026\\-01\\-01' in text or 'Waiver 1 expired on 2026-01-01' in text
    assert 'Then ` postfix check && postfix reload `.' in text


class DomCollector(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = []
        self.attributes = []
        self.data_attributes = []
        self.text = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes.extend((tag, name, value) for name, value in attrs)
        values = dict(attrs)
        if any(name.startswith('data-') for name in values):
            self.data_attributes.append((tag, values))

    def handle_data(self, data):
        self.text.append(data)


def test_html_is_self_contained_escaped_and_carries_the_numbers(report):
    page = _report_html.render_html(report)
    parser = DomCollector()
    parser.feed(page)
    assert 'script' not in parser.tags and 'img' not in parser.tags and 'iframe' not in parser.tags
    assert 'Content-Security-Policy' in page and "default-src 'none'" in page
    assert not [tag for tag in ('link', 'object', 'embed') if tag in parser.tags]
    assert not [name for _tag, name, _value in parser.attributes if name in ('src', 'srcset', 'action', 'style')
                or name.startswith('on')]
    assert all(value.startswith('#') for _tag, name, value in parser.attributes if name == 'href')
    assert 'url(' not in _report_html.CSS and '@import' not in _report_html.CSS
    assert '<script>alert("x")</script>' in ''.join(parser.text), 'hostile text is shown as text'
    summary = next(values for tag, values in parser.data_attributes if values.get('id') == 'summary')
    assert int(summary['data-findings']) == report['summary']['findings']
    assert int(summary['data-listeners']) == report['summary']['listeners']
    assert int(summary['data-hosts']) == report['summary']['hosts']
    assert summary['data-failed'] == 'true'
    severities = {values['data-severity']: values for tag, values in parser.data_attributes
                  if tag == 'li' and 'data-severity' in values}
    for severity in _reports.SEVERITIES:
        assert int(severities[severity]['data-count']) == report['summary']['by_severity'][severity]
        assert int(severities[severity]['data-unwaived']) == report['summary']['unwaived_by_severity'][severity]
    articles = [values for tag, values in parser.data_attributes if tag == 'article']
    assert len(articles) == len(report['listeners'])
    findings = [values for tag, values in parser.data_attributes if tag == 'div' and 'data-finding-key' in values]
    assert sorted(values['data-finding-key'] for values in findings) == sorted(f['key'] for f in report['findings'])
    bars = [values for tag, values in parser.data_attributes if tag == 'rect' and 'data-severity' in values]
    assert sum(int(values['data-count']) for values in bars) == report['summary']['findings']


def test_html_with_no_findings():
    listeners, probes, options = fleet('postfix-good')
    report = _reports.audit(listeners, probes, options)
    page = _report_html.render_html(report)
    assert 'data-failed="false"' in page and 'No findings to chart.' in page
    assert report['summary']['failed'] is False


def test_write_reports_is_atomic_and_complete(report, tmp_path):
    target = tmp_path / 'reports' / 'nested'
    written = _reports.write_reports(report, str(target))
    assert set(written) == {'json', 'junit', 'markdown', 'html'}
    assert sorted(os.listdir(target)) == sorted(os.path.basename(path) for path in written.values())
    assert json.loads(Path(written['json']).read_text()) == report
    assert stat.S_IMODE(os.stat(written['html']).st_mode) == 0o644
    # Rewriting replaces the files, leaving no temporary ones behind.
    again = _reports.write_reports(report, str(target), formats=('json',), basename='again')
    assert sorted(os.listdir(target)) == sorted([os.path.basename(p) for p in written.values()] + ['again.json'])
    assert again == {'json': str(target / 'again.json')}


def test_every_entry_point_gives_one_text_per_format(report, tmp_path):
    # The files (the JSON one streamed), the renderer registry and the report_* filters render through
    # the same format modules: what a playbook writes with copy is what fleet_assess writes.
    written = _reports.write_reports(report, str(tmp_path))
    for name, path in written.items():
        assert Path(path).read_bytes().decode('utf-8') == _reports.RENDERERS[name](report), name
    filters = FilterModule().filters()
    for name in ('junit', 'markdown', 'html'):
        assert filters[f'report_{name}'](report) == _reports.RENDERERS[name](report), name


def test_both_html_layouts_say_the_same_summary_and_waivers(report):
    listener_page = _report_html.render_listener_page(report)
    fleet_page = _report_html.render_fleet_page(report)
    assert 'data-layout="fleet"' in fleet_page and 'data-layout' not in listener_page
    assert 'script-src' in fleet_page and 'script-src' not in listener_page
    for pattern in (r'<title>.*?</title>', r'<section id="summary".*?<section id="chart">.*?</section>',
                    r'<section id="waivers"><h2>Waivers</h2>.*?</table>'):
        parts = [re.search(pattern, page, re.S) for page in (listener_page, fleet_page)]
        assert parts[0] and parts[1] and parts[0].group() == parts[1].group(), pattern
    assert '<script>alert' not in listener_page and '<script>alert' not in fleet_page


def test_a_failed_write_leaves_the_old_file(report, tmp_path, monkeypatch):
    path = tmp_path / 'starttls-report.json'
    path.write_text('old')

    def broken(*_args, **_kwargs):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(_reports.os, 'fsync', broken)
    with pytest.raises(_reports.ReportError, match='No space left on device'):
        _reports.write_reports(report, str(tmp_path), formats=['json'])
    assert path.read_text() == 'old'
    assert os.listdir(tmp_path) == ['starttls-report.json']


@pytest.mark.parametrize('formats, basename, message', [
    (('pdf',), 'r', 'unknown report format'),
    (('json',), 'a/b', 'plain file name'),
    (('json',), '..', 'plain file name'),
])
def test_write_reports_refuses_bad_arguments(report, tmp_path, formats, basename, message):
    with pytest.raises(_reports.ReportError, match=message):
        _reports.write_reports(report, str(tmp_path), formats=formats, basename=basename)


def test_policy_errors_come_before_any_judgement(monkeypatch):
    def must_not_run(*_args, **_kwargs):
        raise AssertionError('judged before the policy was checked')

    monkeypatch.setattr(_verdict, 'judge', must_not_run)
    with pytest.raises(_policy.PolicyError, match=r'starttls_waivers\[0\]'):
        _reports.audit([], [], None, [{'query': '[[', 'reason': 'x'}])
    with pytest.raises(_policy.PolicyError, match='starttls_fail_when'):
        _reports.audit([], [], None, [], 'summary.')


def test_module_results_are_accepted_whole():
    listeners, probes, _options = fleet('listener-drift')
    gather = {'mtas': [], 'listeners': listeners, 'warnings': [],
              'unmatched_sockets': [{'address': '0.0.0.0', 'port': 2525, 'pid': 1, 'process': 'nc', 'mta': None,
                                     'protocol_guess': None, 'reason': 'listening but no configured listener matches'}]}
    probe_result = {'changed': False, 'probes': probes, 'summary': {}}
    loop_result = {'results': [{'probes': [sc.tls_ok('127.0.30.9', 993, 'imaps', 'jump:bastion')]}]}
    flat_listeners, flat_probes, options = _reports.collect_inputs([gather], [probe_result, loop_result], {'now': sc.NOW})
    assert flat_listeners == listeners and len(flat_probes) == len(probes) + 1
    assert options['unmatched_sockets'][0]['host'] == 'mx1'
    report = _reports.audit([gather], [probe_result, loop_result], {'now': sc.NOW})
    assert 'mx1|0.0.0.0|2525' in {item['key'] for item in report['listeners']}


def test_one_fault_is_one_row_with_every_vantage_in_each_format():
    listeners, probes, options = fleet('postfix-missing-file-454')
    report = _reports.audit(listeners, probes, options, meta={'generated_at': '2026-11-28T12:00:00Z'})
    advertised = [f for f in report['findings'] if f['id'] == 'starttls-advertised-without-certificate']
    assert len(advertised) == 1 and advertised[0]['vantages'] == ['host', 'controller']
    assert report['summary']['findings'] == 2 and report['summary']['by_severity']['critical'] == 2
    rendered_html = _report_html.render_html(report)
    assert rendered_html.count('data-finding-row=') == 2
    assert '<td>host, controller</td>' in rendered_html
    markdown = _report_markdown.render_markdown(report)
    assert markdown.count('` starttls-advertised-without-certificate `') == 1
    assert 'from host, controller' in markdown
    junit = _report_junit.render_junit(report)
    failure = ET.fromstring(junit).find(".//testcase[@name='listener 127.0.10.2:25/smtp :: "
                                        "starttls-advertised-without-certificate']/failure")
    # The controller's own evidence is in the failure text, beside the host's.
    assert 'seen from: host, controller' in failure.text
    assert failure.text.count('"vantage": "controller"') >= 1 and failure.text.count('"vantage": "host"') >= 1
