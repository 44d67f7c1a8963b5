# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet HTML page: chosen by size, escaped, its one script pinned by hash, its numbers right."""

from __future__ import annotations

import base64
import hashlib
import html.parser
import json
import re

from ansible_collections.mailsec.starttls.plugins.plugin_utils import _report_html, _report_text, _reports
from ansible_collections.mailsec.starttls.tests.unit.plugins.plugin_utils.test_reports import hostile_fleet


class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.scripts = []
        self.rows = []
        self.in_script = None
        self.groups = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == 'script':
            self.in_script = {'type': attrs.get('type'), 'text': ''}
            self.scripts.append(self.in_script)
        if tag == 'tr' and 'data-i' in attrs:
            self.rows.append(attrs)
        if tag == 'section' and attrs.get('class') == 'group':
            self.groups.append(attrs['data-rule'])

    def handle_endtag(self, tag):
        if tag == 'script':
            self.in_script = None

    def handle_data(self, data):
        if self.in_script is not None:
            self.in_script['text'] += data


def fleet_report():
    listeners, probes, options = hostile_fleet()
    return _reports.audit(listeners, probes, options, [{'query': "id=='pre-tls-surplus'", 'reason': 'lab'}],
                          meta={'generated_at': '2026-11-28T12:00:00Z'})


def test_large_reports_get_the_fleet_page(monkeypatch):
    report = fleet_report()
    assert 'data-layout="fleet"' not in _report_html.render_html(report)
    monkeypatch.setattr(_report_html, 'HTML_FLEET_LISTENERS', 3)
    page = _report_html.render_html(report)
    assert 'data-layout="fleet"' in page


def test_fleet_page_escapes_pins_its_script_and_carries_the_numbers():
    report = fleet_report()
    page = _report_html.render_fleet_page(report)
    parsed = Page()
    parsed.feed(page)
    code = [script for script in parsed.scripts if script['type'] is None]
    data = [script for script in parsed.scripts if script['type'] == 'application/json']
    assert len(code) == 1 and len(data) == 1
    digest = base64.b64encode(hashlib.sha256(code[0]['text'].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in page and "default-src 'none'" in page
    # Hostile server text never becomes markup, in the rows or in the data block.
    assert '<script>alert' not in page and '<img src=x' not in page
    assert '<' not in data[0]['text'] and '>' not in data[0]['text']
    blob = json.loads(data[0]['text'])
    evidence = blob['items']
    assert len(parsed.rows) == len(evidence) == len(report['findings'])
    assert len(blob['fixes']) == len(set(blob['fixes'])) <= len(evidence)
    by_key = {finding['key']: finding for finding in report['findings']}
    for row in parsed.rows:
        finding = by_key[row['data-key']]
        item = evidence[int(row['data-i'])]
        assert item['key'] == finding['key'] and blob['fixes'][item['fix']] == finding['fix']
        assert item['evidence'] == json.loads(json.dumps(_report_text.all_evidence(finding), default=str))
        assert row['data-sev'] == finding['severity'] and row['data-rule'] == finding['id']
        assert row['data-host'] == str(finding['host']) and row['data-waived'] == str(int(finding['waived']))
    assert sorted(parsed.groups) == sorted({finding['id'] for finding in report['findings']})
    # The page states its own size.
    assert re.search(r'<span id="page-bytes">(\d+)</span>', page).group(1) == str(len(page.encode('utf-8')))
