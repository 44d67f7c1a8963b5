# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""OpenSMTPD: `listen on` lines, their `tls` / `tls-require` / `smtps` keywords and the `pki`
that applies (explicit, or the one named after the listener's hostname).

`smtpd -n` only validates, it prints no configuration, so smtpd.conf is parsed here (macros,
`include`, continuation lines, comments).

Both grammars of the last eight years are read: 5.x/6.0 (`pki NAME certificate FILE`, `secure`,
`mask-source`, `accept from ... deliver to`, Debian stretch and buster ship 6.0) and 6.4+
(`pki NAME cert FILE`, `action`/`match`, `mask-src`, `filter NAME` or `filter { a, b }`).
"""

from __future__ import annotations

import os
import re
import shlex
import socket

from ansible_collections.mailsec.starttls.plugins.module_utils._files import excerpt
from ansible_collections.mailsec.starttls.plugins.module_utils._mta.sniff import not_this_mta
from ansible_collections.mailsec.starttls.plugins.module_utils._mta.base import (
    _read_proc,
    MAX_LIST_ITEMS,
    REASON_IMPLICIT,
    MtaAdapter,
    backslash_lines,
    enough_listeners,
    fix_names,
    host_addresses,
    infer_protocol,
    mark_uncertain,
    master_processes,
    new_binding,
    new_instance,
    new_listener,
    normalise_address,
    resolve_port,
    setting,
    strip_hash_comment,
)
from ansible_collections.mailsec.starttls.plugins.module_utils._transaction import (
    EditError,
    read_file,
    refuse_unsafe,
    run_tool,
)

DEFAULT_CONFIGS = ('/etc/smtpd.conf', '/etc/mail/smtpd.conf', '/usr/local/etc/smtpd.conf')
MAX_INCLUDE_DEPTH = 16
# Keywords of `listen on` that take one argument (so the argument is not read as a keyword).
# Top-level statements of smtpd.conf in 5.x/6.0 and 6.4+ (parsed or deliberately skipped).
STATEMENTS = ('include', 'pki', 'listen', 'table', 'action', 'match', 'ca', 'filter', 'proc', 'proc-exec', 'queue',
              'bounce', 'bounce-warn', 'smtp', 'srs', 'mta', 'limit', 'expire', 'accept', 'reject', 'mda',
              'max-message-size', 'maxmessagesize', 'hostname', 'sender', 'relay', 'deliver', 'admd')
KEY_MODE_NOTE = 'OpenSMTPD refuses to load a key file whose mode is looser than 0740 or not owned by root'


def parse_config(ctx, path: str) -> dict:
    # `order` counts statements across includes: smtpd resolves a listen line's pki when it reads
    # that line, so a pki declared later is "not found".
    config = {'macros': {}, 'pki': {}, 'listen': [], 'files': [], 'readable': False, 'known': 0, 'unknown': 0,
              'first_unknown': None, 'order': 0}
    limits = ctx.parse_limits('opensmtpd')
    limits.includes.enter(path)
    _parse_file(ctx, path, config, 0, limits)
    if config['readable'] and config['known'] == 0 and config['unknown']:
        text = ctx.read_text(path, mta='opensmtpd') or ''
        not_this_mta(ctx, path, text, 'opensmtpd', 'an OpenSMTPD smtpd.conf', config['first_unknown'])
    return config


def _parse_file(ctx, path: str, config: dict, depth: int, limits=None) -> None:
    if limits is None:
        limits = ctx.parse_limits('opensmtpd')
    text = ctx.read_text(path, mta='opensmtpd', required=depth == 0)
    if text is None:
        return
    limits.includes.charge(text)
    config['readable'] = True
    config['files'].append(path)
    _parse_lines(ctx, path, text, config, depth, limits)


def _parse_lines(ctx, path: str, text: str, config: dict, depth: int, limits) -> None:
    in_pem = False
    for number, raw in backslash_lines(text):
        where = f'{path}:{number}'
        line = strip_hash_comment(raw).strip()
        if not line:
            continue
        # A PEM block (a key given as the configuration) is never quoted in a warning.
        if line.startswith('-----BEGIN ') or in_pem:
            if not in_pem:
                config['unknown'] += 1
                config['first_unknown'] = config['first_unknown'] or f'a PEM block at {where}'
                ctx.warn('a PEM block (certificate or key) in smtpd.conf; its content is not shown', where=where,
                         mta='opensmtpd')
            in_pem = not line.startswith('-----END ')
            continue
        macro = re.match(r'^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$', line)
        if macro:
            expanded = _expand_bounded(macro.group(2).strip(), config['macros'], limits.expansion, where)
            config['macros'][macro.group(1)] = _unquote(expanded)
            continue
        try:
            words = shlex.split(_expand_bounded(line, config['macros'], limits.expansion, where), posix=True)
        except ValueError as exc:
            ctx.warn(f'cannot split smtpd.conf line: {exc}', where=where, mta='opensmtpd')
            config['unknown'] += 1
            continue
        if not words:
            continue
        keyword = words[0]
        config['order'] += 1
        if keyword in STATEMENTS:
            config['known'] += 1
        if keyword == 'include' and len(words) > 1:
            if depth >= MAX_INCLUDE_DEPTH:
                ctx.warn('include nested too deep', where=where, mta='opensmtpd')
                continue
            target = words[1] if words[1].startswith('/') else os.path.join(os.path.dirname(path), words[1])
            if '\x00' in target:
                ctx.warn('include of a path with a NUL byte: not a file name', where=where, mta='opensmtpd')
                continue
            if not ctx.exists(target):
                ctx.warn(f'include {target}: no such file (smtpd would refuse the configuration)', where=where,
                         mta='opensmtpd')
            if not limits.includes.enter(target, where):
                continue
            try:
                _parse_file(ctx, target, config, depth + 1, limits)
            finally:
                limits.includes.leave(target)
        elif keyword == 'pki' and len(words) >= 3:
            if words[1] not in config['pki'] and len(config['pki']) >= MAX_LIST_ITEMS:
                if not config.get('pki_overflow'):
                    config['pki_overflow'] = True
                    ctx.warn(f'more than {MAX_LIST_ITEMS} pki names: this one and later ones are ignored', where=where,
                             mta='opensmtpd')
                continue
            entry = config['pki'].setdefault(words[1], {'cert': None, 'key': None, 'where': where,
                                                        'order': config['order']})
            # One line may give several options (`pki x cert FILE key FILE`). 6.4+ says `cert`, 5.x/6.0
            # said `certificate`; `ca`, `dhe`/`dhparams` take a value but are not the pair.
            index = 2
            while index < len(words):
                option = words[index]
                kind = {'cert': 'cert', 'certificate': 'cert', 'key': 'key'}.get(option)
                if kind and index + 1 < len(words):
                    entry[kind] = words[index + 1]
                    entry[f'{kind}_where'] = where
                elif option not in ('ca', 'dhe', 'dhparams', 'dh-params') or index + 1 >= len(words):
                    ctx.warn(f'unknown pki option {excerpt(option)}', where=where, mta='opensmtpd')
                    break
                index += 2
        elif keyword == 'listen' and len(words) >= 3 and words[1] == 'on':
            config['listen'].append({'words': words[2:], 'where': where, 'order': config['order']})
        elif keyword in STATEMENTS:
            continue
        else:
            config['unknown'] += 1
            if config['first_unknown'] is None:
                config['first_unknown'] = f'{excerpt(keyword)} at {where}'
            ctx.warn(f'unknown smtpd.conf statement {excerpt(keyword)}', where=where, mta='opensmtpd')


MACRO_REFERENCE = re.compile(r'\$([A-Za-z_][A-Za-z0-9_]*)')


def _expand(text: str, macros: dict) -> str:
    return MACRO_REFERENCE.sub(lambda match: macros.get(match.group(1), match.group(0)), text)


def _expand_bounded(text: str, macros: dict, budget, where: str) -> str:
    """`_expand` within the expansion budget: the size is known before the text is built (each
    macro defined as twice the previous would double it on every line); over it, left as it is."""
    if '$' not in text:
        return text
    size = len(text) + sum(len(macros.get(match.group(1), match.group(0))) - len(match.group(0))
                           for match in MACRO_REFERENCE.finditer(text))
    if not budget.allow(size, where, 'macro expansion of this line'):
        return text
    return _expand(text, macros)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def parse_listen(words: list) -> dict:
    """The options of one `listen on` line (5.x/6.0 and 6.4+ grammars)."""
    options = {'interface': words[0], 'family': None, 'port': None, 'mode': 'none', 'pki': [], 'hostname': None,
               'proxy': False, 'auth': False, 'unknown': []}
    index = 1
    while index < len(words):
        word = words[index]
        argument = words[index + 1] if index + 1 < len(words) else None
        if word == 'family' and argument:
            options['family'] = argument
            index += 2
        elif word in ('inet4', 'inet6'):
            options['family'] = word
            index += 1
        elif word == 'port' and argument:
            options['port'] = argument
            index += 2
        elif word == 'pki' and argument:
            options['pki'].append(argument)
            index += 2
        elif word == 'hostname' and argument:
            options['hostname'] = argument
            index += 2
        elif word in ('tls', 'tls-require', 'smtps', 'secure'):
            # 5.x/6.0 `secure`: STARTTLS on 25 and SMTPS on 465 when no port is given.
            options['mode'] = word
            index += 1
            if index < len(words) and words[index] == 'verify':
                index += 1
        elif word == 'proxy-v2':
            options['proxy'] = True
            index += 1
        elif word in ('ca', 'hostnames', 'tag', 'senders', 'filter', 'ciphers', 'protocols') and argument:
            index += 1
            if argument.startswith('{'):
                # An inline list or table (`filter { a, b }`, `hostnames { 192.0.2.1 = mx.example }`):
                # its words run to the closing brace.
                while index < len(words) and not words[index].endswith('}'):
                    index += 1
            index += 1
            if word == 'senders' and index < len(words) and words[index] == 'masquerade':
                index += 1
        elif word in ('auth', 'auth-optional'):
            options['auth'] = True
            index += 1
            if index < len(words) and words[index].startswith('<'):
                index += 1
        elif word in ('mask-src', 'mask-source', 'no-dsn', 'received-auth', 'smtputf8'):
            index += 1
        else:
            options['unknown'].append(word)
            index += 1
    return options


class OpenSmtpdAdapter(MtaAdapter):
    name = 'opensmtpd'

    # -- the fix a finding shows (MtaAdapter.fix_text) -------------------------------------------

    def fix_text(self, rule: str, listener: dict, detail: dict) -> str | None:
        """A pki attached to the `listen on` line of this address and port."""
        names = fix_names(listener)
        listen = f"listen on {names['address']} port {names['port']}"
        if rule == 'starttls-advertised-without-certificate':
            text = (f"Declare a pki and attach it to this listener: `pki mail cert \"{names['cert']}\"`, "
                    f"`pki mail key \"{names['key']}\"`, `{listen} tls pki mail`; or "
                    f"drop `tls` from that `listen on` line. Then {self.reload_text(listener)}.")
            if detail.get('store_usable'):
                text += (' The configured pki is usable, yet the handshake fails: OpenSMTPD 6.8 portable with '
                         'OpenSSL 3 aborts with `EVP lib` (upstream issues #1171, #1239); upgrade OpenSMTPD, or '
                         'drop `tls` from this listener until it is fixed.')
            return text
        if rule == 'implicit-tls-without-certificate':
            return (f"Attach a pki to the `{listen} smtps` line (`pki NAME` with "
                    f"cert and key), or remove the line. Then {self.reload_text(listener)}.")
        if rule == 'starttls-not-offered':
            return f"Add `tls pki NAME` to the `{listen}` line. Then {self.reload_text(listener)}."
        if rule == 'legacy-tls-protocol':
            return f"Add `protocols \"tlsv1.2,tlsv1.3\"` to the listen line, then {self.reload_text(listener)}."
        return None

    def reload_text(self, listener: dict) -> str:
        return '`smtpd -n`, then restart smtpd'

    def detect(self, ctx) -> list:
        processes = master_processes(ctx, 'opensmtpd')
        paths, origins, owners = [], {}, {}

        def add(path: str, origin: str, process: dict | None = None) -> None:
            if path not in paths:
                paths.append(path)
                origins[path] = origin
            if process is not None:
                owners.setdefault(path, process)

        for path in (ctx.options.get('config_paths') or {}).get('opensmtpd') or []:
            add(path, 'option config_paths')
        for process in processes:
            argv = process.get('argv') or []
            path = next((argv[index + 1] for index, argument in enumerate(argv[:-1]) if argument == '-f'), None)
            add(path or next((item for item in DEFAULT_CONFIGS if ctx.exists(item)), DEFAULT_CONFIGS[0]),
                f'running smtpd pid {process["pid"]}', process)
        for path in DEFAULT_CONFIGS:
            if ctx.exists(path):
                add(path, 'default path')
                break
        instances = []
        for path in paths:
            instance_id = 'opensmtpd' if len(paths) == 1 else f'opensmtpd:{path}'
            instance = new_instance('opensmtpd', instance_id, config_files=[path], config_source=origins[path],
                                    reading_user='root',
                                    reading_user_source=f'the smtpd parent loads pki files as root; {KEY_MODE_NOTE}')
            instance['config_path'] = path
            process = owners.get(path)
            instance['running'] = process is not None
            if process is not None:
                instance['pid'] = process['pid']
                instance['command_line'] = process.get('argv')
            instances.append(instance)
        return instances

    def listeners(self, ctx, instance: dict) -> list:
        config = parse_config(ctx, instance['config_path'])
        instance['config_files'] = config['files'] or instance['config_files']
        records = []
        if config['readable'] and not config['listen']:
            instance['no_listener_reason'] = (f'no `listen on` line in {", ".join(config["files"][:3])}: '
                                              'OpenSMTPD then accepts mail only from the local socket')
        for listen in config['listen']:
            if enough_listeners(ctx, records, 'opensmtpd', instance['instance']):
                break
            options = parse_listen(listen['words'])
            if options['interface'] == 'socket':
                continue
            for word in options['unknown']:
                ctx.warn(f'unknown listen option {word[:40]!r}', where=listen['where'], mta='opensmtpd',
                         instance=instance['instance'])
            mode = options['mode']
            if mode == 'secure' and not options['port']:
                # 5.x/6.0: one line, two listeners (smtpd.conf(5) `secure`).
                endpoints = [(25, False, 'tls'), (465, True, 'smtps')]
            else:
                implicit = mode in ('smtps', 'secure')
                port = resolve_port(ctx, options['port']) if options['port'] else (465 if implicit else 25)
                if port is None:
                    ctx.warn(f'unknown port {options["port"]!r}', where=listen['where'], mta='opensmtpd',
                             instance=instance['instance'])
                    continue
                endpoints = [(port, implicit, 'smtps' if mode == 'secure' else mode)]
            addresses = interface_addresses(ctx, options['interface'], options['family'], listen['where'],
                                            instance['instance'])
            group_refused = None
            if options['interface'] in ('all', 'egress') and ctx.exists('/proc/net'):
                # Interface groups are OpenBSD's; on Linux smtpd looks the word up as a host name
                # (parse.y: interface(), is_if_in_group() without SIOCGIFGROUP, then host_dns()).
                group_refused = (f'listen on {options["interface"]}: Linux has no interface groups, so smtpd '
                                 f'takes it for a host name and refuses the configuration when it does not resolve '
                                 f'("invalid virtual ip or interface: {options["interface"]}")')
                ctx.warn(group_refused, where=listen['where'], mta='opensmtpd', instance=instance['instance'])
            undeclared = [name for name in options['pki'] if find_pki(config, name, listen['order']) is None]
            for name in undeclared:
                ctx.warn(f'pki {excerpt(name)} is not declared before this listen line: smtpd refuses the '
                         'configuration ("pki name not found")', where=listen['where'], mta='opensmtpd',
                         instance=instance['instance'])
            for port, implicit, effective_mode in endpoints:
                for address, unknown_reason in addresses:
                    record = self._listener(ctx, instance, config, listen, dict(options, mode=effective_mode),
                                            address, port, implicit)
                    if unknown_reason:
                        record['probe_address'] = None
                        mark_uncertain(record, 'address', listen['where'], unknown_reason)
                    if effective_mode == 'none' and (options['pki'] or options['auth']):
                        # Every OpenSMTPD since 5.4: "invalid listen option: pki (auth) requires tls/smtps".
                        what = 'pki' if options['pki'] else 'auth'
                        mark_uncertain(record, 'configuration', listen['where'],
                                       f'{what} without tls or smtps on a listen line: smtpd refuses this '
                                       'configuration ("invalid listen option")')
                    if group_refused:
                        mark_uncertain(record, 'configuration', listen['where'], group_refused)
                    for name in undeclared:
                        mark_uncertain(record, 'configuration', listen['where'],
                                       f'pki {excerpt(name, quoted=False)} is not declared before this listen line: '
                                       f'smtpd refuses the configuration ("pki name not found: '
                                       f'{excerpt(name, quoted=False)}")')
                    if options['unknown']:
                        mark_uncertain(record, 'configuration', listen['where'],
                                       'listen option ' + ', '.join(repr(word[:40]) for word in options['unknown'][:3])
                                       + ' not understood (smtpd refuses a line it cannot parse)')
                    records.append(record)
        return records

    def _listener(self, ctx, instance, config, listen, options, address, port, implicit) -> dict:
        protocol = infer_protocol(port, implicit=implicit)
        record = new_listener('opensmtpd', instance['instance'], f'listen on {options["interface"]}', address, port,
                              protocol, defined_at=listen['where'], reader_user='root')
        record['tls_settings']['listen'] = setting(' '.join(listen['words']), listen['where'])
        if options['proxy']:
            record['notes'].append('proxy-v2: clients must send a PROXY protocol v2 header first')
        mode = options['mode']
        if implicit:
            record['tls_mode'] = 'implicit'
            record['offers_starttls'] = False
            record['offers_starttls_reason'] = f'{REASON_IMPLICIT} ({mode} at {listen["where"]})'
        elif mode in ('tls', 'tls-require'):
            record['offers_starttls'] = True
            record['offers_starttls_reason'] = f'listen on ... {mode} ({listen["where"]})'
        else:
            record['tls_mode'] = 'none'
            record['offers_starttls'] = False
            record['offers_starttls_reason'] = f'no tls, tls-require or smtps on this listen line ({listen["where"]})'
        names = list(options['pki'])
        if names:
            first = names[0]
            record['binding'] = pki_binding(config, first, f'{listen["where"]} listen ... pki {first}')
            if len(names) > 1 or first:
                record['binding']['sni'] = [
                    dict(pki_binding(config, name, f'{config["pki"].get(name, {}).get("where")} pki {name}'),
                         name=name) for name in names]
                for entry in record['binding']['sni']:
                    for unused in ('alternates', 'sni', 'resolved', 'notes'):
                        entry.pop(unused, None)
            if mode == 'none':
                record['notes'].append(f'pki {first} is named on this listen line, but without tls, tls-require '
                                       'or smtps it serves no TLS: the certificate is held but not used')
        else:
            hostname = options['hostname'] or host_name(ctx)
            chosen_by = 'the listener hostname' if options['hostname'] else 'this host\'s name'
            if hostname in config['pki']:
                record['binding'] = pki_binding(config, hostname,
                                                f'{config["pki"][hostname]["where"]} pki {hostname} (default pki: '
                                                f'named after {chosen_by})')
                if mode != 'none':
                    record['notes'].append('no pki on the listen line: OpenSMTPD up to 7.2 uses the pki named after '
                                           'the hostname; 7.3 and later refuse tls or smtps without pki')
                if mode == 'none':
                    # What `tls` on this line would serve: the instance holds a certificate for this name.
                    record['notes'].append(f'pki {hostname} matches {chosen_by}, but this listen line has no tls, '
                                           'tls-require or smtps: the certificate is held but not used')
            elif mode != 'none':
                record['binding'] = new_binding(source=f'default (none configured): no pki on the listen line and '
                                                f'no pki named {hostname!r}')
            elif config['pki']:
                record['notes'].append('pki ' + ', '.join(sorted(config['pki'])) + ' declared, but this listener has '
                                       'no tls keyword: no certificate is used here')
        for name, entry in config['pki'].items():
            if entry.get('cert_where'):
                record['tls_settings'][f'pki {name} cert'] = setting(entry['cert'], entry['cert_where'])
            if entry.get('key_where'):
                record['tls_settings'][f'pki {name} key'] = setting(entry['key'], entry['key_where'])
        if record['binding'].get('key'):
            record['notes'].append(KEY_MODE_NOTE)
        return record

    # -- remediation (mta_tls_config): `tls pki NAME` on the listen line, validated by smtpd -n ---
    def plan_tls_change(self, ctx, instance: dict, listener: dict, desired: dict, others: list) -> dict:
        """The listener's `listen on` line gets `tls pki NAME` (or `smtps pki NAME`), or loses `tls`,
        `tls-require` and `pki`; a certificate is bound through a `pki` declaration. Only the main
        configuration file is edited. A line that covers several listeners (an interface, `all`, a
        name with several addresses) is changed as a whole and its other listeners are listed in
        `affected`: splitting it would pin the addresses the interface has today.

        Returns {'changes': {path: text}, 'validate', 'actions', 'affected', 'reload_command'}.
        """
        config_path = instance['config_path']
        real_path = ctx.resolve(config_path)
        smtpd = ctx.tool('smtpd')
        if not smtpd:
            raise EditError('smtpd is not found (binaries: {smtpd: PATH}): the candidate cannot be validated '
                            'with smtpd -n', stage='plan')
        text = read_file(real_path)
        config = parse_config(ctx, config_path)
        line_path, line_number = listener['defined_at'].rsplit(':', 1)
        if os.path.normpath(line_path) != os.path.normpath(config_path):
            raise EditError(f'the listen line of {listener["id"]} is in the included file {line_path}: change it '
                            'there by hand (only the main configuration file is edited)', stage='plan')
        edit = SmtpdConfEdit(text)
        line_index = int(line_number) - 1
        wanted = opensmtpd_line_state(listener, desired)
        actions = []
        pki_name = None
        if wanted.get('certificate'):
            pki_name, pki_actions = edit.bind_pki(config, config_path, wanted['certificate'], wanted['private_key'],
                                                  listener['defined_at'], line_index, listener['id'], ctx)
            actions += pki_actions
        elif wanted['mode'] in ('tls', 'tls-require') and listener.get('tls_mode') != 'implicit':
            # Offer with the pki that applies now (named on the line, or the hostname's default pki):
            # named explicitly, as OpenSMTPD 7.3 and later require.
            binding = listener.get('binding') or {}
            names = [entry.get('name') for entry in binding.get('sni') or [] if entry.get('name')]
            pki_name = names[0] if names else default_pki_name(binding.get('source') or '')
        actions += edit.set_listen(line_index, wanted['mode'], pki_name, config_path)
        affected = [other['id'] for other in others
                    if other['id'] != listener['id'] and other.get('defined_at') == listener['defined_at']]
        new_text = edit.text()
        reload_command = desired.get('reload_command') or self.reload_command(ctx, instance)
        return {
            'changes': {real_path: new_text} if new_text != text else {},
            'validate': lambda candidates: validate_smtpd(smtpd, candidates),
            'actions': actions,
            'affected': affected,
            'reload_command': reload_command,
        }

    def reload_command(self, ctx, instance: dict) -> list | None:
        """OpenSMTPD has no reload (`smtpctl` cannot make smtpd re-read smtpd.conf): a restart. The
        systemd unit the daemon runs in, else Debian's unit or init script for the default file."""
        unit = systemd_unit(ctx, instance.get('pid'))
        systemctl = ctx.which('systemctl')
        if unit and systemctl:
            return [systemctl, 'restart', unit]
        default = instance.get('config_path') in ('/etc/smtpd.conf', '/etc/mail/smtpd.conf')
        if default and systemctl and ctx.exists('/run/systemd/system'):
            return [systemctl, 'restart', 'opensmtpd.service']
        if default and ctx.exists('/etc/init.d/opensmtpd'):
            return ['/etc/init.d/opensmtpd', 'restart']
        return None


def find_pki(config: dict, name: str, before: int | None = None) -> dict | None:
    """The pki declaration smtpd finds for `name`: names are compared in lower case (smtpd lowers
    both), and with `before`, only a declaration that comes before that statement counts."""
    entry = config['pki'].get(name)
    if entry is None:
        entry = next((item for key, item in config['pki'].items() if key.lower() == name.lower()), None)
    if entry is not None and before is not None and entry['order'] > before:
        return None
    return entry


def pki_binding(config: dict, name: str, source: str) -> dict:
    entry = find_pki(config, name)
    if entry is None:
        binding = new_binding(source=f'unresolved: pki {name} is not defined ({source})', resolved=False)
        return binding
    return new_binding(certificate=entry.get('cert'), key=entry.get('key'), source=source)


def host_name(ctx) -> str:
    text = ctx.read_text('/etc/mailname') if ctx.root != '/' else None
    if text:
        return text.strip()
    if ctx.root != '/':
        return (ctx.read_text('/etc/hostname') or 'localhost').strip()
    return socket.gethostname()


def interface_addresses(ctx, interface: str, family: str | None, where: str, instance_name: str) -> list:
    """[(address, None) or ('unknown', reason)] of a `listen on` interface: OpenSMTPD binds each
    address, never a wildcard. An interface or name with no address here is kept as one listener
    with an unknown address: the daemon would fail to start, or the host differs from this view."""
    wanted = {'inet4': (4,), 'inet6': (6,)}.get(family or '', (4, 6))
    address = normalise_address(interface)
    if address is not None:
        return [(address, None)]
    addresses = host_addresses(ctx)
    reason = None
    if interface in ('lo', 'localhost', 'lo0'):
        found = ['127.0.0.1', '::1']
    elif interface in ('all', 'egress'):
        found = list(addresses['ipv4']) + list(addresses['ipv6'])
        if interface == 'egress':
            found = [item for item in found if not item.startswith('127.') and item != '::1']
        if not found:
            ctx.cannot_see('host addresses for "listen on all": /proc/net unreadable', mta='opensmtpd')
            reason = f'listen on {interface}: the host\'s addresses could not be read'
    else:
        found = interface_by_name(ctx, interface)
        if not found:
            reason = (f'listen on {interface[:60]}: no interface, group or /etc/hosts name of that name on this host '
                      '(smtpd would refuse to start here, or runs elsewhere)')
            ctx.warn(f'listen on {interface[:60]}: no addresses found for this interface or name; kept as a listener '
                     'with an unknown address', where=where, mta='opensmtpd', instance=instance_name)
    chosen = [(item, None) for item in found if (6 if ':' in item else 4) in wanted]
    if not chosen and reason is None and found:
        return []
    return chosen or [('unknown', reason or f'listen on {interface[:60]}: no address of the wanted family')]


def interface_by_name(ctx, interface: str) -> list:
    found = []
    for line in (_read_proc(ctx, 'net/if_inet6') or '').splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[5] == interface:
            raw = fields[0]
            found.append(normalise_address(':'.join(raw[i:i + 4] for i in range(0, 32, 4))))
    ip_tool = ctx.which('ip') if ctx.tools_enabled() else None
    if ip_tool:
        result = ctx.run([ip_tool, '-o', '-4', 'addr', 'show', 'dev', interface], mta='opensmtpd')
        for match in re.finditer(r'inet (\d+\.\d+\.\d+\.\d+)/', result['stdout']):
            found.insert(0, match.group(1))
    for line in (ctx.read_text('/etc/hosts') or '').splitlines():
        fields = line.split('#', 1)[0].split()
        if len(fields) >= 2 and interface in fields[1:]:
            address = normalise_address(fields[0])
            if address and address not in found:
                found.append(address)
    return [item for item in found if item]


# -- remediation helpers ----------------------------------------------------------------------

# A path written into smtpd.conf between double quotes: no quote, backslash or `$` (macro).
_UNSAFE_PATH = re.compile(r'["\\$]|^\s|\s$')
# One word of a raw smtpd.conf line: a quoted string or a run of other characters.
_RAW_WORD = re.compile(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'|[^\s"\']+')
PKI_PREFIX = 'mailsec-'


def opensmtpd_line_state(listener: dict, desired: dict) -> dict:
    """{'mode': 'tls'|'tls-require'|'smtps'|'none'|'disabled', 'certificate', 'private_key'} wanted on
    the listener's line; EditError for a request that does not fit the listener."""
    implicit = listener.get('tls_mode') == 'implicit'
    starttls = desired.get('starttls')
    if desired.get('chain'):
        raise EditError('OpenSMTPD reads the chain from the pki cert file itself: put the certificate and its '
                        'chain into one file and give that as certificate', stage='arguments')
    certificate = desired.get('certificate')
    key = desired.get('private_key')
    if certificate:
        if not key:
            raise EditError('private_key is required for OpenSMTPD (pki NAME key)', stage='arguments')
        for name, value in (('certificate', certificate), ('private_key', key)):
            if _UNSAFE_PATH.search(refuse_unsafe(name, value)):
                raise EditError(f'{name}: quotes, backslashes, "$" and surrounding spaces cannot be written into '
                                'a smtpd.conf pki declaration', stage='arguments')
    if desired.get('implicit_tls') == 'disabled':
        return {'mode': 'disabled'}
    if implicit:
        return {'mode': 'smtps', 'certificate': certificate, 'private_key': key}
    if starttls == 'withdrawn':
        return {'mode': 'none'}
    line = ((listener.get('tls_settings') or {}).get('listen') or {}).get('value') or ''
    mode = 'tls-require' if 'tls-require' in line.split() else 'tls'
    return {'mode': mode, 'certificate': certificate, 'private_key': key}


def default_pki_name(source: str) -> str | None:
    """The pki named in a binding source `... pki NAME (default pki: ...)`."""
    match = re.search(r' pki (\S+) \(default pki', source)
    return match.group(1) if match else None


def _unquote_word(word: str) -> str:
    try:
        parts = shlex.split(word, posix=True)
    except ValueError:
        return word
    return parts[0] if len(parts) == 1 else word


class SmtpdConfEdit:
    """Minimal edits of smtpd.conf text: words of one line replaced, removed or added with the
    rest of the line (spacing, comment) as it was; whole lines inserted or commented out."""

    def __init__(self, text: str):
        self.lines = text.splitlines(keepends=True)
        self.inserted: dict = {}

    def text(self) -> str:
        out = []
        for index, line in enumerate(self.lines):
            out.extend(self.inserted.get(index, []))
            out.append(line)
        out.extend(self.inserted.get(len(self.lines), []))
        return ''.join(out)

    def _words(self, index: int) -> tuple:
        """(code part of the line, [(start, end, word)]) of one physical line."""
        if index >= len(self.lines):
            raise EditError(f'line {index + 1} is beyond the end of the file: it changed since it was read',
                            stage='plan')
        raw = self.lines[index].rstrip('\r\n')
        if raw.rstrip().endswith('\\'):
            raise EditError(f'line {index + 1} continues on the next line (backslash): change it by hand',
                            stage='plan')
        code = strip_hash_comment(raw)
        return code, [(match.start(), match.end(), match.group(0)) for match in _RAW_WORD.finditer(code)]

    def _listen_words(self, index: int, where: str) -> list:
        code, words = self._words(index)
        plain = [_unquote_word(word) for _start, _end, word in words]
        if plain[:2] != ['listen', 'on'] or '$' in code:
            raise EditError(f'{where} is not a plain `listen on` line (macros or continuation): change it by '
                            'hand', stage='plan')
        return words

    def set_listen(self, index: int, mode: str, pki_name: str | None, path: str) -> list:
        where = f'{path}:{index + 1}'
        words = self._listen_words(index, where)
        plain = [_unquote_word(word) for _start, _end, word in words]
        if 'secure' in plain:
            raise EditError(f'{where} uses `secure` (OpenSMTPD 6.0 grammar: one line for ports 25 and 465): split '
                            'it into `tls` and `smtps` lines by hand', stage='plan')
        if mode == 'disabled':
            line = self.lines[index]
            self.lines[index] = '# mailsec.starttls disabled: ' + line
            return [f'{where}: comment the listen line out']
        edits = []   # (start, end, replacement), applied right to left
        actions = []
        modes = [position for position, word in enumerate(plain) if word in ('tls', 'tls-require', 'smtps')]
        pkis = [position for position, word in enumerate(plain) if word == 'pki' and position + 1 < len(plain)]
        last = len(words) - 1
        if mode == 'none':
            if any(word in ('auth', 'auth-optional') for word in plain):
                raise EditError(f'{where} has auth, which OpenSMTPD allows only with TLS (and which would send '
                                'passwords in clear): withdraw STARTTLS by hand, or bind a certificate instead',
                                stage='plan')
            drop = []
            for position in modes:
                drop.append(position)
                if position + 1 <= last and plain[position + 1] == 'verify':
                    drop.append(position + 1)
            for position, word in enumerate(plain):
                if word in ('pki', 'ca') and position + 1 <= last and position > 2:
                    drop += [position, position + 1]
            for position in sorted(set(drop)):
                start = words[position - 1][1] if position > 0 else words[position][0]
                edits.append((start, words[position][1], ''))
            if drop:
                actions.append(f'{where}: remove ' + ' '.join(plain[position] for position in sorted(set(drop))))
        else:
            if not modes:
                addition = ' ' + mode + (f' pki {pki_name}' if pki_name and not pkis else '')
                edits.append((words[last][1], words[last][1], addition))
                actions.append(f'{where}: add{addition}')
            if pki_name and pkis:
                position = pkis[0] + 1
                if plain[position] != pki_name:
                    edits.append((words[position][0], words[position][1], pki_name))
                    actions.append(f'{where}: pki {plain[position]} -> pki {pki_name}')
            elif pki_name and modes:
                anchor = modes[0] + (1 if modes[0] + 1 <= last and plain[modes[0] + 1] == 'verify' else 0)
                edits.append((words[anchor][1], words[anchor][1], f' pki {pki_name}'))
                actions.append(f'{where}: add pki {pki_name}')
        line = self.lines[index]
        for start, end, replacement in sorted(edits, reverse=True):
            line = line[:start] + replacement + line[end:]
        self.lines[index] = line
        return actions

    def bind_pki(self, config: dict, path: str, certificate: str, key: str, where: str, line_index: int,
                 listener_id: str, ctx) -> tuple:
        """(pki name, actions): a pki with this certificate and key that the listen line can name. An
        existing one with the same files is reused; the line's own pki is re-pointed when no other
        line uses it; else a new `mailsec-NAME` pki (a name no client sends as SNI) is declared."""
        for name, entry in config['pki'].items():
            if entry.get('cert') == certificate and entry.get('key') == key:
                return name, []
        users = pki_users(ctx, config)
        words = [_unquote_word(word) for _start, _end, word in self._listen_words(line_index, where)]
        own = words[words.index('pki') + 1] if 'pki' in words[2:-1] else None
        entry = config['pki'].get(own) if own else None
        if entry and users.get(own, set()) <= {where} and self._in_file(entry, path):
            return own, self._repoint(entry, own, certificate, key, path)
        stem = re.sub(r'[^A-Za-z0-9_.-]+', '-', os.path.splitext(os.path.basename(certificate))[0]).strip('-.')
        name = PKI_PREFIX + (stem or 'certificate')
        counter = 1
        while name in config['pki']:
            counter += 1
            name = f'{PKI_PREFIX}{stem or "certificate"}-{counter}'
        keyword = 'certificate' if any(self._pki_keyword(entry) == 'certificate'
                                       for entry in config['pki'].values()) else 'cert'
        block = [f'# mailsec.starttls: certificate of {listener_id}\n',
                 f'pki {name} {keyword} "{certificate}"\n', f'pki {name} key "{key}"\n']
        before = self._pki_anchor(config, path, line_index)
        self.inserted.setdefault(before, []).extend(block)
        return name, [f'{path}: declare pki {name} ({certificate}, {key})']

    @staticmethod
    def _in_file(entry: dict, path: str) -> bool:
        places = [entry.get('cert_where'), entry.get('key_where')]
        return all(place and os.path.normpath(place.rsplit(':', 1)[0]) == os.path.normpath(path)
                   for place in places)

    def _pki_keyword(self, entry: dict) -> str | None:
        place = entry.get('cert_where')
        if not place:
            return None
        try:
            _code, words = self._words(int(place.rsplit(':', 1)[1]) - 1)
        except (EditError, ValueError):
            return None
        return _unquote_word(words[2][2]) if len(words) > 2 else None

    def _repoint(self, entry: dict, name: str, certificate: str, key: str, path: str) -> list:
        actions = []
        for kind, value in (('cert', certificate), ('key', key)):
            index = int(entry[f'{kind}_where'].rsplit(':', 1)[1]) - 1
            _code, words = self._words(index)
            if len(words) < 4 or '$' in words[3][2]:
                raise EditError(f'{entry[f"{kind}_where"]} is not a plain pki declaration: change it by hand',
                                stage='plan')
            if _unquote_word(words[3][2]) == value:
                continue
            start, end, _word = words[3]
            line = self.lines[index]
            self.lines[index] = line[:start] + f'"{value}"' + line[end:]
            actions.append(f'{path}:{index + 1}: pki {name} {kind} "{value}" (was {_unquote_word(words[3][2])})')
        return actions

    def _pki_anchor(self, config: dict, path: str, line_index: int) -> int:
        """The line before which a new pki goes: after the last pki line above the listen line, else
        before the first listen line (smtpd resolves `pki NAME` on a listen line when it reads it)."""
        last = None
        for entry in config['pki'].values():
            for place in (entry.get('cert_where'), entry.get('key_where')):
                if place and os.path.normpath(place.rsplit(':', 1)[0]) == os.path.normpath(path):
                    index = int(place.rsplit(':', 1)[1]) - 1
                    if index < line_index and (last is None or index > last):
                        last = index
        if last is not None:
            return last + 1
        listens = [int(item['where'].rsplit(':', 1)[1]) - 1 for item in config['listen']
                   if os.path.normpath(item['where'].rsplit(':', 1)[0]) == os.path.normpath(path)]
        return min(listens + [line_index])


def pki_users(ctx, config: dict) -> dict:
    """pki name -> the `where` of every listen line that uses it (named, or the hostname's default)."""
    users: dict = {}
    for listen in config['listen']:
        options = parse_listen(listen['words'])
        names = list(options['pki'])
        if not names and options['mode'] != 'none':
            names = [options['hostname'] or host_name(ctx)]
        for name in names:
            users.setdefault(name, set()).add(listen['where'])
    return users


def systemd_unit(ctx, pid) -> str | None:
    """The systemd service unit a running smtpd belongs to (from /proc/PID/cgroup)."""
    if not pid:
        return None
    text = _read_proc(ctx, f'{int(pid)}/cgroup') or ''
    for line in text.splitlines():
        match = re.search(r'/([A-Za-z0-9@_.:-]+\.service)$', line.strip())
        if match and 'smtpd' in match.group(1):
            return match.group(1)
    return None


def validate_smtpd(smtpd: str, candidates: dict) -> list:
    """`smtpd -n -f CANDIDATE`: smtpd parses the candidate (beside the original, so includes
    resolve as they will) and loads every pki certificate and key it names, with its checks of
    the key file's owner and mode."""
    runs = []
    for original, candidate in candidates.items():
        run = run_tool([smtpd, '-n', '-f', candidate])
        runs.append({'argv': ['smtpd', '-n', '-f', '<candidate>'], 'rc': run['rc'],
                     'stderr': run['stderr'].replace(candidate, '<candidate>')[-2000:]})
        if run['error']:
            message = run['error'].replace(candidate, '<candidate>')
            current = run_tool([smtpd, '-n', '-f', original])
            if current['error']:
                message += ' (smtpd rejects the current configuration as well: ' + current['error'] + ')'
            raise EditError(f'OpenSMTPD rejects the candidate configuration (smtpd -n): {message}',
                            stage='validate', details={'validation': runs})
    return runs
