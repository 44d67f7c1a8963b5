# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Partial reports of sliced and batched runs, and their merge into one fleet report
(docs/fleet.md).

A slice (an AWX job slice, a `--limit` batch) judges its own hosts and writes
`<basename>.partial-<name>.json` into the report directory; `<name>` is the user's, or a digest
of the slice's host list, so two slices never overwrite each other and a re-run of one slice
replaces its own earlier partial. The merge reads every partial there, keeps for each host the
newest partial that assessed it, applies the waivers and the failure rule once to the whole
fleet, compares it with the previous fleet report, and writes the fleet report in every format.
"""

from __future__ import annotations

import datetime
import glob
import hashlib
import os
import re

from ansible_collections.mailsec.starttls.plugins.plugin_utils import _changes, _policy, _report_json, _reports

PARTIAL_INFIX = '.partial-'
_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$')


class MergeError(ValueError):
    """Partial reports that cannot be written, read or merged."""


def partial_name(hosts) -> str:
    """A name of the slice's own: a digest of its sorted host list."""
    digest = hashlib.sha256('\n'.join(sorted(str(host) for host in hosts)).encode('utf-8')).hexdigest()
    return f'hosts-{digest[:16]}'


def partial_path(directory: str, basename: str, name: str) -> str:
    if not _NAME.match(str(name)):
        raise MergeError(f'partial report name {name!r}: use letters, digits, ".", "_" and "-" (at most 100)')
    return os.path.join(directory, f'{basename}{PARTIAL_INFIX}{name}.json')


def write_partial(report: dict, directory: str, basename: str = _reports.DEFAULT_BASENAME) -> str:
    """Writes the partial report (JSON) and returns its path."""
    name = ((report.get('meta') or {}).get('partial') or {}).get('name')
    path = partial_path(directory, basename, name)
    try:
        os.makedirs(directory, exist_ok=True)
        _reports.atomic_write(path, _report_json.iter_json(report))
    except OSError as exc:
        raise MergeError(f'cannot write partial report {path}: {exc.strerror or exc}')
    return path


def find_partials(directory: str, basename: str = _reports.DEFAULT_BASENAME) -> list:
    pattern = os.path.join(glob.escape(directory), f'{glob.escape(basename)}{PARTIAL_INFIX}*.json')
    return sorted(glob.glob(pattern))


def load_partial(path: str) -> dict:
    try:
        report = _changes.load_previous(path, required=True)
    except _changes.PreviousReportError as exc:
        raise MergeError(str(exc).replace('previous report', 'partial report'))
    partial = (report.get('meta') or {}).get('partial')
    if not isinstance(partial, dict) or not isinstance(partial.get('hosts'), list):
        raise MergeError(f'partial report {path} has no meta.partial.hosts: not written by a partial run')
    if not isinstance(report.get('listeners'), list):
        raise MergeError(f'partial report {path} has no listeners')
    report['source'] = path
    return report


def _clean_finding(finding: dict) -> dict:
    """A finding as the judgement made it: the slice's waiver state and change are left out."""
    finding = dict(finding)
    for key in ('waived', 'waiver', 'change'):
        finding.pop(key, None)
    if isinstance(finding.get('sightings'), list):
        finding['sightings'] = [{key: value for key, value in sighting.items() if key != 'waiver'}
                                for sighting in finding['sightings'] if isinstance(sighting, dict)]
    return finding


def merge(partials: list, waivers=None, fail_when=None, meta: dict | None = None, previous: dict | None = None,
          today=None) -> dict:
    """The fleet report of `partials` (loaded partial reports). PolicyError for a bad policy."""
    _policy.check_policy(waivers, fail_when)
    if not partials:
        raise MergeError('no partial reports to merge')
    # The newest partial that assessed a host speaks for it (a batch run again replaces its first run).
    owner: dict = {}
    for index, partial in sorted(enumerate(partials), key=lambda pair: (str(pair[1].get('generated_at')), pair[0])):
        for host in partial['meta']['partial']['hosts']:
            owner[str(host)] = index
    findings, listeners, vantages, sources = [], [], [], []
    unassessed: set = set()
    check_mode = False
    for index, partial in enumerate(partials):
        mine = {host for host, owning in owner.items() if owning == index}
        findings.extend(_clean_finding(finding) for finding in partial.get('findings') or []
                        if isinstance(finding, dict) and str(finding.get('host')) in mine)
        listeners.extend(dict(item) for item in partial['listeners']
                         if isinstance(item, dict) and str(item.get('host')) in mine)
        partial_meta = partial.get('meta') or {}
        for vantage in partial_meta.get('vantages') or []:
            if vantage not in vantages:
                vantages.append(vantage)
        check_mode = check_mode or bool(partial_meta.get('check_mode'))
        unassessed.update(str(host) for host in partial_meta.get('unassessed') or [])
        sources.append({'name': partial_meta['partial'].get('name'), 'generated_at': partial.get('generated_at'),
                        'path': partial.get('source'), 'hosts': len(partial_meta['partial']['hosts']),
                        'hosts_used': len(mine)})
    policy = _policy.apply_waivers(findings, waivers, today)
    merged_meta = dict(meta or {})
    unassessed -= set(owner)
    merged_meta.update(hosts=len(owner) + len(unassessed), vantages=vantages, check_mode=check_mode,
                       merged_from=sources)
    if unassessed:
        merged_meta['unassessed'] = sorted(unassessed)
    versions = {(partial.get('generator') or {}).get('version') for partial in partials} - {None}
    if 'collection_version' not in merged_meta and len(versions) == 1:
        merged_meta['collection_version'] = versions.pop()
    return _reports.assemble_report(policy['findings'], listeners, merged_meta, fail_when=fail_when, policy=policy,
                                    previous=previous, assessed_hosts=sorted(owner))


def archive_partials(paths: list, directory: str, basename: str, generated_at: str | None) -> str:
    """Moves merged partials out of the way (<basename>.merged/<time>/), so that the next round of
    slices starts clean; returns the archive directory."""
    stamp = re.sub(r'[^0-9A-Za-z]', '', str(generated_at or '')) or \
        datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ')
    archive = os.path.join(directory, f'{basename}.merged', stamp)
    try:
        os.makedirs(archive, exist_ok=True)
        for path in paths:
            os.replace(path, os.path.join(archive, os.path.basename(path)))
    except OSError as exc:
        raise MergeError(f'cannot move merged partial reports to {archive}: {exc.strerror or exc}')
    return archive
