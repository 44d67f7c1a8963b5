# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Small value helpers of the judgement: server text made safe and short, IP literals in one
spelling, endpoints and labels, ports, fingerprints and times as records spell them."""

from __future__ import annotations

import datetime
import functools
import ipaddress

from ansible_collections.mailsec.starttls.plugins.module_utils._text import visible

TEXT_LIMIT = 1000
LINE_LIMIT = 160


def clean_text(value, limit: int = TEXT_LIMIT):
    """Text from a server, bounded; control characters (other than tab, CR and LF) and bidi
    overrides made visible (_text.visible)."""
    if value is None:
        return None
    text = visible(value, keep_cr=True)
    if len(text) > limit:
        text = text[:limit] + f'... ({len(text) - limit} more characters)'
    return text


def one_line(value, limit: int = LINE_LIMIT) -> str:
    text = clean_text(value, limit * 4) or ''
    text = ' '.join(text.split())
    if len(text) > limit:
        text = text[:limit - 3] + '...'
    return text


def canonical_address(address) -> str | None:
    if address is None or address == '':
        return None
    return _canonical_text(str(address))


@functools.lru_cache(maxsize=65536)
def _canonical_text(text: str) -> str:
    """IP literals in one spelling (a fleet repeats the same few thousand addresses)."""
    text = text.strip()
    if text.startswith('[') and text.endswith(']'):
        text = text[1:-1]
    if text.lower().startswith('ipv6:'):
        text = text[5:]
    text = text.split('%', 1)[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text.lower()


def endpoint(address, port) -> str:
    address = '' if address is None else str(address)
    if ':' in address:
        return f'[{address}]:{port}'
    return f'{address}:{port}'


def listener_label(listener: dict) -> str:
    return f'{endpoint(listener.get("address"), listener.get("port"))}/{listener.get("protocol") or "?"}'


def as_port(value):
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        # Kept as given only when it can be part of a key (a list or a dict cannot).
        return value if isinstance(value, str) else None


def normalise_sha256(value) -> str | None:
    if not value or not isinstance(value, str):
        return None
    return value.replace(':', '').strip().lower() or None


def parse_time(value) -> datetime.datetime | None:
    """A UTC datetime from a datetime, a date or an ISO 8601 text ('...Z' included)."""
    if value is None or value == '':
        return None
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)
    if isinstance(value, datetime.date):
        return datetime.datetime(value.year, value.month, value.day, tzinfo=datetime.timezone.utc)
    text = str(value).strip()
    if text.endswith('Z'):
        text = text[:-1] + '+00:00'
    for pattern in ('%Y-%m-%dT%H:%M:%S%z', '%Y-%m-%dT%H:%M:%S.%f%z', '%Y-%m-%d %H:%M:%S%z',
                    '%Y-%m-%dT%H:%M:%S', '%Y-%m-%d'):
        candidate = text
        if '%z' in pattern and len(candidate) > 6 and candidate[-3] == ':' and candidate[-6] in '+-':
            # strptime's %z wants +0000 on Python 3.6; accept +00:00 everywhere.
            candidate = candidate[:-3] + candidate[-2:]
        try:
            moment = datetime.datetime.strptime(candidate, pattern)
        except ValueError:
            continue
        return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)
    return None
