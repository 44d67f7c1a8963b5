# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host inspection: which MTAs run here, what they are configured to listen on, what is open.

`gather_host(options)` is the one entry point (the mta_tls_info module is a thin wrapper):

    {'mtas': [instance, ...], 'listeners': [listener, ...], 'unmatched_sockets': [...],
     'warnings': [...], 'not_visible': [...], 'commands': [...], 'privileged': bool, 'cost': {...}}

Processes and sockets come from /proc: cheap, bounded, read-only, and useful without root
(what could not be seen is listed in `not_visible`). Configured-but-not-listening listeners
carry `listening: False`; sockets that look like mail but match no configured listener are
in `unmatched_sockets`.
"""

from __future__ import annotations

import os
import re
import resource
import time

from ansible_collections.mailsec.starttls.plugins.module_utils._files import json_safe
from ansible_collections.mailsec.starttls.plugins.module_utils._model import (
    PORT_PROTOCOL,
    WILDCARD_ADDRESSES,
    family_wildcards,
)
from ansible_collections.mailsec.starttls.plugins.module_utils._mta import ADAPTERS, HostContext, may_be_present
from ansible_collections.mailsec.starttls.plugins.module_utils._mta.base import (
    MAX_LISTENERS,
    is_local_address,
    mark_uncertain,
    normalise_address,
)
from ansible_collections.mailsec.starttls.plugins.module_utils._mta.sniff import (
    OWN_FORMATS,
    check_template,
    foreign_format,
    templated_where,
)
from ansible_collections.mailsec.starttls.plugins.module_utils._procnet import decode_endpoint

DEFAULT_OPTIONS = {
    'root': '/',
    'use_tools': 'auto',
    'mtas': None,
    'config_paths': {},
    'host': None,
    'scan_sockets': True,
    'extra_mail_ports': [],
    # 'own': only MTAs in this process's network namespace (what the host's addresses reach);
    # 'all': also those of other namespaces (containers, test labs), each listener noted as such.
    'network_namespaces': 'own',
}

# Bounds that keep a gather cheap on a busy host.
MAX_PROCESSES = 20000
MAX_FD_LINKS = 100000
# Listeners kept per MTA instance: a configuration that declares more is hostile or generated junk.
MAX_LISTENERS_PER_INSTANCE = MAX_LISTENERS

# comm names of the processes that hold an MTA's listening sockets.
MASTER_COMMS = {
    'master': 'postfix',
    'exim4': 'exim',
    'exim': 'exim',
    'dovecot': 'dovecot',
    'smtpd': 'opensmtpd',
    'sendmail': 'sendmail',
    'sendmail-mta': 'sendmail',
}
# Environment variables worth keeping from a master: the ones that choose its configuration.
KEPT_ENVIRONMENT = ('MAIL_CONFIG',)

TCP_LISTEN = '0A'


# -- processes -------------------------------------------------------------------------------

def scan_processes(ctx) -> list:
    """MTA master processes (and their children's pids) from /proc: pid, ppid, comm, argv,
    the configuration-choosing environment (None when unreadable), uid and mta/role."""
    proc = ctx.proc_root
    try:
        pids = [name for name in os.listdir(proc) if name.isdigit()]
    except OSError:
        ctx.cannot_see(f'{proc}: cannot list processes')
        return []
    table = {}
    for pid_text in pids[:MAX_PROCESSES]:
        try:
            with open(f'{proc}/{pid_text}/stat', 'rb') as handle:
                raw = handle.read().decode('utf-8', 'replace')
        except OSError:
            continue
        open_paren, close_paren = raw.find('('), raw.rfind(')')
        if open_paren < 0 or close_paren < 0:
            continue
        fields = raw[close_paren + 2:].split()
        if fields and fields[0] in ('Z', 'X'):
            continue
        table[int(pid_text)] = {'pid': int(pid_text), 'comm': raw[open_paren + 1:close_paren],
                                'ppid': int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else 0}
    candidates = []
    for pid, entry in table.items():
        comm = entry['comm']
        mta = MASTER_COMMS.get(comm)
        if mta is None and not comm.startswith('sendmail'):
            continue
        process = dict(entry)
        process['argv'] = _read_cmdline(f'{proc}/{pid}/cmdline')
        if not process['argv']:
            continue
        mta, role = classify_process(process, table)
        if mta is None:
            continue
        process['mta'], process['role'] = mta, role
        if role == 'master':
            # Only Postfix picks its configuration from the environment (MAIL_CONFIG).
            wants_environ = mta == 'postfix' and ctx.environ_allowed
            process['environ'] = _read_environ(ctx, f'{proc}/{pid}/environ', mta) if wants_environ else None
            process['exe'] = _readlink(f'{proc}/{pid}/exe')
            process['net_ns'] = _readlink(f'{proc}/{pid}/ns/net')
            process['mnt_ns'] = _readlink(f'{proc}/{pid}/ns/mnt')
            try:
                process['uid'] = os.stat(f'{proc}/{pid}').st_uid
            except OSError:
                process['uid'] = None
            process['children'] = []
        candidates.append(process)
    masters = {process['pid']: process for process in candidates if process['role'] == 'master'}
    for pid, entry in table.items():
        ancestor, hops = entry['ppid'], 0
        while ancestor and hops < 4:
            if ancestor in masters:
                masters[ancestor]['children'].append(pid)
                break
            ancestor = table.get(ancestor, {}).get('ppid')
            hops += 1
    return [process for process in candidates if process['role'] == 'master']


def classify_process(process: dict, table: dict) -> tuple:
    """(mta, 'master' | 'child') or (None, None) for a process that is no MTA daemon."""
    comm, argv = process['comm'], process.get('argv') or []
    first = argv[0] if argv else ''
    parent = table.get(process['ppid'], {}).get('comm', '')
    if comm == 'master':
        if 'postfix' in first or os.path.basename(first.split()[0] if first else '') == 'master':
            return 'postfix', 'master'
        return None, None
    if comm in ('exim4', 'exim'):
        if any(argument.startswith('-bd') for argument in argv):
            return 'exim', 'child' if parent in ('exim4', 'exim') else 'master'
        return None, None
    if comm == 'dovecot':
        return 'dovecot', 'child' if parent == 'dovecot' else 'master'
    if comm == 'smtpd':
        # Postfix's smtpd(8) is a child of master; OpenSMTPD's parent process is not.
        if parent == 'master' or ('-n' in argv and '-t' in argv):
            return None, None
        return 'opensmtpd', 'child' if parent == 'smtpd' else 'master'
    if comm.startswith('sendmail'):
        title = ' '.join(argv)
        if 'accepting connections' in title or '-bd' in argv:
            return 'sendmail', 'master'
    return None, None


def _read_cmdline(path: str) -> list | None:
    try:
        with open(path, 'rb') as handle:
            raw = handle.read(65536)
    except OSError:
        return None
    parts = [part.decode('utf-8', 'replace') for part in raw.split(b'\0')]
    while parts and parts[-1] == '':
        parts.pop()
    if len(parts) == 1 and ' ' in parts[0]:
        # A daemon that rewrote its title (sendmail, OpenSMTPD) leaves one space-joined string.
        parts = parts[0].split()
    return parts


def _read_environ(ctx, path: str, mta: str) -> dict | None:
    try:
        with open(path, 'rb') as handle:
            raw = handle.read(262144)
    except PermissionError:
        ctx.cannot_see(f'{path}: environment of the {mta} master (needs root or the same user)', mta=mta)
        return None
    except OSError:
        return None
    environ = {}
    for entry in raw.split(b'\0'):
        name, separator, value = entry.partition(b'=')
        text_name = name.decode('utf-8', 'replace')
        if separator and text_name in KEPT_ENVIRONMENT:
            environ[text_name] = value.decode('utf-8', 'replace')
    return environ


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


# -- sockets ---------------------------------------------------------------------------------

def own_namespace(ctx, kind: str) -> str | None:
    return _readlink(f'{ctx.proc_root}/self/ns/{kind}')


def scan_sockets(ctx, processes: list | None = None) -> list | None:
    """TCP sockets in LISTEN state from /proc/net/tcp and tcp6 (None when unreadable).

    MTAs in another network namespace (containers, test labs) have their own socket table:
    it is read through /proc/PID/net of their master, and each socket says its namespace.
    """
    own = own_namespace(ctx, 'net')
    tables = [(f'{ctx.proc_root}/net', own)]
    for process in processes or []:
        namespace = process.get('net_ns')
        if namespace and namespace != own and all(namespace != known for _path, known in tables):
            tables.append((f'{ctx.proc_root}/{process["pid"]}/net', namespace))
    sockets = []
    readable = False
    for directory, namespace in tables:
        for name, family in (('tcp', 4), ('tcp6', 6)):
            try:
                with open(f'{directory}/{name}', 'rb') as handle:
                    text = handle.read().decode('ascii', 'replace')
            except OSError:
                if namespace != own:
                    ctx.cannot_see(f'{directory}/{name}: sockets of network namespace {namespace}')
                continue
            readable = readable or directory == f'{ctx.proc_root}/net'
            for line in text.splitlines()[1:]:
                fields = line.split()
                if len(fields) < 10 or fields[3] != TCP_LISTEN:
                    continue
                try:
                    address, port = decode_endpoint(fields[1])
                    inode = int(fields[9])
                except ValueError:
                    continue
                sockets.append({'address': address, 'port': port, 'family': family, 'inode': inode,
                                'uid': int(fields[7]) if fields[7].isdigit() else None,
                                'pid': None, 'process': None,
                                'net_ns': None if namespace == own else namespace})
    if not readable:
        ctx.cannot_see(f'{ctx.proc_root}/net/tcp: listening sockets unreadable')
        return None
    return sockets


def map_socket_owners(ctx, sockets: list, processes: list) -> None:
    """Fill pid/process of each socket from /proc/*/fd links, MTA masters first; bounded."""
    wanted = {entry['inode']: entry for entry in sockets if entry['inode']}
    if not wanted:
        return
    proc = ctx.proc_root
    comm_of = {process['pid']: process['comm'] for process in processes}
    first = [process['pid'] for process in processes]
    try:
        others = [int(name) for name in os.listdir(proc) if name.isdigit()]
    except OSError:
        others = []
    links, denied = 0, 0
    for pid in first + [pid for pid in others if pid not in comm_of]:
        if not wanted or links > MAX_FD_LINKS:
            break
        try:
            descriptors = os.listdir(f'{proc}/{pid}/fd')
        except PermissionError:
            denied += 1
            continue
        except OSError:
            continue
        for descriptor in descriptors:
            links += 1
            target = _readlink(f'{proc}/{pid}/fd/{descriptor}')
            if not target or not target.startswith('socket:['):
                continue
            inode = int(target[8:-1]) if target[8:-1].isdigit() else None
            entry = wanted.pop(inode, None)
            if entry is not None:
                entry['pid'] = pid
                entry['process'] = comm_of.get(pid) or _comm(proc, pid)
    if denied:
        ctx.cannot_see(f'socket owners: file descriptors of {denied} processes unreadable (needs root)')


def _comm(proc: str, pid: int) -> str | None:
    try:
        with open(f'{proc}/{pid}/comm', 'rb') as handle:
            return handle.read().decode('utf-8', 'replace').strip()
    except OSError:
        return None


# -- matching --------------------------------------------------------------------------------

def match_sockets(ctx, listeners: list, instances: list, sockets: list | None, options: dict) -> list:
    """Set `listening` and `owner` on each listener; return the mail sockets nobody configured."""
    if sockets is None:
        for listener in listeners:
            listener['listening'] = None
            listener['notes'].append('listening state unknown: socket table unreadable')
        return []
    own = own_namespace(ctx, 'net')
    pids_of, namespace_of, unknown_namespace = {}, {}, set()
    for instance in instances:
        pids = set()
        for process in ctx.processes:
            if process['pid'] == instance.get('pid'):
                pids.add(process['pid'])
                pids.update(process.get('children') or [])
                namespace = process.get('net_ns')
                if namespace and namespace != own:
                    namespace_of[(instance['mta'], instance['instance'])] = namespace
                    instance['net_namespace'] = namespace
                elif namespace is None and own is not None:
                    # Without root the namespace of another user's process is hidden: its sockets may
                    # be in a table this process cannot read.
                    unknown_namespace.add((instance['mta'], instance['instance']))
        pids_of[(instance['mta'], instance['instance'])] = pids
    by_endpoint = {}
    for entry in sockets:
        by_endpoint.setdefault((entry['net_ns'], entry['address'], entry['port']), []).append(entry)
    used = set()
    for listener in listeners:
        if listener.get('derived_from'):
            continue
        port, address = listener['port'], listener['address']
        if normalise_address(str(address or '')) is None:
            # An address host inspection could not establish (see `uncertain`): nothing to match.
            listener['listening'] = None
            continue
        namespace = namespace_of.get((listener['mta'], listener['instance']))
        if namespace:
            listener['notes'].append(f'runs in network namespace {namespace}: probe it from inside that namespace')
        exact = by_endpoint.get((namespace, address, port))
        if exact:
            listener['listening'] = True
            listener['owner'] = _owner(exact[0])
            used.update(id(entry) for entry in exact)
            continue
        own = pids_of.get((listener['mta'], listener['instance']), set())
        wildcard = []
        if address not in WILDCARD_ADDRESSES:
            for candidate in family_wildcards(address):
                wildcard.extend(by_endpoint.get((namespace, candidate, port), []))
        owned = [entry for entry in wildcard if entry['pid'] in own]
        if owned:
            listener['listening'] = True
            listener['owner'] = _owner(owned[0])
            listener['notes'].append(f'served by a wildcard socket {owned[0]["address"]}:{port}, '
                                     'not a socket bound to this address')
            continue
        if (listener['mta'], listener['instance']) in unknown_namespace:
            listener['listening'] = None
            listener['notes'].append('listening state unknown: the daemon\'s network namespace is not visible '
                                     'without root')
            continue
        listener['listening'] = False
        if wildcard:
            listener['notes'].append(f'not bound, but {wildcard[0]["address"]}:{port} is open '
                                     f'(owner {wildcard[0]["process"] or "unknown"})')
    for listener in listeners:
        parent = listener.get('derived_from')
        if parent:
            origin = next((item for item in listeners if item['id'] == parent), None)
            if origin is not None:
                listener['listening'] = origin['listening']
                listener['owner'] = origin['owner']
    known = set()
    for instance in instances:
        for other in instance.get('other_listeners') or []:
            known.add((namespace_of.get((instance['mta'], instance['instance'])), other['address'], other['port']))
    mail_ports = set(PORT_PROTOCOL) | set(options.get('extra_mail_ports') or [])
    for listener in listeners:
        if listener['port']:
            mail_ports.add(listener['port'])
    selected = set(options.get('mtas') or ADAPTERS)
    mta_pids = {}
    for process in ctx.processes:
        for pid in [process['pid']] + list(process.get('children') or []):
            mta_pids[pid] = process['mta']
    unmatched = []
    for entry in sockets:
        if id(entry) in used or (entry['net_ns'], entry['address'], entry['port']) in known:
            continue
        if any(listener['listening'] and listener['port'] == entry['port'] and
               listener['owner'] and listener['owner'].get('pid') == entry['pid'] and entry['pid']
               for listener in listeners):
            continue
        owner_mta = mta_pids.get(entry['pid'])
        if owner_mta is None and entry['port'] not in mail_ports:
            continue
        if owner_mta is not None and owner_mta not in selected:
            continue
        record = {'address': entry['address'], 'port': entry['port'], 'pid': entry['pid'],
                  'process': entry['process'], 'mta': owner_mta, 'net_namespace': entry['net_ns'],
                  'protocol_guess': PORT_PROTOCOL.get(entry['port']),
                  'reason': 'listening but no configured listener matches'}
        if record not in unmatched:
            unmatched.append(record)
    return unmatched


def _owner(entry: dict) -> dict:
    return {'pid': entry['pid'], 'process': entry['process'], 'socket': f'{entry["address"]}:{entry["port"]}'}


# -- the gather ------------------------------------------------------------------------------

def gather_host(options: dict | None = None, probe=None, store_inspector=None, ctx: HostContext | None = None) -> dict:
    """Detect MTAs, derive their listeners, match them with open sockets; never raises.

    `probe`: optional callable given the list of listener records; returns a list aligned with
    it or a dict keyed by listener id; each result lands in `listener['probe']`.
    `store_inspector`: optional object with `inspect(cert_path, key_path, chain_paths,
    reader_user, expected_names)`; each distinct binding is inspected once, into
    `listener['store']` (and each SNI entry's `store`).
    """
    started_wall = time.monotonic()
    started_cpu = _cpu_seconds()
    merged = dict(DEFAULT_OPTIONS)
    merged.update({key: value for key, value in (options or {}).items() if value is not None})
    if ctx is None:
        ctx = HostContext(root=merged['root'], use_tools=merged['use_tools'])
    ctx.options = merged
    ctx.processes = scan_processes(ctx)
    if merged['network_namespaces'] == 'own':
        ctx.processes = _in_own_network(ctx, ctx.processes)
    own_mounts = own_namespace(ctx, 'mnt')
    ctx.foreign_roots = [f'{ctx.proc_root}/{process["pid"]}/root' for process in ctx.processes
                         if own_mounts and process.get('mnt_ns') and process['mnt_ns'] != own_mounts]
    sockets = scan_sockets(ctx, ctx.processes) if merged['scan_sockets'] else None
    if sockets:
        map_socket_owners(ctx, sockets, ctx.processes)

    selected = merged['mtas'] or list(ADAPTERS)
    instances, listeners = [], []
    for name in selected:
        if name not in ADAPTERS:
            ctx.warn(f'unknown MTA {name!r}; known: {", ".join(ADAPTERS)}')
            continue
        if not may_be_present(ctx, name):
            # Nothing of it on this host: its adapter is not even imported.
            continue
        adapter = ADAPTERS[name]()
        try:
            found = adapter.detect(ctx)
        except Exception as exc:  # an adapter bug must not hide the other MTAs
            ctx.warn(f'{name} detection failed: {type(exc).__name__}: {exc}', mta=name)
            continue
        for instance in found:
            instances.append(instance)
            try:
                records = adapter.listeners(ctx, instance)
            except Exception as exc:  # same: one odd configuration never stops the gather
                ctx.warn(f'{name} listeners failed: {type(exc).__name__}: {exc}', mta=name,
                         instance=instance['instance'])
                records = []
            if len(records) > MAX_LISTENERS_PER_INSTANCE:
                ctx.warn(f'{len(records)} listeners derived from one configuration; only the first '
                         f'{MAX_LISTENERS_PER_INSTANCE} are kept', mta=name, instance=instance['instance'])
                records = records[:MAX_LISTENERS_PER_INSTANCE]
            for record in records:
                record['host'] = merged['host']
                record['reader_user'] = record.get('reader_user') or instance.get('reading_user')
                _check_local(ctx, record)
            _check_sources(ctx, name, instance, records)
            listeners.extend(records)

    note_mount_namespaces(ctx, instances)
    for instance in instances:
        identity = reading_identity(ctx, instance)
        instance['reading_identity'] = identity
        for record in listeners:
            if (record['mta'], record['instance']) == (instance['mta'], instance['instance']):
                record['reader_identity'] = identity
    unmatched = match_sockets(ctx, listeners, instances, sockets, merged)

    if store_inspector is not None:
        inspect_stores(ctx, listeners, store_inspector)
    if probe is not None:
        attach_probes(ctx, listeners, probe)

    ctx.finish()
    # File names that are not UTF-8 (an include directory may hold any) must not fail the task.
    return json_safe({
        'mtas': instances,
        'listeners': listeners,
        'unmatched_sockets': unmatched,
        'warnings': ctx.warnings,
        'not_visible': ctx.unseen,
        'commands': ctx.commands,
        'privileged': ctx.is_root,
        'cost': {'cpu_seconds': round(_cpu_seconds() - started_cpu, 4),
                 'wall_seconds': round(time.monotonic() - started_wall, 4)},
    })


def _in_own_network(ctx, processes: list) -> list:
    """The processes of this network namespace. An MTA in another one (a container, a sandboxed
    service, a test lab) listens on addresses the host's own do not reach: reporting its listeners as
    the host's would join them with the probes of other sockets. It is named in a warning instead."""
    own = own_namespace(ctx, 'net')
    if own is None:
        return processes
    kept, skipped = [], {}
    for process in processes:
        namespace = process.get('net_ns')
        if namespace and namespace != own:
            if process.get('role') == 'master' and process.get('mta'):
                skipped.setdefault((process['mta'], namespace), []).append(process['pid'])
            continue
        kept.append(process)
    for (mta, namespace), pids in sorted(skipped.items()):
        ctx.warn(f'{mta} master process(es) {", ".join(str(pid) for pid in pids[:5])} run in another network '
                 f'namespace ({namespace}: a container, a sandboxed service or a test lab): not inspected here; '
                 'audit that namespace as a host of its own, or set network_namespaces=all', mta=mta)
    return kept


def _check_sources(ctx, name: str, instance: dict, records: list) -> None:
    """Templates among the files an instance was read from make its listeners uncertain; an
    instance that yields no listener says why."""
    files = [path for path in instance.get('config_files') or [] if isinstance(path, str)]
    for record in records:
        defined = str(record.get('defined_at') or '')
        path = defined.rsplit(':', 1)[0] if re.search(r':\d+$', defined) else None
        if path and path.startswith('/') and path not in files:
            files.append(path)
    for path in files:
        text = ctx.read_text(path, mta=name)
        if text is not None:
            check_template(ctx, path, text, name)
    main_text = ctx.read_text(files[0], mta=name) if files else None
    foreign = foreign_format(main_text, name) if main_text else None
    if foreign and records:
        # The daemon refuses a file that is not its configuration: its listeners would not open.
        ctx.warn(f'{files[0]} does not look like {OWN_FORMATS[name][1]}: it looks like {foreign}; '
                 'no listener is reported from it', where=files[0], mta=name, instance=instance.get('instance'))
        instance['no_listener_reason'] = f'{files[0]} looks like {foreign}, not like {OWN_FORMATS[name][1]}'
        del records[:]
    templated = templated_where(ctx, files)
    if templated:
        for record in records:
            mark_uncertain(record, 'configuration', templated[0],
                           'the file is an unrendered template: the rendered file may say otherwise')
    if records:
        return
    reason = instance.get('no_listener_reason')
    if not reason:
        readable = [path for path in files if ctx.read_text(path, mta=name) is not None]
        if templated:
            reason = f'it is an unrendered template ({templated[0]})'
        elif not readable:
            reason = 'its configuration could not be read' + (f' ({", ".join(files[:3])})' if files else '')
        else:
            reason = 'no listening service is defined in it, or none that this module understood (see the other warnings)'
    ctx.warn(f'{name} instance {instance.get("instance")}: no listener found: {reason}', mta=name,
             instance=instance.get('instance'))


def note_mount_namespaces(ctx, instances: list) -> None:
    own = own_namespace(ctx, 'mnt')
    for instance in instances:
        process = next((item for item in ctx.processes if item['pid'] == instance.get('pid')), None)
        namespace = (process or {}).get('mnt_ns')
        if own and namespace and namespace != own:
            instance.setdefault('notes', []).append(
                f'the daemon runs in mount namespace {namespace}: files are read as this process sees them, '
                f'and through {ctx.proc_root}/{instance["pid"]}/root where they are missing here')


def _check_local(ctx, record: dict) -> None:
    address = record['address']
    if address in WILDCARD_ADDRESSES or address is None:
        return
    local = is_local_address(ctx, address)
    if local is False:
        record['notes'].append(f'{address} is not an address of this host')


def inspect_stores(ctx, listeners: list, store_inspector) -> None:
    done = {}

    def inspect(certificate, key, chain, reader_user, names):
        reader_key = (tuple((name, str(value)) for name, value in sorted(reader_user.items()))
                      if isinstance(reader_user, dict) else reader_user)
        cache_key = (certificate, key, tuple(chain or ()), reader_key)
        if cache_key not in done:
            try:
                done[cache_key] = store_inspector.inspect(certificate, key, list(chain or []), reader_user, names)
            except Exception as exc:  # inspection errors are evidence, not crashes
                done[cache_key] = {'error': f'{type(exc).__name__}: {exc}', 'stage': 'store_inspection'}
        return done[cache_key]

    for listener in listeners:
        binding = listener['binding']
        names = [entry['name'] for entry in binding.get('sni') or [] if entry.get('name')]
        reader = _inspector_reader(listener)
        if binding.get('certificate'):
            listener['store'] = inspect(binding['certificate'], binding['key'], binding['chain'], reader, names)
        for entry in binding.get('sni') or []:
            if entry.get('certificate'):
                entry['store'] = inspect(entry['certificate'], entry.get('key'), entry.get('chain'),
                                         reader, [entry['name']] if entry.get('name') else [])


def _inspector_reader(listener: dict):
    """What the store inspector is told about the reading identity: the identity taken from the
    host (dict) when it was established or found unknowable, else the configured user name."""
    identity = listener.get('reader_identity')
    if isinstance(identity, dict) and (identity.get('live') or identity.get('uid') is None):
        return {key: identity.get(key) for key in ('name', 'uid', 'gids', 'reason')}
    return listener['reader_user']


# -- whose eyes read the key ------------------------------------------------------------------

def _status_ids(ctx, pid) -> dict | None:
    """{'uid', 'gid', 'groups'} (effective) from /proc/PID/status, or None."""
    try:
        with open(f'{ctx.proc_root}/{int(pid)}/status', 'rb') as handle:
            text = handle.read(65536).decode('ascii', 'replace')
    except (OSError, ValueError, TypeError):
        return None
    fields = {}
    for line in text.splitlines():
        name, _sep, value = line.partition(':')
        fields[name.strip()] = value.split()
    try:
        uid = int(fields['Uid'][1])
        gid = int(fields['Gid'][1])
        groups = [int(item) for item in fields.get('Groups') or []]
    except (KeyError, IndexError, ValueError):
        return None
    return {'uid': uid, 'gid': gid, 'groups': groups}


def _account_files(ctx, pid) -> tuple:
    """(passwd text, group text, where) as the daemon sees them: its own root first."""
    if pid:
        base = f'{ctx.proc_root}/{pid}/root/etc'
        texts = []
        for name in ('passwd', 'group'):
            try:
                with open(f'{base}/{name}', 'rb') as handle:
                    texts.append(handle.read(4 * 1024 * 1024).decode('utf-8', 'replace'))
            except OSError:
                texts.append(None)
        if texts[0] is not None:
            return texts[0], texts[1] or '', f'{base}/passwd'
        own = own_namespace(ctx, 'mnt')
        process = next((item for item in ctx.processes if item.get('pid') == pid), None)
        if own is None or (process or {}).get('mnt_ns') not in (None, own):
            return None, None, f'{base}/passwd (unreadable; the daemon has its own mount namespace)'
        if (process or {}).get('mnt_ns') is None:
            return None, None, f'{base}/passwd (unreadable; the daemon\'s mount namespace is not visible)'
    passwd = ctx.read_text('/etc/passwd')
    return passwd, ctx.read_text('/etc/group') or '', ctx.path('/etc/passwd')


def _lookup_account(passwd: str, group: str, name: str | None = None, uid: int | None = None) -> dict | None:
    for line in (passwd or '').splitlines():
        fields = line.split(':')
        if len(fields) < 4 or not fields[2].isdigit() or not fields[3].isdigit():
            continue
        if (name is not None and fields[0] == name) or (uid is not None and int(fields[2]) == uid):
            account = {'name': fields[0], 'uid': int(fields[2]), 'gid': int(fields[3])}
            groups = {account['gid']}
            for entry in (group or '').splitlines():
                parts = entry.split(':')
                if len(parts) >= 4 and parts[2].isdigit() and account['name'] in parts[3].split(','):
                    groups.add(int(parts[2]))
            account['gids'] = sorted(groups)
            return account
    return None


def reading_identity(ctx, instance: dict) -> dict:
    """The identity that reads the certificate and key: the live daemon first (its effective ids
    in /proc/PID/status; for a daemon that reads keys after dropping to its configured user, that
    user resolved in the daemon's own /etc/passwd and group), the configuration's user when
    nothing runs, and unknown (uid None, with the reason) when neither can be read."""
    name = instance.get('reading_user') or 'root'
    pid = instance.get('pid') if instance.get('running') else None
    identity = {'name': name, 'uid': None, 'gids': [], 'source': None, 'reason': None, 'live': bool(pid)}
    if pid:
        status = _status_ids(ctx, pid)
        passwd, group, where = _account_files(ctx, pid)
        if name in ('root', 0, '0'):
            if status is not None:
                account = _lookup_account(passwd, group, uid=status['uid']) if passwd else None
                fallback_name = 'root' if status['uid'] == 0 else str(status['uid'])
                identity.update(name=(account or {}).get('name') or fallback_name,
                                uid=status['uid'], gids=sorted({status['gid']} | set(status['groups'])),
                                source=f'live daemon pid {pid} ({ctx.proc_root}/{pid}/status)')
                return identity
            identity.update(uid=0, gids=[0],
                            source=f'configuration: the daemon loads keys as root ({ctx.proc_root}/{pid}/status unreadable)')
            return identity
        # The daemon drops to `name` before it reads keys (Exim): a child already running as that
        # user shows the real ids; else the name is looked up where the daemon looks it up.
        account = _lookup_account(passwd, group, name=str(name)) if passwd else None
        # Only a child whose uid is the user's own: a local delivery runs as its recipient, not as it.
        for child in _children(ctx, pid) if account is not None else []:
            child_status = _status_ids(ctx, child)
            if child_status and child_status['uid'] == account['uid']:
                identity.update(uid=child_status['uid'],
                                gids=sorted({child_status['gid']} | set(child_status['groups'])),
                                source=f'live daemon child pid {child} ({ctx.proc_root}/{child}/status)')
                return identity
        if account is not None:
            identity.update(uid=account['uid'], gids=account['gids'],
                            source=f'{name} in the daemon\'s {where} and group')
            return identity
        identity['reason'] = (f'user {name} not found in {where}' if passwd
                              else f'{where}: the daemon\'s user database could not be read')
        return identity
    passwd, group, where = ctx.read_text('/etc/passwd'), ctx.read_text('/etc/group') or '', '/etc/passwd'
    if name in ('root', 0, '0'):
        identity.update(uid=0, gids=[0], source='configuration: the daemon loads keys as root')
        return identity
    account = _lookup_account(passwd, group, name=str(name)) if passwd else None
    if account is not None:
        identity.update(uid=account['uid'], gids=account['gids'],
                        source=f'configuration ({instance.get("reading_user_source") or "configured user"}), '
                               f'looked up in {where}; no daemon runs')
        return identity
    identity['reason'] = (f'no daemon runs and user {name} is not in {where}' if passwd
                          else f'no daemon runs and {where} could not be read')
    return identity


def _children(ctx, pid) -> list:
    process = next((item for item in ctx.processes if item.get('pid') == pid), None)
    return list((process or {}).get('children') or [])[:50]


def attach_probes(ctx, listeners: list, probe) -> None:
    try:
        results = probe(listeners)
    except Exception as exc:  # the probe engine reports per target; this guards the hook itself
        ctx.warn(f'probe hook failed: {type(exc).__name__}: {exc}')
        return
    if isinstance(results, dict):
        for listener in listeners:
            listener['probe'] = results.get(listener['id'])
    elif isinstance(results, list) and len(results) == len(listeners):
        for listener, result in zip(listeners, results):
            listener['probe'] = result
    else:
        ctx.warn('probe hook returned neither a dict by listener id nor one result per listener')


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime
