# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sendmail: DaemonPortOptions from sendmail.cf, `M=S` (no STARTTLS) and `M=s` (SMTPS), and
the one global ServerCertFile / ServerKeyFile pair.

sendmail.cf is the m4 output that the daemon reads; it is parsed directly (O options, D macros,
continuation lines). The running daemon rewrites its title, so its -C flag cannot be seen.

Many sites keep only the m4 source (sendmail.mc) under configuration management. A `.mc` file is
read with a small m4 subset (quotes, `dnl`, `#` comments, define/undefine, ifdef/ifelse, include,
FEATURE, DAEMON_OPTIONS) and turned into what cf/m4/proto.m4 would write: the `Name=MTA` daemon on
port 25 unless DAEMON_OPTIONS is given, and the `Port=587, Name=MSA, M=E` daemon unless
FEATURE(`no_default_msa'). When the compiled .cf exists beside it, the .cf is what the daemon
reads: it is used, and the two are compared.
"""

from __future__ import annotations

import os
import re

from ansible_collections.mailsec.starttls.plugins.module_utils._files import excerpt
from ansible_collections.mailsec.starttls.plugins.module_utils._model import ANY_ADDRESS
from ansible_collections.mailsec.starttls.plugins.module_utils._mta.base import (
    MtaAdapter,
    REASON_IMPLICIT,
    enough_listeners,
    fix_names,
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
)
from ansible_collections.mailsec.starttls.plugins.module_utils._mta.context import MAX_LOGICAL_LINE

DEFAULT_CONFIG = '/etc/mail/sendmail.cf'
DEFAULT_SOURCE = '/etc/mail/sendmail.mc'
EVIDENCE_OPTIONS = ('ServerCertFile', 'ServerKeyFile', 'CACertFile', 'CACertPath', 'TLSSrvOptions')


# `O Name=value` (or `O Name`) option lines of sendmail.cf, also raw in a .mc's LOCAL_CONFIG.
OPTION_LINE = re.compile(r'^O\s*([A-Za-z][A-Za-z0-9.]*)\s*(?:=\s*(.*))?$')


def parse_cf(ctx, path: str) -> dict | None:
    text = ctx.read_text(path, mta='sendmail', required=True)
    if text is None:
        return None
    config = {'options': {}, 'daemons': [], 'macros': {}}
    lines = []
    for number, raw in enumerate(text.splitlines(), 1):
        if raw.startswith('#') or not raw.strip():
            continue
        if raw[0] in ' \t' and lines:
            # Bounded: joining continuation lines one by one is quadratic in a hostile file.
            if len(lines[-1][1]) < MAX_LOGICAL_LINE:
                lines[-1][1] += ' ' + raw.strip()[:MAX_LOGICAL_LINE]
            continue
        lines.append([number, raw.rstrip()])
    for number, line in lines:
        where = f'{path}:{number}'
        if line.startswith('D'):
            match = re.match(r'^D(\{[^}]+\}|\w)(.*)$', line)
            if match:
                config['macros'][match.group(1).strip('{}')] = match.group(2)
            continue
        if not line.startswith('O'):
            continue
        match = OPTION_LINE.match(line)
        if not match:
            ctx.warn(f'cannot parse sendmail option line {excerpt(line)}', where=where, mta='sendmail')
            continue
        name, value = match.group(1), expand_macros((match.group(2) or '').strip(), config['macros'])
        if name == 'DaemonPortOptions':
            config['daemons'].append({'value': value, 'where': where})
        else:
            config['options'][name] = {'value': value, 'where': where}
    return config


def warn_if_msp(ctx, config: dict, path: str) -> None:
    """A submit.cf (UseMSP, FEATURE(`msp')) is the mail submission program's: its queue runner
    (sendmail -Ac -q) listens nowhere; its daemons serve only if someone starts `sendmail -bd` with it."""
    entry = config['options'].get('UseMSP')
    # sendmail's boolean options: empty or starting with t, T, y, Y is true (readcf.c, atobool).
    if entry is not None and (not entry['value'] or entry['value'][:1] in 'tTyY'):
        ctx.warn('the mail submission program\'s configuration (UseMSP, submit.cf): its DaemonPortOptions serve '
                 'only a daemon started with it (sendmail -bd -C), not the queue runner', where=path, mta='sendmail')


# -- sendmail.mc: the m4 subset that site configurations use --------------------------------

# m4 macro names of the .mc and the sendmail.cf options they become (cf/m4/proto.m4).
MC_OPTIONS = {
    'confSERVER_CERT': 'ServerCertFile',
    'confSERVER_KEY': 'ServerKeyFile',
    'confCACERT': 'CACertFile',
    'confCACERT_PATH': 'CACertPath',
    'confTLS_SRV_OPTIONS': 'TLSSrvOptions',
}
# What cf/m4/cf.m4 defines before the .mc is read.
MC_PREDEFINED = {'MAIL_SETTINGS_DIR': '/etc/mail/'}
MC_MAX_INCLUDES = 16
MC_MAX_CALLS = 20000
MC_MAX_EXPANSION = 4096
MC_NAME = re.compile(r'[A-Za-z_][A-Za-z0-9_]*')  # an m4 name
MC_MARKERS = re.compile(r'^\s*(?:divert\s*\(|OSTYPE\s*\(|DOMAIN\s*\(|FEATURE\s*\(|MAILER\s*\(|DAEMON_OPTIONS\s*\(|'
                        r'VERSIONID\s*\(|define\s*\(\s*`|include\s*\(\s*`|dnl\b)', re.MULTILINE)


def is_mc_text(text: str) -> bool:
    """Whether a file is m4 source (sendmail.mc) rather than the compiled sendmail.cf."""
    if re.search(r'^(?:O\s*DaemonPortOptions|V\d+/|S\d+\s*=?\s*$|R\$)', text, re.MULTILINE):
        return False
    return len(MC_MARKERS.findall(text)) >= 1


class _M4:
    """The calls of an m4 file: (name, [arguments with one quote level removed], line).

    m4 quotes are ` ... ' (nested); `#` starts a comment to the end of the line and `dnl` deletes
    through the newline, both only outside quotes.
    """

    def __init__(self, text: str):
        self.text = text
        self.calls: list = []
        self.raw_lines: list = []

    def scan(self) -> list:
        text, index, line = self.text, 0, 1
        length = len(text)
        line_start_clean = True
        while index < length and len(self.calls) < MC_MAX_CALLS:
            char = text[index]
            if char == '\n':
                line += 1
                index += 1
                line_start_clean = True
                continue
            if char == '`':
                end = _m4_quote_end(text, index)
                line += text.count('\n', index, end)
                index = end
                line_start_clean = False
                continue
            if char == '#':
                end = text.find('\n', index)
                index = length if end < 0 else end
                continue
            if char == '_' or (char.isascii() and char.isalpha()):
                match = MC_NAME.match(text, index)
                name = match.group(0)
                after = match.end()
                if name == 'dnl':
                    end = text.find('\n', after)
                    index = length if end < 0 else end + 1
                    line += 1 if end >= 0 else 0
                    line_start_clean = True
                    continue
                if line_start_clean and name == 'O' and not text.startswith('(', after):
                    # A raw sendmail.cf option line (LOCAL_CONFIG and the like) is copied to the .cf.
                    end = text.find('\n', index)
                    end = length if end < 0 else end
                    self.raw_lines.append((line, text[index:end]))
                    index = end
                    continue
                if after < length and text[after] == '(':
                    arguments, end = _m4_arguments(text, after)
                    self.calls.append((name, arguments, line))
                    line += text.count('\n', index, end)
                    index = end
                    line_start_clean = False
                    continue
                index = after
                line_start_clean = False
                continue
            if not char.isspace():
                line_start_clean = False
            index += 1
        return self.calls


def _m4_quote_end(text: str, index: int) -> int:
    """The index after the quote that closes the one opened at `index`."""
    depth = 0
    while index < len(text):
        char = text[index]
        if char == '`':
            depth += 1
        elif char == "'":
            depth -= 1
            if depth == 0:
                return index + 1
        index += 1
    return len(text)


def _m4_arguments(text: str, index: int) -> tuple:
    """([arguments], index after ')') for the '(' at `index`; one quote level removed."""
    arguments, current, depth = [], [], 0
    index += 1
    while index < len(text):
        char = text[index]
        if char == '`':
            end = _m4_quote_end(text, index)
            current.append(text[index + 1:end - 1] if end - index >= 2 and text[end - 1] == "'" else text[index + 1:end])
            index = end
            continue
        if char == '(':
            depth += 1
        elif char == ')':
            if depth == 0:
                arguments.append(''.join(current).strip())
                return arguments, index + 1
            depth -= 1
        elif char == ',' and depth == 0:
            arguments.append(''.join(current).strip())
            current = []
            index += 1
            continue
        current.append(char)
        index += 1
    arguments.append(''.join(current).strip())
    return arguments, len(text)


def m4_expand(value: str, macros: dict, depth: int = 0) -> str:
    """Rescan a value as m4 would: defined names are replaced (bounded), quoted text is copied
    without its quotes, and the empty quote pair that separates two names disappears."""
    if depth > 8:
        return value
    out, index = [], 0
    while index < len(value) and sum(len(part) for part in out) < MC_MAX_EXPANSION:
        char = value[index]
        if char == '`':
            end = _m4_quote_end(value, index)
            out.append(value[index + 1:end - 1] if value[end - 1:end] == "'" else value[index + 1:end])
            index = end
            continue
        if char == '_' or (char.isascii() and char.isalpha()):
            match = MC_NAME.match(value, index)
            name = match.group(0)
            if name in macros:
                out.append(m4_expand(macros[name], macros, depth + 1))
            else:
                out.append(name)
            index = match.end()
            continue
        out.append(char)
        index += 1
    return ''.join(out)[:MC_MAX_EXPANSION]


def parse_mc(ctx, path: str) -> dict | None:
    """The settings sendmail.cf would get from this .mc: same shape as parse_cf, with the daemons
    that cf/m4/proto.m4 adds by default."""
    text = ctx.read_text(path, mta='sendmail', required=True)
    if text is None:
        return None
    state = {'macros': dict(MC_PREDEFINED), 'daemons': [], 'features': set(), 'raw': [], 'defined_at': {},
             'includes': 0, 'files': [path]}
    _mc_text(ctx, text, path, 0, state)
    config = {'options': {}, 'daemons': [], 'macros': {}, 'source': 'mc', 'files': state['files']}
    # LOCAL_CONFIG's raw `O` lines come before the options proto.m4 writes from the defines, and
    # sendmail keeps the last: a define beats a raw line; a raw line stands where nothing is defined.
    raw_daemons = []
    for number, where_path, line in state['raw']:
        match = OPTION_LINE.match(line.strip())
        if not match:
            continue
        where = f'{where_path}:{number}'
        if match.group(1) == 'DaemonPortOptions':
            # Beside the daemons proto.m4 writes (its default ones too: a raw line is no DAEMON_OPTIONS).
            raw_daemons.append({'value': (match.group(2) or '').strip(), 'where': where})
        else:
            config['options'][match.group(1)] = {'value': (match.group(2) or '').strip(), 'where': where}
    for macro, option in MC_OPTIONS.items():
        if macro in state['macros'] and macro not in MC_PREDEFINED:
            value = m4_expand(state['macros'][macro], state['macros']).strip()
            config['options'][option] = {'value': value, 'where': state['defined_at'].get(macro)}
    if 'msp' in state['features']:
        # feature/msp.m4: no default MSA, and a daemon on the loopback address unless one is given.
        config['options']['UseMSP'] = {'value': 'True', 'where': path}
        state['features'].add('no_default_msa')
        if not state['daemons']:
            state['daemons'].append({'value': 'Name=NoMTA, Addr=127.0.0.1, M=E', 'where': None,
                                     'default': f"FEATURE(`msp') in {path}"})
    old_style = state['macros'].get('confDAEMON_OPTIONS')
    if old_style:
        # proto.m4 still writes it (with a "no longer valid" warning), beside any DAEMON_OPTIONS.
        state['daemons'].append({'value': m4_expand(old_style, state['macros']).strip(),
                                 'where': state['defined_at'].get('confDAEMON_OPTIONS')})
    if state['daemons']:
        config['daemons'].extend(state['daemons'])
    elif '_NETINET6_' in state['macros']:
        config['daemons'].append({'value': 'Name=MTA-v4, Family=inet', 'where': None,
                                  'default': 'default of the m4 configuration (no DAEMON_OPTIONS, _NETINET6_)'})
        config['daemons'].append({'value': 'Name=MTA-v6, Family=inet6', 'where': None,
                                  'default': 'default of the m4 configuration (no DAEMON_OPTIONS, _NETINET6_)'})
    else:
        config['daemons'].append({'value': 'Name=MTA', 'where': None,
                                  'default': f'default of the m4 configuration: no DAEMON_OPTIONS in {path}'})
    explicit_587 = any(parse_daemon(daemon['value']).get('port', '').strip().lower() in ('587', 'submission')
                       for daemon in state['daemons'])
    if explicit_587 and 'no_default_msa' not in state['features']:
        # proto.m4 still writes its MSA daemon; it cannot bind 587 beside the explicit one (sendmail logs
        # "Address already in use" and retries), so it serves nothing.
        ctx.warn("a DAEMON_OPTIONS on port 587 without FEATURE(`no_default_msa'): the default MSA "
                 'daemon on 587 is written too and cannot bind', where=path, mta='sendmail')
    elif 'no_default_msa' not in state['features'] and '_NO_MSA_' not in state['macros']:
        config['daemons'].append({'value': 'Port=587, Name=MSA, M=E', 'where': None,
                                  'default': f"default MSA of the m4 configuration: no FEATURE(`no_default_msa') "
                                             f'in {path}'})
    config['daemons'].extend(raw_daemons)
    return config


def _mc_text(ctx, text: str, path: str, line_offset: int, state: dict) -> None:
    scanner = _M4(text)
    for name, arguments, line in scanner.scan():
        where = f'{path}:{line + line_offset}'
        first = arguments[0].strip() if arguments else ''
        if not MC_NAME.fullmatch(first):
            # A quoted name (the usual `define(`confX', ...)') is taken as written: expanding it would
            # turn a redefinition into a definition of the old value. Other text is rescanned.
            first = m4_expand(arguments[0], state['macros']).strip()
        if name == 'define' and arguments:
            state['macros'][first] = arguments[1] if len(arguments) > 1 else ''
            state['defined_at'][first] = where
        elif name == 'undefine' and arguments:
            state['macros'].pop(first, None)
            state['defined_at'].pop(first, None)
        elif name == 'FEATURE' and arguments:
            state['features'].add(first)
        elif name == 'DAEMON_OPTIONS' and arguments:
            # cfhead.m4 writes `O DaemonPortOptions=$1`: an unquoted list is several arguments, and
            # only the first reaches sendmail.cf.
            if len(arguments) > 1 and any(argument.strip() for argument in arguments[1:]):
                ctx.warn(f'DAEMON_OPTIONS takes one argument: m4 keeps {excerpt(arguments[0].strip())} and drops '
                         f'{excerpt(", ".join(argument.strip() for argument in arguments[1:]))} (quote the whole '
                         "list: DAEMON_OPTIONS(`Port=smtp, Addr=...')", where=where, mta='sendmail')
            state['daemons'].append({'value': m4_expand(arguments[0], state['macros']).strip(), 'where': where})
        elif name == 'HACK' and first == 'msp_nullclient':
            # hack/msp_nullclient.m4 does what FEATURE(`msp') does for these settings.
            state['features'].add('msp')
        elif name == 'DOMAIN' and first == 'debian-msp':
            # Debian's submit.mc domain file: FEATURE(`no_default_msa') (for sendmail 8.10 and later).
            state['features'].add('no_default_msa')
        elif name in ('ifdef', 'ifelse') and len(arguments) >= 2:
            branch = _m4_branch(name, arguments, state['macros'])
            if branch:
                _mc_text(ctx, branch, path, line + line_offset - 1, state)
        elif name in ('include', 'sinclude') and arguments:
            if re.search(r'(?:^|/)(?:cf\.m4|cfhead\.m4|proto\.m4)$|/cf/m4/', first):
                # The m4 library itself (Debian's sendmail.mc includes cf.m4 first): its defaults are
                # modelled above, not read.
                continue
            if state['includes'] >= MC_MAX_INCLUDES:
                ctx.warn('too many includes; the rest are not read', where=where, mta='sendmail')
                continue
            state['includes'] += 1
            target = first
            if not target.startswith('/'):
                target = os.path.join(os.path.dirname(path), target)
            if '\x00' in target:
                ctx.warn('include of a path with a NUL byte: not a file name', where=where, mta='sendmail')
                continue
            included = ctx.read_text(target, mta='sendmail', required=name == 'include')
            if included is not None:
                state['files'].append(target)
                _mc_text(ctx, included, target, 0, state)
    for number, raw in scanner.raw_lines:
        state['raw'].append((number + line_offset, path, raw))


def _m4_branch(name: str, arguments: list, macros: dict) -> str:
    """The text m4 would read next for ifdef(NAME, then, else) or ifelse(a, b, then, [c, d, then,] else)."""
    if name == 'ifdef':
        return arguments[1] if arguments[0].strip() in macros else (arguments[2] if len(arguments) > 2 else '')
    index = 0
    while True:
        rest = len(arguments) - index
        if rest < 3:
            return arguments[index] if rest == 1 else ''
        if m4_expand(arguments[index], macros).strip() == m4_expand(arguments[index + 1], macros).strip():
            return arguments[index + 2]
        if rest == 4:
            return arguments[index + 3]
        if rest == 3:
            return ''
        index += 3


def expand_macros(value: str, macros: dict) -> str:
    def replace(match):
        name = match.group(1) or match.group(2)
        return macros.get(name, match.group(0))
    return re.sub(r'\$\{([^}]+)\}|\$(\w)', replace, value)


def parse_daemon(value: str) -> dict:
    """Port=smtp, Addr=127.0.0.1, Family=inet, Name=MTA, M=Ea -> dict with lower-case keys."""
    fields = {}
    for item in value.split(','):
        key, separator, item_value = item.partition('=')
        if not separator:
            continue
        key = key.strip().lower()
        # Sendmail matches option names by their first letters: Port, Addr, Family, Name, Modifiers.
        canonical = {'p': 'port', 'a': 'addr', 'f': 'family', 'n': 'name', 'm': 'modifiers'}.get(key[:1], key)
        fields[canonical] = item_value.strip()
    return fields


class SendmailAdapter(MtaAdapter):
    name = 'sendmail'

    # -- the fix a finding shows (MtaAdapter.fix_text) -------------------------------------------

    def fix_text(self, rule: str, listener: dict, detail: dict) -> str | None:
        """One certificate for every daemon; STARTTLS withheld per daemon with `M=S`."""
        names = fix_names(listener)
        if rule == 'starttls-advertised-without-certificate':
            return ('Sendmail serves one certificate for all daemons (`confSERVER_CERT`, `confSERVER_KEY`; the key '
                    'owned by root, mode 0600, or sendmail refuses it as unsafe). To stop advertising on this '
                    f"daemon only, add `M=S` to its DaemonPortOptions (Port={names['port']}, Addr={names['address']}). "
                    f"Then {self.reload_text(listener)}.")
        if rule == 'implicit-tls-without-certificate':
            return ('Set `confSERVER_CERT`/`confSERVER_KEY` to a usable pair, or remove the `M=s` daemon. '
                    f"Then {self.reload_text(listener)}.")
        if rule == 'starttls-not-offered':
            return ('Remove `M=S` from the daemon\'s DaemonPortOptions and make sure confSERVER_CERT/confSERVER_KEY '
                    f"load (sendmail logs `STARTTLS: ServerCertFile` problems). Then {self.reload_text(listener)}.")
        if rule == 'legacy-tls-protocol':
            return ("`define(`confSERVER_SSL_OPTIONS', `+SSL_OP_NO_TLSv1 +SSL_OP_NO_TLSv1_1')`, then "
                    f"{self.reload_text(listener)}.")
        return None

    def reload_text(self, listener: dict) -> str:
        return 'rebuild sendmail.cf from sendmail.mc, then restart sendmail'

    def detect(self, ctx) -> list:
        processes = master_processes(ctx, 'sendmail')
        paths = list((ctx.options.get('config_paths') or {}).get('sendmail') or [])
        # A given .mc whose compiled .cf is beside it is that .cf (read first, compared with the .mc).
        paths = [sibling(path, '.cf') if path.endswith('.mc') and ctx.exists(sibling(path, '.cf')) else path
                 for path in paths]
        paths = [path for index, path in enumerate(paths) if path not in paths[:index]]
        if ctx.exists(DEFAULT_CONFIG) and DEFAULT_CONFIG not in paths:
            paths.append(DEFAULT_CONFIG)
        if processes and not paths:
            paths.append(DEFAULT_SOURCE if not ctx.exists(DEFAULT_CONFIG) and ctx.exists(DEFAULT_SOURCE)
                         else DEFAULT_CONFIG)
        instances = []
        for path in paths:
            instance_id = 'sendmail' if len(paths) == 1 else f'sendmail:{path}'
            instance = new_instance('sendmail', instance_id, config_files=[path],
                                    config_source='option config_paths' if path != DEFAULT_CONFIG else 'default path',
                                    reading_user='root',
                                    reading_user_source='sendmail loads certificates as root and refuses '
                                                        'group- or world-readable keys')
            instance['config_path'] = path
            if processes:
                instance['running'] = True if len(paths) == 1 else None
                instance['pid'] = processes[0]['pid']
                instance['command_line'] = processes[0].get('argv')
                if len(paths) > 1:
                    ctx.cannot_see('which sendmail.cf the running sendmail uses (its title hides -C)', mta='sendmail')
            else:
                instance['running'] = False
            instances.append(instance)
        return instances

    def listeners(self, ctx, instance: dict) -> list:
        config = load_config(ctx, instance)
        if config is None:
            return []
        warn_if_msp(ctx, config, instance['config_path'])
        daemons = config['daemons'] or [{'value': 'Port=smtp, Name=MTA', 'where': None,
                                         'default': 'default (no DaemonPortOptions)'}]
        certificate = config['options'].get('ServerCertFile')
        key = config['options'].get('ServerKeyFile')
        records = []
        bound = {}
        for daemon in daemons:
            if enough_listeners(ctx, records, 'sendmail', instance['instance']):
                break
            fields = parse_daemon(daemon['value'])
            family = fields.get('family', 'inet').lower()
            if family not in ('inet', 'inet6'):
                continue
            port = resolve_port(ctx, fields.get('port', 'smtp'))
            if port is None:
                ctx.warn(f'unknown port in DaemonPortOptions {daemon["value"]!r}', where=daemon['where'],
                         mta='sendmail', instance=instance['instance'])
                continue
            address_text = fields.get('addr')
            address = normalise_address(address_text) if address_text else ('::' if family == 'inet6' else '0.0.0.0')
            unknown_address = None
            if address is None:
                # Sendmail resolves a host name in Addr= at start; only /etc/hosts is asked here.
                wanted = 6 if family == 'inet6' else 4
                found = [item for item in hosts_lookup(ctx, address_text) if (6 if ':' in item else 4) == wanted]
                if found:
                    address = found[0]
                else:
                    address = 'unknown'
                    unknown_address = (f'Addr={address_text} is a host name that /etc/hosts does not resolve; '
                                       'sendmail resolves it through DNS at start')
                    ctx.warn(f'DaemonPortOptions {unknown_address}', where=daemon['where'], mta='sendmail',
                             instance=instance['instance'])
            if (address, port) in bound:
                # The second daemon on one address and port cannot bind ("Address already in use").
                ctx.warn(f'DaemonPortOptions {excerpt(daemon["value"])}: {address}:{port} is bound already by '
                         f'{excerpt(bound[(address, port)])}; sendmail cannot bind it twice, the first serves',
                         where=daemon['where'] or daemon.get('default'), mta='sendmail', instance=instance['instance'])
                continue
            bound[(address, port)] = daemon['value']
            modifiers = fields.get('modifiers', '')
            implicit = 's' in modifiers
            protocol = infer_protocol(port, implicit=implicit, hints=[fields.get('name', '')])
            if fields.get('name', '').upper() == 'MSA' and not implicit:
                protocol = 'submission'
            record = new_listener('sendmail', instance['instance'], fields.get('name', 'MTA'), address, port,
                                  protocol, defined_at=daemon['where'] or daemon.get('default') or 'default',
                                  reader_user='root')
            if unknown_address:
                record['probe_address'] = None
                mark_uncertain(record, 'address', daemon['where'], unknown_address)
            record['tls_settings']['DaemonPortOptions'] = setting(daemon['value'], daemon['where'] or
                                                                  daemon.get('default') or 'default')
            for name in EVIDENCE_OPTIONS:
                if name in config['options']:
                    entry = config['options'][name]
                    record['tls_settings'][name] = setting(entry['value'], entry['where'])
            if certificate and certificate['value']:
                record['binding'] = new_binding(certificate=certificate['value'],
                                                key=(key or certificate)['value'],
                                                source=f'{certificate["where"]} ServerCertFile')
            else:
                record['binding'] = new_binding(source='default (none configured): no ServerCertFile')
            if implicit:
                record['tls_mode'] = 'implicit'
                record['offers_starttls'] = False
                record['offers_starttls_reason'] = f'{REASON_IMPLICIT} (M=s at {daemon["where"]})'
            elif 'S' in modifiers:
                record['offers_starttls'] = False
                record['offers_starttls_reason'] = f'M=S in DaemonPortOptions ({daemon["where"]}): STARTTLS not offered'
                record['tls_mode'] = 'none'
            elif not (certificate and certificate['value'] and key and key['value']):
                record['tls_mode'] = 'none'
                record['offers_starttls'] = False
                record['offers_starttls_reason'] = ('no ServerCertFile/ServerKeyFile: sendmail does not initialise '
                                                    'server TLS and does not offer STARTTLS')
            else:
                record['offers_starttls'] = True
                record['offers_starttls_reason'] = (f'ServerCertFile and ServerKeyFile set ({certificate["where"]}) '
                                                    'and no M=S; sendmail drops STARTTLS if TLS initialisation '
                                                    'fails (unsafe or unreadable files)')
            records.append(record)
        return records

    # -- remediation (mta_tls_config): never edited, the exact manual change instead -------------

    def plan_tls_change(self, ctx, instance: dict, listener: dict, desired: dict, others: list) -> dict:
        """sendmail.cf is generated from the .mc file by m4; editing the .cf is undone by the next
        build and editing the .mc half-way is worse. The plan is the change to make by hand."""
        mc_path = instance['config_path'][:-3] + '.mc' if instance['config_path'].endswith('.cf') else 'sendmail.mc'
        name = listener.get('service') or 'MTA'
        address = listener.get('address')
        port = listener.get('port')
        daemon = f"Port={port}, Name={name}" + (f", Addr={address}" if address not in ANY_ADDRESS else '')
        if desired.get('starttls') == 'withdrawn':
            steps = [f"In {mc_path}, give this daemon the M=S modifier (no STARTTLS on it alone):",
                     f"  DAEMON_OPTIONS(`{daemon}, M=S')"]
        else:
            certificate = desired.get('certificate') or (listener.get('binding') or {}).get('certificate') or 'CERT'
            key = desired.get('private_key') or (listener.get('binding') or {}).get('key') or 'KEY'
            steps = [f"In {mc_path} (sendmail has one server certificate for all its daemons):",
                     f"  define(`confSERVER_CERT', `{certificate}')dnl",
                     f"  define(`confSERVER_KEY', `{key}')dnl",
                     f"and remove M=S from DAEMON_OPTIONS(`{daemon}, ...') if it is there."]
        steps.append(f"Then rebuild and reload: cd {mc_path.rsplit('/', 1)[0] or '.'} && make (or "
                     f"m4 {mc_path} > {instance['config_path']}), then: systemctl reload sendmail")
        others_on_daemon = [other['id'] for other in others if other['id'] != listener['id']]
        return {'changes': {}, 'validate': None, 'actions': [], 'manual': steps,
                'affected': others_on_daemon if desired.get('starttls') != 'withdrawn' else [],
                'reload_command': None}


def sibling(path: str, suffix: str) -> str | None:
    """sendmail.mc -> sendmail.cf and back."""
    stem, extension = os.path.splitext(path)
    if extension not in ('.mc', '.cf'):
        return None
    return stem + suffix


def load_config(ctx, instance: dict) -> dict | None:
    """The settings the daemon uses: the compiled .cf when there is one, else the .mc source
    turned into what the .cf would say; a warning when the two disagree."""
    path = instance['config_path']
    text = ctx.read_text(path, mta='sendmail', required=True)
    if text is None:
        return None
    if path.endswith('.mc') or is_mc_text(text):
        compiled = sibling(path, '.cf') if path.endswith('.mc') else None
        source = parse_mc(ctx, path)
        if compiled and ctx.exists(compiled):
            config = parse_cf(ctx, compiled)
            if config is not None:
                instance['config_files'] = [compiled, path]
                instance['notes'].append(f'{path} is m4 source; sendmail reads the compiled {compiled}, which is used')
                compare_sources(ctx, instance, config, compiled, source, path)
                return config
        if source is not None:
            instance['config_files'] = source['files']
            instance['notes'].append(f'{path} is m4 source (sendmail.mc): read as what the compiled sendmail.cf '
                                     'would say; sendmail itself reads the .cf built from it')
        return source
    config = parse_cf(ctx, path)
    source_path = sibling(path, '.mc')
    if config is not None and source_path and ctx.exists(source_path):
        source = parse_mc(ctx, source_path)
        compare_sources(ctx, instance, config, path, source, source_path)
    return config


def _summary(ctx, config: dict) -> tuple:
    endpoints = set()
    for daemon in config['daemons'] or [{'value': 'Name=MTA'}]:
        fields = parse_daemon(daemon['value'])
        family = fields.get('family', 'inet').lower()
        if family not in ('inet', 'inet6'):
            continue
        address_text = fields.get('addr')
        address = normalise_address(address_text) if address_text else ('::' if family == 'inet6' else '0.0.0.0')
        modifiers = ''.join(sorted(set(fields.get('modifiers', '')) & set('sS')))
        endpoints.add((address, resolve_port(ctx, fields.get('port', 'smtp')), modifiers))
    files = tuple((config['options'].get(name) or {}).get('value') for name in ('ServerCertFile', 'ServerKeyFile'))
    return endpoints, files


def compare_sources(ctx, instance: dict, compiled: dict, compiled_path: str, source: dict | None,
                    source_path: str) -> None:
    if source is None:
        return
    compiled_endpoints, compiled_files = _summary(ctx, compiled)
    source_endpoints, source_files = _summary(ctx, source)
    differences = []
    if compiled_endpoints != source_endpoints:
        only_cf = sorted(f'{address}:{port}{" M=" + mods if mods else ""}'
                         for address, port, mods in compiled_endpoints - source_endpoints)
        only_mc = sorted(f'{address}:{port}{" M=" + mods if mods else ""}'
                         for address, port, mods in source_endpoints - compiled_endpoints)
        differences.append(f'daemons only in the .cf: {", ".join(only_cf) or "none"}; only in the .mc: '
                           f'{", ".join(only_mc) or "none"}')
    if compiled_files != source_files:
        differences.append(f'certificate/key {compiled_files[0]!r}/{compiled_files[1]!r} in the .cf, '
                           f'{source_files[0]!r}/{source_files[1]!r} in the .mc')
    if differences:
        ctx.warn(f'{compiled_path} and {source_path} disagree ({"; ".join(differences)}): sendmail reads '
                 f'{compiled_path}, which was not rebuilt from {source_path} (or was edited by hand)',
                 where=compiled_path, mta='sendmail', instance=instance['instance'])
