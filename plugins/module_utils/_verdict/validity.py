# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Certificate validity and names, by a certificate's own description (the one bound on disk or the
one a vantage point was served): certificate-expired (also not yet valid), certificate-expiring (the
judge's `expiring_days` window), certificate-host-mismatch and validation-failure."""

from __future__ import annotations

import datetime

from ansible_collections.mailsec.starttls.plugins.module_utils._verdict.values import one_line, parse_time


def _days_left(certificate: dict, now: datetime.datetime):
    not_after = parse_time(certificate.get('not_after'))
    if not_after is not None:
        return (not_after - now).total_seconds() / 86400.0
    if certificate.get('expired'):
        return -1.0
    days = certificate.get('days_left')
    return float(days) if isinstance(days, (int, float)) else None


def _not_yet_valid(certificate: dict, now: datetime.datetime) -> bool:
    not_before = parse_time(certificate.get('not_before'))
    return not_before is not None and not_before > now


def certificate_rules(certificate: dict, options: dict) -> list:
    """(rule, summary, detail) for a certificate's own properties (expiry, names, chain)."""
    found = []
    now = options['now']
    days = _days_left(certificate, now)
    subject = one_line(certificate.get('subject') or '?', 100)
    if _not_yet_valid(certificate, now):
        found.append(('certificate-expired', f'certificate {subject} is not valid before {certificate.get("not_before")}', {}))
    elif days is not None and days < 0:
        found.append(('certificate-expired', f'certificate {subject} expired on {certificate.get("not_after")}', {}))
    elif days is not None and days < options['expiring_days']:
        found.append(('certificate-expiring',
                      f'certificate {subject} expires in {int(days)} days ({certificate.get("not_after")}), '
                      f'within the {options["expiring_days"]}-day window', {}))
    if certificate.get('hostname_match') is False:
        found.append(('certificate-host-mismatch',
                      f'certificate {subject} does not name the expected host '
                      f'(SANs: {one_line(", ".join(certificate.get("sans") or []) or "none", 120)})', {}))
    if certificate.get('verified') is False or (certificate.get('self_signed') and certificate.get('verified') is not True):
        reason = certificate.get('verify_error') or ('self-signed' if certificate.get('self_signed') else 'does not verify')
        found.append(('validation-failure', f'certificate {subject} does not verify: {one_line(reason, 120)}', {}))
    return found
