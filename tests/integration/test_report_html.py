# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The HTML report in a real headless Chromium: it renders, logs no error, runs no script, and the
numbers it shows are the JSON report's.

Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: requests on
fd 3, replies on fd 4, one JSON message per NUL byte), with the standard library only.
"""

from __future__ import annotations

import copy
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from ansible_collections.mailsec.starttls.plugins.plugin_utils import _report_html, _reports
from ansible_collections.mailsec.starttls.tests.unit.plugins import scenarios as sc

CHROMIUM_NAMES = ('chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable')
HOSTILE = ('<script>document.title="pwned";console.error("pwned")</script><img src=x onerror="console.error(1)">'
           '<style>body{display:none}</style>\x1b[2J | `` ``` ]]>')

# Reads the numbers back out of the rendered page, as a reader's browser shows them.
PAGE_FACTS = """
(() => {
  const summary = document.getElementById('summary');
  const severities = {};
  for (const item of summary.querySelectorAll('li[data-severity]')) {
    severities[item.dataset.severity] = {count: Number(item.dataset.count), unwaived: Number(item.dataset.unwaived),
                                         shown: Number(item.querySelector('b').textContent)};
  }
  const metric = name => Number(summary.querySelector(`li[data-metric="${name}"] b`).textContent);
  const bars = [...document.querySelectorAll('svg[data-chart] rect[data-severity]')];
  return {
    title: document.title,
    scripts: document.querySelectorAll('script').length,
    images: document.querySelectorAll('img').length,
    stylesheets: document.styleSheets.length,
    bodyVisible: getComputedStyle(document.body).display !== 'none',
    hosts: Number(summary.dataset.hosts), listeners: Number(summary.dataset.listeners),
    findings: Number(summary.dataset.findings), waived: Number(summary.dataset.waived),
    failed: summary.dataset.failed,
    shown: {hosts: metric('hosts'), listeners: metric('listeners'), findings: metric('findings'), waived: metric('waived')},
    severities,
    articles: document.querySelectorAll('article.listener').length,
    findingBlocks: document.querySelectorAll('div.finding[data-finding-key]').length,
    findingRows: document.querySelectorAll('tr[data-finding-row]').length,
    chartTotal: bars.reduce((total, bar) => total + Number(bar.dataset.count), 0),
    chartWidth: document.querySelector('svg[data-chart]') ? document.querySelector('svg[data-chart]').getBoundingClientRect().width : 0,
    hostileText: document.body.innerText.includes('document.title="pwned"'),
    resources: performance.getEntriesByType('resource').length,
  };
})()
"""


def find_chromium() -> str | None:
    override = os.environ.get('MAILSEC_CHROMIUM')
    if override:
        return override
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


class DevToolsPipe:
    """A headless Chromium and one page in it, driven over the DevTools pipe."""

    def __init__(self, binary: str, profile: Path):
        to_browser_read, to_browser_write = os.pipe()
        from_browser_read, from_browser_write = os.pipe()
        # bash (dash only knows single-digit fds) moves the pipe ends onto fds 3 and 4; keep them clear of 3 and 4 first.
        child_read = fcntl.fcntl(to_browser_read, fcntl.F_DUPFD_CLOEXEC, 10)
        child_write = fcntl.fcntl(from_browser_write, fcntl.F_DUPFD_CLOEXEC, 10)
        for fd in (to_browser_read, from_browser_write):
            os.close(fd)
        command = [binary, '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                   '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-extensions',
                   '--disable-default-apps', '--mute-audio', f'--user-data-dir={profile}', '--remote-debugging-pipe',
                   'about:blank']
        self.process = subprocess.Popen(
            ['/bin/bash', '-c', f'exec "$@" 3<&{child_read} 4>&{child_write} {child_read}<&- {child_write}>&-',
             'chromium', *command],
            pass_fds=(child_read, child_write), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
        os.close(child_read)
        os.close(child_write)
        self.send_fd, self.receive_fd = to_browser_write, from_browser_read
        self.buffer = b''
        self.next_id = 0
        self.events: list = []
        self.session = None

    def close(self) -> str:
        try:
            self.call('Browser.close', timeout=5)
        except Exception:  # pylint: disable=broad-except
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        for fd in (self.send_fd, self.receive_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        return self.process.stderr.read().decode('utf-8', 'replace') if self.process.stderr else ''

    def _message(self, deadline: float) -> dict:
        while b'\0' not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError('no message from Chromium in time')
            ready = select.select([self.receive_fd], [], [], remaining)[0]
            if ready:
                chunk = os.read(self.receive_fd, 1 << 20)
                if not chunk:
                    raise ConnectionError('Chromium closed the DevTools pipe')
                self.buffer += chunk
        raw, self.buffer = self.buffer.split(b'\0', 1)
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, timeout: float = 30, session: bool = True) -> dict:
        self.next_id += 1
        message = {'id': self.next_id, 'method': method, 'params': params or {}}
        if session and self.session:
            message['sessionId'] = self.session
        os.write(self.send_fd, json.dumps(message).encode() + b'\0')
        deadline = time.monotonic() + timeout
        while True:
            reply = self._message(deadline)
            if reply.get('id') == self.next_id:
                if 'error' in reply:
                    raise RuntimeError(f'{method}: {reply["error"]}')
                return reply.get('result', {})
            if 'method' in reply:
                self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30) -> dict:
        for event in self.events:
            if event['method'] == method:
                return event
        deadline = time.monotonic() + timeout
        while True:
            message = self._message(deadline)
            if 'method' in message:
                self.events.append(message)
                if message['method'] == method:
                    return message

    def open(self, url: str) -> None:
        target = self.call('Target.createTarget', {'url': 'about:blank'}, session=False)
        attached = self.call('Target.attachToTarget', {'targetId': target['targetId'], 'flatten': True}, session=False)
        self.session = attached['sessionId']
        for domain in ('Page', 'Runtime', 'Log'):
            self.call(f'{domain}.enable')
        self.call('Page.navigate', {'url': url})
        self.wait_for('Page.loadEventFired')

    def evaluate(self, expression: str):
        result = self.call('Runtime.evaluate', {'expression': expression, 'returnByValue': True})
        if 'exceptionDetails' in result:
            raise AssertionError(f'page evaluation failed: {result["exceptionDetails"]}')
        return result['result'].get('value')

    def problems(self) -> list:
        """Console errors, uncaught exceptions and error-level log entries (CSP violations among them)."""
        found = []
        for event in self.events:
            params = event.get('params', {})
            if event['method'] == 'Runtime.exceptionThrown':
                found.append(('exception', params.get('exceptionDetails', {}).get('text')))
            elif event['method'] == 'Runtime.consoleAPICalled' and params.get('type') in ('error', 'assert', 'warning'):
                found.append(('console', [arg.get('value') for arg in params.get('args', [])]))
            elif event['method'] == 'Log.entryAdded' and params.get('entry', {}).get('level') in ('error', 'warning'):
                found.append(('log', params['entry'].get('text'), params['entry'].get('url')))
        return found


@pytest.fixture(scope='module')
def chromium():
    binary = find_chromium()
    if not binary:
        pytest.skip('Chromium is not installed (Debian: apt-get install chromium); set MAILSEC_CHROMIUM to use another')
    return binary


def render_in_chromium(binary: str, page: Path, profile: Path) -> tuple:
    browser = DevToolsPipe(binary, profile)
    try:
        browser.open(page.as_uri())
        facts = browser.evaluate(PAGE_FACTS)
        problems = browser.problems()
    finally:
        stderr = browser.close()
    return facts, problems, stderr


def hostile_report() -> dict:
    cases = sc.scenarios()
    listeners, probes, sockets = [], [], []
    for name in sorted(cases):
        case = copy.deepcopy(cases[name])
        listeners += case['listeners']
        probes += case['probes']
        sockets += case['options'].get('unmatched_sockets') or []
    evil = sc.refused_454('127.0.60.66', 25, text=HOSTILE)
    evil['greeting'] = {'code': '220', 'lines': [HOSTILE]}
    listeners.append(sc.blackbox('127.0.60.66', 25, 'smtp', host='<b onmouseover=alert(1)>evil</b>'))
    probes.append(evil)
    waivers = [{'query': "id=='pre-tls-surplus'", 'reason': '<i>lab</i> test', 'expires': '2027-01-31'},
               {'query': "id=='listener-drift'", 'reason': 'old', 'expires': '2026-01-01'}]
    return _reports.audit(listeners, probes, {'now': sc.NOW, 'unmatched_sockets': sockets,
                                              'host_addresses': {'mx2': ['127.0.60.9']}},
                          waivers, meta={'collection_version': '0.1.0'})


def check_page_matches_report(facts: dict, problems: list, report: dict) -> None:
    summary = report['summary']
    assert problems == [], problems
    assert facts['scripts'] == 0 and facts['images'] == 0, 'hostile markup became elements'
    assert facts['title'].startswith('STARTTLS audit') and 'pwned' not in facts['title']
    assert facts['bodyVisible'] and facts['stylesheets'] == 1
    assert facts['hostileText'], 'the hostile banner is shown as text'
    assert facts['resources'] == 0, 'the page loaded something'
    assert (facts['hosts'], facts['listeners'], facts['findings'], facts['waived']) == (
        summary['hosts'], summary['listeners'], summary['findings'], summary['waived'])
    assert facts['shown'] == {'hosts': summary['hosts'], 'listeners': summary['listeners'],
                              'findings': summary['findings'], 'waived': summary['waived']}
    assert facts['failed'] == str(summary['failed']).lower()
    for severity in _reports.SEVERITIES:
        assert facts['severities'][severity] == {'count': summary['by_severity'][severity],
                                                 'unwaived': summary['unwaived_by_severity'][severity],
                                                 'shown': summary['unwaived_by_severity'][severity]}, severity
    assert facts['articles'] == len(report['listeners'])
    assert facts['findingBlocks'] == facts['findingRows'] == len(report['findings'])
    assert facts['chartTotal'] == summary['findings']


def test_html_report_renders_in_chromium(chromium, tmp_path):
    report = hostile_report()
    assert report['summary']['findings'] > 20 and report['summary']['waived'] >= 1
    written = _reports.write_reports(report, str(tmp_path / 'out'), formats=('json', 'html'))
    from_disk = json.loads(Path(written['json']).read_text())
    facts, problems, stderr = render_in_chromium(chromium, Path(written['html']), tmp_path / 'profile')
    check_page_matches_report(facts, problems, from_disk)
    assert facts['chartWidth'] > 100, 'the chart is drawn'
    assert 'Refused to' not in stderr, stderr[-2000:]


def test_the_checks_can_fail(chromium, tmp_path):
    """A page that runs a script and whose numbers are wrong must be caught by the same checks."""
    report = hostile_report()
    page = _report_html.render_html(report).replace('<footer>', '<footer><script>console.error("injected")</script>')
    page = page.replace("script-src", "x-script-src").replace("default-src 'none'", "default-src 'unsafe-inline'")
    target = tmp_path / 'tampered.html'
    target.write_text(page, encoding='utf-8')
    facts, problems, _stderr = render_in_chromium(chromium, target, tmp_path / 'profile')
    assert facts['scripts'] == 1
    assert any(kind == 'console' for kind, *_rest in problems), problems
    tampered = copy.deepcopy(report)
    tampered['summary']['findings'] += 1
    with pytest.raises(AssertionError):
        check_page_matches_report(facts, [], tampered)
