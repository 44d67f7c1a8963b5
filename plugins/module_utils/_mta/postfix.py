# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Postfix: instances (multi_instance_directories, `postfix -c`, MAIL_CONFIG), master.cf
listeners and the certificate each smtpd service really loads.

main.cf and master.cf are parsed here for structure and file:line. When `postconf` is
installed (and the context allows tools) its full parameter dump is the authority for main.cf
values and the build's defaults, and `postconf -P` cross-checks the master.cf overrides.
"""

from __future__ import annotations

import os
import re

from ansible_collections.mailsec.starttls.plugins.module_utils._files import excerpt
from ansible_collections.mailsec.starttls.plugins.module_utils._mta.base import (
    MtaAdapter,
    REASON_IMPLICIT,
    bounded_items,
    classify_chain_files,
    enough_listeners,
    fix_names,
    host_addresses,
    hosts_lookup,
    infer_protocol,
    mark_uncertain,
    master_processes,
    new_binding,
    new_instance,
    new_listener,
    normalise_address,
    resolve_port,
    setting,
    split_host_port,
)

DEFAULT_CONFIG_DIR = '/etc/postfix'

# Postfix 3.7 defaults of the parameters this adapter reads; `postconf` replaces them when present.
DEFAULTS = {
    'inet_interfaces': 'all',
    'inet_protocols': 'all',
    'multi_instance_directories': '',
    'multi_instance_enable': 'no',
    'multi_instance_name': '',
    'queue_directory': '/var/spool/postfix',
    'daemon_directory': '/usr/lib/postfix/sbin',
    'command_directory': '/usr/sbin',
    'data_directory': '/var/lib/postfix',
    'meta_directory': '/etc/postfix',
    'shlib_directory': '/usr/lib/postfix',
    'mail_owner': 'postfix',
    'mail_name': 'Postfix',
    'smtpd_tls_security_level': '',
    'smtpd_use_tls': 'no',
    'smtpd_enforce_tls': 'no',
    'smtpd_tls_wrappermode': 'no',
    'smtpd_tls_cert_file': '',
    'smtpd_tls_key_file': '$smtpd_tls_cert_file',
    'smtpd_tls_eccert_file': '',
    'smtpd_tls_eckey_file': '$smtpd_tls_eccert_file',
    'smtpd_tls_dcert_file': '',
    'smtpd_tls_dkey_file': '$smtpd_tls_dcert_file',
    'smtpd_tls_chain_files': '',
    'smtpd_tls_CAfile': '',
    'smtpd_tls_auth_only': 'no',
    'smtpd_discard_ehlo_keywords': '',
    'smtpd_discard_ehlo_keyword_address_maps': '',
    'tls_server_sni_maps': '',
    'postscreen_tls_security_level': '$smtpd_tls_security_level',
    'postscreen_use_tls': '$smtpd_use_tls',
    'postscreen_enforce_tls': '$smtpd_enforce_tls',
    'postscreen_discard_ehlo_keywords': '$smtpd_discard_ehlo_keywords',
    'postscreen_discard_ehlo_keyword_address_maps': '$smtpd_discard_ehlo_keyword_address_maps',
    'postscreen_pipelining_enable': 'no',
    'postscreen_non_smtp_command_enable': 'no',
    'postscreen_bare_newline_enable': 'no',
    'tlsproxy_tls_security_level': '$smtpd_tls_security_level',
    'tlsproxy_tls_cert_file': '$smtpd_tls_cert_file',
    'tlsproxy_tls_key_file': '$smtpd_tls_key_file',
    'tlsproxy_tls_chain_files': '$smtpd_tls_chain_files',
    'tlsproxy_tls_eccert_file': '$smtpd_tls_eccert_file',
    'tlsproxy_tls_eckey_file': '$smtpd_tls_eckey_file',
    'tlsproxy_tls_dcert_file': '$smtpd_tls_dcert_file',
    'tlsproxy_tls_dkey_file': '$smtpd_tls_dkey_file',
    'compatibility_level': '0',
    'myhostname': '',
}

# Parameters copied into each listener's tls_settings as evidence.
EVIDENCE_PARAMETERS = (
    'smtpd_tls_security_level', 'smtpd_use_tls', 'smtpd_enforce_tls', 'smtpd_tls_wrappermode',
    'smtpd_tls_chain_files', 'smtpd_tls_cert_file', 'smtpd_tls_key_file', 'smtpd_tls_eccert_file',
    'smtpd_tls_eckey_file', 'smtpd_tls_dcert_file', 'smtpd_tls_dkey_file',
    'smtpd_discard_ehlo_keywords', 'smtpd_discard_ehlo_keyword_address_maps', 'tls_server_sni_maps',
    'inet_interfaces', 'inet_protocols',
)

TRUE_WORDS = ('yes', 'true', '1', 'on')
# $parameter expansion of one Resolver: the longest value, and all the text it may build (billion
# laughs: each parameter twice the previous), and how many parameter look-ups.
MAX_EXPANDED_CHARS = 64 * 1024
MAX_RESOLVER_CHARS = 4 * 1024 * 1024
MAX_RESOLVER_LOOKUPS = 20000
LIMIT_MARK = 'expansion limit: '
SERVICE_FIELDS = ('name', 'type', 'private', 'unpriv', 'chroot', 'wakeup', 'maxproc', 'command')
# Postfix source tables whose text form we can read to list SNI names.
TEXT_TABLE_TYPES = ('hash', 'btree', 'lmdb', 'cdb', 'dbm', 'sdbm', 'texthash')


# -- main.cf / master.cf parsing ----------------------------------------------------------------

def logical_lines(text: str):
    """Postfix logical lines: (first line number, joined text, [(line number, physical text)]).

    A line that starts with whitespace continues the previous one; comment lines and empty
    lines are skipped without ending the logical line (Postfix readlline).
    """
    current = None
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith('#'):
            continue
        if raw[0] in ' \t' and current is not None:
            current[1].append(stripped)
            current[2].append((number, stripped))
            continue
        if current is not None:
            yield current[0], ' '.join(current[1]), current[2]
        current = [number, [stripped], [(number, stripped)]]
    if current is not None:
        yield current[0], ' '.join(current[1]), current[2]


def strip_braces(value: str) -> str:
    """'{ text }' -> 'text' (Postfix 3.0 syntax that keeps whitespace in one value)."""
    value = value.strip()
    if value.startswith('{') and value.endswith('}'):
        return value[1:-1].strip()
    return value


def parse_main_cf(ctx, path: str) -> dict | None:
    text = ctx.read_text(path, mta='postfix')
    if text is None:
        return None
    parameters = {}
    for number, line, _physical in logical_lines(text):
        if line.startswith('{'):
            line = strip_braces(line)
        name, separator, value = line.partition('=')
        name = name.strip()
        if not separator or not re.match(r'^[A-Za-z0-9_.-]+$', name):
            ctx.warn(f'cannot parse main.cf line: {excerpt(line)}', where=f'{path}:{number}', mta='postfix')
            continue
        value = strip_braces(value.strip())
        if name in parameters:
            # Postfix keeps the last definition (postconf warns "overriding earlier entry").
            parameters[name]['overridden_lines'] = parameters[name].get('overridden_lines', []) + [
                parameters[name]['line']]
        parameters[name] = {'value': value, 'line': number, 'where': f'{path}:{number}'}
    return parameters


def tokenize_master_line(physical: list) -> list:
    """Split a master.cf logical line into (token, line number), keeping '{ ... }' groups whole."""
    tokens = []
    for number, text in physical:
        index = 0
        while index < len(text):
            if text[index] in ' \t':
                index += 1
                continue
            start = index
            depth = 0
            while index < len(text):
                char = text[index]
                if char == '{':
                    depth += 1
                elif char == '}':
                    depth = max(0, depth - 1)
                elif char in ' \t' and depth == 0:
                    break
                index += 1
            tokens.append((text[start:index], number))
    return tokens


# The options of every Postfix daemon (src/master/single_server.c, multi_server.c, event_server.c):
# master(8) passes its own first, then the entry's arguments with `{ }` groups unwrapped, and the
# daemon reads them with getopt, which stops at the first word that is not an option (glibc's "+").
DAEMON_FLAGS = 'cdDlSuvVz'
DAEMON_OPTIONS_WITH_VALUE = 'imnorst'


def read_daemon_arguments(arguments: list) -> tuple:
    """Read master.cf arguments [(token, line)] as the daemon does: ([(-o name, value, line)], fatal,
    rest). `fatal` is (the daemon's own message, line) for what makes it exit at start-up; `rest` the
    words from the first non-option on, which the daemon does not read as options."""
    assignments = []
    index = 0
    while index < len(arguments):
        token, token_line = arguments[index]
        token = strip_braces(token) if token.startswith('{') else token
        if token == '--':
            return assignments, None, arguments[index + 1:]
        if not token.startswith('-') or token == '-':
            return assignments, None, arguments[index:]
        index += 1
        position = 1
        while position < len(token):
            letter = token[position]
            if letter in DAEMON_FLAGS:
                position += 1
                continue
            if letter not in DAEMON_OPTIONS_WITH_VALUE:
                return assignments, (f'invalid option: {letter}', token_line), []
            value = token[position + 1:]
            if not value:
                if index >= len(arguments):
                    return assignments, (f'invalid option: {letter}', token_line), []
                value, token_line = arguments[index]
                value = strip_braces(value) if value.startswith('{') else value
                index += 1
            if letter == 'o':
                name, setting, problem = split_nameval(value)
                if problem:
                    return assignments, (f'invalid "-o {excerpt(value, quoted=False)}" option value: {problem}', token_line), []
                assignments.append((name, setting, token_line))
            break
    return assignments, None, []


def split_nameval(text: str) -> tuple:
    """(name, value, problem) of `name = value` text as Postfix's split_nameval() reads it; `problem`
    is its message when it refuses the text. `{ }` around the value unwrapped."""
    stripped = text.strip()
    name = re.match(r'[^\s=]*', stripped).group(0)
    rest = stripped[len(name):].lstrip()
    if not name:
        return '', '', 'missing attribute name'
    if not rest.startswith('='):
        return name, '', "missing '=' after attribute name"
    return name, strip_braces(rest[1:].strip()), None


def parse_master_cf(ctx, path: str) -> list | None:
    text = ctx.read_text(path, mta='postfix')
    if text is None:
        return None
    services = []
    for number, _line, physical in logical_lines(text):
        tokens = tokenize_master_line(physical)
        if len(tokens) < 8:
            ctx.warn(f'master.cf entry has {len(tokens)} fields, needs at least 8',
                     where=f'{path}:{number}', mta='postfix')
            continue
        service = {field: tokens[index][0] for index, field in enumerate(SERVICE_FIELDS)}
        service['line'] = number
        service['where'] = f'{path}:{number}'
        service['args'] = [token for token, _kind in tokens[8:]]
        overrides = {}
        assignments, fatal, rest = read_daemon_arguments(tokens[8:])
        for name, value, token_line in assignments:
            overrides[name] = {'value': value, 'line': token_line, 'where': f'{path}:{token_line} -o'}
        command = os.path.basename(service['command'])
        label = f'master.cf {service["name"]}/{service["type"]}'
        service['broken'] = None
        if fatal is not None:
            message, token_line = fatal
            # Observed with Postfix 3.7: master(8) logs "bad command startup -- throttling" and tries
            # again a minute later; a client's connection waits in the queue and gets no greeting.
            service['broken'] = (f'{excerpt(command, quoted=False)} exits as soon as master(8) starts it ("{message}"): connections '
                                 'wait with no greeting')
            ctx.warn(f'{label}: {service["broken"]}, so nothing serves this entry; the -o options after it '
                     'are not read', where=f'{path}:{token_line}', mta='postfix')
        elif rest and command in ('smtpd', 'postscreen'):
            token, token_line = rest[0]
            if command == 'smtpd':
                # Every Postfix server but postscreen refuses command-line arguments when a client comes.
                service['broken'] = (f'smtpd exits on every connection ("unexpected command-line argument: '
                                     f'{excerpt(token, quoted=False)}"): the client is disconnected with no '
                                     'greeting')
            ctx.warn(f'{label}: {excerpt(token)} ends the daemon\'s options (getopt stops at the first word '
                     f'that is not an option), so the {len(rest) - 1} word(s) after it are not read'
                     + (f'; {service["broken"]}' if service['broken'] else ''),
                     where=f'{path}:{token_line}', mta='postfix')
        service['overrides'] = overrides
        services.append(service)
    return services


# -- $name expansion -------------------------------------------------------------------------

class Resolver:
    """Parameter values for one service: -o overrides, then main.cf, then postconf's or our defaults.

    Expansion is lazy and per service, as in Postfix: `smtpd_tls_key_file = $smtpd_tls_cert_file`
    follows a master.cf `-o smtpd_tls_cert_file=...` override.
    """

    def __init__(self, main: dict, tool_values: dict | None, overrides: dict | None = None,
                 config_dir: str = DEFAULT_CONFIG_DIR, service_name: str | None = None):
        self.main = main
        self.tool_values = tool_values or {}
        self.overrides = overrides or {}
        self.builtin = {'config_directory': config_dir}
        if service_name is not None:
            self.builtin['service_name'] = service_name
        # $name -> (expanded, unresolved): each parameter is expanded once per Resolver, a parameter
        # met again while it is being expanded is a cycle, and the text built in all is bounded.
        self._expanded: dict = {}
        self._expanding: set = set()
        self._built = 0
        self._lookups = 0

    def raw(self, name: str) -> tuple:
        """(raw value, where, known) of one parameter."""
        if name in self.overrides:
            return self.overrides[name]['value'], self.overrides[name]['where'], True
        if name in self.builtin:
            return self.builtin[name], 'built-in', True
        if name in self.main:
            return self.main[name]['value'], self.main[name]['where'], True
        if name in self.tool_values:
            return self.tool_values[name], 'default (postconf)', True
        if name in DEFAULTS:
            return DEFAULTS[name], 'default', True
        return '', 'unknown', False

    def value(self, name: str) -> tuple:
        """(expanded value, where, unresolved parts)."""
        raw, where, known = self.raw(name)
        unresolved = [] if known else [f'${name}']
        text, more = self.expand(raw)
        return text, where, unresolved + more

    def expand(self, text: str, depth: int = 0) -> tuple:
        if '$' not in text:
            return text, []
        if depth > 20:
            return text, [f'expansion too deep: {text[:80]}']
        out, unresolved, index, size = [], [], 0, 0
        while index < len(text):
            if size > MAX_EXPANDED_CHARS:
                return '', [f'{LIMIT_MARK}a value expands to more than {MAX_EXPANDED_CHARS} characters']
            char = text[index]
            if char != '$' or index + 1 >= len(text):
                out.append(char)
                index += 1
                continue
            following = text[index + 1]
            if following == '$':
                out.append('$')
                index += 2
                continue
            if following in '{(':
                closing = '}' if following == '{' else ')'
                end = _matching(text, index + 1, following, closing)
                if end < 0:
                    unresolved.append(text[index:index + 80])
                    break
                inner = text[index + 2:end]
                value, more = self._expand_braced(inner, depth)
                out.append(value)
                size += len(value)
                unresolved.extend(more)
                index = end + 1
                continue
            match = re.match(r'[A-Za-z0-9_]+', text[index + 1:])
            if not match:
                out.append(char)
                index += 1
                continue
            value, more = self._lookup(match.group(0), depth)
            out.append(value)
            size += len(value)
            unresolved.extend(more)
            index += 1 + match.end(0)
        return ''.join(out), unresolved

    def _lookup(self, name: str, depth: int) -> tuple:
        if name in self._expanded:
            return self._expanded[name]
        raw, _where, known = self.raw(name)
        if not known:
            return '', [f'${name}']
        self._lookups += 1
        if name in self._expanding:
            return '', [f'{LIMIT_MARK}${name} refers to itself']
        if self._lookups > MAX_RESOLVER_LOOKUPS or self._built > MAX_RESOLVER_CHARS:
            return '', [f'{LIMIT_MARK}${name} not expanded: more than {MAX_RESOLVER_LOOKUPS} look-ups or '
                        f'{MAX_RESOLVER_CHARS} characters in all']
        self._expanding.add(name)
        try:
            value, unresolved = self.expand(raw, depth + 1)
        finally:
            self._expanding.discard(name)
        if len(value) > MAX_EXPANDED_CHARS:
            value, unresolved = '', [f'{LIMIT_MARK}${name} expands to more than {MAX_EXPANDED_CHARS} characters']
        self._built += len(value)
        if len(unresolved) > 8:
            unresolved = unresolved[:8] + [f'... {len(unresolved) - 8} more']
        result = (value, unresolved)
        self._expanded[name] = result
        return result

    def _expand_braced(self, inner: str, depth: int) -> tuple:
        match = re.match(r'^([A-Za-z0-9_]+)(.*)$', inner, re.S)
        if not match:
            return '', [f'${{{inner}}}']
        name, rest = match.group(1), match.group(2)
        if not rest:
            return self._lookup(name, depth)
        value, unresolved = self._lookup(name, depth)
        operator, argument = rest[0], rest[1:].strip()
        if operator not in '?:':
            return '', [f'${{{inner}}}']
        if_true, if_false = argument, ''
        if argument.startswith('{'):
            end = _matching(argument, 0, '{', '}')
            if end < 0:
                return '', [f'${{{inner}}}']
            if_true = argument[1:end].strip()
            remainder = argument[end + 1:].strip()
            if operator == '?' and remainder.startswith(':'):
                if_false = strip_braces(remainder[1:].strip())
        # ${name?x}: x when $name is non-empty; ${name:x}: x when $name is empty (postconf(5)).
        if operator == '?':
            chosen = if_true if value else if_false
        else:
            chosen = if_true if not value else ''
        expanded, more = self.expand(chosen, depth + 1)
        return expanded, unresolved + more


def _matching(text: str, start: int, opening: str, closing: str) -> int:
    depth = 0
    for index in range(start, len(text)):
        if text[index] == opening:
            depth += 1
        elif text[index] == closing:
            depth -= 1
            if depth == 0:
                return index
    return -1


def split_list(value: str) -> list:
    return [item for item in re.split(r'[\s,]+', value) if item]


def is_true(value: str) -> bool:
    return value.strip().lower() in TRUE_WORDS


# -- the adapter -----------------------------------------------------------------------------

class PostfixAdapter(MtaAdapter):
    name = 'postfix'

    # -- the fix a finding shows (MtaAdapter.fix_text) -------------------------------------------

    def fix_text(self, rule: str, listener: dict, detail: dict) -> str | None:
        """Per service in master.cf, through postconf (of the listener's instance)."""
        names = fix_names(listener)
        directory = postfix_config_dir(listener)
        postconf = f'postconf -c {directory}' if directory else 'postconf'
        chain_files = f"'{names['service']}/inet/smtpd_tls_chain_files={names['key']},{names['cert']}'"
        if rule == 'starttls-advertised-without-certificate':
            text = (f"Bind a usable certificate to this service: `{postconf} -P {chain_files}` (key first, then the "
                    f"certificate and its chain), or stop offering TLS on it only: `{postconf} -P "
                    f"'{names['service']}/inet/smtpd_tls_security_level=none'`. Then {self.reload_text(listener)}.")
            if any('postscreen' in str(note) for note in listener.get('notes') or []):
                text += ' This service is postscreen: TLS belongs to its smtpd pass service, set the -o there.'
            return text
        if rule == 'implicit-tls-without-certificate':
            return (f"Bind a certificate to this wrapper-mode service: `{postconf} -P {chain_files}`, or remove the "
                    f"service from master.cf ({names['defined_at']}). Then {self.reload_text(listener)}.")
        if rule == 'starttls-not-offered':
            return (f"Offer TLS on this service: `{postconf} -P '{names['service']}/inet/smtpd_tls_security_level=may'` "
                    '(and remove STARTTLS from smtpd_discard_ehlo_keywords if it is there). '
                    f"Then {self.reload_text(listener)}.")
        if rule == 'starttls-command-injection':
            return 'Upgrade Postfix (CVE-2011-0411 was fixed in 2.8.0, 2.7.3, 2.6.9, 2.5.12 and 2.4.16).'
        if rule == 'legacy-tls-protocol':
            return (f"`{postconf} -e 'smtpd_tls_protocols = >=TLSv1.2' 'smtpd_tls_mandatory_protocols = "
                    f">=TLSv1.2'`, then {self.reload_text(listener)}.")
        return None

    def reload_text(self, listener: dict) -> str:
        directory = postfix_config_dir(listener)
        if directory:
            return f'`postfix -c {directory} check && postfix -c {directory} reload`'
        return '`postfix check && postfix reload`'

    def detect(self, ctx) -> list:
        masters = master_processes(ctx, 'postfix')
        directories: list = []
        origins: dict = {}

        def add(directory: str, origin: str) -> None:
            directory = os.path.normpath(directory)
            if directory not in directories:
                directories.append(directory)
                origins[directory] = origin
            elif origin not in origins[directory]:
                origins[directory] += f'; {origin}'

        for path in (ctx.options.get('config_paths') or {}).get('postfix') or []:
            add(os.path.dirname(path) if path.endswith('.cf') else path, 'option config_paths')
        for process in masters:
            directory = master_config_dir(process)
            if directory:
                add(directory, f'running master pid {process["pid"]}')
        if ctx.exists(f'{DEFAULT_CONFIG_DIR}/main.cf') or ctx.exists('/usr/sbin/postfix'):
            add(DEFAULT_CONFIG_DIR, 'default path')
        # Secondary instances are listed in the first (default) instance's main.cf.
        for directory in list(directories):
            main = parse_main_cf(ctx, f'{directory}/main.cf') or {}
            entry = main.get('multi_instance_directories')
            if entry:
                for secondary in split_list(entry['value']):
                    add(secondary, f'multi_instance_directories at {entry["where"]}')

        instances = []
        used_names: set = set()
        for directory in directories:
            instances.append(self._instance(ctx, directory, origins[directory], masters, used_names))
        return instances

    def _instance(self, ctx, directory: str, origin: str, masters: list, used_names: set) -> dict:
        main_path, master_path = f'{directory}/main.cf', f'{directory}/master.cf'
        config = load_config(ctx, directory)
        main = config['main'] or {}
        name = main.get('multi_instance_name', {}).get('value') or (
            'postfix' if directory == DEFAULT_CONFIG_DIR else instance_label(directory))
        if name in used_names:
            name = f'{name}@{directory}'
        used_names.add(name)
        instance = new_instance('postfix', name, config_dir=directory,
                                config_files=[path for path in (main_path, master_path) if ctx.exists(path)],
                                config_source=origin, reading_user='root',
                                reading_user_source='smtpd loads certificates as root before dropping privileges',
                                tools_used=config['tools_used'])
        instance['version'] = (config['tool_values'] or {}).get('mail_version')
        instance['multi_instance_enable'] = is_true(
            Resolver(main, config['tool_values'], config_dir=directory).value('multi_instance_enable')[0])
        if config['main'] is None:
            instance['notes'].append(f'{main_path} is missing or unreadable: no listeners can be derived')
        running = [process for process in masters if master_config_dir(process) == directory]
        unknown_dir = [process for process in masters if master_config_dir(process) is None]
        if running:
            instance['running'] = True
            instance['pid'] = running[0]['pid']
            instance['command_line'] = running[0].get('argv')
        elif unknown_dir:
            instance['running'] = None
            ctx.cannot_see(f'postfix master pid {unknown_dir[0]["pid"]}: environment unreadable, '
                           'cannot tell which instance it runs', mta='postfix')
        else:
            instance['running'] = False
        return instance

    def listeners(self, ctx, instance: dict) -> list:
        directory = instance['config_dir']
        config = load_config(ctx, directory)
        if config['main'] is None or config['services'] is None:
            return []
        main, tool_values = config['main'], config['tool_values']
        base = Resolver(main, tool_values, config_dir=directory)
        addresses, address_source = listen_addresses(ctx, base, instance['instance'])
        services = config['services']
        pass_services = [service for service in services
                         if service['type'] == 'pass' and os.path.basename(service['command']) == 'smtpd']
        records = []
        instance['other_listeners'] = []
        for service in services:
            if service['type'] != 'inet':
                continue
            if enough_listeners(ctx, records, 'postfix', instance['instance']):
                break
            host, port_text = split_host_port(service['name'])
            port = resolve_port(ctx, port_text)
            if port is None:
                ctx.warn(f'master.cf service {service["name"]!r}: unknown port {port_text!r}',
                         where=service['where'], mta='postfix', instance=instance['instance'])
                continue
            if host is not None:
                service_addresses = explicit_addresses(ctx, host, service, instance['instance'])
                where_address = service['where']
            else:
                service_addresses, where_address = addresses, address_source
            command = os.path.basename(service['command'])
            if command not in ('smtpd', 'postscreen'):
                for address in service_addresses:
                    instance['other_listeners'].append({
                        'address': address, 'port': port, 'service': service['name'], 'command': command,
                        'defined_at': service['where']})
                continue
            for address in service_addresses:
                records.append(self._listener(ctx, instance, service, address, port, where_address,
                                              main, tool_values, pass_services))
        return records

    def _listener(self, ctx, instance, service, address, port, where_address, main, tool_values,
                  pass_services) -> dict:
        directory = instance['config_dir']
        command = os.path.basename(service['command'])
        notes = []
        tls_service = service
        if command == 'postscreen':
            if pass_services:
                tls_service = pass_services[0]
                notes.append(f'postscreen hands clients to the smtpd pass service at '
                             f'{tls_service["where"]}; TLS settings are that service\'s')
            else:
                notes.append('postscreen without an smtpd pass service in master.cf')
        resolver = Resolver(main, tool_values, tls_service['overrides'], directory, tls_service['name'])
        if command == 'postscreen':
            deep = [name for name in ('postscreen_pipelining_enable', 'postscreen_non_smtp_command_enable',
                                      'postscreen_bare_newline_enable')
                    if is_true(Resolver(main, tool_values, service['overrides'], directory).value(name)[0])]
            if deep:
                notes.append('postscreen deep protocol tests are on (' + ', '.join(deep) + '): postscreen '
                             'itself answers EHLO first and offers STARTTLS per postscreen_tls_security_level '
                             'through tlsproxy')

        wrapper_value, wrapper_where, _unresolved = resolver.value('smtpd_tls_wrappermode')
        wrapper = is_true(wrapper_value)
        hints = [service['name'], port]
        protocol = infer_protocol(port, implicit=wrapper, hints=hints)
        record = new_listener('postfix', instance['instance'], service['name'], address, port, protocol,
                              defined_at=service['where'], reader_user='root')
        record['notes'].extend(notes)
        if where_address != service['where']:
            record['tls_settings']['listen_address'] = setting(address, where_address)
        self._starttls(ctx, record, resolver, wrapper, wrapper_where)
        record['binding'] = binding_for(ctx, resolver, instance['instance'])
        switched_off = [name for name in TLS_SWITCHES if name in tls_service['overrides']]
        # A service that names a certificate of its own and switches TLS off holds that certificate
        # unused (starttls-not-offered); one that only inherits main.cf's holds none.
        own_certificate = [name for name in ('smtpd_tls_cert_file', 'smtpd_tls_eccert_file', 'smtpd_tls_dcert_file',
                                             'smtpd_tls_chain_files') if name in tls_service['overrides']]
        if (record['tls_mode'] == 'none' and not wrapper and switched_off and not own_certificate
                and 'smtpd_discard_ehlo' not in str(record['offers_starttls_reason'])
                and tls_on(Resolver(main, tool_values, None, directory))):
            # TLS off for this service alone (a content-filter re-injection port, say): smtpd loads no
            # certificate here, so none is bound; the instance's own is not held by this listener.
            unused = record['binding'].get('certificate')
            where = tls_service['overrides'][switched_off[0]]['where']
            record['binding'] = new_binding(source=f'none: TLS is switched off for this service ({where} -o '
                                                   f'{switched_off[0]}={tls_service["overrides"][switched_off[0]]["value"]})')
            if unused:
                record['notes'].append(f'the instance\'s certificate {unused} does not apply here: this service '
                                       'switches TLS off')
        for name in EVIDENCE_PARAMETERS:
            raw, where, _known = resolver.raw(name)
            if where.startswith('default') and raw == DEFAULTS.get(name, raw):
                continue
            value, _where, unresolved = resolver.value(name)
            entry = setting(value, where)
            if raw != value:
                entry['raw'] = raw
            if unresolved:
                entry['unresolved'] = unresolved
            record['tls_settings'][name] = entry
        for which in [service] + ([tls_service] if tls_service is not service else []):
            # master(8) accepts connections here, but no daemon answers them: nothing is advertised.
            if which.get('broken'):
                mark_uncertain(record, 'offers_starttls', which['where'],
                               f'{which["broken"]} (an -o takes one word, name=value, or {{ name = value }} '
                               'for a value with spaces)')
        return record

    def _starttls(self, ctx, record, resolver, wrapper: bool, wrapper_where: str) -> None:
        level, level_where, _unresolved = resolver.value('smtpd_tls_security_level')
        level = level.strip().lower()
        if wrapper:
            record['tls_mode'] = 'implicit'
            record['offers_starttls'] = False
            record['offers_starttls_reason'] = f'{REASON_IMPLICIT} (smtpd_tls_wrappermode = yes at {wrapper_where})'
            if level == 'none':
                record['notes'].append('smtpd_tls_security_level = none is ignored in wrapper mode')
            return
        if level:
            if level == 'none':
                record['tls_mode'] = 'none'
                record['offers_starttls'] = False
                record['offers_starttls_reason'] = f'smtpd_tls_security_level = none ({level_where})'
                return
            if level in ('may', 'encrypt'):
                offers, reason = True, f'smtpd_tls_security_level = {level} ({level_where})'
            elif level in ('fingerprint', 'verify', 'secure', 'dane', 'dane-only'):
                offers, reason = True, (f'smtpd_tls_security_level = {level} ({level_where}): not a server '
                                        'level, smtpd warns and uses encrypt')
            else:
                mark_uncertain(record, 'offers_starttls', level_where,
                               f'unknown smtpd_tls_security_level {level!r}')
                ctx.warn(f'unknown smtpd_tls_security_level {level!r}', where=level_where, mta='postfix',
                         instance=record['instance'])
                return
        else:
            enforce, enforce_where, _unresolved = resolver.value('smtpd_enforce_tls')
            use, use_where, _unresolved = resolver.value('smtpd_use_tls')
            if is_true(enforce):
                offers, reason = True, f'smtpd_enforce_tls = yes ({enforce_where}), no security level set'
            elif is_true(use):
                offers, reason = True, f'smtpd_use_tls = yes ({use_where}), no security level set'
            else:
                record['tls_mode'] = 'none'
                record['offers_starttls'] = False
                record['offers_starttls_reason'] = ('TLS off: smtpd_tls_security_level is empty and '
                                                    f'smtpd_use_tls = {use or "no"} ({use_where})')
                return
        discard, discard_where, _unresolved = resolver.value('smtpd_discard_ehlo_keywords')
        if 'starttls' in [word.lower() for word in split_list(discard)]:
            # Not only hidden: Postfix 3.7 then answers a STARTTLS command with 502 (observed).
            record['tls_mode'] = 'none'
            record['offers_starttls'] = False
            record['offers_starttls_reason'] = (f'{reason}, but smtpd_discard_ehlo_keywords removes STARTTLS '
                                                f'({discard_where})')
            return
        record['offers_starttls'] = offers
        record['offers_starttls_reason'] = reason
        maps, maps_where, _unresolved = resolver.value('smtpd_discard_ehlo_keyword_address_maps')
        if maps and table_mentions(ctx, maps, 'starttls'):
            record['offers_starttls'] = None
            record['offers_starttls_reason'] = (f'{reason}; smtpd_discard_ehlo_keyword_address_maps '
                                                f'({maps_where}) removes STARTTLS for some clients')

    # -- remediation (mta_tls_config): edits through postconf on a staged copy, and reload ------
    def plan_tls_change(self, ctx, instance: dict, listener: dict, desired: dict, others: list) -> dict:
        """The master.cf `-o` overrides that give this listener the desired TLS state (postfix_edit)."""
        # Imported here: the host inspection never compiles the edit code (see _mta/__init__.py).
        # pylint: disable-next=import-outside-toplevel
        from ansible_collections.mailsec.starttls.plugins.module_utils._mta.postfix_edit import plan_tls_change
        return plan_tls_change(self, ctx, instance, listener, desired, others)

    def reload_command(self, ctx, instance: dict) -> list:
        """`postfix -c DIR reload`: master re-reads main.cf and master.cf; sessions in progress finish."""
        return [ctx.tool('postfix') or 'postfix', '-c', instance['config_dir'], 'reload']


def tls_on(resolver: Resolver) -> bool:
    """Whether these parameters switch server TLS on (a security level above none, or the
    pre-2.3 smtpd_use_tls / smtpd_enforce_tls when no level is set)."""
    level = resolver.value('smtpd_tls_security_level')[0].strip().lower()
    if level:
        return level != 'none'
    return is_true(resolver.value('smtpd_enforce_tls')[0]) or is_true(resolver.value('smtpd_use_tls')[0])


# master.cf -o parameters that can switch TLS off for one service.
TLS_SWITCHES = ('smtpd_tls_security_level', 'smtpd_use_tls', 'smtpd_enforce_tls')


def binding_for(ctx, resolver: Resolver, instance_name: str) -> dict:
    """The certificate smtpd loads under these settings, and the parameter that chose it."""
    chain_value, chain_where, chain_unresolved = resolver.value('smtpd_tls_chain_files')
    cert_value, cert_where, cert_unresolved = resolver.value('smtpd_tls_cert_file')
    if chain_value.strip():
        files = split_list(chain_value)
        pairs = classify_chain_files(ctx, files)
        binding = new_binding(source=f'{chain_where} smtpd_tls_chain_files', resolved=not chain_unresolved)
        if pairs:
            first = pairs[0]
            binding.update(certificate=first['certificate'], key=first['key'], chain=first['chain'])
            binding['alternates'] = [{'certificate': pair['certificate'], 'key': pair['key'],
                                      'chain': pair['chain']} for pair in pairs[1:]]
            if first.get('guessed'):
                binding['notes'].append('some chain files were unreadable: key/certificate roles guessed from names')
        binding['files'] = files
        if cert_value.strip():
            binding['notes'].append(
                f'smtpd_tls_cert_file ({cert_where}) is ignored: smtpd_tls_chain_files wins')
        if chain_unresolved:
            binding['source'] = f'unresolved: {" ".join(chain_unresolved)} in {chain_where} smtpd_tls_chain_files'
    else:
        pairs = []
        for cert_name, key_name in (('smtpd_tls_cert_file', 'smtpd_tls_key_file'),
                                    ('smtpd_tls_eccert_file', 'smtpd_tls_eckey_file'),
                                    ('smtpd_tls_dcert_file', 'smtpd_tls_dkey_file')):
            certificate, where, unresolved = resolver.value(cert_name)
            key, _key_where, key_unresolved = resolver.value(key_name)
            certificate = certificate.strip()
            if certificate:
                pairs.append((cert_name, certificate, key.strip() or certificate, where,
                              unresolved + key_unresolved))
        if not pairs:
            binding = new_binding(source='default (none configured)')
        else:
            cert_name, certificate, key, where, unresolved = pairs[0]
            if certificate.lower() == 'none':
                binding = new_binding(source=f'{where} {cert_name} = none (no certificate: anonymous TLS only)')
            else:
                binding = new_binding(certificate=certificate, key=key, source=f'{where} {cert_name}',
                                      resolved=not unresolved)
                if unresolved:
                    binding['source'] = f'unresolved: {" ".join(unresolved)} in {where} {cert_name}'
            binding['alternates'] = [{'certificate': pair[1], 'key': pair[2], 'chain': [],
                                      'parameter': pair[0]} for pair in pairs[1:] if pair[1].lower() != 'none']
    sni_value, sni_where, _unresolved = resolver.value('tls_server_sni_maps')
    if sni_value.strip():
        binding['sni'] = sni_entries(ctx, sni_value, sni_where, instance_name)
    return binding


def sni_entries(ctx, maps_value: str, where: str, instance_name: str) -> list:
    """Names and chain files from the source text of tls_server_sni_maps tables."""
    entries = []
    for table in split_list(maps_value):
        kind, _sep, name = table.partition(':')
        if kind not in TEXT_TABLE_TYPES or not name.startswith('/'):
            entries.append({'name': None, 'certificate': None, 'key': None, 'chain': [],
                            'source': f'unresolved: {table} ({where} tls_server_sni_maps) is not a file table'})
            continue
        text = ctx.read_text(name, mta='postfix')
        if text is None:
            entries.append({'name': None, 'certificate': None, 'key': None, 'chain': [],
                            'source': f'unresolved: cannot read {name} ({where} tls_server_sni_maps)'})
            continue
        for number, line, _physical in logical_lines(text):
            fields = line.split(None, 1)
            if len(fields) != 2:
                ctx.warn('SNI table line without files', where=f'{name}:{number}', mta='postfix',
                         instance=instance_name)
                continue
            pairs = classify_chain_files(ctx, split_list(fields[1]))
            first = pairs[0] if pairs else {'certificate': None, 'key': None, 'chain': []}
            entries.append({'name': fields[0], 'certificate': first['certificate'], 'key': first['key'],
                            'chain': first['chain'], 'source': f'{name}:{number} (tls_server_sni_maps)'})
    return entries


def table_mentions(ctx, maps_value: str, word: str) -> bool:
    for table in split_list(maps_value):
        kind, _sep, name = table.partition(':')
        if kind == 'inline' or kind == 'static':
            if word in name.lower():
                return True
            continue
        if name.startswith('/'):
            text = ctx.read_text(name, mta='postfix') or ''
            if word in text.lower():
                return True
    return False


def listen_addresses(ctx, resolver: Resolver, instance_name: str) -> tuple:
    """Addresses for services without an address part, from inet_interfaces and inet_protocols."""
    interfaces, interfaces_where, _unresolved = resolver.value('inet_interfaces')
    protocols, _protocols_where, _unresolved = resolver.value('inet_protocols')
    families = set()
    for word in split_list(protocols.lower()):
        if word == 'all':
            families.update(('ipv4', 'ipv6'))
        elif word in ('ipv4', 'ipv6'):
            families.add(word)
    if 'ipv6' in families and ctx.root == '/' and not os.path.exists('/proc/net/if_inet6'):
        families.discard('ipv6')
    families = families or {'ipv4'}
    addresses = []
    for word in bounded_items(ctx, split_list(interfaces), 'inet_interfaces', interfaces_where, 'postfix'):
        lowered = word.lower()
        if lowered == 'all':
            addresses.extend(address for family, address in (('ipv4', '0.0.0.0'), ('ipv6', '::'))
                             if family in families)
        elif lowered in ('loopback-only', 'localhost'):
            addresses.extend(address for family, address in (('ipv4', '127.0.0.1'), ('ipv6', '::1'))
                             if family in families)
        else:
            address = normalise_address(word)
            if address is None:
                resolved = hosts_lookup(ctx, word)
                if not resolved:
                    ctx.warn(f'inet_interfaces name {word!r} is not an address and not in /etc/hosts',
                             where=interfaces_where, mta='postfix', instance=instance_name)
                addresses.extend(resolved)
            else:
                addresses.append(address)
    unique = list(dict.fromkeys(addresses))
    return unique, f'{interfaces_where} inet_interfaces'


def explicit_addresses(ctx, host: str, service: dict, instance_name: str) -> list:
    address = normalise_address(host)
    if address is not None:
        return [address]
    if host in ('*', ''):
        return ['0.0.0.0']
    resolved = hosts_lookup(ctx, host)
    if not resolved:
        ctx.warn(f'master.cf service {service["name"]!r}: host {host!r} is not in /etc/hosts',
                 where=service['where'], mta='postfix', instance=instance_name)
    return resolved


def instance_label(directory: str) -> str:
    """A short name for an instance without multi_instance_name: /etc/postfix-b -> postfix-b,
    /srv/mail-a/conf -> mail-a (a generic last component says nothing)."""
    label = os.path.basename(directory)
    if label in ('conf', 'config', 'etc', 'postfix', 'cf') and os.path.dirname(directory) not in ('', '/'):
        label = os.path.basename(os.path.dirname(directory))
    return label


def master_config_dir(process: dict) -> str | None:
    """The config directory of a running master: `-c DIR`, else MAIL_CONFIG, else the default."""
    argv = process.get('argv') or []
    for index, argument in enumerate(argv):
        if argument == '-c' and index + 1 < len(argv):
            return os.path.normpath(argv[index + 1])
        if argument.startswith('-c') and len(argument) > 2:
            return os.path.normpath(argument[2:])
    environ = process.get('environ')
    if environ is None:
        return None
    return os.path.normpath(environ.get('MAIL_CONFIG') or DEFAULT_CONFIG_DIR)


def load_config(ctx, directory: str) -> dict:
    """main.cf, master.cf and (when allowed) postconf's view of one instance, parsed once."""
    memo = ctx.memo.setdefault('postfix', {})
    if directory in memo:
        return memo[directory]
    main = parse_main_cf(ctx, f'{directory}/main.cf')
    services = parse_master_cf(ctx, f'{directory}/master.cf') if main is not None else None
    config = {'main': main, 'services': services, 'tool_values': None, 'tools_used': []}
    memo[directory] = config
    postconf = ctx.tool('postconf') if ctx.tools_enabled() and main is not None else None
    missing = interfaces_not_configured(ctx, main) if postconf else []
    if missing:
        # postconf (and master) stop with "no local interface found", after a one-second sleep.
        ctx.warn(f'inet_interfaces names {", ".join(missing)}, which no network interface has: Postfix refuses '
                 'to start like this; postconf not run', where=main['inet_interfaces']['where'], mta='postfix')
        postconf = None
    if postconf:
        real_dir = ctx.resolve(directory)
        dump = ctx.run([postconf, '-c', real_dir], mta='postfix')
        if dump['error'] is None:
            config['tool_values'] = parse_postconf_output(dump['stdout'])
            config['tools_used'].append('postconf')
            for name, entry in main.items():
                tool_value = config['tool_values'].get(name)
                if tool_value is not None and not same_to_postconf(entry['value'], tool_value):
                    ctx.warn(f'main.cf {name}: file says {entry["value"]!r}, postconf says {tool_value!r}; '
                             'using postconf', where=entry['where'], mta='postfix')
                    entry['value'] = tool_value
        overrides = ctx.run([postconf, '-c', real_dir, '-P'], mta='postfix')
        if overrides['error'] is None and services is not None:
            config['tools_used'].append('postconf -P')
            cross_check_overrides(ctx, services, overrides['stdout'])
    if main is not None:
        check_expansions(ctx, main, config['tool_values'], directory)
    return config


def check_expansions(ctx, main: dict, tool_values: dict | None, directory: str) -> None:
    """One warning per main.cf parameter whose $expansion hits a limit (a cycle, or a value that
    grows without bound); the listeners still carry it as unresolved."""
    resolver = Resolver(main, tool_values, config_dir=directory)
    for name, entry in main.items():
        if '$' not in entry['value']:
            continue
        _value, _where, unresolved = resolver.value(name)
        limits = [item[len(LIMIT_MARK):] for item in unresolved if item.startswith(LIMIT_MARK)]
        if limits:
            ctx.warn(f'{name}: {limits[0]}; left unexpanded', where=entry['where'], mta='postfix')


def interfaces_not_configured(ctx, main: dict) -> list:
    """Literal inet_interfaces addresses that no interface carries (only exact host addresses count)."""
    entry = main.get('inet_interfaces')
    if entry is None or '$' in entry['value']:
        return []
    addresses = host_addresses(ctx)
    if not (addresses['ipv4'] or addresses['ipv6']):
        return []
    missing = []
    for word in split_list(entry['value']):
        address = normalise_address(word)
        if address is not None and address not in addresses['ipv4'] and address not in addresses['ipv6']:
            missing.append(address)
    return missing


def parse_postconf_output(text: str) -> dict:
    """`name = value` lines of postconf's output; `name =` is an empty value."""
    values = {}
    for line in text.splitlines():
        name, separator, value = line.partition(' = ')
        if separator:
            values[name.strip()] = value.strip()
        elif line.endswith(' ='):
            values[line[:-2].strip()] = ''
    return values


def same_to_postconf(file_value: str, tool_value: str) -> bool:
    """Whether postconf printed this value: it prints every value with its whitespace normalized
    (pcf_print_line), while the daemons use the text as written."""
    return file_value.split() == tool_value.split()


def cross_check_overrides(ctx, services: list, text: str) -> None:
    """Warn where `postconf -P` reads master.cf differently from this parser."""
    told = {}
    for key, value in parse_postconf_output(text).items():
        parts = key.rsplit('/', 2)
        if len(parts) == 3:
            told[(parts[0], parts[1], parts[2])] = value
    for service in services:
        for name, entry in service['overrides'].items():
            tool_value = told.pop((service['name'], service['type'], name), None)
            if tool_value is not None and not same_to_postconf(entry['value'], tool_value):
                ctx.warn(f'master.cf {service["name"]}/{service["type"]} -o {name}: parsed {entry["value"]!r}, '
                         f'postconf -P says {tool_value!r}', where=entry['where'], mta='postfix')
            elif tool_value is None:
                ctx.warn(f'master.cf {service["name"]}/{service["type"]} -o {name}: postconf -P does not '
                         'report it (master(8) passes it to the daemon all the same)', where=entry['where'],
                         mta='postfix')
    for (service_name, service_type, name), value in told.items():
        ctx.warn(f'postconf -P reports {service_name}/{service_type}/{name} = {value!r}, not found by the '
                 'master.cf parser', mta='postfix')


def postfix_config_dir(listener: dict) -> str | None:
    """A non-default Postfix instance's configuration directory (from the listener, or from
    where master.cf defines it), for `postconf -c` / `postfix -c` in a fix text."""
    directory = listener.get('config_dir')
    if not directory:
        match = re.match(r'^(/.+)/(?:master|main)\.cf:\d+$', str(listener.get('defined_at') or ''))
        directory = match.group(1) if match else None
    return directory if directory and directory != DEFAULT_CONFIG_DIR else None
