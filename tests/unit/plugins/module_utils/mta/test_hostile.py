# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hostile files on a managed host (issue 9, host side): each case finishes within 15 s and
512 MiB (tests/unit/.../mta/bounded.py), keeps the MTA's other listeners, says what it refused,
and no piece of a private key reaches the result."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.mailsec.starttls.plugins.module_utils import _files
from ansible_collections.mailsec.starttls.plugins.module_utils._certs import StoreInspector
from ansible_collections.mailsec.starttls.plugins.module_utils._mta import context
from ansible_collections.mailsec.starttls.plugins.module_utils._mta.context import HostContext
from ansible_collections.mailsec.starttls.tests.unit.plugins.module_utils.mta.bounded import (
    fake_private_key,
    junk_lines,
    leaked_key_pieces,
    run_bounded,
)

KEY_PATH = '/etc/ssl/private/mail.key'

POSTFIX_MASTER = 'smtp inet n - y - - smtpd\nsubmission inet n - y - - smtpd\n'
EXIM_LISTEN = 'local_interfaces = 127.0.20.1\ndaemon_smtp_ports = 25 : 587\ntls_certificate = /etc/ssl/mail.pem\n'
DOVECOT_LISTEN = 'protocols = imap\nlisten = 127.0.30.1\nssl_cert = </etc/ssl/mail.pem\nssl_key = </etc/ssl/mail.key\n'
SMTPD_LISTEN = ('pki mail cert "/etc/ssl/mail.pem"\npki mail key "/etc/ssl/mail.key"\n'
                'listen on 127.0.40.1 port 25 tls pki mail\nlisten on 127.0.40.1 port 587 tls-require pki mail\n')


def gather_bounded(host, **options) -> dict:
    outcome = run_bounded(lambda: host.gather(**options))
    assert 'error' not in outcome, outcome.get('error')
    return outcome


def endpoints(result: dict) -> list:
    return sorted(f'{item["address"]}:{item["port"]}' for item in result['listeners'])


def warnings_text(result: dict) -> str:
    return '\n'.join(f'{item.get("where")}: {item["message"]}' for item in result['warnings'])


# -- unbounded expansion ----------------------------------------------------------------------

def laughs(template: str, levels: int = 9, fan: int = 10) -> str:
    """Each level refers to the previous one `fan` times: 10**9 characters from 1.5 KB."""
    lines = [template.format(level=0, body='lol')]
    for level in range(1, levels + 1):
        lines.append(template.format(level=level, body=' '.join([f'{{ref{level - 1}}}'] * fan)))
    return '\n'.join(lines) + '\n'


def test_postfix_billion_laughs(host):
    levels = ['p0 = lol'] + [f'p{level} = ' + ' '.join([f'$p{level - 1}'] * 10) for level in range(1, 10)]
    host.files({'/etc/postfix/main.cf': '\n'.join(levels) + '\ninet_interfaces = 127.0.10.1\ninet_protocols = ipv4\n'
                'smtpd_tls_security_level = may\nsmtpd_tls_cert_file = /etc/ssl/$p9.pem\n',
                '/etc/postfix/master.cf': POSTFIX_MASTER})
    outcome = gather_bounded(host, mtas=['postfix'])
    result = outcome['result']
    assert endpoints(result) == ['127.0.10.1:25', '127.0.10.1:587']
    assert 'expands to more than' in warnings_text(result)
    assert len(outcome['json']) < 1 << 20
    binding = result['listeners'][0]['binding']
    assert binding['resolved'] is False and binding['source'].startswith('unresolved')


def test_postfix_parameter_cycle(host):
    host.files({'/etc/postfix/main.cf': 'a = $b $b\nb = $a $a\ninet_interfaces = 127.0.10.1\ninet_protocols = ipv4\n'
                'smtpd_tls_security_level = may\nsmtpd_tls_cert_file = /etc/ssl/$a\n',
                '/etc/postfix/master.cf': POSTFIX_MASTER})
    result = gather_bounded(host, mtas=['postfix'])['result']
    assert endpoints(result) == ['127.0.10.1:25', '127.0.10.1:587']
    assert 'refers to itself' in warnings_text(result)


def test_exim_billion_laughs(host):
    levels = ['L0 = lol'] + [f'L{level} = ' + ' '.join([f'L{level - 1}'] * 10) for level in range(1, 10)]
    host.write('/etc/exim/configure', '\n'.join(levels) + '\n' + EXIM_LISTEN + 'primary_hostname = L9\n')
    outcome = gather_bounded(host, mtas=['exim'], config_paths={'exim': ['/etc/exim/configure']})
    result = outcome['result']
    assert endpoints(result) == ['127.0.20.1:25', '127.0.20.1:587']
    assert 'more than 65536' in warnings_text(result)
    assert len(outcome['json']) < 1 << 20


def test_dovecot_billion_laughs(host):
    levels = ['v0 = lol'] + [f'v{level} = ' + ' '.join([f'$v{level - 1}'] * 10) for level in range(1, 10)]
    host.write('/etc/dovecot/dovecot.conf', '\n'.join(levels) + '\n' + DOVECOT_LISTEN)
    outcome = gather_bounded(host, mtas=['dovecot'])
    result = outcome['result']
    assert endpoints(result) == ['127.0.30.1:143', '127.0.30.1:993']
    assert 'left unexpanded' in warnings_text(result)
    assert len(outcome['json']) < 1 << 20


def test_opensmtpd_billion_laughs(host):
    levels = ['m0 = "lol"'] + [f'm{level} = "' + ' '.join([f'$m{level - 1}'] * 10) + '"' for level in range(1, 10)]
    host.write('/etc/smtpd.conf', '\n'.join(levels) + '\n' + SMTPD_LISTEN + 'table junk file:/etc/$m9\n')
    outcome = gather_bounded(host, mtas=['opensmtpd'])
    result = outcome['result']
    assert endpoints(result) == ['127.0.40.1:25', '127.0.40.1:587']
    assert 'left unexpanded' in warnings_text(result)
    assert len(outcome['json']) < 1 << 20


def test_expansion_budget_counts_total_and_steps():
    ctx = HostContext(root='/nonexistent')
    budget = context.ExpansionBudget(ctx, 'exim', max_chars=10, max_total=25, max_steps=100)
    assert budget.allow(10) and budget.allow(10)
    assert not budget.allow(11, 'f:1')
    assert not budget.allow(10, 'f:2')          # 30 > 25 in all: exhausted from here on
    assert not budget.allow(1, 'f:3')
    messages = [item['message'] for item in ctx.warnings]
    assert len(messages) == 2 and 'more than 10' in messages[0] and 'exceed 25' in messages[1]


# -- include fan-out ----------------------------------------------------------------------------

@pytest.mark.parametrize('mta, files, options, expected, warning', [
    ('dovecot', {'/etc/dovecot/dovecot.conf': DOVECOT_LISTEN + '!include loop.conf\n',
                 '/etc/dovecot/loop.conf': '!include loop.conf\n' * 3},
     {}, ['127.0.30.1:143', '127.0.30.1:993'], 'include cycle: /etc/dovecot/loop.conf includes itself'),
    ('exim', {'/etc/exim/configure': EXIM_LISTEN + '.include /etc/exim/configure\n' * 3},
     {'config_paths': {'exim': ['/etc/exim/configure']}}, ['127.0.20.1:25', '127.0.20.1:587'], 'include cycle'),
    ('opensmtpd', {'/etc/smtpd.conf': SMTPD_LISTEN + 'include "/etc/smtpd.conf"\n' * 3},
     {}, ['127.0.40.1:25', '127.0.40.1:587'], 'include cycle'),
])
def test_a_file_that_includes_itself_three_times(host, mta, files, options, expected, warning):
    host.files(files)
    outcome = gather_bounded(host, mtas=[mta], **options)
    assert endpoints(outcome['result']) == expected
    assert warning in warnings_text(outcome['result'])
    assert outcome['seconds'] < 5


def test_include_fan_out_without_cycle_is_budgeted(host):
    # Level N includes level N+1 three times: no cycle, 3**15 parses without a count budget.
    host.write('/etc/dovecot/dovecot.conf', DOVECOT_LISTEN + '!include level1.conf\n')
    for level in range(1, 16):
        host.write(f'/etc/dovecot/level{level}.conf', f'!include level{level + 1}.conf\n' * 3)
    host.write('/etc/dovecot/level16.conf', 'ssl = yes\n')
    outcome = gather_bounded(host, mtas=['dovecot'])
    result = outcome['result']
    assert endpoints(result) == ['127.0.30.1:143', '127.0.30.1:993']
    assert f'more than {context.MAX_INCLUDES} includes' in warnings_text(result)


def test_include_guard_unit():
    ctx = HostContext(root='/nonexistent')
    guard = context.IncludeGuard(ctx, 'dovecot', max_includes=2, max_depth=3)
    assert guard.enter('/a')
    assert guard.enter('/b', 'a:1')
    assert not guard.enter('/a', 'b:1')                 # cycle
    assert guard.enter('/c', 'b:2')
    guard.leave('/c')
    assert not guard.enter('/d', 'b:3')                 # third include: over the count
    guard.leave('/b')
    text = '\n'.join(item['message'] for item in ctx.warnings)
    assert 'include cycle: /a includes itself (through /a -> /b)' in text and 'more than 2 includes' in text


# -- key material -------------------------------------------------------------------------------

def assert_no_key(outcome: dict, lines: list) -> None:
    leaked = leaked_key_pieces(outcome['json'], lines)
    assert not leaked, f'key material in the result: {leaked[:3]}'


@pytest.mark.parametrize('armour', [True, False], ids=['pem', 'bare-base64'])
def test_dovecot_include_try_of_a_key(host, armour):
    key_text, lines = fake_private_key(armour)
    host.write(KEY_PATH, key_text, dedent=False)
    host.write('/etc/dovecot/dovecot.conf', DOVECOT_LISTEN + f'!include_try {KEY_PATH}\n')
    outcome = gather_bounded(host, mtas=['dovecot'])
    assert_no_key(outcome, lines)
    result = outcome['result']
    assert endpoints(result) == ['127.0.30.1:143', '127.0.30.1:993']
    assert f'{KEY_PATH} holds' in warnings_text(result) and 'nothing of it quoted' in warnings_text(result)


@pytest.mark.parametrize('mta, config, text, endpoint', [
    ('exim', '/etc/exim/configure', EXIM_LISTEN + f'.include {KEY_PATH}\n', '127.0.20.1:25'),
    ('opensmtpd', '/etc/smtpd.conf', SMTPD_LISTEN + f'include "{KEY_PATH}"\n', '127.0.40.1:25'),
])
def test_include_of_a_key_and_config_paths_at_a_key(host, mta, config, text, endpoint):
    key_text, lines = fake_private_key()
    host.write(KEY_PATH, key_text, dedent=False)
    host.write(config, text)
    outcome = gather_bounded(host, mtas=[mta], config_paths={mta: [config, KEY_PATH]})
    assert_no_key(outcome, lines)
    assert endpoint in endpoints(outcome['result'])
    assert f'{KEY_PATH} holds PEM or private key material' in warnings_text(outcome['result'])


def test_postfix_main_cf_that_is_a_key(host):
    key_text, lines = fake_private_key(armour=False)
    host.write('/etc/postfix/main.cf', key_text, dedent=False)
    host.write('/etc/postfix/master.cf', POSTFIX_MASTER)
    host.write('/etc/mail/sendmail.cf', key_text, dedent=False)
    outcome = gather_bounded(host, mtas=['postfix', 'sendmail'])
    assert_no_key(outcome, lines)


def test_a_key_line_in_a_configuration_is_never_quoted(host):
    # One key line pasted into an otherwise ordinary file: too little for the file test, so the
    # warning that the line cannot be parsed must withhold it.
    _key_text, lines = fake_private_key()
    line = next(item for item in lines if _files.looks_secret(item))
    host.write('/etc/dovecot/dovecot.conf', DOVECOT_LISTEN + line + '\n')
    host.write('/etc/smtpd.conf', SMTPD_LISTEN + line + '\n')
    host.write('/etc/exim/configure', EXIM_LISTEN + line.lower() + '\n' + line + '\n')
    outcome = gather_bounded(host, mtas=['dovecot', 'opensmtpd', 'exim'],
                             config_paths={'exim': ['/etc/exim/configure']})
    assert_no_key(outcome, [line])
    assert _files.WITHHELD in warnings_text(outcome['result'])


def test_excerpt_and_redact():
    _key_text, lines = fake_private_key()
    assert _files.excerpt('cannot parse this line at all, it is long', limit=10) == "'cannot par'..."
    assert _files.excerpt(lines[0]) == _files.WITHHELD
    assert _files.excerpt('/usr/lib/postfix/sbin/smtpd') == "'/usr/lib/postfix/sbin/smtpd'"
    assert lines[0] not in _files.redact(f'doveconf: Fatal: line 3: Unknown setting: {lines[0]}')
    assert 'BEGIN' not in _files.redact('Unknown setting: -----BEGIN RSA PRIVATE KEY-----')
    assert _files.redact('smtpd_tls_cert_file = /etc/ssl/mail.pem') == 'smtpd_tls_cert_file = /etc/ssl/mail.pem'


# -- what is not a regular file -------------------------------------------------------------------

def test_chain_files_dev_zero_urandom_and_fifo(host, tmp_path):
    fifo = str(tmp_path / 'chain.fifo')
    os.mkfifo(fifo)
    host.write('/etc/postfix/main.cf', 'inet_interfaces = 127.0.10.1\ninet_protocols = ipv4\n'
               'smtpd_tls_security_level = may\n'
               f'smtpd_tls_chain_files = /dev/zero {fifo} /dev/urandom\n')
    host.write('/etc/postfix/master.cf', POSTFIX_MASTER)
    for name in ('zero', 'urandom'):
        os.makedirs(host.path('/dev'), exist_ok=True)
        os.symlink(f'/dev/{name}', host.path(f'/dev/{name}'))
    os.makedirs(host.path(os.path.dirname(fifo)), exist_ok=True)
    os.symlink(fifo, host.path(fifo))
    outcome = gather_bounded(host, mtas=['postfix'], store_inspector=StoreInspector())
    result = outcome['result']
    assert endpoints(result) == ['127.0.10.1:25', '127.0.10.1:587']
    assert outcome['seconds'] < 10


def test_store_inspector_refuses_devices_and_fifos(tmp_path):
    fifo = str(tmp_path / 'cert.fifo')
    os.mkfifo(fifo)

    def inspect():
        inspector = StoreInspector()
        return [inspector.inspect('/dev/zero', '/dev/urandom', ['/dev/zero']), inspector.inspect(fifo, fifo, [fifo])]

    outcome = run_bounded(inspect)
    assert 'error' not in outcome, outcome.get('error')
    for store in outcome['result']:
        assert store['usable'] is not True and store['certificate']['parses'] is not True
        assert 'not a regular file' in json.dumps(store['unknown'])


def test_read_regular_refuses_what_is_not_a_small_regular_file(tmp_path):
    fifo = str(tmp_path / 'fifo')
    os.mkfifo(fifo)
    huge = tmp_path / 'huge'
    with open(huge, 'wb') as handle:
        handle.truncate(6 << 30)                       # sparse: 6 GiB that take no disk
    small = tmp_path / 'small'
    small.write_bytes(b'x' * 10)
    for path, reason in ((fifo, 'a FIFO'), ('/dev/zero', 'a character device'), (str(tmp_path), 'a directory'),
                         (str(huge), 'bytes, more than')):
        with pytest.raises(_files.RefusedFile) as caught:
            _files.read_regular(path, 1 << 20)
        assert reason in caught.value.strerror
    assert _files.read_regular(str(small), 10) == b'x' * 10
    with pytest.raises(_files.RefusedFile):
        _files.read_regular(str(small), 9)


def test_configurations_that_are_not_regular_files(host, tmp_path):
    fifo = host.path('/etc/dovecot/fifo.conf')
    os.makedirs(os.path.dirname(fifo), exist_ok=True)
    os.mkfifo(fifo)
    os.makedirs(host.path('/etc/dovecot/adir.conf'))
    with open(host.path('/etc/dovecot/huge.conf'), 'wb') as handle:
        handle.truncate(5 << 30)
    host.write('/etc/dovecot/dovecot.conf', DOVECOT_LISTEN + '!include fifo.conf\n!include_try adir.conf\n'
               '!include huge.conf\n')
    outcome = gather_bounded(host, mtas=['dovecot'])
    text = warnings_text(outcome['result'])
    assert endpoints(outcome['result']) == ['127.0.30.1:143', '127.0.30.1:993']
    assert 'fifo.conf: a FIFO, not a regular file' in text
    assert 'adir.conf: a directory' in text
    assert 'huge.conf: 5368709120 bytes' in text


# -- names that are not UTF-8 -------------------------------------------------------------------

def test_non_utf8_file_name_in_an_include_directory(host):
    host.write('/etc/dovecot/dovecot.conf', 'protocols = imap\n!include conf.d/*.conf\n')
    directory = os.fsencode(host.path('/etc/dovecot/conf.d'))
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, b'10-\xff\xfe.conf'), 'wb') as handle:
        handle.write(b'listen = 127.0.30.1\nssl = maybe\n')
    outcome = gather_bounded(host, mtas=['dovecot'])
    result = outcome['result']
    assert endpoints(result) == ['127.0.30.1:143', '127.0.30.1:993']
    assert '/etc/dovecot/conf.d/10-\\xff\\xfe.conf:' in outcome['json'].replace('\\\\', '\\')
    assert any('10-\\xff\\xfe.conf' in (item['where'] or '') for item in result['warnings'])


def test_json_safe():
    broken = os.fsdecode(b'/etc/\xff.conf')
    record = {'where': broken, broken: [broken, ('x', broken)], 'fine': 'é'}
    safe = _files.json_safe(record)
    assert safe is record
    assert json.dumps(safe, ensure_ascii=False).encode('utf-8')
    assert safe['where'] == '/etc/\\xff.conf' and safe['fine'] == 'é'
    assert safe['/etc/\\xff.conf'] == ['/etc/\\xff.conf', ('x', '/etc/\\xff.conf')]


# -- junk ------------------------------------------------------------------------------------------

JUNK_FILES = {
    'postfix': ('/etc/postfix/main.cf', {}),
    'exim': ('/etc/exim/configure', {'config_paths': {'exim': ['/etc/exim/configure']}}),
    'dovecot': ('/etc/dovecot/dovecot.conf', {}),
    'opensmtpd': ('/etc/smtpd.conf', {}),
    'sendmail': ('/etc/mail/sendmail.cf', {}),
}


@pytest.mark.parametrize('mta', sorted(JUNK_FILES))
def test_80k_junk_lines(host, mta):
    path, options = JUNK_FILES[mta]
    host.write(path, junk_lines(80000), dedent=False)
    if mta == 'postfix':
        host.write('/etc/postfix/master.cf', junk_lines(80000, seed=81), dedent=False)
    outcome = gather_bounded(host, mtas=[mta], **options)
    result = outcome['result']
    assert 20 <= len(result['warnings']) <= context.MAX_WARNINGS + context.MAX_LIMIT_WARNINGS + 1
    if len(result['warnings']) > context.MAX_WARNINGS:
        assert 'more warnings not listed' in result['warnings'][-1]['message']
    print(mta, round(outcome['seconds'], 2), len(outcome['json']))
    assert len(outcome['json']) < 2 << 20
    assert outcome['seconds'] < 15


def test_warnings_deduplicate_and_cap():
    ctx = HostContext(root='/nonexistent')
    for number in range(5000):
        ctx.warn('same', where='f:1', mta='exim')
        ctx.warn(f'junk {number}', where=f'f:{number}', mta='exim')
    ctx.finish()
    assert len(ctx.warnings) == context.MAX_WARNINGS + 1
    assert ctx.warnings[0]['message'] == 'same'
    assert ctx.warnings[-1]['message'] == f'{5000 - context.MAX_WARNINGS + 1} more warnings not listed ' \
                                          f'(at most {context.MAX_WARNINGS} are kept)'


def test_a_refused_key_after_hundreds_of_junk_lines_is_still_warned(host):
    key_text, lines = fake_private_key()
    host.write(KEY_PATH, key_text, dedent=False)
    host.write('/etc/dovecot/dovecot.conf', DOVECOT_LISTEN + junk_lines(1000) + f'!include_try {KEY_PATH}\n',
               dedent=False)
    outcome = gather_bounded(host, mtas=['dovecot'])
    assert_no_key(outcome, lines)
    assert f'{KEY_PATH} holds PEM or private key material' in warnings_text(outcome['result'])


def test_exim_line_that_macros_empty(host):
    # Found by tests/fuzz: a line that macro substitution leaves empty raised IndexError, and the
    # adapter guard then dropped every Exim listener.
    host.write('/etc/exim/configure', 'EMPTY =\nEMPTY\n' + EXIM_LISTEN)
    result = host.gather(mtas=['exim'], config_paths={'exim': ['/etc/exim/configure']})
    assert endpoints(result) == ['127.0.20.1:25', '127.0.20.1:587']
    assert 'failed' not in warnings_text(result)


def many(count: int, template: str) -> str:
    return ''.join(template.format(index=index, a=index // 256 % 256, b=index % 256) for index in range(count))


MANY_LISTENERS = {
    'postfix-inet_interfaces': ({'/etc/postfix/main.cf': 'inet_interfaces = ' + many(20000, '10.9.{a}.{b}, ') +
                                 '\nsmtpd_tls_security_level = may\n',
                                 '/etc/postfix/master.cf': 'smtp inet n - y - - smtpd\n'}, {}),
    'postfix-services': ({'/etc/postfix/main.cf': 'inet_interfaces = 127.0.0.1\n',
                          '/etc/postfix/master.cf': many(20000, '{index} inet n - y - - smtpd\n')}, {}),
    'exim-local_interfaces': ({'/etc/exim/configure': 'local_interfaces = ' + many(20000, '10.9.{a}.{b} : ') + '\n'},
                              {'config_paths': {'exim': ['/etc/exim/configure']}}),
    'dovecot-listen': ({'/etc/dovecot/dovecot.conf': 'protocols = imap\nlisten = ' + many(20000, '10.9.{a}.{b}, ') +
                        '\n'}, {}),
    'dovecot-local-blocks': ({'/etc/dovecot/dovecot.conf': 'protocols = imap\nlisten = *\n' +
                              many(2000, 'local 127.0.{a}.{b} {{\n  ssl_cert = </c{index}\n}}\n')}, {}),
    'opensmtpd-listen-and-pki': ({'/etc/smtpd.conf': many(3000, 'pki p{index} cert "/c{index}"\n') +
                                  many(3000, 'listen on 127.0.0.1 port {index} tls\n')}, {}),
    'sendmail-daemons': ({'/etc/mail/sendmail.cf': many(20000, 'O DaemonPortOptions=Port={index},Addr=127.0.0.1,'
                                                               ' Name=M{index}\n')}, {}),
}


@pytest.mark.parametrize('case', sorted(MANY_LISTENERS))
def test_a_configuration_that_declares_thousands_of_listeners(host, case):
    files, options = MANY_LISTENERS[case]
    for path, text in files.items():
        host.write(path, text, dedent=False)
    mta = case.split('-', 1)[0]
    outcome = gather_bounded(host, mtas=[mta], **options)
    result = outcome['result']
    assert 0 < len(result['listeners']) <= 1000
    text = warnings_text(result)
    assert 'are used' in text or 'not derived' in text or 'later ones are ignored' in text
    assert len(outcome['json']) < 32 << 20
    assert max(len(value) for value in _strings(result)) <= _files.MAX_RESULT_STRING + 64


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def test_a_warning_that_quotes_a_long_value_is_cut(host):
    host.write('/etc/dovecot/dovecot.conf', DOVECOT_LISTEN + 'ssl = ' + 'x' * 100000 + '\n')
    result = host.gather(mtas=['dovecot'])
    message = next(item['message'] for item in result['warnings'] if item['message'].startswith('unknown ssl value'))
    assert len(message) < context.MAX_WARNING_CHARS + 60 and message.endswith('more characters not shown]')
