# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The report as one self-contained HTML page (docs/reports.md), in two layouts sharing one head,
summary, chart and waiver table.

Up to HTML_FLEET_LISTENERS listeners the page has one article per listener with every finding's
evidence in it. Above, that page would weigh hundreds of megabytes, so the fleet page ("HTML at
fleet scale") shows the findings grouped by rule, one row each, filterable by severity, host, rule
and change in the browser (no server), with each finding's evidence and fix expanded on demand
from one JSON data block.

Everything from a server is hostile text: it is escaped (h), and the Content-Security-Policy
forbids remote loads and every script but the fleet page's own (SCRIPT, allowed by its SHA-256).
Report data never becomes markup there: evidence is put in with textContent, and the data block is
JSON whose `<`, `>` and `&` are \\u escapes, so no banner can close it.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json

from ansible_collections.mailsec.starttls.plugins.module_utils import _verdict
from ansible_collections.mailsec.starttls.plugins.module_utils._text import visible
from ansible_collections.mailsec.starttls.plugins.plugin_utils import _changes
from ansible_collections.mailsec.starttls.plugins.plugin_utils._report_text import (
    CHANGE_LIST_LIMIT, GENERATOR, all_evidence, code_spans, endpoint, evidence_json, finding_listener_key, seen_from,
    waiver_text)

# Above this many listeners the page is the fleet page.
HTML_FLEET_LISTENERS = 1000
CHART_HOST_LIMIT = 40
# Hosts listed on the fleet page (the worst first).
HOST_TABLE_LIMIT = 500
PAGE_BYTES_PLACEHOLDER = '#PAGE-BYTES-PLACEHOLDER#'
SEVERITY_COLOURS = {'critical': '#8b0000', 'high': '#d9480f', 'medium': '#e8a400', 'low': '#4a7fb0',
                    'info': '#7d8b99', 'waived': '#c9d1d9'}


def h(value) -> str:
    return html.escape('' if value is None else visible(value), quote=True)


def html_fix(text: str) -> str:
    return ''.join(f'<code>{h(part)}</code>' if is_code else h(part) for is_code, part in code_spans(text))


CSS = """
:root{--fg:#1d2733;--muted:#5b6875;--line:#d9dee3;--bg:#f6f8fa}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:var(--fg);margin:0;background:#fff}
header,main,footer{max-width:1180px;margin:0 auto;padding:0 20px}
header{padding-top:18px}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:18px;margin:28px 0 10px;border-bottom:1px solid var(--line);padding-bottom:4px}
h3{font-size:15px;margin:0}
.muted{color:var(--muted)}
.result{padding:10px 14px;border-radius:6px;font-weight:600;margin:12px 0}
.result.failed{background:#fde8e8;border:1px solid #f3b4b4;color:#8b0000}
.result.passed{background:#e6f4ea;border:1px solid #a8d5b5;color:#14532d}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:10px 0;padding:0;list-style:none}
.cards li{border:1px solid var(--line);border-radius:6px;padding:8px 12px;min-width:96px;background:var(--bg)}
.cards b{display:block;font-size:20px}
.sev{display:inline-block;padding:1px 7px;border-radius:10px;color:#fff;font-size:12px;font-weight:600}
.sev-critical{background:#8b0000}.sev-high{background:#d9480f}.sev-medium{background:#b07d00}
.sev-low{background:#4a7fb0}.sev-info{background:#6b7785}.sev-waived{background:#8a96a3}.sev-new{background:#2f6fdf}
.change{font-weight:600;margin:8px 0}
table{border-collapse:collapse;width:100%;margin:8px 0}
th,td{border:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top;overflow-wrap:break-word}
th{background:var(--bg)}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.facts th{width:240px}
.all-findings{table-layout:fixed}
.c-severity{width:92px}.c-id{width:300px}.c-host{width:130px}.c-listener{width:170px}.c-vantage{width:120px}
.all-findings code{overflow-wrap:break-word}
.listener{border:1px solid var(--line);border-radius:8px;padding:10px 14px;margin:12px 0}
.listener.status-clean{border-left:6px solid #2f9e44}
.listener.status-waived{border-left:6px solid #8a96a3}
.listener.status-findings{border-left:6px solid #d9480f}
.finding{border-top:1px dashed var(--line);padding:8px 0}
.finding.waived{opacity:.75}
.fix{background:#f1f7ff;border-left:3px solid #4a7fb0;padding:6px 10px;margin:6px 0}
code,pre{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
code{background:var(--bg);padding:0 3px;border-radius:3px;overflow-wrap:anywhere}
pre{background:var(--bg);border:1px solid var(--line);padding:8px;overflow:auto;max-height:420px;white-space:pre-wrap;overflow-wrap:anywhere}
details summary{cursor:pointer;color:var(--muted)}
svg text{font:12px system-ui,sans-serif;fill:#1d2733}
footer{color:var(--muted);padding:24px 20px 40px}
"""


FLEET_CSS = """
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


def _script_hash() -> str:
    return base64.b64encode(hashlib.sha256(SCRIPT.encode('utf-8')).digest()).decode('ascii')


def render_chart(report: dict) -> str:
    """Unwaived findings by host and severity as stacked horizontal bars, plus a waived segment."""
    hosts = sorted(report.get('hosts') or [], key=lambda host: (-host['findings'], str(host['host'])))
    hosts = [host for host in hosts if host['findings']]
    if not hosts:
        return '<p class="muted" data-chart="empty">No findings to chart.</p>'
    shown, hidden = hosts[:CHART_HOST_LIMIT], hosts[CHART_HOST_LIMIT:]
    label_width, bar_width, row, top = 240, 640, 22, 30
    most = max(host['findings'] for host in shown)
    height = top + row * len(shown) + 20
    width = label_width + bar_width + 60
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" data-chart="findings-by-host" aria-labelledby="chart-title">',
             '<title id="chart-title">Findings by host and severity</title>']
    x = label_width
    for name in list(_verdict.SEVERITIES) + ['waived']:
        parts.append(f'<rect x="{x}" y="6" width="12" height="12" fill="{SEVERITY_COLOURS[name]}"></rect>'
                     f'<text x="{x + 16}" y="16">{h(name)}</text>')
        x += 90
    for index, host in enumerate(shown):
        y = top + index * row
        label = str(host['host'])
        if len(label) > 32:
            label = label[:31] + '\u2026'
        parts.append(f'<g data-host="{h(host["host"])}" data-findings="{host["findings"]}">')
        parts.append(f'<text x="{label_width - 8}" y="{y + 14}" text-anchor="end">{h(label)}</text>')
        x = float(label_width)
        segments = [(severity, host['unwaived_by_severity'][severity]) for severity in _verdict.SEVERITIES]
        segments.append(('waived', host['findings'] - host['unwaived']))
        for name, count in segments:
            if not count:
                continue
            length = bar_width * count / most
            parts.append(f'<rect x="{x:.1f}" y="{y + 3}" width="{max(length, 1):.1f}" height="{row - 6}" '
                         f'fill="{SEVERITY_COLOURS[name]}" data-severity="{name}" data-count="{count}">'
                         f'<title>{h(host["host"])}: {count} {name}</title></rect>')
            x += length
        parts.append(f'<text x="{x + 6:.1f}" y="{y + 14}">{host["findings"]}</text></g>')
    parts.append('</svg>')
    if hidden:
        parts.append(f'<p class="muted">{len(hidden)} more host(s) with findings are not drawn; see the table.</p>')
    return ''.join(parts)


def _html_probe_rows(item: dict) -> str:
    if not item.get('probes'):
        return '<p class="muted">No probe reached this listener.</p>'
    rows = ['<table class="probes"><tr><th>vantage</th><th>target</th><th>outcome</th><th>STARTTLS</th>'
            '<th>reply</th><th>TLS</th><th>certificate</th><th>error</th></tr>']
    for probe in item['probes']:
        advertised = {True: 'advertised', False: 'not advertised', None: '-'}[probe.get('starttls_advertised')]
        certificate = probe.get('certificate_subject') or ''
        if probe.get('certificate_sha256'):
            certificate += f' (sha256 {probe["certificate_sha256"][:16]}\u2026)'
        rows.append(f'<tr><td>{h(probe.get("vantage"))}</td><td>{h(probe.get("target"))}</td>'
                    f'<td>{h(probe.get("outcome"))}</td><td>{h(advertised)}</td><td>{h(probe.get("starttls_reply") or "-")}</td>'
                    f'<td>{h(probe.get("tls_version") or "-")}</td><td>{h(certificate or "-")}</td>'
                    f'<td>{h(probe.get("error") or "-")}</td></tr>')
    rows.append('</table>')
    return ''.join(rows)


def _html_changes(report: dict) -> str:
    """The change since the previous report, right under the result."""
    changes = report.get('changes') or {}
    if changes.get('previous') is None:
        return f'<div id="changes" data-previous="none"><p class="change">{h(_changes.headline(changes))}</p></div>'
    out = [f'<div id="changes" data-previous="{h(changes["previous"].get("generated_at"))}" data-new="{changes["new"]}" '
           f'data-resolved="{changes["resolved"]}" data-persisting="{changes["persisting"]}">',
           f'<p class="change">{h(_changes.headline(changes))}</p>']
    new = [finding for finding in report.get('findings') or [] if finding.get('change') == 'new']
    for title, items, kind in (('New', new, 'new'), ('Resolved', changes.get('resolved_findings') or [], 'resolved')):
        if not items:
            continue
        out.append(f'<details class="changes-{kind}"{" open" if len(items) <= 20 else ""}><summary>{title}: {len(items)}</summary>'
                   '<table><tr><th>severity</th><th>finding</th><th>host</th><th>listener</th><th>first seen</th></tr>')
        for item in items[:CHANGE_LIST_LIMIT * 4]:
            out.append(f'<tr data-change="{kind}"><td><span class="sev sev-{h(item.get("severity"))}">{h(item.get("severity"))}</span></td>'
                       f'<td><code>{h(item.get("id"))}</code></td><td>{h(item.get("host"))}</td>'
                       f'<td>{h(endpoint(item.get("listener") or {}))}</td><td>{h(str(item.get("first_seen") or "")[:10])}</td></tr>')
        out.append('</table>')
        if len(items) > CHANGE_LIST_LIMIT * 4:
            out.append(f'<p class="muted">and {len(items) - CHANGE_LIST_LIMIT * 4} more (see the JSON report)</p>')
        out.append('</details>')
    out.append('</div>')
    return ''.join(out)


def _page_start(report: dict, *, layout: str = '', script_hash: str | None = None, css: str = CSS,
                about: str = '</p>') -> list:
    """The page up to the end of its heading paragraph (`about` ends it). The policy allows no remote
    anything and no script but the one with `script_hash`: evidence is hostile text and the page
    may be opened anywhere."""
    script_src = f"script-src 'sha256-{script_hash}'; " if script_hash else ''
    csp = f"default-src 'none'; style-src 'unsafe-inline'; {script_src}img-src data:; base-uri 'none'; form-action 'none'"
    return ['<!DOCTYPE html>', f'<html lang="en"{layout}><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f'<title>STARTTLS audit {h(report.get("generated_at"))}</title>', f'<style>{css}</style></head><body>',
            '<header><h1>STARTTLS audit</h1>',
            f'<p class="muted">Generated {h(report.get("generated_at"))} by {GENERATOR} '
            f'{h((report.get("generator") or {}).get("version") or "")} &middot; report schema '
            f'{h(report.get("schema_version"))}{about}']


def _summary_and_chart(report: dict) -> list:
    """The result, what changed, the counts and the chart: the top of both layouts."""
    summary = report['summary']
    failed = bool(summary.get('failed'))
    out = [f'<section id="summary" data-schema-version="{h(report.get("schema_version"))}" data-hosts="{summary["hosts"]}" '
           f'data-listeners="{summary["listeners"]}" data-probes="{summary["probes"]}" data-findings="{summary["findings"]}" '
           f'data-waived="{summary["waived"]}" data-unwaived="{summary["unwaived"]}" data-failed="{str(failed).lower()}">',
           f'<p class="result {"failed" if failed else "passed"}" data-result="{"failed" if failed else "passed"}">'
           + (f'FAILED: {h(summary.get("fail_reason"))}' if failed else 'Passed: no finding meets the failure rule.')
           + '</p>',
           _html_changes(report),
           f'<p class="muted">Failure rule: <code>{h(summary.get("fail_when"))}</code></p>',
           '<ul class="cards">',
           f'<li data-metric="hosts">hosts<b>{summary["hosts"]}</b></li>',
           f'<li data-metric="listeners">listeners<b>{summary["listeners"]}</b></li>',
           f'<li data-metric="findings">findings<b>{summary["findings"]}</b></li>',
           f'<li data-metric="waived">waived<b>{summary["waived"]}</b></li>']
    for severity in _verdict.SEVERITIES:
        out.append(f'<li data-severity="{severity}" data-count="{summary["by_severity"][severity]}" '
                   f'data-unwaived="{summary["unwaived_by_severity"][severity]}"><span class="sev sev-{severity}">'
                   f'{severity}</span><b>{summary["unwaived_by_severity"][severity]}</b>'
                   f'<span class="muted">{summary["by_severity"][severity] - summary["unwaived_by_severity"][severity]} waived</span></li>')
    out.append('</ul></section>')
    out.append('<section id="chart"><h2>Findings by host and severity</h2>')
    out.append(render_chart(report))
    out.append('</section>')
    return out


def _waiver_table(report: dict) -> list:
    """The waivers section up to its end: the caller adds what else it says about waivers."""
    waivers = (report.get('policy') or {}).get('waivers') or []
    out = ['<section id="waivers"><h2>Waivers</h2>']
    if waivers:
        out.append('<table><tr><th>#</th><th>state</th><th>matched</th><th>expires</th><th>reason</th><th>query</th></tr>')
        for waiver in waivers:
            out.append(f'<tr data-waiver-state="{h(waiver["state"])}"><td>{h(waiver["index"])}</td><td>{h(waiver["state"])}</td>'
                       f'<td class="num">{h(waiver["matched"])}</td><td>{h(waiver.get("expires") or "-")}</td>'
                       f'<td>{h(waiver["reason"])}</td><td><code>{h(waiver["query"])}</code></td></tr>')
        out.append('</table>')
    else:
        out.append('<p class="muted">No waivers.</p>')
    return out


def render_html(report: dict) -> str:
    """The page for `report`: the listener page, or the fleet page above HTML_FLEET_LISTENERS listeners."""
    if len(report.get('listeners') or []) > HTML_FLEET_LISTENERS:
        return render_fleet_page(report)
    return render_listener_page(report)


def render_listener_page(report: dict) -> str:
    """One article per listener, with every finding's fix and evidence."""
    findings_by_key = {finding['key']: finding for finding in report.get('findings') or []}
    out = _page_start(report) + ['</header><main>'] + _summary_and_chart(report)

    out.append('<section id="hosts"><h2>Hosts</h2><table><tr><th>host</th><th>mode</th><th>listeners</th>'
               '<th>findings</th><th>unwaived</th>' + ''.join(f'<th>{severity}</th>' for severity in _verdict.SEVERITIES)
               + '<th>worst</th></tr>')
    for host in report.get('hosts') or []:
        out.append(f'<tr data-host="{h(host["host"])}"><td>{h(host["host"])}</td><td>{h(host["mode"])}</td>'
                   f'<td class="num">{host["listeners"]}</td><td class="num">{host["findings"]}</td>'
                   f'<td class="num">{host["unwaived"]}</td>'
                   + ''.join(f'<td class="num">{host["unwaived_by_severity"][severity]}</td>' for severity in _verdict.SEVERITIES)
                   + f'<td>{h(host["worst"] or "-")}</td></tr>')
    out.append('</table></section>')

    anchors = {item['key']: f'listener-{index}' for index, item in enumerate(report.get('listeners') or [])}
    out.append('<section id="findings"><h2>Findings</h2>')
    if report.get('findings'):
        out.append('<table class="all-findings"><colgroup><col class="c-severity"><col class="c-id"><col class="c-host">'
                   '<col class="c-listener"><col class="c-vantage"><col></colgroup>'
                   '<tr><th>severity</th><th>finding</th><th>host</th><th>listener</th><th>vantage</th><th>summary</th></tr>')
        for finding in report['findings']:
            anchor = anchors.get(finding_listener_key(finding), '')
            state = ' <span class="sev sev-waived">waived</span>' if finding.get('waived') else ''
            if finding.get('change') == 'new':
                state += ' <span class="sev sev-new" data-change="new">new</span>'
            out.append(f'<tr data-finding-row="{h(finding["key"])}"><td><span class="sev sev-{h(finding["severity"])}">'
                       f'{h(finding["severity"])}</span>{state}</td><td><code>{h(finding["id"])}</code></td>'
                       f'<td>{h(finding.get("host"))}</td><td><a href="#{h(anchor)}">{h(endpoint(finding.get("listener") or {}))}'
                       f'</a></td><td>{h(seen_from(finding))}</td><td>{h(finding["summary"])}</td></tr>')
        out.append('</table>')
    else:
        out.append('<p class="muted">No findings.</p>')
    out.append('</section>')

    out.append('<section id="listeners"><h2>Listeners</h2>')
    for index, item in enumerate(report.get('listeners') or []):
        findings = [findings_by_key[key] for key in item.get('findings') or [] if key in findings_by_key]
        certificate = item.get('certificate') or {}
        out.append(f'<article class="listener status-{h(item["status"])}" id="listener-{index}" '
                   f'data-listener-key="{h(item["key"])}" data-findings="{len(findings)}" data-status="{h(item["status"])}">')
        out.append(f'<h3>{h(item.get("host"))} &mdash; {h(endpoint(item))}'
                   + (f' <span class="muted">{h(item.get("mta"))}</span>' if item.get('mta') else '')
                   + (f' <span class="sev sev-{h(item["worst"])}">{h(item["worst"])}</span>' if item.get('worst') else '')
                   + '</h3>')
        facts = [('mode', item.get('mode')), ('service', item.get('service')), ('defined at', item.get('defined_at')),
                 ('listening', item.get('listening')), ('offers STARTTLS (configuration)', item.get('offers_starttls')),
                 ('certificate', certificate.get('path')), ('key', certificate.get('key')),
                 ('chosen by', certificate.get('source')), ('certificate usable', certificate.get('usable')),
                 ('certificate sha256', certificate.get('sha256')), ('rules evaluated', len(item.get('rules') or []))]
        out.append('<table class="facts">' + ''.join(
            f'<tr><th>{h(name)}</th><td>{h(value)}</td></tr>' for name, value in facts if value is not None) + '</table>')
        out.append(_html_probe_rows(item))
        if not findings:
            out.append('<p class="muted">No findings.</p>')
        for finding in findings:
            waived = bool(finding.get('waived'))
            out.append(f'<div class="finding{" waived" if waived else ""}" data-finding-key="{h(finding["key"])}" '
                       f'data-severity="{h(finding["severity"])}" data-waived="{str(waived).lower()}">')
            out.append(f'<h4><span class="sev sev-{h(finding["severity"])}">{h(finding["severity"])}</span> '
                       f'<code>{h(finding["id"])}</code> <span class="muted">from '
                       f'{h(seen_from(finding))}</span>'
                       + (f' <span class="sev sev-waived">{h(waiver_text(finding.get("waiver")))}</span>' if waived else '')
                       + '</h4>')
            out.append(f'<p class="summary">{h(finding["summary"])}</p>')
            out.append(f'<p class="fix"><strong>Fix:</strong> {html_fix(finding.get("fix") or "")}</p>')
            out.append(f'<details><summary>Evidence</summary><pre>{h(evidence_json(all_evidence(finding)))}</pre></details>')
            out.append('</div>')
        out.append('</article>')
    out.append('</section>')

    out += _waiver_table(report)
    for waiver in report.get('waivers_expired') or []:
        out.append(f'<p class="result failed" data-waiver-expired="{h(waiver["index"])}">Waiver {h(waiver["index"])} '
                   f'expired on {h(waiver["expires"])}: it would have waived {h(waiver["matched"])} finding(s).</p>')
    for error in (report.get('policy') or {}).get('waiver_errors') or []:
        where = f'failed on {h(error.get("finding"))}' if error.get('finding') else 'cannot be used'
        out.append(f'<p class="muted">Waiver {h(error["index"])} {where}: {h(error["error"])}</p>')
    out.append('</section></main>')
    out.append(f'<footer>{GENERATOR}: a listener advertises STARTTLS if and only if a usable certificate and key are '
               'bound to its address and port.</footer></body></html>')
    return '\n'.join(out) + '\n'


def _json_data(value) -> str:
    text = json.dumps(value, separators=(',', ':'), ensure_ascii=True, default=str)
    return text.replace('<', '\\u003c').replace('>', '\\u003e').replace('&', '\\u0026')


def _since(finding: dict) -> str:
    if finding.get('change') == 'new':
        return '<span class="sev sev-new">new</span>'
    return h(str(finding.get('first_seen') or '')[:10])


def render_fleet_page(report: dict) -> str:
    """The findings grouped by rule, filterable, evidence on demand; see the module docstring."""
    findings = report.get('findings') or []
    out = _page_start(report, layout=' data-layout="fleet"', script_hash=_script_hash(), css=CSS + FLEET_CSS,
                      about=f' &middot; this page <span id="page-bytes">{PAGE_BYTES_PLACEHOLDER}</span> bytes; '
                      'every listener, probe and host is in the JSON report</p></header><main>')
    out += _summary_and_chart(report)

    hosts = sorted((host for host in report.get('hosts') or [] if host['unwaived']),
                   key=lambda host: (_verdict.SEVERITY_RANK.get(host['worst'], 9), -host['unwaived'], str(host['host'])))
    out.append(f'<section id="hosts"><details><summary>Hosts with unwaived findings: {len(hosts)}'
               + (f' (the {HOST_TABLE_LIMIT} worst shown)' if len(hosts) > HOST_TABLE_LIMIT else '')
               + '</summary><table><tr><th>host</th><th>listeners</th><th>unwaived</th>'
               + ''.join(f'<th>{severity}</th>' for severity in _verdict.SEVERITIES) + '<th>worst</th></tr>')
    for host in hosts[:HOST_TABLE_LIMIT]:
        out.append(f'<tr data-host="{h(host["host"])}"><td>{h(host["host"])}</td><td class="num">{host["listeners"]}</td>'
                   f'<td class="num">{host["unwaived"]}</td>'
                   + ''.join(f'<td class="num">{host["unwaived_by_severity"][severity]}</td>' for severity in _verdict.SEVERITIES)
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
                         f'<span class="sev sev-{severity}">{severity}</span></label>' for severity in _verdict.SEVERITIES)
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
                         'evidence': all_evidence(finding), 'key': finding.get('key')})
            position = len(data) - 1
            state = ' <span class="sev sev-waived">waived</span>' if waived else ''
            out.append(f'<tr data-i="{position}" data-key="{h(finding.get("key"))}" data-sev="{h(finding.get("severity"))}" '
                       f'data-rule="{h(rule)}" data-host="{h(finding.get("host"))}" data-waived="{int(waived)}" '
                       f'data-change="{h(finding.get("change") or "")}"><td><span class="sev sev-{h(finding.get("severity"))}">'
                       f'{h(finding.get("severity"))}</span>{state}</td><td>{h(finding.get("host"))}</td>'
                       f'<td>{h(endpoint(finding.get("listener") or {}))}</td>'
                       f'<td>{h(seen_from(finding))}</td><td>{_since(finding)}</td><td>{h(finding.get("summary"))}</td>'
                       f'<td><button type="button" data-i="{position}">evidence</button></td></tr>')
        out.append('</table></section>')
    out.append('</section>')
    out.append(f'<script type="application/json" id="evidence-data">{_json_data({"fixes": list(fixes), "items": data})}</script>')

    out += _waiver_table(report)
    out.append('</section></main>')
    out.append(f'<footer>{GENERATOR}: {h(_changes.headline(report.get("changes")))}</footer>')
    out.append(f'<script>{SCRIPT}</script></body></html>')
    page = '\n'.join(out) + '\n'
    # The page states its own weight: the digits replace a placeholder of the same encoded length or less.
    size = len(page.encode('utf-8'))
    digits = str(size - len(PAGE_BYTES_PLACEHOLDER) + len(str(size)))
    return page.replace(PAGE_BYTES_PLACEHOLDER, digits, 1)
