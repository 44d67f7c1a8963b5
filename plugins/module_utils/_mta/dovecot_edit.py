# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Dovecot remediation for mta_tls_config: settings in the `local ADDRESS { }` block of the
listener's address, written into the main configuration file and validated by `doveconf -n`.

Kept out of dovecot.py for the reason postfix_edit.py gives (the inspection does not compile it).
"""

from __future__ import annotations

import os
import re

from ansible_collections.mailsec.starttls.plugins.module_utils._mta.base import normalise_address, strip_hash_comment
from ansible_collections.mailsec.starttls.plugins.module_utils._transaction import (
    EditError,
    read_file,
    refuse_unsafe,
    run_tool,
)


def plan_tls_change(adapter, ctx, instance: dict, listener: dict, desired: dict, others: list) -> dict:
    """Settings in the `local` block of the listener's address (Dovecot filters by local IP, so
    every listener of the instance on that address is affected, and listed).

    Returns {'changes': {path: text}, 'validate', 'actions', 'affected', 'reload_command'}.
    """
    config_path = instance['config_path']
    real_path = ctx.resolve(config_path)
    address = normalise_address(listener.get('address') or '')
    if address is None or listener.get('wildcard'):
        raise EditError(f'{listener["id"]} listens on {listener.get("address")}: a Dovecot local block needs '
                        'the one address the change is for; select the listener by its own address',
                        stage='arguments')
    if listener.get('protocol') == 'lmtp':
        raise EditError('the lmtp service ignores local blocks (it is no login process): its TLS follows the '
                        'global ssl settings; change them by hand', stage='arguments')
    doveconf = ctx.tool('doveconf')
    if not doveconf:
        raise EditError('doveconf is not installed: the candidate cannot be validated', stage='plan')
    wanted = dovecot_settings(listener, desired)
    tree = (ctx.memo.get('dovecot', {}).get(config_path) or {}).get('files')
    block = find_local_block(tree, address)
    target = real_path
    if block is not None:
        block_file = block['where'].rsplit(':', 1)[0]
        if os.path.normpath(block_file) != os.path.normpath(config_path):
            raise EditError(f'the local {block["name"]} block is in the included file {block_file}: change it '
                            'there by hand (only the main configuration file is edited)', stage='plan')
    original = read_file(target)
    new_text, actions = edit_local_block(original, address, block, wanted, listener['id'])
    affected = [other['id'] for other in others
                if other['id'] != listener['id'] and other.get('protocol') != 'lmtp'
                and normalise_address(other.get('address') or '') == address]
    return {
        'changes': {target: new_text} if new_text != original else {},
        'validate': lambda candidates: validate_candidate(doveconf, candidates),
        'actions': actions,
        'affected': affected,
        'reload_command': adapter.reload_command(ctx, instance),
    }


# A Dovecot value runs to the end of the line; '#' starts a comment, quotes and braces have meaning.
_UNSAFE_VALUE = re.compile(r'["#{}]|^\s|\s$')


def dovecot_settings(listener: dict, desired: dict) -> dict:
    """Settings (key -> value) for the address's local block, in a stable order."""
    starttls = desired.get('starttls')
    if desired.get('implicit_tls') == 'disabled':
        raise EditError('disabling a Dovecot inet_listener (port = 0 in its service block) is not automated; '
                        'do it by hand', stage='arguments')
    if starttls == 'withdrawn':
        return {'ssl': 'no'}
    wanted = {}
    certificate = desired.get('certificate')
    if desired.get('chain'):
        raise EditError('Dovecot reads the chain from the ssl_cert file itself: put the certificate and its '
                        'chain into one file and give that as certificate', stage='arguments')
    if certificate:
        key = desired.get('private_key')
        if not key:
            raise EditError('private_key is required for Dovecot (ssl_key)', stage='arguments')
        for name, value in (('certificate', certificate), ('private_key', key)):
            if _UNSAFE_VALUE.search(refuse_unsafe(name, value)):
                raise EditError(f'{name}: quotes, "#", braces and surrounding spaces cannot be written into a '
                                'Dovecot setting', stage='arguments')
        wanted['ssl_cert'] = f'<{certificate}'
        wanted['ssl_key'] = f'<{key}'
    if starttls == 'offered' and listener.get('offers_starttls') is not True:
        wanted['ssl'] = 'yes'
    return wanted


def find_local_block(tree: dict | None, address: str) -> dict | None:
    """The top-level `local` section naming exactly this address (not a network around it)."""
    for node in (tree or {}).get('children', []):
        if node['type'] != 'local' or not node['name']:
            continue
        names = [item for item in re.split(r'[\s,]+', node['name']) if item]
        if len(names) == 1 and normalise_address(names[0]) == address:
            return node
    return None


def edit_local_block(text: str, address: str, block: dict | None, wanted: dict, listener_id: str) -> tuple:
    """(new text, actions): the wanted settings set in the block, everything else as it was."""
    lines = text.splitlines(keepends=True)
    actions = []
    if block is None:
        if not wanted:
            return text, actions
        body = ''.join(f'  {key} = {value}\n' for key, value in wanted.items())
        prefix = '' if not text or text.endswith('\n') else '\n'
        actions.append(f'add local {address} {{ {"; ".join(f"{key} = {value}" for key, value in wanted.items())} }}')
        return (text + prefix + f'\n# mailsec.starttls: TLS of {listener_id}\nlocal {address} {{\n{body}}}\n',
                actions)
    start = int(block['where'].rsplit(':', 1)[1]) - 1
    depth, end = 0, None
    found = {}
    for index in range(start, len(lines)):
        stripped = strip_hash_comment(lines[index], '"\'').strip()
        if stripped.endswith('{'):
            depth += 1
            continue
        if stripped == '}':
            depth -= 1
            if depth == 0:
                end = index
                break
            continue
        match = re.match(r'^([A-Za-z0-9_/.-]+)\s*=', stripped)
        if match and depth == 1:
            found[match.group(1)] = index
    if end is None:
        raise EditError(f'the local {address} block opened at line {start + 1} is never closed', stage='plan')
    indent = re.match(r'^(\s*)', lines[start]).group(1) + '  '
    additions = []
    for key, value in wanted.items():
        if key in found:
            index = found[key]
            current = lines[index]
            value_now = strip_hash_comment(current, '"\'').split('=', 1)[1].strip()
            if value_now == value:
                continue
            own_indent = re.match(r'^(\s*)', current).group(1)
            ending = '\n' if current.endswith('\n') else ''
            lines[index] = f'{own_indent}{key} = {value}{ending}'
            actions.append(f'local {address}: {key} = {value} (was {value_now})')
        else:
            additions.append(f'{indent}{key} = {value}\n')
            actions.append(f'local {address}: add {key} = {value}')
    if additions:
        lines[end:end] = additions
    return ''.join(lines), actions


def validate_candidate(doveconf: str, candidates: dict) -> list:
    """`doveconf -c CANDIDATE -n`: the candidate lies beside the original, so relative includes
    resolve as they will, and doveconf opens every `<file` the candidate names."""
    runs = []
    for candidate in candidates.values():
        run = run_tool([doveconf, '-c', candidate, '-n'])
        runs.append({'argv': ['doveconf', '-c', '<candidate>', '-n'], 'rc': run['rc'],
                     'stderr': run['stderr'].replace(candidate, '<candidate>')[-2000:]})
        if run['error']:
            raise EditError('Dovecot rejects the candidate configuration (doveconf -n): '
                            + run['error'].replace(candidate, '<candidate>'), stage='validate',
                            details={'validation': runs})
    return runs
