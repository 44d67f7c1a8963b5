# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The HTML report of a large fleet (docs/reports.md, "HTML at fleet scale").

Above FLEET_LISTENERS listeners the page of _reports.render_html (one article per listener, every
evidence block in the page) would weigh hundreds of megabytes. This page shows the findings
grouped by rule, one row each, filterable by severity, host, rule and change in the browser
(no server), with each finding's evidence and fix expanded on demand from one JSON data block.

The one script is this module's own text, allowed by its SHA-256 in the Content-Security-Policy;
report data never becomes markup: rows are escaped HTML, evidence is put in with textContent, and
the data block is JSON whose `<`, `>` and `&` are \\u escapes, so no banner can close it.
"""

from __future__ import annotations

import base64
import hashlib
import json

from ansible_collections.mailsec.starttls.plugins.module_utils import _verdict
from ansible_collections.mailsec.starttls.plugins.plugin_utils import _changes, _reports

FLEET_LISTENERS = 1000
HOST_TABLE_LIMIT = 500
PAGE_BYTES_PLACEHOLDER = '#PAGE-BYTES-PLACEHOLDER#'

SCRIPT = """
(function () {
  'use strict';
  var form = document.getElementById('filters');
  var rows = Array.prototype.slice.call(document.querySelectorAll('tr[data-i]'));
  var groups = Array.prototype.slice.call(document.querySelectorAll('section.group'));
  var shown = document.getElementById('shown');
  var evidence = null;
  function apply() {
    var severities = {};
    form.querySelectorAll('input[name=sev]').forEach(function (box) { severities[box.value] = box.checked; });
    var waived = form.querySelector('input[name=waived]').checked;
    var onlyNew = form.querySelector('input[name=new]').checked;
    var host = form.querySelector('input[name=host]').value.trim().toLowerCase();
    var rule = form.querySelector('select[name=rule]').value;
    var total = 0;
    var counts = {};
    rows.forEach(function (row) {
      var d = row.dataset;
      var visible = severities[d.sev] && (waived || d.waived !== '1') && (!onlyNew || d.change === 'new')
        && (!rule || d.rule === rule) && (!host || d.host.toLowerCase().indexOf(host) !== -1);
      row.hidden = !visible;
      var open = document.getElementById('ev-' + d.i);
      if (open) { open.hidden = !visible; }
      if (visible) { total += 1; counts[d.rule] = (counts[d.rule] || 0) + 1; }
    });
    groups.forEach(function (group) {
      var count = counts[group.dataset.rule] || 0;
      group.hidden = count === 0;
      group.querySelector('.count').textContent = String(count);
    });
    shown.textContent = String(total);
    shown.dataset.shown = String(total);
  }
  function show(button) {
    var index = Number(button.dataset.i);
    var existing = document.getElementById('ev-' + index);
    if (existing) { existing.remove(); button.textContent = 'evidence'; return; }
    if (evidence === null) { evidence = JSON.parse(document.getElementById('evidence-data').textContent); }
    var item = evidence.items[index];
    var row = document.createElement('tr');
    row.id = 'ev-' + index;
    row.className = 'evidence';
    var cell = document.createElement('td');
    cell.colSpan = 7;
    var fix = document.createElement('p');
    fix.className = 'fix';
    fix.textContent = 'Fix: ' + evidence.fixes[item.fix];
    var pre = document.createElement('pre');
    pre.textContent = JSON.stringify(item.evidence, null, 2);
    cell.appendChild(fix);
    cell.appendChild(pre);
    row.appendChild(cell);
    button.closest('tr').after(row);
    button.textContent = 'hide';
  }
  form.addEventListener('input', apply);
  form.addEventListener('change', apply);
  document.getElementById('findings').addEventListener('click', function (event) {
    var button = event.target.closest('button[data-i]');
    if (button) { show(button); }
  });
  document.documentElement.dataset.ready = 'true';
  apply();
}());
"""

EXTRA_CSS = """
#filters{display:flex;flex-wrap:wrap;gap:12px;align-items:center;background:var(--bg);border:1px solid var(--line);
border-radius:6px;padding:8px 12px;position:sticky;top:0;z-index:1}
#filters label{white-space:nowrap}
section.group{margin:14px 0}
section.group h3{font-size:15px}
table.rows{table-layout:fixed}
table.rows td{font-size:13px}
.c-sev{width:92px}.c-host{width:230px}.c-listener{width:170px}.c-seen{width:150px}.c-since{width:96px}.c-more{width:84px}
tr.evidence td{background:#fbfcfd}
button{font:inherit;font-size:12px;cursor:pointer}
"""


def _script_hash() -> str:
    return base64.b64encode(hashlib.sha256(SCRIPT.encode('utf-8')).digest()).decode('ascii')


def _json_data(value) -> str:
    text = json.dumps(value, separators=(',', ':'), ensure_ascii=True, default=str)
    return text.replace('<', '\\u003c').replace('>', '\\u003e').replace('&', '\\u0026')


def _since(finding: dict) -> str:
    if finding.get('change') == 'new':
        return '<span class="sev sev-new">new</span>'
    return _reports.h(str(finding.get('first_seen') or '')[:10])


def render(report: dict) -> str:
    """The fleet page; see the module docstring."""
    h = _reports.h
    summary = report['summary']
    failed = bool(summary.get('failed'))
    findings = report.get('findings') or []
    csp = (f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{_script_hash()}'; img-src data:; "
           "base-uri 'none'; form-action 'none'")
    out = ['<!DOCTYPE html>', '<html lang="en" data-layout="fleet"><head><meta charset="utf-8">',
           f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f'<title>STARTTLS audit {h(report.get("generated_at"))}</title>',
           f'<style>{_reports.CSS}{EXTRA_CSS}</style></head><body>',
           '<header><h1>STARTTLS audit</h1>',
           f'<p class="muted">Generated {h(report.get("generated_at"))} by {_reports.GENERATOR} '
           f'{h((report.get("generator") or {}).get("version") or "")} &middot; report schema '
           f'{h(report.get("schema_version"))} &middot; this page <span id="page-bytes">{PAGE_BYTES_PLACEHOLDER}</span> bytes; '
           'every listener, probe and host is in the JSON report</p></header><main>',
           f'<section id="summary" data-schema-version="{h(report.get("schema_version"))}" data-hosts="{summary["hosts"]}" '
           f'data-listeners="{summary["listeners"]}" data-probes="{summary["probes"]}" data-findings="{summary["findings"]}" '
           f'data-waived="{summary["waived"]}" data-unwaived="{summary["unwaived"]}" data-failed="{str(failed).lower()}">',
           f'<p class="result {"failed" if failed else "passed"}" data-result="{"failed" if failed else "passed"}">'
           + (f'FAILED: {h(summary.get("fail_reason"))}' if failed else 'Passed: no finding meets the failure rule.')
           + '</p>',
           _reports._html_changes(report),  # pylint: disable=protected-access
           f'<p class="muted">Failure rule: <code>{h(summary.get("fail_when"))}</code></p>',
           '<ul class="cards">',
           f'<li data-metric="hosts">hosts<b>{summary["hosts"]}</b></li>',
           f'<li data-metric="listeners">listeners<b>{summary["listeners"]}</b></li>',
           f'<li data-metric="findings">findings<b>{summary["findings"]}</b></li>',
           f'<li data-metric="waived">waived<b>{summary["waived"]}</b></li>']
    for severity in _reports.SEVERITIES:
        out.append(f'<li data-severity="{severity}" data-count="{summary["by_severity"][severity]}" '
                   f'data-unwaived="{summary["unwaived_by_severity"][severity]}"><span class="sev sev-{severity}">'
                   f'{severity}</span><b>{summary["unwaived_by_severity"][severity]}</b>'
                   f'<span class="muted">{summary["by_severity"][severity] - summary["unwaived_by_severity"][severity]} waived</span></li>')
    out.append('</ul></section>')

    out.append('<section id="chart"><h2>Findings by host and severity</h2>')
    out.append(_reports.render_chart(report))
    out.append('</section>')

    hosts = sorted((host for host in report.get('hosts') or [] if host['unwaived']),
                   key=lambda host: (_verdict.SEVERITY_RANK.get(host['worst'], 9), -host['unwaived'], str(host['host'])))
    out.append(f'<section id="hosts"><details><summary>Hosts with unwaived findings: {len(hosts)}'
               + (f' (the {HOST_TABLE_LIMIT} worst shown)' if len(hosts) > HOST_TABLE_LIMIT else '')
               + '</summary><table><tr><th>host</th><th>listeners</th><th>unwaived</th>'
               + ''.join(f'<th>{severity}</th>' for severity in _reports.SEVERITIES) + '<th>worst</th></tr>')
    for host in hosts[:HOST_TABLE_LIMIT]:
        out.append(f'<tr data-host="{h(host["host"])}"><td>{h(host["host"])}</td><td class="num">{host["listeners"]}</td>'
                   f'<td class="num">{host["unwaived"]}</td>'
                   + ''.join(f'<td class="num">{host["unwaived_by_severity"][severity]}</td>' for severity in _reports.SEVERITIES)
                   + f'<td>{h(host["worst"] or "-")}</td></tr>')
    out.append('</table></details></section>')

    by_rule: dict = {}
    for index, finding in enumerate(findings):
        by_rule.setdefault(finding.get('id'), []).append(index)
    order = sorted(by_rule, key=lambda rule: (min(_verdict.SEVERITY_RANK.get(findings[index].get('severity'), 9)
                                                  for index in by_rule[rule]), str(rule)))
    out.append('<section id="findings"><h2>Findings</h2>')
    out.append('<form id="filters" data-filters="severity host rule new">'
               + ''.join(f'<label><input type="checkbox" name="sev" value="{severity}" checked> '
                         f'<span class="sev sev-{severity}">{severity}</span></label>' for severity in _reports.SEVERITIES)
               + '<label><input type="checkbox" name="waived" checked> waived</label>'
               + '<label><input type="checkbox" name="new"> only new</label>'
               + '<label>host <input type="search" name="host" placeholder="name contains"></label>'
               + '<label>rule <select name="rule"><option value="">all</option>'
               + ''.join(f'<option value="{h(rule)}">{h(rule)} ({len(by_rule[rule])})</option>' for rule in order)
               + f'</select></label><span><b id="shown" data-shown="{len(findings)}">{len(findings)}</b> of '
               f'{len(findings)} shown</span></form>')
    if not findings:
        out.append('<p class="muted">No findings.</p>')
    data: list = []
    fixes: dict = {}  # one fix text serves many findings of a rule and MTA: each is in the page once
    for rule in order:
        indexes = by_rule[rule]
        title = (_verdict.RULES.get(rule) or {}).get('title') or ''
        out.append(f'<section class="group" data-rule="{h(rule)}"><h3><code>{h(rule)}</code> {h(title)} &mdash; '
                   f'<span class="count">{len(indexes)}</span></h3>'
                   '<table class="rows"><colgroup><col class="c-sev"><col class="c-host"><col class="c-listener">'
                   '<col class="c-seen"><col class="c-since"><col><col class="c-more"></colgroup>'
                   '<tr><th>severity</th><th>host</th><th>listener</th><th>seen from</th><th>since</th><th>summary</th>'
                   '<th></th></tr>')
        for index in indexes:
            finding = findings[index]
            waived = bool(finding.get('waived'))
            data.append({'fix': fixes.setdefault(finding.get('fix') or '', len(fixes)),
                         'evidence': _reports.all_evidence(finding), 'key': finding.get('key')})
            position = len(data) - 1
            state = ' <span class="sev sev-waived">waived</span>' if waived else ''
            out.append(f'<tr data-i="{position}" data-key="{h(finding.get("key"))}" data-sev="{h(finding.get("severity"))}" '
                       f'data-rule="{h(rule)}" data-host="{h(finding.get("host"))}" data-waived="{int(waived)}" '
                       f'data-change="{h(finding.get("change") or "")}"><td><span class="sev sev-{h(finding.get("severity"))}">'
                       f'{h(finding.get("severity"))}</span>{state}</td><td>{h(finding.get("host"))}</td>'
                       f'<td>{h(_reports._endpoint(finding.get("listener") or {}))}</td>'  # pylint: disable=protected-access
                       f'<td>{h(_reports.seen_from(finding))}</td><td>{_since(finding)}</td><td>{h(finding.get("summary"))}</td>'
                       f'<td><button type="button" data-i="{position}">evidence</button></td></tr>')
        out.append('</table></section>')
    out.append('</section>')
    out.append(f'<script type="application/json" id="evidence-data">{_json_data({"fixes": list(fixes), "items": data})}</script>')

    waivers = (report.get('policy') or {}).get('waivers') or []
    out.append('<section id="waivers"><h2>Waivers</h2>')
    if waivers:
        out.append('<table><tr><th>#</th><th>state</th><th>matched</th><th>expires</th><th>reason</th><th>query</th></tr>')
        for waiver in waivers:
            out.append(f'<tr data-waiver-state="{h(waiver["state"])}"><td>{h(waiver["index"])}</td><td>{h(waiver["state"])}</td>'
                       f'<td class="num">{h(waiver["matched"])}</td><td>{h(waiver.get("expires") or "-")}</td>'
                       f'<td>{h(waiver["reason"])}</td><td><code>{h(waiver["query"])}</code></td></tr>')
        out.append('</table>')
    else:
        out.append('<p class="muted">No waivers.</p>')
    out.append('</section></main>')
    out.append(f'<footer>{_reports.GENERATOR}: {h(_changes.headline(report.get("changes")))}</footer>')
    out.append(f'<script>{SCRIPT}</script></body></html>')
    page = '\n'.join(out) + '\n'
    # The page states its own weight: the digits replace a placeholder of the same encoded length or less.
    size = len(page.encode('utf-8'))
    digits = str(size - len(PAGE_BYTES_PLACEHOLDER) + len(str(size)))
    return page.replace(PAGE_BYTES_PLACEHOLDER, digits, 1)
