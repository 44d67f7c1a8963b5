# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Partial reports of sliced runs and their merge, and what changed since the previous report."""

from __future__ import annotations

import copy
import json
import os

import pytest

from ansible_collections.mailsec.starttls.plugins.module_utils import _verdict
from ansible_collections.mailsec.starttls.plugins.plugin_utils import _changes, _merge, _report_html, _report_junit, _report_markdown, _reports
from ansible_collections.mailsec.starttls.tests.unit.plugins import scenarios as sc
from ansible_collections.mailsec.starttls.tests.unit.plugins.plugin_utils import schema_check

SCHEMA = json.loads(open(os.path.join(os.path.dirname(__file__), '..', '..', '..', '..', 'docs', 'report.schema.json'),
                         encoding='utf-8').read())
WAIVERS = [{'query': "id=='pre-tls-surplus'", 'reason': 'lab'}, {'query': "vantage=='jump:bastion'", 'reason': 'dmz'}]
NAMES = ('postfix-missing-file-454', 'exim-self-made-certificate', 'injection', 'blackbox-554', 'listener-drift',
         'postfix-good', 'blackbox-vantages-disagree', 'legacy-tls')

# postfix-good and legacy-tls share an endpoint: the slicing test leaves postfix-good out.
SLICED = [name for name in NAMES if name != 'postfix-good']


def scenario_fleet() -> dict:
    """host -> (listeners, probes, options): each scenario's listeners on a host of its own."""
    fleet = {}
    for name in NAMES:
        case = copy.deepcopy(sc.scenarios()[name])
        for listener in case['listeners']:
            listener['host'] = name
            if isinstance(listener.get('probe'), dict):
                listener['probe'] = dict(listener['probe'])
        sockets = [dict(item, host=name) for item in case['options'].get('unmatched_sockets') or []]
        options = dict(case['options'], unmatched_sockets=sockets)
        fleet[name] = (case['listeners'], case['probes'], options)
    return fleet


def combined(fleet: dict, hosts) -> tuple:
    listeners, probes, sockets = [], [], []
    for host in hosts:
        host_listeners, host_probes, options = fleet[host]
        listeners += host_listeners
        probes += host_probes
        sockets += options['unmatched_sockets']
    return listeners, probes, {'now': sc.NOW, 'unmatched_sockets': sockets}


def comparable(report: dict) -> dict:
    """What one run and a merge of slices must agree on: findings, summary, failure."""
    findings = [{key: value for key, value in finding.items() if key not in ('first_seen',)}
                for finding in report['findings']]
    return {'findings': findings, 'summary': report['summary'], 'hosts': report['hosts'],
            'listeners': report['listeners'], 'waivers': report['policy']['waivers']}


def test_scenario_hosts_do_not_share_endpoints():
    # The slices below are only equivalent to one run when no probe belongs to two hosts.
    seen = {}
    for host, (listeners, _probes, _options) in scenario_fleet().items():
        if host not in SLICED:
            continue
        for listener in listeners:
            key = (_verdict.canonical_address(listener.get('address')), listener.get('port'))
            assert seen.setdefault(key, host) == host, key


def test_merged_slices_equal_one_run(tmp_path):
    fleet = scenario_fleet()
    hosts = sorted(SLICED)
    listeners, probes, options = combined(fleet, hosts)
    whole = _reports.audit(listeners, probes, options, WAIVERS, meta={'hosts': len(hosts), 'vantages': ['controller']},
                           assessed_hosts=hosts)
    slices = [hosts[index::4] for index in range(4)]
    for number, part in enumerate(slices):
        listeners, probes, options = combined(fleet, part)
        # A slice applies the waivers too; the merge must not be misled by them.
        report = _reports.audit(listeners, probes, options, WAIVERS[:1],
                                meta={'hosts': len(part), 'vantages': ['controller'],
                                      'partial': {'name': _merge.partial_name(part), 'hosts': part}},
                                assessed_hosts=part)
        path = _merge.write_partial(report, str(tmp_path))
        assert os.path.basename(path) == f'starttls-report.partial-{_merge.partial_name(part)}.json', number
    paths = _merge.find_partials(str(tmp_path))
    assert len(paths) == 4
    merged = _merge.merge([_merge.load_partial(path) for path in paths], WAIVERS)
    assert comparable(merged) == comparable(whole)
    assert merged['summary']['failed'] is True and merged['meta']['hosts'] == len(hosts)
    in_file_order = sorted(slices, key=_merge.partial_name)
    assert [source['hosts_used'] for source in merged['meta']['merged_from']] == [len(part) for part in in_file_order]
    assert schema_check.validate(merged, SCHEMA) == []
    for renderer in _reports.RENDERERS.values():
        assert renderer(merged)


def test_the_newest_partial_speaks_for_a_host(tmp_path):
    fleet = scenario_fleet()
    first = _reports.audit(*combined(fleet, ['postfix-missing-file-454']),
                           meta={'generated_at': '2026-11-28T01:00:00Z',
                                 'partial': {'name': 'batch-1', 'hosts': ['postfix-missing-file-454']}})
    # The same host again, now healthy (its listener taken from the good scenario).
    healthy_listeners, healthy_probes, options = combined(fleet, ['postfix-good'])
    for listener in healthy_listeners:
        listener['host'] = 'postfix-missing-file-454'
    again = _reports.audit(healthy_listeners, healthy_probes, options,
                           meta={'generated_at': '2026-11-28T02:00:00Z',
                                 'partial': {'name': 'batch-1-again', 'hosts': ['postfix-missing-file-454']}})
    for report in (again, first):
        _merge.write_partial(report, str(tmp_path))
    merged = _merge.merge([_merge.load_partial(path) for path in _merge.find_partials(str(tmp_path))])
    assert merged['findings'] == [] and merged['summary']['failed'] is False
    assert {source['name']: source['hosts_used'] for source in merged['meta']['merged_from']} == {
        'batch-1': 0, 'batch-1-again': 1}


def test_hosts_a_slice_could_not_assess_keep_their_earlier_findings(tmp_path):
    fleet = scenario_fleet()
    before = run_at(fleet, ['postfix-missing-file-454', 'legacy-tls'], '2026-11-27T06:00:00Z')
    # legacy-tls was unreachable in its slice: the slice names it unassessed, not assessed.
    report = _reports.audit(*combined(fleet, ['postfix-missing-file-454']),
                            meta={'partial': {'name': 'a', 'hosts': ['postfix-missing-file-454']},
                                  'unassessed': ['legacy-tls']})
    _merge.write_partial(report, str(tmp_path))
    merged = _merge.merge([_merge.load_partial(path) for path in _merge.find_partials(str(tmp_path))], previous=before)
    assert merged['meta']['unassessed'] == ['legacy-tls'] and merged['meta']['hosts'] == 2
    assert merged['changes']['resolved'] == 0
    assert merged['changes']['not_assessed'] == len([f for f in before['findings'] if f['host'] == 'legacy-tls']) > 0


def test_partial_names_are_checked_and_archives_move_the_partials(tmp_path):
    with pytest.raises(_merge.MergeError, match='partial report name'):
        _merge.partial_path(str(tmp_path), 'starttls-report', '../escape')
    assert _merge.partial_name(['b', 'a']) == _merge.partial_name(['a', 'b']) != _merge.partial_name(['a'])
    (tmp_path / 'starttls-report.partial-x.json').write_text('{"schema_version": 1, "findings": []}')
    with pytest.raises(_merge.MergeError, match='meta.partial.hosts'):
        _merge.load_partial(str(tmp_path / 'starttls-report.partial-x.json'))
    archive = _merge.archive_partials(_merge.find_partials(str(tmp_path)), str(tmp_path), 'starttls-report',
                                      '2026-11-28T06:00:00Z')
    assert archive.endswith('starttls-report.merged/20261128T060000Z')
    assert _merge.find_partials(str(tmp_path)) == [] and os.listdir(archive) == ['starttls-report.partial-x.json']
    with pytest.raises(_merge.MergeError, match='no partial reports'):
        _merge.merge([])


# -- what changed --------------------------------------------------------------------------

def run_at(fleet, hosts, when, previous=None):
    return _reports.audit(*combined(fleet, hosts), meta={'generated_at': when}, previous=previous, assessed_hosts=hosts)


def test_without_a_previous_report_nothing_is_compared():
    report = run_at(scenario_fleet(), ['postfix-missing-file-454'], '2026-11-28T06:00:00Z')
    assert report['changes']['previous'] is None and report['changes']['new'] is None
    assert {finding['change'] for finding in report['findings']} == {None}
    assert {finding['first_seen'] for finding in report['findings']} == {'2026-11-28T06:00:00Z'}
    assert 'No previous report' in _report_markdown.render_markdown(report)


def test_new_resolved_and_persisting_with_first_seen_dates():
    fleet = scenario_fleet()
    day_one = run_at(fleet, ['postfix-missing-file-454', 'legacy-tls'], '2026-11-26T06:00:00Z')
    day_two = run_at(fleet, ['postfix-missing-file-454', 'legacy-tls'], '2026-11-27T06:00:00Z', day_one)
    assert day_two['changes']['new'] == 0 and day_two['changes']['resolved'] == 0
    assert day_two['changes']['persisting'] == len(day_two['findings'])
    # Day three: legacy-tls is fixed (healthy listener in its place), injection appears.
    healthy, healthy_probes, _options = combined(fleet, ['postfix-good'])
    for listener in healthy:
        listener['host'] = 'legacy-tls'
    listeners, probes, options = combined(fleet, ['postfix-missing-file-454', 'injection'])
    day_three = _reports.audit(listeners + healthy, probes + healthy_probes, options,
                               meta={'generated_at': '2026-11-28T06:00:00Z'}, previous=day_two,
                               assessed_hosts=['postfix-missing-file-454', 'legacy-tls', 'injection'])
    changes = day_three['changes']
    kb = [f for f in day_three['findings'] if f['host'] == 'postfix-missing-file-454']
    assert kb and all(f['change'] == 'persisting' and f['first_seen'] == '2026-11-26T06:00:00Z' for f in kb)
    injected = [f for f in day_three['findings'] if f['host'] == 'injection']
    assert injected and all(f['change'] == 'new' and f['first_seen'] == '2026-11-28T06:00:00Z' for f in injected)
    legacy_before = [f for f in day_two['findings'] if f['host'] == 'legacy-tls']
    assert changes['resolved'] == len(legacy_before) > 0
    assert {item['key'] for item in changes['resolved_findings']} == {f['key'] for f in legacy_before}
    assert all(item['first_seen'] == '2026-11-26T06:00:00Z' and item['last_seen'] == '2026-11-27T06:00:00Z'
               for item in changes['resolved_findings'])
    assert changes['new'] == len(injected) and changes['persisting'] == len(kb)
    assert changes['previous']['generated_at'] == '2026-11-27T06:00:00Z'
    assert schema_check.validate(day_three, SCHEMA) == []
    # The reports lead with the change.
    markdown = _report_markdown.render_markdown(day_three)
    assert markdown.index('## What changed') < markdown.index('## Summary')
    assert f"{changes['new']} new, {changes['resolved']} resolved, {changes['persisting']} persisting" in markdown
    page = _report_html.render_html(day_three)
    assert page.index('id="changes"') < page.index('class="cards"')
    assert f'data-resolved="{changes["resolved"]}"' in page and 'data-change="new"' in page
    assert 'first seen: 2026-11-26T06:00:00Z' in _report_junit.render_junit(day_three)
    # A fail_when on the change itself.
    strict = _reports.audit(listeners + healthy, probes + healthy_probes, options, fail_when='changes.new > `0`',
                            meta={'generated_at': '2026-11-28T06:00:00Z'}, previous=day_two)
    assert strict['summary']['failed'] is True


def test_hosts_not_assessed_are_not_resolved_and_old_keys_compare():
    fleet = scenario_fleet()
    before = run_at(fleet, ['postfix-missing-file-454', 'legacy-tls'], '2026-11-27T06:00:00Z')
    # A report of before one finding per fault: one finding per sighting, keys naming the vantage.
    for finding in before['findings']:
        finding['key'] = finding['sightings'][0]['key']
    before['findings'] += [dict(finding, vantage='controller', key=finding['key'] + 'x')
                           for finding in before['findings']]
    batch = run_at(fleet, ['postfix-missing-file-454'], '2026-11-28T06:00:00Z', before)
    assert batch['changes']['resolved'] == 0 and batch['changes']['new'] == 0
    assert batch['changes']['not_assessed'] == len({_changes.fault_of(f) for f in before['findings']
                                                    if f['host'] == 'legacy-tls'})
    assert 'did not assess' in _changes.headline(batch['changes'])


def test_previous_reports_are_read_with_care(tmp_path):
    assert _changes.load_previous(str(tmp_path / 'none.json')) is None
    with pytest.raises(_changes.PreviousReportError, match='does not exist'):
        _changes.load_previous(str(tmp_path / 'none.json'), required=True)
    (tmp_path / 'bad.json').write_text('{"findings": ')
    with pytest.raises(_changes.PreviousReportError, match='cannot be read'):
        _changes.load_previous(str(tmp_path / 'bad.json'))
    (tmp_path / 'other.json').write_text('{"a": 1}')
    with pytest.raises(_changes.PreviousReportError, match='not a mailsec.starttls JSON report'):
        _changes.load_previous(str(tmp_path / 'other.json'))
