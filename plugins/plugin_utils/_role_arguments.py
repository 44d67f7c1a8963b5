# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A role's argument spec checked for every host of a play in one run-once task.

Ansible checks a role's `meta/argument_specs.yml` with a task it inserts before the role's first task,
one per host: on this machine a whole per-host task (a worker process, its result, the callbacks) for
what is a few dictionary look-ups. The audit playbook imports the role with `rolespec_validate: false`
and the role's first task (fleet_assess, validate_only, run once) does the same check here, for each
host with that host's own variables, with the same validator and the same messages
(`ArgumentSpecValidator(..., validate_role_argument_spec=True)`, as `validate_argument_spec` runs it),
before any host is inspected.
"""

from __future__ import annotations

import json
import os

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

SPEC_FILE_NAMES = ('argument_specs.yml', 'argument_specs.yaml')
# Hosts named one by one in a message before the rest are counted.
HOSTS_NAMED = 5


class RoleSpecError(ValueError):
    """The role's argument spec cannot be read or has no such entry point."""


def spec_path(role_path: str) -> str | None:
    """The role's meta/argument_specs.yml (or .yaml), None when it has none."""
    for name in SPEC_FILE_NAMES:
        path = os.path.join(role_path, 'meta', name)
        if os.path.isfile(path):
            return path
    return None


def entry_point_options(document, entry_point: str, where: str) -> dict:
    """The `options` of one entry point of a loaded argument_specs document."""
    specs = document.get('argument_specs') if isinstance(document, dict) else None
    if not isinstance(specs, dict) or entry_point not in specs:
        raise RoleSpecError(f'{where} has no argument spec for entry point {entry_point!r}')
    options = (specs[entry_point] or {}).get('options') or {}
    if not isinstance(options, dict):
        raise RoleSpecError(f'{where}: the options of entry point {entry_point!r} are not a mapping')
    return options


def provided(options: dict, variables) -> dict:
    """The variables the spec names that are defined for a host (not yet templated), as Ansible picks them."""
    return {name: variables[name] for name in options if name in variables}


def host_errors(options: dict, values: dict) -> list:
    """The validator's messages for one host's (templated) values; empty when they pass."""
    return list(ArgumentSpecValidator(options).validate(values, validate_role_argument_spec=True).error_messages)


def check_hosts(options: dict, values_of) -> dict:
    """Each host's messages, for the hosts that fail: {host: [message, ...]}.

    `values_of`: an iterable of (host, templated values). Hosts with the same values (a fleet that takes
    its variables from the same groups) are validated once."""
    failing, known = {}, {}
    for host, values in values_of:
        try:
            key = json.dumps(values, sort_keys=True, default=repr)
        except (TypeError, ValueError):
            key = None
        if key is not None and key in known:
            errors = known[key]
        else:
            errors = host_errors(options, values)
            if key is not None:
                known[key] = errors
        if errors:
            failing[host] = errors
    return failing


def describe(failing: dict, role: str, entry_point: str) -> str:
    """One message for every failing host, hosts with the same messages together."""
    groups: dict = {}
    for host, errors in failing.items():
        groups.setdefault(tuple(errors), []).append(host)
    parts = []
    for errors, hosts in groups.items():
        named = ', '.join(hosts[:HOSTS_NAMED]) + (f' and {len(hosts) - HOSTS_NAMED} more host(s)'
                                                  if len(hosts) > HOSTS_NAMED else '')
        parts.append(f'{named}: {"; ".join(errors)}')
    return (f"the variables of {len(failing)} host(s) do not match the argument spec of role {role} "
            f"(meta/argument_specs.yml, entry point '{entry_point}'): " + ' | '.join(parts))
