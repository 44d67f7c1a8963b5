# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The report as JSON (docs/reports.md, docs/report.schema.json): ASCII only, so that no control or
bidi character reaches a terminal, and in pieces for writing a fleet's report without holding its
whole text in memory."""

from __future__ import annotations

import json


def render_json(report: dict) -> str:
    return json.dumps(report, indent=2, ensure_ascii=True, default=str).replace('\x7f', '\\u007f') + '\n'


def iter_json(report: dict):
    """The JSON report in pieces, for writing without holding the whole text in memory."""
    encoder = json.JSONEncoder(indent=2, ensure_ascii=True, default=str)
    buffered: list = []
    size = 0
    for piece in encoder.iterencode(report):
        buffered.append(piece)
        size += len(piece)
        if size >= 1 << 16:
            yield ''.join(buffered)
            buffered, size = [], 0
    buffered.append('\n')
    yield ''.join(buffered)
