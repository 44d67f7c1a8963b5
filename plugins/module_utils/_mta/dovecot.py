# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Dovecot: inet_listener blocks of the login services, `ssl`, and the certificate chosen per
listener by `local` (per address), `protocol` and `local_name` (SNI) filters.

The configuration files are parsed here (with `!include` and `!include_try`) for file:line.
When `doveconf` is allowed, `doveconf -c FILE -n` is parsed by the same parser and its tree is
the authority for values; the file tree only supplies where each value was written.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re

from ansible_collections.mailsec.starttls.plugins.module_utils._files import excerpt
from ansible_collections.mailsec.starttls.plugins.module_utils._mta.base import (
    MAX_LIST_ITEMS,
    REASON_IMPLICIT,
    MtaAdapter,
    backslash_lines,
    bounded_items,
    enough_listeners,
    fix_names,
    infer_protocol,
    is_local_address,
    master_processes,
    new_binding,
    new_instance,
    new_listener,
    normalise_address,
    setting,
    strip_hash_comment,
)

DEFAULT_CONFIG = '/etc/dovecot/dovecot.conf'
MAX_INCLUDE_DEPTH = 16

# protocol name in `protocols` -> (login service, listener family)
PROTOCOL_SERVICES = {
    'imap': ('imap-login', 'imap'),
    'pop3': ('pop3-login', 'pop3'),
    'submission': ('submission-login', 'submission'),
    'sieve': ('managesieve-login', 'sieve'),
    'lmtp': ('lmtp', 'lmtp'),
}
# Dovecot 2.3 built-in inet listeners of each service: name -> (port, ssl).
DEFAULT_LISTENERS = {
    'imap-login': {'imap': ('143', 'no'), 'imaps': ('993', 'yes')},
    'pop3-login': {'pop3': ('110', 'no'), 'pop3s': ('995', 'yes')},
    'submission-login': {'submission': ('587', 'no')},
    'managesieve-login': {'sieve': ('4190', 'no')},
    'lmtp': {},
}
DEFAULT_SETTINGS = {'listen': '*, ::', 'ssl': 'yes', 'protocols': 'imap pop3 lmtp'}
CERT_KEYS = (('ssl_cert', 'ssl_key'), ('ssl_server_cert_file', 'ssl_server_key_file'))
ALT_CERT_KEYS = (('ssl_alt_cert', 'ssl_alt_key'),)
FILTER_TYPES = ('local', 'remote', 'protocol', 'local_name')
EVIDENCE_KEYS = ('ssl', 'ssl_cert', 'ssl_key', 'ssl_alt_cert', 'ssl_alt_key', 'ssl_server_cert_file',
                 'ssl_server_key_file', 'ssl_min_protocol', 'listen', 'protocols')
HIDDEN_MARK = '# hidden'


# -- parsing ---------------------------------------------------------------------------------

def new_node(kind: str, name: str | None, where: str | None) -> dict:
    return {'type': kind, 'name': name, 'where': where, 'settings': {}, 'children': []}


def parse_config(ctx, path: str, text: str | None = None, label: str | None = None) -> dict | None:
    """A tree of sections from a dovecot.conf (or from doveconf output when `text` is given)."""
    root = new_node('root', None, path)
    if text is None:
        text = ctx.read_text(path, mta='dovecot', required=True)
        if text is None:
            return None
    limits = ctx.parse_limits('dovecot')
    limits.includes.enter(path)
    _parse_text(ctx, text, label or path, os.path.dirname(path), [root], root, 0, limits)
    return root


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in '"\'':
        return value[1:-1].replace('\\"', '"')
    return value


def _parse_text(ctx, text: str, label: str, directory: str, stack: list, root: dict, depth: int,
                limits=None) -> None:
    if limits is None:
        limits = ctx.parse_limits('dovecot')
    for number, raw in backslash_lines(text):
        head = raw.lstrip()
        if not head or head[0] == '#':
            # Blank or all comment: most of a distribution's dovecot.conf and conf.d (1,700 of 1,860 lines
            # on Debian 12), read on every run.
            continue
        where = f'{label}:{number}'
        hidden = re.match(r'^\s*([A-Za-z0-9_/.-]+)\s*=\s*# hidden', raw)
        if hidden:
            # doveconf -n masks secrets (ssl_key); the file tree supplies the path later.
            stack[-1]['settings'][hidden.group(1)] = {'value': HIDDEN_MARK, 'where': where}
            continue
        line = strip_hash_comment(raw, '"\'').strip()
        if not line:
            continue
        if line.startswith('!'):
            _include(ctx, line, where, directory, stack, root, depth, limits)
            continue
        if line == '}':
            if len(stack) > 1:
                stack.pop()
            else:
                ctx.warn('"}" without an open section', where=where, mta='dovecot')
            continue
        if line.endswith('{'):
            head = line[:-1].strip()
            parts = head.split(None, 1)
            if not parts:
                ctx.warn('section without a name', where=where, mta='dovecot')
                parts = ['']
            node = new_node(parts[0], _unquote(parts[1]) if len(parts) > 1 else None, where)
            stack[-1]['children'].append(node)
            stack.append(node)
            continue
        # Dovecot 2.4 keys may carry a colon (`fields { uid:default = vmail }`).
        match = re.match(r'^([A-Za-z0-9_/.:-]+)\s*=\s*(.*)$', line)
        if match:
            key, value = match.group(1), match.group(2).strip()
            value = _unquote(value)
            if '$' in value and len(stack) == 1:
                value = _expand_variables(value, root, limits.expansion, where)
            if key in OBSOLETE_KEYS and label != 'doveconf -n':
                _obsolete(ctx, key, value, where, stack, root)
                continue
            stack[-1]['settings'][key] = {'value': value, 'where': where}
            continue
        ctx.warn(f'cannot parse dovecot line: {excerpt(line)}', where=where, mta='dovecot')
    if depth == 0 and len(stack) > 1:
        ctx.warn(f'section "{excerpt(stack[-1]["type"], quoted=False)}" opened at {stack[-1]["where"]} is never closed',
                 where=label, mta='dovecot')


# Dovecot 1.x settings that Dovecot 2.3 still reads, translated as its config parser does
# (src/config/old-set-parser.c, 2.3): doveconf -n prints the translation, the daemons use it, and 2.4
# refuses them ("Unknown setting").
OBSOLETE_KEYS = ('ssl_cert_file', 'ssl_key_file', 'ssl_ca_file', 'ssl_disable', 'protocols', 'listen', 'ssl_listen')
# protocol section name -> the login listeners that 2.3 gives the old `listen` / `ssl_listen` to
OLD_LISTENERS = {'imap': (('imap-login', 'imap'), ('imap-login', 'imaps')),
                 'pop3': (('pop3-login', 'pop3'), ('pop3-login', 'pop3s')),
                 'managesieve': (('managesieve-login', 'managesieve'), None),
                 'sieve': (('managesieve-login', 'managesieve'), None)}


def _obsolete(ctx, key: str, value: str, where: str, stack: list, root: dict) -> None:
    """Store one setting that may be a Dovecot 1.x one, translated as Dovecot 2.3 reads it."""
    node = stack[-1]

    def said(translation: str) -> None:
        # The file's text is quoted as an excerpt only (bounded, control characters made visible).
        ctx.warn(f'obsolete Dovecot 1.x setting {key}: Dovecot 2.3 reads it as '
                 f'{excerpt(translation, limit=160, quoted=False)}; 2.4 refuses it', where=where, mta='dovecot')

    if key in ('ssl_cert_file', 'ssl_key_file', 'ssl_ca_file'):
        if value:
            new_key = key[:-len('_file')]
            node['settings'][new_key] = {'value': f'<{value}', 'where': where}
            said(f'{new_key} = <{value}')
        return
    if key == 'ssl_disable':
        ssl = {'yes': 'no', 'no': 'yes'}.get(value.lower(), value)
        node['settings']['ssl'] = {'value': ssl, 'where': where}
        said(f'ssl = {ssl}')
        return
    if key == 'protocols':
        words = ['sieve' if word == 'managesieve' else word for word in value.split()]
        for secure, plain, service in (('imaps', 'imap', 'imap-login'), ('pop3s', 'pop3', 'pop3-login')):
            if secure in words:
                words = [word for word in words if word != secure]
                if plain not in words:
                    # Only the implicit-TLS listener: 2.3 adds the protocol and closes its plain port.
                    words.append(plain)
                    _old_listener(root, service, plain, where)['port'] = {'value': '0', 'where': where}
        translated = ' '.join(words)
        node['settings'][key] = {'value': translated, 'where': where}
        if translated != ' '.join(value.split()):
            said(f'protocols = {translated}' + (' (and the plain imap/pop3 port closed)'
                                                if re.search(r'\b(imaps|pop3s)\b', value) else ''))
        return
    # listen / ssl_listen: a port, or a protocol section, makes them 1.x settings of the login listeners.
    in_protocol = node['type'] == 'protocol' and node['name'] in OLD_LISTENERS
    at_root = len(stack) == 1
    host, port = _old_host_port(value)
    obsolete = key == 'ssl_listen' or port is not None or not at_root
    if not obsolete or not (at_root or in_protocol):
        node['settings'][key] = {'value': value, 'where': where}
        return
    if not value:
        return
    ssl = 1 if key == 'ssl_listen' else 0
    names = [node['name']] if in_protocol else ['imap', 'pop3', 'managesieve']
    targets = [OLD_LISTENERS[name][ssl] for name in names if OLD_LISTENERS[name][ssl]]
    for service, listener in targets:
        settings = _old_listener(root, service, listener, where)
        if port is not None:
            settings['port'] = {'value': port, 'where': where}
        if not (at_root and not ssl):
            settings['address'] = {'value': host, 'where': where}
    if at_root and not ssl:
        root['settings']['listen'] = {'value': host, 'where': where}
    said(', '.join(f'service {service} {{ inet_listener {listener} {{ }} }}' for service, listener in targets)
         + (f' port {port}' if port is not None else '') + f' address {host}')


def _old_host_port(value: str) -> tuple:
    """(host, port) of a 1.x `listen = host:port` (the last colon, as 2.3 splits it); port None when
    no item of the list carries one (an IPv6 address alone has colons but no port)."""
    with_port = False
    for item in re.split(r'[\s,]+', value):
        if item.startswith('['):
            with_port = with_port or bool(re.match(r'^\[[^\]]*\]:[0-9]+$', item))
        elif item.count(':') == 1:
            with_port = with_port or bool(re.match(r'^[^:]*:[0-9]+$', item))
    if not with_port:
        return value, None
    # Only the last port is cut, also from a list (doveconf 2.3.19: "listen = a:10143, [::1]:10143"
    # becomes "listen = a:10143, [::1]" and port 10143).
    host, _colon, port = value.rpartition(':')
    return host, port


def _old_listener(root: dict, service: str, listener: str, where: str) -> dict:
    """The settings of `service SERVICE { inet_listener LISTENER { } }` at the top, made if absent."""
    service_node = next((node for node in root['children'] if node['type'] == 'service' and node['name'] == service),
                        None)
    if service_node is None:
        service_node = new_node('service', service, where)
        root['children'].append(service_node)
    listener_node = next((node for node in service_node['children']
                          if node['type'] == 'inet_listener' and node['name'] == listener), None)
    if listener_node is None:
        listener_node = new_node('inet_listener', listener, where)
        service_node['children'].append(listener_node)
    return listener_node['settings']


def _include(ctx, line: str, where: str, directory: str, stack: list, root: dict, depth: int,
             limits=None) -> None:
    if limits is None:
        limits = ctx.parse_limits('dovecot')
    command, _sep, argument = line.partition(' ')
    pattern = _unquote(argument)
    if command not in ('!include', '!include_try') or not pattern:
        ctx.warn(f'unknown directive {excerpt(line)}', where=where, mta='dovecot')
        return
    if depth >= MAX_INCLUDE_DEPTH:
        ctx.warn('includes nested too deep', where=where, mta='dovecot')
        return
    if not pattern.startswith('/'):
        pattern = os.path.join(directory, pattern)
    if '\x00' in pattern:
        ctx.warn('!include of a path with a NUL byte: not a file name', where=where, mta='dovecot')
        return
    paths = ctx.glob(pattern)
    if not paths and command == '!include':
        # A pattern that matches nothing stops Dovecot as a missing file does ("No matches"); only
        # !include_try allows either.
        what = 'matches no file' if any(char in pattern for char in '*?[') else 'no such file'
        ctx.warn(f'!include {pattern}: {what} (dovecot would refuse to start)', where=where, mta='dovecot')
    for path in paths:
        if not limits.includes.enter(path, where):
            continue
        try:
            text = ctx.read_text(path, mta='dovecot')
            if text is not None:
                limits.includes.charge(text)
                _parse_text(ctx, text, path, os.path.dirname(path), stack, root, depth + 1, limits)
        finally:
            limits.includes.leave(path)


VARIABLE = re.compile(r'\$\{([A-Za-z0-9_]+)\}|\$([A-Za-z0-9_]+)')


def _expand_variables(value: str, root: dict, budget=None, where: str | None = None) -> str:
    def replace(match):
        name = match.group(1) or match.group(2)
        entry = root['settings'].get(name)
        # Dovecot expands $setting against what the files set so far, not the built-in default.
        return entry['value'] if entry is not None else ''
    if budget is not None:
        # The size is known before the value is built: `a = $b $b` on every line doubles it.
        size = len(value) + sum(len(replace(match)) - len(match.group(0)) for match in VARIABLE.finditer(value))
        if not budget.allow(size, where, 'expanding $variables here'):
            return value
    return VARIABLE.sub(replace, value)


# -- resolution ------------------------------------------------------------------------------

def top_setting(tree: dict, key: str) -> tuple:
    entry = tree['settings'].get(key)
    if entry is not None:
        return entry['value'], entry['where']
    return DEFAULT_SETTINGS.get(key), None


def service_listeners(tree: dict, service_name: str) -> dict:
    """inet_listener name -> {'settings': {key: {value, where}}, 'where'} merged over all blocks."""
    listeners = {}
    for name, (port, ssl) in DEFAULT_LISTENERS.get(service_name, {}).items():
        listeners[name] = {'where': None, 'settings': {'port': {'value': port, 'where': None},
                                                       'ssl': {'value': ssl, 'where': None}}}
    for node in tree['children']:
        if node['type'] != 'service' or node['name'] != service_name:
            continue
        for child in node['children']:
            if child['type'] != 'inet_listener':
                continue
            entry = listeners.setdefault(child['name'] or '', {'where': child['where'], 'settings': {}})
            entry['where'] = child['where']
            entry['settings'].update(child['settings'])
    return listeners


def filter_scopes(tree: dict, address: str | None, protocol: str) -> list:
    """The (rule, settings) scopes that apply to a connection on `address` for `protocol`,
    least specific first: global, protocol, local (shortest prefix first), local + protocol."""
    scopes = [('global', tree['settings'], None)]
    local_scopes, protocol_scopes, nested = [], [], []
    for node in tree['children']:
        if node['type'] == 'protocol' and protocol in (node['name'] or '').split():
            protocol_scopes.append((f'protocol {node["name"]}', node['settings'], node))
        elif node['type'] == 'local':
            bits = local_match_bits(node['name'], address)
            if bits is None:
                continue
            local_scopes.append((bits, f'local {node["name"]}', node['settings'], node))
            for child in node['children']:
                if child['type'] == 'protocol' and protocol in (child['name'] or '').split():
                    nested.append((bits, f'local {node["name"]} protocol {child["name"]}',
                                   child['settings'], child))
    scopes.extend(protocol_scopes)
    scopes.extend((rule, settings, node) for _bits, rule, settings, node in sorted(local_scopes, key=lambda s: s[0]))
    scopes.extend((rule, settings, node) for _bits, rule, settings, node in sorted(nested, key=lambda s: s[0]))
    return scopes


def local_match_bits(name: str | None, address: str | None) -> int | None:
    """How specifically a `local` filter matches an address (prefix length), None if not."""
    if not name or address is None:
        return None
    target = _address(address)
    if target is None:
        return None
    for network in _local_networks(name):
        if target.version == network.version and target in network:
            return network.prefixlen
    return None


@functools.lru_cache(maxsize=65536)
def _address(text: str):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@functools.lru_cache(maxsize=65536)
def _local_networks(name: str) -> tuple:
    """The networks a `local` filter names, parsed once (a configuration may have thousands of
    blocks, each matched against every listener)."""
    networks = []
    for item in re.split(r'[\s,]+', name):
        try:
            networks.append(ipaddress.ip_network(item.strip('[]'), strict=False))
        except ValueError:
            continue
    return tuple(networks)


def effective(scopes: list, key: str) -> tuple:
    """(value, where, rule) of one key over the scopes; the most specific scope wins."""
    value, where, rule = DEFAULT_SETTINGS.get(key), None, 'default'
    for scope_rule, settings, _node in scopes:
        if key in settings:
            value, where, rule = settings[key]['value'], settings[key]['where'], scope_rule
    return value, where, rule


def file_path(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if value.startswith('<'):
        value = value[1:].strip()
    return value or None


def binding_for(tree: dict, scopes: list, hidden_from: dict | None = None) -> dict:
    """Certificate binding from ssl_cert/ssl_key (2.3) or ssl_server_cert_file (2.4)."""
    for cert_key, key_key in CERT_KEYS:
        certificate, cert_where, rule = effective(scopes, cert_key)
        if certificate:
            key, key_where, _key_rule = effective(scopes, key_key)
            if key == HIDDEN_MARK and hidden_from is not None:
                key = hidden_from.get(key_key)
            scope = '' if rule == 'global' else f'{rule} '
            source = f'{cert_where or "doveconf -n"} {scope}{cert_key}'
            hidden = key == HIDDEN_MARK
            if hidden:
                # doveconf's mask ("# hidden, use -P to show it") is no file name.
                key = None
            binding = new_binding(certificate=file_path(certificate), key=file_path(key), source=source)
            if key is None:
                binding['resolved'] = False
                binding['notes'].append(f'{key_key} hidden by doveconf and not found in the files' if hidden
                                        else f'no {key_key} is set')
            for alt_cert_key, alt_key_key in ALT_CERT_KEYS:
                alternate, _alt_where, _alt_rule = effective(scopes, alt_cert_key)
                if alternate:
                    alternate_key = effective(scopes, alt_key_key)[0]
                    if alternate_key == HIDDEN_MARK and hidden_from is not None:
                        alternate_key = hidden_from.get(alt_key_key)
                    binding['alternates'].append({'certificate': file_path(alternate),
                                                  'key': None if alternate_key == HIDDEN_MARK else file_path(alternate_key),
                                                  'chain': []})
            return binding
    return new_binding(source='default (none configured)')


def sni_entries(tree: dict, scopes: list, hidden_keys: dict | None = None) -> list:
    """local_name blocks that apply to the listener's scopes (top level, or inside its local)."""
    holders = [tree] + [node for _rule, _settings, node in scopes if node is not None and node['type'] == 'local']
    entries = []
    for holder in holders:
        for node in holder['children']:
            if node['type'] != 'local_name':
                continue
            sni_scopes = scopes + [(f'local_name {node["name"]}', node['settings'], node)]
            binding = binding_for(tree, sni_scopes, hidden_keys)
            for name in (node['name'] or '').split():
                entries.append({'name': _unquote(name), 'certificate': binding['certificate'],
                                'key': binding['key'], 'chain': [], 'source': binding['source']})
    return entries


# -- the adapter -----------------------------------------------------------------------------

class DovecotAdapter(MtaAdapter):
    name = 'dovecot'

    # -- the fix a finding shows (MtaAdapter.fix_text) -------------------------------------------

    def fix_text(self, rule: str, listener: dict, detail: dict) -> str | None:
        """Per address, in a `local` block (it covers every port of the address)."""
        names = fix_names(listener)
        address = names['address']
        if rule == 'starttls-advertised-without-certificate':
            return (f"Give this address its own certificate: `local {address} {{ ssl_cert = <{names['cert']}` and "
                    f"`ssl_key = <{names['key']} }}` (Dovecot 2.4: ssl_server_cert_file, ssl_server_key_file), or stop "
                    f"offering TLS there: `local {address} {{ ssl = no }}` (a local block covers every port "
                    f"of the address; nest `protocol imap {{ }}` to narrow it). Then {self.reload_text(listener)}.")
        if rule == 'implicit-tls-without-certificate':
            return (f"Set `ssl_cert`/`ssl_key` for this address (`local {address} {{ ... }}`) or disable the "
                    f"inet_listener with `port = 0`. Then {self.reload_text(listener)}.")
        if rule == 'starttls-not-offered':
            return (f"Set `ssl = yes` for this listener (globally or in `local {address} {{ }}`). "
                    f"Then {self.reload_text(listener)}.")
        if rule == 'legacy-tls-protocol':
            return f"`ssl_min_protocol = TLSv1.2`, then {self.reload_text(listener)}."
        return None

    def reload_text(self, listener: dict) -> str:
        return '`doveconf -n`, then `doveadm reload`'

    def detect(self, ctx) -> list:
        masters = master_processes(ctx, 'dovecot')
        paths, origins = [], {}

        def add(path: str, origin: str) -> None:
            if path not in paths:
                paths.append(path)
                origins[path] = origin

        for path in (ctx.options.get('config_paths') or {}).get('dovecot') or []:
            add(path if path.endswith('.conf') else os.path.join(path, 'dovecot.conf'), 'option config_paths')
        for process in masters:
            add(process_config(process), f'running master pid {process["pid"]}')
        if ctx.exists(DEFAULT_CONFIG):
            add(DEFAULT_CONFIG, 'default path')
        instances = []
        used = set()
        for path in paths:
            tree = parse_config(ctx, path)
            instance_name = None
            if tree is not None:
                instance_name = tree['settings'].get('instance_name', {}).get('value')
            name = instance_name or ('dovecot' if path == DEFAULT_CONFIG else path)
            if name in used:
                name = path
            used.add(name)
            running = [process for process in masters if process_config(process) == path]
            instance = new_instance('dovecot', name, config_files=[path], config_source=origins[path],
                                    reading_user='root',
                                    reading_user_source='the dovecot master reads certificates as root at start')
            instance['config_path'] = path
            instance['running'] = bool(running)
            if running:
                instance['pid'] = running[0]['pid']
                instance['command_line'] = running[0].get('argv')
            ctx.memo.setdefault('dovecot', {})[path] = {'files': tree}
            if tree is not None and ctx.tools_enabled():
                self._tool_tree(ctx, instance, path)
            instances.append(instance)
        return instances

    def _tool_tree(self, ctx, instance: dict, path: str) -> None:
        doveconf = ctx.tool('doveconf')
        if not doveconf:
            return
        # Pigeonhole's settings plugin has every doveconf run `managesieve -k`, which runs doveconf and
        # managesieve again, only to fill in managesieve_*_capability (nothing read here); it skips that
        # when DUMP_CAPABILITY is set: one process instead of four, about 15 ms less CPU per run.
        result = ctx.run([doveconf, '-c', ctx.resolve(path), '-n'], mta='dovecot', env={'DUMP_CAPABILITY': '1'})
        if result['error'] is not None:
            return
        first = (result['stdout'].splitlines() or [''])[0]
        match = re.match(r'^#\s*([0-9][^ ]*)', first)
        if match:
            instance['version'] = match.group(1)
        tree = parse_config(ctx, path, text=result['stdout'], label='doveconf -n')
        ctx.memo['dovecot'][path]['tool'] = tree
        instance['tools_used'].append('doveconf -n')

    def listeners(self, ctx, instance: dict) -> list:
        memo = ctx.memo.get('dovecot', {}).get(instance['config_path'], {})
        files_tree, tool_tree = memo.get('files'), memo.get('tool')
        if files_tree is None:
            return []
        from_files = build_listeners(ctx, files_tree, instance, None)
        if tool_tree is None:
            return from_files
        fill_hidden(tool_tree, files_tree)
        from_tool = build_listeners(ctx, tool_tree, instance, None)
        return merge_provenance(ctx, from_tool, from_files, instance)

    # -- remediation (mta_tls_config): a `local ADDRESS { }` block, validated by doveconf ------
    def plan_tls_change(self, ctx, instance: dict, listener: dict, desired: dict, others: list) -> dict:
        """Settings in the `local` block of the listener's address (dovecot_edit)."""
        # Imported here: the host inspection never compiles the edit code (see _mta/__init__.py).
        # pylint: disable-next=import-outside-toplevel
        from ansible_collections.mailsec.starttls.plugins.module_utils._mta.dovecot_edit import plan_tls_change
        return plan_tls_change(self, ctx, instance, listener, desired, others)

    def reload_command(self, ctx, instance: dict) -> list:
        """`dovecot -c FILE reload` (SIGHUP to that instance's master, found through its base_dir)."""
        return [ctx.tool('dovecot') or 'dovecot', '-c', instance['config_path'], 'reload']


def fill_hidden(tool_node: dict, file_node: dict | None) -> None:
    """Replace values that doveconf -n masks with the same setting from the files, same section."""
    for key, entry in tool_node['settings'].items():
        if entry['value'] == HIDDEN_MARK and file_node is not None and key in file_node['settings']:
            entry['value'] = file_node['settings'][key]['value']
    for child in tool_node['children']:
        twin = None
        if file_node is not None:
            twin = next((candidate for candidate in reversed(file_node['children'])
                         if candidate['type'] == child['type'] and candidate['name'] == child['name']), None)
        fill_hidden(child, twin)


def process_config(process: dict) -> str:
    argv = process.get('argv') or []
    for index, argument in enumerate(argv):
        if argument == '-c' and index + 1 < len(argv):
            return argv[index + 1]
    return DEFAULT_CONFIG


def listen_list(value: str | None) -> list:
    addresses = []
    for item in re.split(r'[\s,]+', value or ''):
        if not item:
            continue
        if item == '*':
            addresses.append('0.0.0.0')
        elif item in ('::', '[::]'):
            addresses.append('::')
        else:
            address = normalise_address(item)
            addresses.append(address if address else item)
    return addresses


def build_listeners(ctx, tree: dict, instance: dict, hidden_keys: dict | None) -> list:
    protocols_value, protocols_where = top_setting(tree, 'protocols')
    protocols = []
    for protocol in (protocols_value or '').split():
        if protocol not in protocols:
            protocols.append(protocol)
    listen_value, listen_where = top_setting(tree, 'listen')
    records = []
    for protocol in protocols:
        if protocol not in PROTOCOL_SERVICES:
            continue
        service_name, family = PROTOCOL_SERVICES[protocol]
        for listener_name, listener in sorted(service_listeners(tree, service_name).items()):
            settings = listener['settings']
            port_text = (settings.get('port') or {}).get('value', '0')
            try:
                port = int(port_text)
            except ValueError:
                ctx.warn(f'inet_listener {listener_name}: port {port_text!r} is not a number',
                         where=(settings.get('port') or {}).get('where'), mta='dovecot')
                continue
            if port == 0:
                continue
            implicit = (settings.get('ssl') or {}).get('value', 'no').lower() == 'yes'
            address_entry = settings.get('address')
            if address_entry and address_entry['value']:
                addresses, address_where = listen_list(address_entry['value']), address_entry['where']
            else:
                addresses, address_where = listen_list(listen_value), listen_where or 'default listen = *, ::'
            for address in bounded_items(ctx, addresses, 'listen', address_where, 'dovecot'):
                if enough_listeners(ctx, records, 'dovecot', instance['instance']):
                    return records
                records.extend(listener_records(ctx, tree, instance, service_name, listener_name, listener,
                                                family, port, implicit, address, address_where,
                                                protocols_where, hidden_keys))
    return records


def listener_records(ctx, tree, instance, service_name, listener_name, listener, family, port, implicit,
                     address, address_where, protocols_where, hidden_keys) -> list:
    protocol = infer_protocol(port, implicit=implicit, hints=[listener_name],
                              family={'submission': 'smtp'}.get(family, family))
    if family == 'submission' and not implicit:
        protocol = 'submission'
    service = f'{service_name}/{listener_name}'
    record = new_listener('dovecot', instance['instance'], service, address, port, protocol,
                          defined_at=listener['where'] or f'built-in default of service {service_name}',
                          reader_user='root')
    if normalise_address(address) is None:
        record['notes'].append(f'listen address {address!r} is a host name; not resolved here')
    if (listener['settings'].get('haproxy') or {}).get('value') == 'yes':
        record['notes'].append('haproxy = yes: clients must send a PROXY protocol header first')
    records = [record]
    describe(ctx, tree, record, dialog_protocol_name(family), implicit, hidden_keys, address_where,
             protocols_where)
    if record['wildcard']:
        for node in tree['children']:
            if node['type'] != 'local':
                continue
            if enough_listeners(ctx, records, 'dovecot', instance['instance'], MAX_LIST_ITEMS):
                break
            for item in re.split(r'[\s,]+', node['name'] or ''):
                specific = normalise_address(item)
                if specific is None or (':' in specific) != (':' in address):
                    continue
                if is_local_address(ctx, specific) is False:
                    continue
                derived = new_listener('dovecot', instance['instance'], service, specific, port, protocol,
                                       defined_at=record['defined_at'], reader_user='root',
                                       derived_from=record['id'])
                derived['notes'].append(f'served by the wildcard listener {record["id"]}; '
                                        f'{node["where"]} local {node["name"]} applies here')
                describe(ctx, tree, derived, dialog_protocol_name(family), implicit, hidden_keys,
                         address_where, protocols_where)
                records.append(derived)
    return records


def dialog_protocol_name(family: str) -> str:
    # Dovecot's protocol filter names: imap, pop3, submission, sieve, lmtp.
    return family


def describe(ctx, tree, record, protocol_name, implicit, hidden_keys, address_where, protocols_where) -> None:
    scope_address = record['address'] if not record['wildcard'] else record['probe_address']
    scopes = filter_scopes(tree, scope_address, protocol_name)
    if protocol_name == 'lmtp':
        # The lmtp service is no login process: local {} blocks do not reach it, it serves the
        # global certificate (observed with Dovecot 2.3.19 in tests/lab).
        ignored = [rule for rule, _settings, _node in scopes if rule.startswith('local')]
        scopes = [scope for scope in scopes if not scope[0].startswith('local')]
        if ignored:
            record['notes'].append('LMTP ignores ' + ', '.join(ignored) + ': global settings apply')
    ssl_value, ssl_where, ssl_rule = effective(scopes, 'ssl')
    ssl_value = (ssl_value or 'yes').lower()
    ssl_origin = 'default' if ssl_rule == 'default' else (
        ssl_where if ssl_rule == 'global' else f'{ssl_where} {ssl_rule}')
    if implicit:
        record['tls_mode'] = 'implicit'
        record['offers_starttls'] = False
        record['offers_starttls_reason'] = f'{REASON_IMPLICIT} (inet_listener ssl = yes)'
        if ssl_value == 'no':
            record['notes'].append(f'ssl = no ({ssl_origin}) but this listener has ssl = yes: '
                                   'Dovecot cannot serve it')
            record['tls_mode'] = 'none'
    elif ssl_value == 'no':
        record['tls_mode'] = 'none'
        record['offers_starttls'] = False
        record['offers_starttls_reason'] = f'ssl = no ({ssl_origin})'
        global_ssl = (effective(scopes[:1], 'ssl')[0] or 'yes').lower()
        if protocol_name == 'sieve' and ssl_rule.startswith('local') and global_ssl != 'no':
            # managesieve-login builds its capability list from the global SSL state (observed
            # Dovecot 2.3.19 / Pigeonhole 0.5.19: advertises, then "NO TLS support isn't enabled").
            record['offers_starttls'] = True
            record['offers_starttls_reason'] = (f'ssl = no ({ssl_origin}) only in a local block: ManageSieve still '
                                                'advertises STARTTLS and then refuses it')
    elif ssl_value in ('yes', 'required'):
        record['offers_starttls'] = True
        record['offers_starttls_reason'] = f'ssl = {ssl_value} ({ssl_origin})'
    else:
        record['offers_starttls'] = None
        record['offers_starttls_reason'] = f'unknown ssl value {ssl_value!r} ({ssl_origin})'
        ctx.warn(f'unknown ssl value {ssl_value!r}', where=ssl_where, mta='dovecot', instance=record['instance'])
    record['binding'] = binding_for(tree, scopes, hidden_keys)
    record['binding']['sni'] = sni_entries(tree, scopes, hidden_keys)
    if protocol_name == 'lmtp' and record['offers_starttls'] and not record['binding']['certificate']:
        # Without a global certificate the lmtp process disables SSL: no STARTTLS, 502 if asked.
        record['tls_mode'] = 'none'
        record['offers_starttls'] = False
        record['offers_starttls_reason'] = ('no global ssl_cert: Dovecot LMTP disables SSL and does not offer '
                                            'STARTTLS')
    if record['wildcard'] and any(rule.startswith('local') for rule, _s, _n in scopes[1:]):
        record['notes'].append(f'binding evaluated for {scope_address}')
    for key in EVIDENCE_KEYS:
        value, where, rule = effective(scopes, key)
        if where is None and rule == 'default':
            continue
        if key.endswith('_key') and value == HIDDEN_MARK and hidden_keys:
            value = hidden_keys.get(key, value)
        record['tls_settings'][key] = setting(value, where if rule == 'global' else f'{where or "doveconf -n"} {rule}')
    record['tls_settings']['listen_address'] = setting(record['address'], address_where)
    if protocols_where:
        record['tls_settings']['protocols'] = setting(top_setting(tree, 'protocols')[0], protocols_where)


def merge_provenance(ctx, from_tool: list, from_files: list, instance: dict) -> list:
    """Listeners computed from doveconf's view, with file:line taken from the file parse."""
    by_id = {record['id']: record for record in from_files}
    for record in from_tool:
        twin = by_id.pop(record['id'], None)
        if twin is None:
            record['notes'].append('found by doveconf -n only')
            continue
        record['defined_at'] = twin['defined_at']
        for key, entry in record['tls_settings'].items():
            twin_entry = twin['tls_settings'].get(key)
            if twin_entry and (entry['where'] or '').startswith('doveconf'):
                entry['where'] = twin_entry['where']
        binding, twin_binding = record['binding'], twin['binding']
        if binding['source'].startswith('doveconf') or 'doveconf -n' in binding['source']:
            if (binding['certificate'], binding['key']) == (twin_binding['certificate'], twin_binding['key']):
                binding['source'] = twin_binding['source']
            else:
                ctx.warn(f'{record["id"]}: doveconf says certificate {binding["certificate"]}, the files say '
                         f'{twin_binding["certificate"]}; using doveconf', mta='dovecot',
                         instance=instance['instance'])
        for entry, twin_entry in zip(binding['sni'], twin_binding['sni']):
            if entry['name'] == twin_entry['name'] and 'doveconf' in entry['source']:
                entry['source'] = twin_entry['source']
        if twin['offers_starttls'] != record['offers_starttls']:
            ctx.warn(f'{record["id"]}: doveconf and the files disagree on STARTTLS; using doveconf',
                     mta='dovecot', instance=instance['instance'])
        else:
            record['offers_starttls_reason'] = twin['offers_starttls_reason']
            if len(twin['notes']) == len(record['notes']):
                record['notes'] = twin['notes']
    for leftover in by_id.values():
        ctx.warn(f'{leftover["id"]} is in the files but not in doveconf -n; not reported', mta='dovecot',
                 instance=instance['instance'])
    return from_tool
