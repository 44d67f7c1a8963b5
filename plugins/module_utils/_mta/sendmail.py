# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sendmail: DaemonPortOptions from sendmail.cf, `M=S` (no STARTTLS) and `M=s` (SMTPS), and
the one global ServerCertFile / ServerKeyFile pair.

sendmail.cf is the m4 output that the daemon reads; it is parsed directly (O options, D macros,
continuation lines). The running daemon rewrites its title, so its -C flag cannot be seen.
"""

from __future__ import annotations

import re

from ansible_collections.mailsec.starttls.plugins.module_utils._mta.base import (
    REASON_IMPLICIT,
    MtaAdapter,
    infer_protocol,
    master_processes,
    new_binding,
    new_instance,
    new_listener,
    normalise_address,
    resolve_port,
    setting,
)

DEFAULT_CONFIG = '/etc/mail/sendmail.cf'
EVIDENCE_OPTIONS = ('ServerCertFile', 'ServerKeyFile', 'CACertFile', 'CACertPath', 'TLSSrvOptions')


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
            lines[-1][1] += ' ' + raw.strip()
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
        match = re.match(r'^O\s*([A-Za-z][A-Za-z0-9.]*)\s*(?:=\s*(.*))?$', line)
        if not match:
            ctx.warn(f'cannot parse sendmail option line {line[:60]!r}', where=where, mta='sendmail')
            continue
        name, value = match.group(1), expand_macros((match.group(2) or '').strip(), config['macros'])
        if name == 'DaemonPortOptions':
            config['daemons'].append({'value': value, 'where': where})
        else:
            config['options'][name] = {'value': value, 'where': where}
    return config


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

    def detect(self, ctx) -> list:
        processes = master_processes(ctx, 'sendmail')
        paths = list((ctx.options.get('config_paths') or {}).get('sendmail') or [])
        if ctx.exists(DEFAULT_CONFIG) and DEFAULT_CONFIG not in paths:
            paths.append(DEFAULT_CONFIG)
        if processes and not paths:
            paths.append(DEFAULT_CONFIG)
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
        config = parse_cf(ctx, instance['config_path'])
        if config is None:
            return []
        daemons = config['daemons'] or [{'value': 'Port=smtp, Name=MTA', 'where': None}]
        certificate = config['options'].get('ServerCertFile')
        key = config['options'].get('ServerKeyFile')
        records = []
        for daemon in daemons:
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
            if address is None:
                ctx.warn(f'DaemonPortOptions Addr {address_text!r} is not an address', where=daemon['where'],
                         mta='sendmail', instance=instance['instance'])
                continue
            modifiers = fields.get('modifiers', '')
            implicit = 's' in modifiers
            protocol = infer_protocol(port, implicit=implicit, hints=[fields.get('name', '')])
            if fields.get('name', '').upper() == 'MSA' and not implicit:
                protocol = 'submission'
            record = new_listener('sendmail', instance['instance'], fields.get('name', 'MTA'), address, port,
                                  protocol, defined_at=daemon['where'] or 'default (no DaemonPortOptions)',
                                  reader_user='root')
            record['tls_settings']['DaemonPortOptions'] = setting(daemon['value'], daemon['where'] or 'default')
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
        daemon = f"Port={port}, Name={name}" + (f", Addr={address}" if address not in ('0.0.0.0', '::', None) else '')
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
