# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet HTML report in headless Chromium: it loads, runs only its own script, shows the JSON
report's numbers, and its filters (severity, host, rule) and on-demand evidence work.

Chromium is driven as tests/integration/test_report_html.py drives it (DevTools on a pipe).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ansible_collections.mailsec.starttls.plugins.plugin_utils._report_text import all_evidence

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
LOAD_TIMEOUT_S = 300
DRIVER = os.path.join(os.path.dirname(BENCH_DIR), 'tests', 'integration', 'test_report_html.py')

FACTS = """
(() => {
  const rows = document.querySelectorAll('tr[data-i]');
  const nav = performance.getEntriesByType('navigation')[0];
  return {
    ready: document.documentElement.dataset.ready === 'true',
    layout: document.documentElement.dataset.layout,
    rows: rows.length,
    shown: Number(document.getElementById('shown').dataset.shown),
    findings: Number(document.getElementById('summary').dataset.findings),
    failed: document.getElementById('summary').dataset.failed,
    pageBytes: Number(document.getElementById('page-bytes').textContent),
    scripts: document.scripts.length,
    resources: performance.getEntriesByType('resource').length,
    loadMs: nav ? nav.loadEventEnd - nav.startTime : null,
    domNodes: document.getElementsByTagName('*').length,
    firstHost: rows.length ? rows[0].dataset.host : null,
  };
})()
"""

# Sets the filters as a reader would and returns the shown count, and the time it took.
FILTER = """
((severities, host, rule, waived) => {
  const form = document.getElementById('filters');
  const started = performance.now();
  form.querySelectorAll('input[name=sev]').forEach(box => { box.checked = severities.includes(box.value); });
  form.querySelector('input[name=waived]').checked = waived;
  form.querySelector('input[name=host]').value = host;
  form.querySelector('select[name=rule]').value = rule;
  form.dispatchEvent(new Event('change'));
  const visible = Array.from(document.querySelectorAll('tr[data-i]')).filter(row => !row.hidden).length;
  return {shown: Number(document.getElementById('shown').dataset.shown), visible, ms: performance.now() - started};
})(%s, %s, %s, %s)
"""

EVIDENCE = """
(() => {
  const started = performance.now();
  const button = document.querySelector('tr[data-i]:not([hidden]) button[data-i]');
  if (!button) { return null; }
  button.click();
  const row = document.getElementById('ev-' + button.dataset.i);
  return {key: button.closest('tr').dataset.key, text: row ? row.querySelector('pre').textContent : null,
          fix: row ? row.querySelector('.fix').textContent : null, ms: performance.now() - started};
})()
"""


def _evaluate(browser, expression: str):
    answer = browser.call('Runtime.evaluate', {'expression': expression, 'returnByValue': True}, timeout=LOAD_TIMEOUT_S)
    if 'exceptionDetails' in answer:
        raise RuntimeError(f"page script failed: {answer['exceptionDetails'].get('exception', {}).get('description')}")
    return answer['result'].get('value')


def _driver():
    spec = importlib.util.spec_from_file_location('mailsec_report_html_driver', DRIVER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check(html_path: str, json_path: str) -> dict:
    """Figures and problems ({'problems': [...]}); Chromium missing is a problem only when asked for."""
    driver = _driver()
    binary = driver.find_chromium()
    if not binary:
        return {'problems': ['Chromium is not installed (apt-get install chromium, or set MAILSEC_CHROMIUM)']}
    with open(json_path, encoding='utf-8') as report_file:
        report = json.load(report_file)
    findings = report['findings']
    profile = tempfile.mkdtemp(prefix='mailsec-bench-chromium-')
    browser = driver.DevToolsPipe(binary, Path(profile))
    problems: list = []
    result: dict = {}
    try:
        started = time.monotonic()
        # DevToolsPipe.open, with room for a large page on a loaded machine.
        target = browser.call('Target.createTarget', {'url': 'about:blank'}, session=False)
        attached = browser.call('Target.attachToTarget', {'targetId': target['targetId'], 'flatten': True},
                                session=False)
        browser.session = attached['sessionId']
        for domain in ('Page', 'Runtime', 'Log'):
            browser.call(f'{domain}.enable')
        browser.call('Page.navigate', {'url': Path(html_path).as_uri()}, timeout=LOAD_TIMEOUT_S)
        browser.wait_for('Page.loadEventFired', timeout=LOAD_TIMEOUT_S)
        result['open_s'] = round(time.monotonic() - started, 2)
        facts = _evaluate(browser, FACTS)
        result['facts'] = facts
        if facts['layout'] != 'fleet' or not facts['ready']:
            problems.append(f"the fleet page did not start (layout {facts['layout']}, ready {facts['ready']})")
        if facts['rows'] != len(findings) or facts['shown'] != len(findings) or facts['findings'] != len(findings):
            problems.append(f"rows {facts['rows']}, shown {facts['shown']}, summary {facts['findings']}: "
                            f"want {len(findings)}")
        if facts['pageBytes'] != os.path.getsize(html_path):
            problems.append(f"the page says it weighs {facts['pageBytes']} bytes, the file has {os.path.getsize(html_path)}")
        if facts['resources'] != 0:
            problems.append('the page loaded something')

        def filtered(severities, host, rule, waived, want, what):
            expression = FILTER % (json.dumps(severities), json.dumps(host), json.dumps(rule), json.dumps(waived))
            answer = _evaluate(browser, expression)
            if answer['shown'] != want or answer['visible'] != want:
                problems.append(f'filter {what}: shown {answer["shown"]}, visible {answer["visible"]}, want {want}')
            return round(answer['ms'], 1)

        everything = ['critical', 'high', 'medium', 'low', 'info']
        timings = {}
        timings['critical only'] = filtered(['critical'], '', '', True, sum(
            1 for finding in findings if finding['severity'] == 'critical'), 'critical')
        host = facts['firstHost'] or ''
        timings['one host'] = filtered(everything, host, '', True, sum(
            1 for finding in findings if host.lower() in str(finding['host']).lower()), f'host {host}')
        rule = findings[-1]['id'] if findings else ''
        timings['one rule, unwaived'] = filtered(everything, '', rule, False, sum(
            1 for finding in findings if finding['id'] == rule and not finding['waived']), f'rule {rule}')
        timings['all again'] = filtered(everything, '', '', True, len(findings), 'all')
        result['filter_ms'] = timings
        opened = _evaluate(browser, EVIDENCE)
        if not opened or not opened.get('text'):
            problems.append('evidence did not open')
        else:
            result['evidence_ms'] = round(opened['ms'], 1)
            finding = next(item for item in findings if item['key'] == opened['key'])
            if opened['fix'] != 'Fix: ' + finding['fix']:
                problems.append('the evidence row shows another fix')
            shown = json.loads(opened['text'])
            if shown != json.loads(json.dumps(all_evidence(finding))):
                problems.append('the evidence row shows other evidence than the JSON report')
        console = browser.problems()
        if console:
            problems.append(f'console: {console[:5]}')
    finally:
        stderr = browser.close()
        shutil.rmtree(profile, ignore_errors=True)
    if 'Refused to' in stderr:
        problems.append(f'CSP: {stderr[-500:]}')
    result['problems'] = problems
    return result


if __name__ == '__main__':
    print(json.dumps(check(sys.argv[1], sys.argv[2]), indent=1))
    sys.exit(0)
