# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Postfix remediation for mta_tls_config: master.cf `-o` overrides (or main.cf settings) made with
postconf's own editor on a staged copy, and the candidate validated by postconf.

Apart from postfix.py so that the host inspection (mta_tls_info), which runs from Ansible's zip
and compiles every module it imports on every host, never compiles the edit code.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile

from ansible_collections.mailsec.starttls.plugins.module_utils._mta.base import split_host_port
from ansible_collections.mailsec.starttls.plugins.module_utils._mta.postfix import Resolver, load_config
from ansible_collections.mailsec.starttls.plugins.module_utils._transaction import (
    EditError,
    read_file,
    refuse_unsafe,
    run_tool,
)


def plan_tls_change(adapter, ctx, instance: dict, listener: dict, desired: dict, others: list) -> dict:
    """The master.cf `-o` overrides that give this listener the desired TLS state.

    `desired`: {'starttls': 'offered'|'withdrawn'|None, 'certificate', 'private_key', 'chain',
    'implicit_tls': 'bound'|'disabled'|None}. `others`: the instance's other listener records.
    Returns {'changes': {path: text}, 'validate', 'actions', 'affected', 'reload_command'}.
    """
    directory = instance['config_dir']
    real_dir = ctx.resolve(directory)
    config = load_config(ctx, directory)
    if config['main'] is None or config['services'] is None:
        raise EditError(f'{directory}: main.cf or master.cf cannot be read', stage='plan')
    service = next((item for item in config['services']
                    if item['name'] == listener['service'] and item['type'] == 'inet'), None)
    if service is None:
        raise EditError(f'master.cf has no inet service {listener["service"]!r}', stage='plan')
    if os.path.basename(service['command']) == 'postscreen':
        raise EditError(f'{listener["service"]} is a postscreen service: its TLS settings are those of the '
                        'smtpd pass service that every postscreen listener shares; change that service by hand',
                        stage='plan')
    if service.get('broken'):
        # An -o added after the word that stops the daemon's options would not be read either.
        raise EditError(f'{listener["service"]}: {service["broken"]} ({service["where"]}); correct its '
                        'master.cf arguments by hand first', stage='plan')
    postconf = ctx.tool('postconf')
    if not postconf:
        raise EditError('postconf is not installed: the edit is made with Postfix\'s own editor', stage='plan')
    resolver = Resolver(config['main'], config['tool_values'], service['overrides'], directory, service['name'])
    wanted = postfix_overrides(listener, desired, resolver)
    comment_out = desired.get('implicit_tls') == 'disabled'
    key = f'{service["name"]}/inet'
    if not comment_out and is_global_default(config['services'], service, wanted):
        # The instance's one smtpd service, with no address of its own and no override of these
        # parameters: main.cf is where its settings live, and where an administrator looks.
        current = {name: entry['value'] for name, entry in config['main'].items()}
        settings = [(name, value) for name, value in wanted.items() if current.get(name) != value]
        actions = [f'main.cf: {name} = {value}' for name, value in settings]
        arguments = [['-e'] + [f'{name}={value}' for name, value in settings]] if settings else []
    else:
        current = {name: entry['value'] for name, entry in service['overrides'].items()}
        settings = [(name, value) for name, value in wanted.items() if current.get(name) != value]
        actions = [f'master.cf {key}: -o {name}={value}' for name, value in settings]
        arguments = [['-P'] + [f'{key}/{name}={value}' for name, value in settings]] if settings else []
    if comment_out:
        actions = [f'master.cf {key}: comment the service out (postconf -M#)']
        arguments = [['-M#', key]]
    changes = {}
    if arguments:
        changes = staged_postconf(postconf, real_dir, arguments)
    affected = [other['id'] for other in others
                if other['id'] != listener['id'] and other.get('service') == service['name']]
    return {
        'changes': changes,
        'validate': lambda candidates: validate_staged(postconf, real_dir, candidates),
        'actions': actions,
        'affected': affected,
        'reload_command': adapter.reload_command(ctx, instance),
    }


# Characters that a master.cf `-o` value or a chain file list cannot carry as they are.
_UNSAFE_VALUE = re.compile(r'[\s,${}]')


def postfix_overrides(listener: dict, desired: dict, resolver: Resolver) -> dict:
    """The `-o` overrides (name -> value) that the desired state needs, in a stable order."""
    wanted = {}
    starttls = desired.get('starttls')
    if starttls == 'withdrawn':
        wanted['smtpd_tls_security_level'] = 'none'
        return wanted
    certificate = desired.get('certificate')
    if certificate:
        key = desired.get('private_key') or certificate
        chain = list(desired.get('chain') or [])
        for name, value in [('certificate', certificate), ('private_key', key)] + [('chain', item) for item in chain]:
            if _UNSAFE_VALUE.search(refuse_unsafe(name, value)):
                raise EditError(f'{name}: whitespace, commas, "$" and braces cannot be written into a master.cf '
                                '-o value', stage='arguments')
        chain_files, _where, _unresolved = resolver.value('smtpd_tls_chain_files')
        if chain or chain_files.strip():
            # smtpd_tls_chain_files beats smtpd_tls_cert_file (postconf(5)): bind through it when it is in use.
            wanted['smtpd_tls_chain_files'] = ','.join([key, certificate] + chain)
        else:
            wanted['smtpd_tls_cert_file'] = certificate
            wanted['smtpd_tls_key_file'] = key
    if starttls == 'offered' and listener.get('offers_starttls') is not True:
        wanted['smtpd_tls_security_level'] = 'may'
    return wanted


def is_global_default(services: list, service: dict, wanted: dict) -> bool:
    """Whether this service is the instance's only smtpd listener service, bound to no address of its own
    and overriding none of the wanted parameters: then main.cf is the place for them."""
    listening = [item for item in services if item['type'] == 'inet'
                 and os.path.basename(item['command']) in ('smtpd', 'postscreen')]
    host, _port = split_host_port(service['name'])
    return (listening == [service] and host is None and os.path.basename(service['command']) == 'smtpd'
            and not any(name in service['overrides'] for name in wanted))


def _stage(real_dir: str, sources: dict) -> str:
    """A private copy of the configuration directory's main.cf and master.cf beside the original."""
    stage = tempfile.mkdtemp(prefix='.mailsec-stage-', dir=real_dir)
    os.chmod(stage, 0o700)
    for name in ('main.cf', 'master.cf'):
        source = sources.get(name) or os.path.join(real_dir, name)
        shutil.copyfile(source, os.path.join(stage, name))
    return stage


def staged_postconf(postconf: str, real_dir: str, arguments: list) -> dict:
    """Run postconf's editor on a staged copy; the edited texts keyed by the real paths."""
    try:
        stage = _stage(real_dir, {})
    except OSError as exc:
        raise EditError(f'cannot stage {real_dir}: {exc.strerror or exc}', stage='plan')
    try:
        for argument in arguments:
            run = run_tool([postconf, '-c', stage] + argument)
            if run['error']:
                raise EditError(f'postconf {" ".join(argument[:1])} refused the edit: {run["error"]}', stage='plan')
        return {os.path.join(real_dir, name): read_file(os.path.join(stage, name))
                for name in ('main.cf', 'master.cf')}
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def validate_staged(postconf: str, real_dir: str, candidates: dict) -> list:
    """Postfix's own reading of the candidate files, staged together as one configuration directory:
    `postconf -n` (main.cf), `postconf -M` (every master.cf entry parses) and `postconf -P`."""
    by_name = {os.path.basename(original): candidate for original, candidate in candidates.items()}
    try:
        stage = _stage(real_dir, by_name)
    except OSError as exc:
        raise EditError(f'cannot stage the candidate: {exc.strerror or exc}', stage='validate')
    runs = []
    try:
        for option in ('-n', '-M', '-P'):
            run = run_tool([postconf, '-c', stage, option])
            runs.append({'argv': ['postconf', '-c', '<candidate>', option], 'rc': run['rc'],
                         'stderr': run['stderr'].replace(stage, '<candidate>')[-2000:]})
            fatal = [line for line in run['stderr'].splitlines() if 'fatal:' in line]
            if run['error'] or fatal:
                message = (fatal[-1] if fatal else run['error']).replace(stage, '<candidate>')
                raise EditError(f'Postfix rejects the candidate configuration (postconf {option}): {message}',
                                stage='validate', details={'validation': runs})
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return runs
