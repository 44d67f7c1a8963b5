# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Site policy over the judgement, on the controller: waivers and the failure rule.

Both are JMESPath expressions (the `jmespath` package, as used by `json_query`):

- `starttls_waivers`: [{query, reason, expires?, ticket?}]. `query` is evaluated against each
  finding; a truthy result waives it. A waiver whose `expires` date has passed stops waiving
  and is listed in the report's `waivers_expired`.
- `starttls_fail_when`: one expression over the whole report; truthy means the run failed.

Expressions are compiled before anything is judged, so that a typo fails the run at once with
the waiver's index, not after an hour of probing. See docs/policy.md.
"""

from __future__ import annotations

import datetime
import re

try:
    import jmespath
    from jmespath.exceptions import JMESPathError
    HAS_JMESPATH = True
    JMESPATH_IMPORT_ERROR = None
except ImportError as import_error:  # reported when a policy is applied, never at import
    jmespath = None
    JMESPathError = Exception
    HAS_JMESPATH = False
    JMESPATH_IMPORT_ERROR = import_error

# Fail on any finding of severity critical or high that no waiver covers.
DEFAULT_FAIL_WHEN = "length(findings[?!waived && (severity=='critical' || severity=='high')]) > `0`"

WAIVER_KEYS = ('query', 'reason', 'expires', 'ticket')
_DATE = re.compile(r'^\d{4}-\d{2}-\d{2}$')


class PolicyError(ValueError):
    """A waiver or fail_when that cannot be used as given."""


class PolicyLimitError(PolicyError):
    """An expression the parser accepts as text but that exceeds what can be evaluated (nested
    deeper than the parser's recursion allows, too large). Unlike a syntax error it does not stop
    the run before the audit: the waiver waives nothing, the run fails, the reports name it."""


# Longest expression text quoted in a message; '(' * 3000 must not fill a screen.
QUOTE_LIMIT = 120


def shorten(expression) -> str:
    """An expression's text, cut to QUOTE_LIMIT characters with its length when longer."""
    text = str(expression)
    if len(text) <= QUOTE_LIMIT:
        return text
    return f'{text[:QUOTE_LIMIT - 24]}... ({len(text)} characters)'


def quote(expression) -> str:
    return repr(shorten(expression))


def describe_exception(exc: BaseException) -> str:
    """One line for an error an expression raised (JMESPath's own or Python's: overflow, recursion)."""
    if isinstance(exc, JMESPathError):
        return ' '.join(str(exc).split())
    if isinstance(exc, RecursionError):
        return 'nested too deeply to evaluate (recursion limit)'
    detail = ' '.join(str(exc).split())[:200]
    return f'{type(exc).__name__}: {detail}' if detail else type(exc).__name__


def _require_jmespath() -> None:
    if not HAS_JMESPATH:
        raise PolicyError('the jmespath Python package is required on the controller for starttls_waivers and '
                          f'starttls_fail_when (pip install jmespath): {JMESPATH_IMPORT_ERROR}')


def compile_expression(expression, what: str):
    """A compiled JMESPath expression, or PolicyError naming `what` and the parser's complaint."""
    _require_jmespath()
    if not isinstance(expression, str) or not expression.strip():
        raise PolicyError(f'{what}: a JMESPath expression (a non-empty string) is required, got {expression!r}')
    try:
        return jmespath.compile(str(expression))
    except (RecursionError, MemoryError) as exc:
        # The parser is recursive descent: '(' * 3000 exhausts Python's stack before it is rejected.
        raise PolicyLimitError(f'{what}: JMESPath expression {quote(expression)} cannot be compiled: '
                               f'{describe_exception(exc) if isinstance(exc, RecursionError) else "too large"}')
    except Exception as exc:  # pylint: disable=broad-except
        # JMESPathError when the jmespath package is there (its parser's complaint), anything else too.
        if isinstance(exc, JMESPathError):
            detail = ' '.join(str(exc).split())
            if len(detail) > 400:
                detail = detail[:400] + '...'
            raise PolicyError(f'{what}: invalid JMESPath expression {quote(expression)}: {detail}')
        raise PolicyError(f'{what}: JMESPath expression {quote(expression)} cannot be compiled: '
                          f'{describe_exception(exc)}')


def truthy(value) -> bool:
    """JMESPath truthiness (false, null and empty strings, lists and objects are false), except that
    the number 0 is false too: `length(...)` reads as a count, and a count of 0 must not fail a run."""
    if value is None or value is False:
        return False
    if isinstance(value, (str, list, dict)) and not value:
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0:
        return False
    return True


def as_date(value, what: str) -> datetime.date | None:
    if value is None or value == '':
        return None
    if isinstance(value, datetime.datetime):
        return value.date()
    if isinstance(value, datetime.date):
        return value
    text = str(value).strip()
    if not _DATE.match(text):
        raise PolicyError(f'{what}: {value!r} is not a date in the form YYYY-MM-DD')
    try:
        return datetime.date(int(text[:4]), int(text[5:7]), int(text[8:10]))
    except ValueError as exc:
        raise PolicyError(f'{what}: {value!r} is not a valid date ({exc})')


def validate_waivers(waivers, limit_errors: list | None = None) -> list:
    """Checked waivers: [{index, query, reason, expires (date|None), ticket, compiled}].

    Raises PolicyError for the first waiver that cannot be used, naming its index. With
    `limit_errors` (a list), a waiver whose query exceeds the evaluator's limits (PolicyLimitError)
    is left out and described there ({index, query, finding: None, error}) instead.
    """
    if waivers is None:
        return []
    if not isinstance(waivers, (list, tuple)):
        raise PolicyError(f'starttls_waivers must be a list of waivers, not {type(waivers).__name__}')
    checked = []
    for index, waiver in enumerate(waivers):
        what = f'starttls_waivers[{index}]'
        if not isinstance(waiver, dict):
            raise PolicyError(f'{what}: a waiver is a dictionary with query and reason, not {type(waiver).__name__}')
        unknown = sorted(str(key) for key in waiver if key not in WAIVER_KEYS)
        if unknown:
            raise PolicyError(f'{what}: unknown key(s) {", ".join(unknown)}; a waiver has {", ".join(WAIVER_KEYS)}')
        if not waiver.get('query'):
            raise PolicyError(f'{what}: query is required (a JMESPath expression evaluated against each finding)')
        reason = waiver.get('reason')
        if not isinstance(reason, str) or not reason.strip():
            raise PolicyError(f'{what}: reason is required (why this finding is accepted, for the report)')
        try:
            compiled = compile_expression(waiver['query'], f'{what}.query')
        except PolicyLimitError as exc:
            if limit_errors is None:
                raise
            limit_errors.append({'index': index, 'query': shorten(waiver['query']), 'finding': None,
                                 'error': str(exc)})
            continue
        checked.append({
            'index': index,
            'query': str(waiver['query']),
            'reason': str(reason).strip(),
            'expires': as_date(waiver.get('expires'), f'{what}.expires'),
            'ticket': None if waiver.get('ticket') is None else str(waiver['ticket']),
            'compiled': compiled,
        })
    return checked


def _today(today) -> datetime.date:
    if today is None:
        return datetime.datetime.now(datetime.timezone.utc).date()
    return as_date(today, 'today')


def apply_waivers(findings: list, waivers, today=None) -> dict:
    """Mark waived findings. Returns {'findings', 'waivers', 'waivers_expired', 'waiver_errors'}.

    The findings are copies: `waived` and `waiver` set, nothing else changed. The first waiver
    (in list order) that matches a finding waives it. A waiver is valid through its `expires`
    day (UTC) and stops applying the day after; it is then reported, with the findings it would
    have waived, in `waivers_expired`. A query that fails on one finding (a JMESPath type error)
    does not waive it and is listed in `waiver_errors`; the run goes on.
    """
    unusable: list = []
    checked = validate_waivers(waivers, unusable)
    day = _today(today)
    # Waivers that cannot be evaluated at all waive nothing and are named first; `unusable` makes
    # the report fail (build_report), because what they were meant to accept is unknown.
    result = {'findings': [], 'waivers': [], 'waivers_expired': [], 'waiver_errors': list(unusable),
              'unusable': list(unusable)}
    usage = {waiver['index']: {'matched': 0, 'keys': []} for waiver in checked}
    for finding in findings or []:
        finding = dict(finding)
        finding['waived'] = False
        finding['waiver'] = None
        for waiver in checked:
            try:
                matched = truthy(waiver['compiled'].search(finding))
            except Exception as exc:  # pylint: disable=broad-except
                # A JMESPath type error, or Python's own: ceil(`1e400`) overflows, deep nesting recurses.
                if len(result['waiver_errors']) < 50 + len(unusable):
                    result['waiver_errors'].append({
                        'index': waiver['index'], 'query': waiver['query'], 'finding': finding.get('key'),
                        'error': describe_exception(exc)})
                continue
            if not matched:
                continue
            use = usage[waiver['index']]
            use['matched'] += 1
            if len(use['keys']) < 20:
                use['keys'].append(finding.get('key'))
            if waiver['expires'] is not None and waiver['expires'] < day:
                continue
            if not finding['waived']:
                finding['waived'] = True
                finding['waiver'] = {
                    'index': waiver['index'], 'reason': waiver['reason'], 'query': waiver['query'],
                    'expires': waiver['expires'].isoformat() if waiver['expires'] else None,
                    'ticket': waiver['ticket'],
                }
        result['findings'].append(finding)
    for waiver in checked:
        expired = waiver['expires'] is not None and waiver['expires'] < day
        summary = {
            'index': waiver['index'], 'query': waiver['query'], 'reason': waiver['reason'],
            'expires': waiver['expires'].isoformat() if waiver['expires'] else None, 'ticket': waiver['ticket'],
            'state': 'expired' if expired else ('active' if usage[waiver['index']]['matched'] else 'unused'),
            'matched': usage[waiver['index']]['matched'],
        }
        result['waivers'].append(summary)
        if expired:
            result['waivers_expired'].append(dict(summary, would_waive=usage[waiver['index']]['keys']))
    return result


def evaluate_fail_when(report: dict, expression: str | None = None) -> tuple:
    """(failed, reason) for the report under `expression` (default DEFAULT_FAIL_WHEN).

    A compile error raises PolicyError; an expression that fails on this report fails the run
    (closed, not open) with the error as the reason.
    """
    expression = DEFAULT_FAIL_WHEN if expression is None or expression == '' else expression
    try:
        compiled = compile_expression(expression, 'starttls_fail_when')
    except PolicyLimitError as exc:
        return True, f'{exc}; the run fails closed'
    try:
        value = compiled.search(report)
        if not truthy(value):
            return False, None
        return True, _reason(report, expression, value)
    except Exception as exc:  # pylint: disable=broad-except
        # JMESPath type errors and Python's own (OverflowError from ceil(`1e400`), RecursionError).
        return True, (f'starttls_fail_when {quote(expression)} could not be evaluated on this report: '
                      f'{describe_exception(exc)}; the run fails closed')


def _reason(report: dict, expression: str, value) -> str:
    if expression == DEFAULT_FAIL_WHEN:
        blocking = [finding for finding in report.get('findings') or []
                    if not finding.get('waived') and finding.get('severity') in ('critical', 'high')]
        shown = ', '.join(f'{finding.get("id")} on {finding.get("host")} '
                          f'{finding.get("listener", {}).get("address")}:{finding.get("listener", {}).get("port")}'
                          f' ({finding.get("vantage") or "configuration"})'
                          for finding in blocking[:5])
        more = f' and {len(blocking) - 5} more' if len(blocking) > 5 else ''
        return f'{len(blocking)} unwaived finding(s) of severity critical or high: {shown}{more}'
    if isinstance(value, list):
        keys = [item.get('key') for item in value if isinstance(item, dict) and item.get('key')]
        detail = f'{len(value)} item(s)' + (f': {", ".join(keys[:5])}' if keys else '')
    elif isinstance(value, dict):
        detail = f'an object with {len(value)} key(s)'
    else:
        detail = repr(value)
    return f'starttls_fail_when {quote(expression)} is true for this report ({detail})'


def check_policy(waivers=None, fail_when=None, tolerate_limits: bool = False) -> list:
    """Compile everything up front; raises PolicyError on the first problem.

    With `tolerate_limits`, expressions beyond the evaluator's limits (PolicyLimitError) are
    returned as messages instead: the audit then runs, and its report names and fails on them.
    """
    limits: list = []
    validate_waivers(waivers, limits if tolerate_limits else None)
    messages = [item['error'] for item in limits]
    try:
        compile_expression(DEFAULT_FAIL_WHEN if fail_when in (None, '') else fail_when, 'starttls_fail_when')
    except PolicyLimitError as exc:
        if not tolerate_limits:
            raise
        messages.append(str(exc))
    return messages
