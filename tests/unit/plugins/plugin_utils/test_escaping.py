# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Terminal controls and bidi overrides from servers reach no output raw (issue 9)."""

from __future__ import annotations

import json
import re

import pytest

from ansible_collections.mailsec.starttls.plugins.module_utils import _text, _verdict
from ansible_collections.mailsec.starttls.plugins.plugin_utils import _reports
from ansible_collections.mailsec.starttls.tests.unit.plugins import scenarios as sc

# ESC [2J (clear screen), the 8-bit CSI, DEL, RIGHT-TO-LEFT OVERRIDE, LEFT-TO-RIGHT ISOLATE, a bare CR.
HOSTILE = 'mail\x1b[2J\u009b31m\x7fevil\u202etxt.exe\u2066x\u2069\rfake'
RAW = re.compile('[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]')


def hostile_report() -> dict:
    listener = sc.listener('postfix', '192.0.2.1', 25, 'smtp', host='mx1', cert='/etc/ssl/\u202email.pem',
                           key='/etc/ssl/mail.key', store_record=sc.missing_store(), defined_at=f'/etc/postfix/{HOSTILE}:3')
    probe = sc.refused_454('192.0.2.1', 25, text=HOSTILE)
    probe['greeting'] = {'code': '220', 'lines': [HOSTILE]}
    return _reports.audit([listener], [probe], {'now': sc.NOW}, meta={'generated_at': 'now'})


def test_visible_escapes_each_unsafe_character():
    assert _text.visible(HOSTILE) == ('mail\\x1b[2J\\x9b31m\\x7fevil\\u202etxt.exe\\u2066x\\u2069\\x0dfake')
    assert _text.visible('tab\tand\nnewline stay') == 'tab\tand\nnewline stay'
    assert _text.visible('caf\u00e9 \u65e5\u672c') == 'caf\u00e9 \u65e5\u672c'
    assert _verdict.clean_text('a\u202eb\rc') == 'a\\u202eb\rc'


def test_the_report_itself_carries_no_raw_control(tmp_path):
    report = hostile_report()
    assert not RAW.search(json.dumps(report, ensure_ascii=False).replace('\\n', ''))
    assert '\\u202e' in json.dumps(report, ensure_ascii=False)


@pytest.mark.parametrize('report_format', _reports.FORMATS)
def test_no_rendering_carries_a_raw_control(report_format):
    text = _reports.RENDERERS[report_format](hostile_report())
    assert not RAW.search(text.replace('\n', '').replace('\t', ''))
    assert '\u202e' not in text and '\x1b' not in text and '\x7f' not in text and '\u009b' not in text


def test_renderers_escape_reports_they_did_not_build():
    # The report_* filters take any dict of the schema; their own escaping must hold without build_report.
    report = hostile_report()
    report['findings'][0]['summary'] = HOSTILE
    report['hosts'][0]['host'] = HOSTILE
    report['listeners'][0]['host'] = HOSTILE
    for renderer in _reports.RENDERERS.values():
        text = renderer(report)
        assert '\u202e' not in text and '\x1b' not in text and '\x7f' not in text and '\u009b' not in text
