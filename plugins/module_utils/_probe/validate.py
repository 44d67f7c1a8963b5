# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checks for every option value before a single connection is made.

Whatever the probe puts on the wire (the EHLO name, a host name for TLS SNI, the address an SSH
jump host is asked to connect to, the jump host login) comes from a playbook or an inventory, and
an inventory may be written by someone else. A CR or LF in an EHLO name would end the command and
start another (RFC 5321 2.3.8: lines end in CRLF and nothing else): the probe would send commands
it promises never to send. So every such string is checked here, and a value that cannot be used
is refused with a message that names the option; nothing is silently truncated or rounded.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re

# Longest host name in DNS presentation form (RFC 1035 2.3.4: 255 octets on the wire).
MAX_HOST_NAME = 253
MAX_LABEL = 63
# RFC 5321 4.5.3.1.2: a domain of at most 255 octets; an address literal fits in that as well.
MAX_EHLO_NAME = 255
# Text that is only shown (a vantage name, an expected certificate name, a file path).
MAX_TEXT = 4096
# A timeout or deadline beyond a day is a mistake, and socket timeouts overflow near 2**63 ns.
MAX_SECONDS = 86400.0

_CONTROL = re.compile(r'[\x00-\x1f\x7f-\x9f\u2028\u2029]')
_LABEL = re.compile(r'^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$')
# Labels of names that are not looked up as host names by us but by a resolver or a jump host
# (service names like _submission._tcp are not host names, but some inventories use underscores).
_LOOSE_LABEL = re.compile(r'^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$')


class OptionError(ValueError):
    """An option value that cannot be used; the message names the option."""


def describe_character(character: str) -> str:
    code = ord(character)
    if code < 0x100:
        return f'\\x{code:02x}'
    return f'\\u{code:04x}'


def _first_control(text: str) -> str | None:
    match = _CONTROL.search(text)
    return describe_character(match.group()) if match else None


def text(value, what: str, limit: int = MAX_TEXT, allow_none: bool = True) -> str | None:
    """A string without control characters (C0, DEL, C1, line and paragraph separators)."""
    if value is None:
        if allow_none:
            return None
        raise OptionError(f'{what} is required')
    if not isinstance(value, str):
        raise OptionError(f'{what} must be a string, not {type(value).__name__}')
    control = _first_control(value)
    if control:
        raise OptionError(f'{what} contains the control character {control}; control characters '
                          '(CR and LF included) are not allowed')
    if len(value) > limit:
        raise OptionError(f'{what} is {len(value)} characters long; at most {limit} are allowed')
    return value


def _ascii(value: str, what: str, hint: str) -> None:
    try:
        value.encode('ascii')
    except UnicodeEncodeError:
        position = next(index for index, character in enumerate(value) if ord(character) > 0x7e)
        raise OptionError(f'{what} contains the non-ASCII character {describe_character(value[position])} at '
                          f'position {position}; {hint}')


def is_ip(value) -> bool:
    if not isinstance(value, str) or not value:
        return False
    return _is_ip_text(value)


# A probe asks this of each target's address three or four times (parsing, resolving, the EHLO
# name, SNI), and `ipaddress` parses in Python: remembered, a sweep of 500 targets parses each once.
@functools.lru_cache(maxsize=4096)
def _is_ip_text(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def _host_name_problem(name: str, label_pattern) -> str | None:
    stripped = name[:-1] if name.endswith('.') else name
    if not stripped:
        return 'is empty'
    if len(stripped) > MAX_HOST_NAME:
        return f'is {len(stripped)} characters long; a host name has at most {MAX_HOST_NAME}'
    for label in stripped.split('.'):
        if not label:
            return 'has an empty label (two dots in a row, or a leading dot)'
        if len(label) > MAX_LABEL:
            return f'has a label of {len(label)} characters; a label has at most {MAX_LABEL}'
        if not label_pattern.match(label):
            return (f'has the label {label!r}, which is not letters, digits and inner hyphens')
    return None


def host_name(value, what: str) -> str:
    """A DNS host name (RFC 1123 2.1 letters, digits, hyphens; labels of 1-63, 253 in all), as sent
    in TLS server name indication (RFC 6066 3: a fully qualified DNS host name, no IP literal)."""
    text(value, what, MAX_TEXT, allow_none=False)
    _ascii(value, what, 'give the A-label of an internationalised name (xn--...)')
    problem = _host_name_problem(value, _LABEL)
    if problem:
        raise OptionError(f'{what} {value!r} is not a valid host name: it {problem}')
    return value[:-1] if value.endswith('.') else value


def address(value, what: str) -> str:
    """An IP literal or a name to connect to (also what a jump host is asked to connect to)."""
    text(value, what, MAX_TEXT, allow_none=False)
    if is_ip(value):
        return value
    if value.count(':') and is_ip(value.split('%', 1)[0]):
        # A link-local address with a zone (fe80::1%eth0): the zone is an interface name.
        zone = value.split('%', 1)[1]
        if zone and re.match(r'^[A-Za-z0-9_.-]{1,15}$', zone):
            return value
    _ascii(value, what, 'give an IP address or the A-label of an internationalised name (xn--...)')
    problem = _host_name_problem(value, _LOOSE_LABEL)
    if problem:
        raise OptionError(f'{what} {value!r} is neither an IP address nor a host name: it {problem}')
    return value


def ehlo_name(value, what: str = 'ehlo_name') -> str | None:
    """The argument of EHLO/LHLO: a domain or an address literal (RFC 5321 4.1.1.1, 4.1.3), ASCII
    without spaces or controls; the probe adds the CRLF itself."""
    if value is None:
        return None
    text(value, what, MAX_EHLO_NAME, allow_none=False)
    _ascii(value, what, 'EHLO takes an ASCII domain (the A-label, xn--..., of an internationalised name) '
                        'or an address literal such as [192.0.2.1]')
    if not value or any(character.isspace() for character in value):
        raise OptionError(f'{what} {value!r} must be one word (a domain or an address literal), without spaces')
    if value.startswith('['):
        inner = value[1:-1] if value.endswith(']') else None
        if inner is not None and inner.lower().startswith('ipv6:'):
            inner = inner[5:]
        if inner is None or not is_ip(inner):
            raise OptionError(f'{what} {value!r} is not an address literal such as [192.0.2.1] or [IPv6:2001:db8::1]')
        return value
    problem = _host_name_problem(value, _LOOSE_LABEL)
    if problem:
        raise OptionError(f'{what} {value!r} is not a domain: it {problem}')
    return value


def seconds(value, what: str) -> float:
    """A finite number of seconds above 0 and at most a day."""
    if isinstance(value, bool):
        raise OptionError(f'{what} must be a number of seconds, not a boolean')
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise OptionError(f'{what} must be a number of seconds, not {value!r}')
    if not math.isfinite(number):
        raise OptionError(f'{what} must be a finite number of seconds, not {value!r}')
    if number <= 0:
        raise OptionError(f'{what} must be greater than 0 (got {value!r})')
    if number > MAX_SECONDS:
        raise OptionError(f'{what} must be at most {MAX_SECONDS:g} seconds (got {value!r})')
    return number


def whole_number(value, what: str, lowest: int, highest: int) -> int:
    """An integer within [lowest, highest]; 25.0 and '25' are accepted, 25.9, '25.9' and true are not."""
    if isinstance(value, bool):
        raise OptionError(f'{what} must be a whole number, not a boolean')
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise OptionError(f'{what} must be a whole number, not {value!r}')
        number = int(value)
    elif isinstance(value, str) and re.match(r'^\s*[0-9]{1,10}\s*$', value):
        number = int(value)
    else:
        raise OptionError(f'{what} must be a whole number, not {value!r}')
    if not lowest <= number <= highest:
        raise OptionError(f'{what} {number} is out of range ({lowest} to {highest})')
    return number


def port(value, what: str) -> int:
    return whole_number(value, what, 1, 65535)


def flag(value, what: str) -> bool:
    if not isinstance(value, bool):
        raise OptionError(f'{what} must be true or false, not {value!r}')
    return value


def jump_host(spec: dict, what: str = 'jump_host') -> dict:
    """The jump host keys (see ssh.JUMP_HOST_ARGUMENT_SPEC) checked: the host name, the port and the
    login name go on the wire; the password only to the SSH server, but never with a line break."""
    if not isinstance(spec, dict):
        raise OptionError(f'{what} must be a dictionary')
    checked = dict(spec)
    checked['host'] = address(spec.get('host'), f'{what}.host')
    checked['port'] = port(22 if spec.get('port') is None else spec.get('port'), f'{what}.port')
    checked['user'] = text(spec.get('user'), f'{what}.user', 255)
    checked['max_channels'] = whole_number(10 if spec.get('max_channels') is None else spec.get('max_channels'),
                                           f'{what}.max_channels', 1, 1024)
    if spec.get('password') is not None:
        if not isinstance(spec['password'], str):
            raise OptionError(f'{what}.password must be a string')
        if _first_control(spec['password']):
            # Never echo the password or the character's position in it.
            raise OptionError(f'{what}.password contains a control character')
    for key in ('private_key_file', 'known_hosts_file', 'name'):
        checked[key] = text(spec.get(key), f'{what}.{key}')
    return checked
