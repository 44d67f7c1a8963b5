# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hostile option values: refused before any connection, with the option named (issue 9)."""

from __future__ import annotations

import pytest

from ansible_collections.mailsec.starttls.plugins.module_utils._probe import validate
from ansible_collections.mailsec.starttls.plugins.module_utils._probe.dialogs import SmtpDialog
from ansible_collections.mailsec.starttls.plugins.module_utils._probe.engine import (
    TargetError,
    normalise_options,
    parse_target,
    probe_many,
)
from ansible_collections.mailsec.starttls.plugins.module_utils._probe.ssh import jump_connector
from ansible_collections.mailsec.starttls.plugins.module_utils._probe.wire import ProbeError

SMUGGLED = 'probe.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA'


def open_server(scripted):
    """A server that would accept a whole mail transaction: it answers every line with 250/354."""
    steps = [('send', b'220 mail.test ESMTP\r\n')]
    for _line in range(6):
        steps += [('expect', ''), ('send', b'250 ok\r\n')]
    return scripted(steps)


@pytest.mark.parametrize('ehlo_name', [SMUGGLED, 'probe.example\nMAIL FROM:<a@b>', 'probe.example\rDATA',
                                       'probe\x00example', 'probe\x1b[2Jexample', 'probe\x85example'])
def test_ehlo_name_with_line_breaks_or_controls_never_reaches_the_wire(scripted, ehlo_name):
    server = open_server(scripted)
    with pytest.raises(TargetError, match='ehlo_name contains the control character'):
        probe_many([f'127.0.0.1:{server.port}/smtp'], {'ehlo_name': ehlo_name, 'timeout': 2})
    assert server.connections == 0
    assert not any(line.startswith(('MAIL', 'RCPT', 'DATA')) for line in server.finished().received)


def test_dialog_refuses_a_line_break_even_past_the_option_check():
    sent = []

    class Transport:
        def send(self, data, until):
            sent.append(data)

    dialog = SmtpDialog(None, Transport(), SMUGGLED)
    with pytest.raises(ProbeError, match='CR, LF or NUL'):
        dialog.send(f'EHLO {SMUGGLED}', 0)
    assert sent == []


@pytest.mark.parametrize('ehlo_name, message', [
    ('m\u00e4il.example', 'non-ASCII character \\\\xe4 at position 1'),
    ('\u043f\u0440\u0438\u043c\u0435\u0440.example', 'non-ASCII'),
    ('two words', 'without spaces'),
    ('[not-an-address]', 'address literal'),
    ('a' * 300, 'at most 255'),
    ('bad..name', 'empty label'),
])
def test_unusable_ehlo_names_are_refused_clearly(ehlo_name, message):
    with pytest.raises(TargetError, match=message) as caught:
        normalise_options({'ehlo_name': ehlo_name})
    assert 'ehlo_name' in str(caught.value)


@pytest.mark.parametrize('ehlo_name', ['probe.example', 'xn--mil-ula.example', '[192.0.2.1]', '[IPv6:2001:db8::1]',
                                       'localhost'])
def test_good_ehlo_names_pass(ehlo_name):
    assert normalise_options({'ehlo_name': ehlo_name})['ehlo_name'] == ehlo_name


@pytest.mark.parametrize('key', ['timeout', 'greeting_timeout', 'deadline'])
@pytest.mark.parametrize('value, message', [
    (float('nan'), 'finite'), (float('inf'), 'finite'), (float('-inf'), 'finite'), ('nan', 'finite'),
    ('Infinity', 'finite'), (0, 'greater than 0'), (-1, 'greater than 0'), (1e300, 'at most'),
    ('soon', 'number of seconds'), (True, 'boolean'), ([1], 'number of seconds'),
])
def test_timeouts_must_be_finite_positive_numbers(key, value, message):
    with pytest.raises(TargetError, match=message) as caught:
        normalise_options({key: value})
    assert str(caught.value).startswith(key)


@pytest.mark.parametrize('key, value, message', [
    ('concurrency', 2.5, 'whole number'), ('attempts', float('nan'), 'whole number'),
    ('per_host_limit', 0, 'out of range'), ('concurrency', 10 ** 9, 'out of range'),
    ('attempts', True, 'boolean'), ('test_command_injection', 'yes', 'true or false'),
    ('vantage', 'ctl\x1b[31m', 'control character'), ('ca_file', '/etc/ssl\ncert', 'control character'),
])
def test_other_options_are_checked(key, value, message):
    with pytest.raises(TargetError, match=message) as caught:
        normalise_options({key: value})
    assert key in str(caught.value)


@pytest.mark.parametrize('target, message', [
    ({'address': '127.0.0.1', 'port': 25.9, 'protocol': 'smtp'}, 'port must be a whole number, not 25.9'),
    ('127.0.0.1:25.9/smtp', "port must be a whole number, not '25.9'"),
    ({'address': '127.0.0.1', 'port': True, 'protocol': 'smtp'}, 'boolean'),
    ({'address': '127.0.0.1', 'port': [25]}, 'whole number'),
    ({'address': '127.0.0.1', 'port': 0, 'protocol': 'smtp'}, 'out of range'),
    ({'address': '127.0.0.1', 'port': 70000, 'protocol': 'smtp'}, 'out of range'),
    ({'address': '127.0.0.1', 'port': 25, 'sni': 'mail\x00.example'}, 'sni contains the control character'),
    ({'address': '127.0.0.1', 'port': 25, 'sni': 'a' * 64 + '.example'}, 'label of 64 characters'),
    ({'address': '127.0.0.1', 'port': 25, 'sni': ('abc.' * 70) + 'example'}, 'at most 253'),
    ({'address': '127.0.0.1', 'port': 25, 'sni': 'm\u00e4il.example'}, 'xn--'),
    ({'address': '127.0.0.1', 'port': 25, 'sni': 'mail example'}, 'not a valid host name'),
    ({'address': '127.0.0.1', 'port': 25, 'sni': '*.example'}, 'not a valid host name'),
    ({'address': '127.0.0.1\r\nx', 'port': 25}, 'address contains the control character'),
    ({'address': 'mail\u202e.example', 'port': 25}, 'non-ASCII'),
    ({'address': ['127.0.0.1'], 'port': 25}, 'address must be a string'),
    ({'address': '127.0.0.1', 'port': 25, 'protocol': ['smtp']}, 'protocol must be a string'),
    ({'address': '127.0.0.1', 'port': 25, 'expected_names': ['mail\n.example']}, 'expected_names\\[0\\]'),
])
def test_bad_target_values_are_refused_not_rounded(target, message):
    with pytest.raises(TargetError, match=message):
        probe_many([target])


def test_round_ports_and_ip_sni_are_accepted():
    assert parse_target({'address': '127.0.0.1', 'port': 25.0})['port'] == 25
    assert parse_target({'address': '127.0.0.1', 'port': ' 587 '})['port'] == 587
    assert parse_target({'address': '127.0.0.1', 'port': 25, 'sni': 'mail.example.'})['sni'] == 'mail.example'
    assert parse_target({'address': '127.0.0.1', 'port': 25, 'sni': '192.0.2.1'})['sni'] == '192.0.2.1'


def test_no_option_error_is_an_internal_error(scripted):
    # Each of these gave "internal error: ..." in the probe record before; now the run is refused.
    server = open_server(scripted)
    for options in ({'timeout': float('nan')}, {'deadline': float('inf')}, {'ehlo_name': 'm\u00e4il.example'}):
        with pytest.raises(TargetError):
            probe_many([f'127.0.0.1:{server.port}/smtp'], options)
    with pytest.raises(TargetError):
        probe_many([{'address': '127.0.0.1', 'port': server.port, 'protocol': 'smtp', 'sni': 'x\x00y'}])
    assert server.connections == 0


@pytest.mark.parametrize('spec, message', [
    ({'host': '127.0.0.1', 'port': 70000}, 'jump_host.port 70000 is out of range'),
    ({'host': '127.0.0.1', 'port': 22.5}, 'jump_host.port must be a whole number'),
    ({'host': '127.0.0.1\r\nProxyCommand x'}, 'jump_host.host contains the control character'),
    ({'host': '127.0.0.1', 'user': 'root\nx'}, 'jump_host.user contains'),
    ({'host': '127.0.0.1', 'password': 'se\ncret'}, 'jump_host.password contains a control character$'),
])
def test_jump_host_values_are_checked(spec, message):
    with pytest.raises(validate.OptionError, match=message) as caught:
        validate.jump_host(spec)
    assert 'se\ncret' not in str(caught.value)


def test_jump_connector_never_wraps_a_port():
    with pytest.raises(ValueError, match='out of range'):
        jump_connector({'host': '127.0.0.1', 'port': 70000}, 1.0)


def test_is_ip_answers_the_same_when_it_remembers():
    values = ['127.0.0.1', '::1', '192.0.2.300', 'mx.example.test', '', None, 25, ['127.0.0.1'], {'a': 1}]
    expected = [True, True, False, False, False, False, False, False, False]
    assert [validate.is_ip(value) for value in values] == expected
    # Asked again (now answered from memory), the same answers; unhashable values never reach the memory.
    assert [validate.is_ip(value) for value in values] == expected
    assert validate._is_ip_text.cache_info().hits >= 4
