# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One configuration edit as a transaction, for every MTA adapter.

The adapter computes the new text of each file it wants to change (with the MTA's own editor
where there is one) and a validator that asks the MTA itself about the candidate. This module
then:

1. writes each candidate beside its original (same directory, same owner and mode), so that
   relative includes resolve as they will in the real file;
2. runs the validator against the candidates; any failure removes them and leaves every
   original byte-identical;
3. backs the originals up (`NAME.YYYYmmddTHHMMSS.mailsec~`, owner and mode kept) and renames each
   candidate over its original (rename(2) is atomic within a directory); should a later rename
   fail, the earlier ones are put back from the backups.

Check mode stops after computing the diff. Values that would carry a newline or another control
character into a configuration file are refused before anything is computed (a newline in a
Postfix `-o` value or a Dovecot setting starts a new directive).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time

from ansible_collections.mailsec.starttls.plugins.module_utils import _command

TOOL_PATH = os.pathsep.join(_command.TOOL_PATH)
TOOL_TIMEOUT = 30.0
MAX_FILE_BYTES = 4 * 1024 * 1024
BACKUP_SUFFIX = '.mailsec~'

# C0 and C1 controls and DEL; a tab is a control character too.
_UNSAFE = re.compile(r'[\x00-\x1f\x7f-\x9f]')


class EditError(Exception):
    """An edit that cannot be made; `stage` says where (arguments, plan, validate, swap)."""

    def __init__(self, message: str, stage: str = 'plan', details: dict | None = None):
        super().__init__(message)
        self.stage = stage
        self.details = details or {}


def refuse_unsafe(name: str, value) -> str:
    """The value as text, or EditError when it holds a control character (newline included)."""
    text = '' if value is None else str(value)
    if _UNSAFE.search(text):
        raise EditError(f'{name}: newlines and other control characters are refused', stage='arguments')
    return text


def run_tool(argv: list, env: dict | None = None, timeout: float = TOOL_TIMEOUT) -> dict:
    """An MTA tool run for an edit: never cached, minimal environment, never raises.

    {'argv', 'rc', 'stdout', 'stderr', 'error'}; 'error' is None only for exit status 0.
    """
    run_env = {'PATH': TOOL_PATH, 'LC_ALL': 'C', 'LANG': 'C'}
    run_env.update(env or {})
    result = {'argv': list(argv), 'rc': None, 'stdout': '', 'stderr': '', 'error': None}
    try:
        returncode, stdout, stderr = _command.run(list(argv), env=run_env, timeout=timeout)
    except _command.CommandError as exc:
        result['error'] = f'{argv[0]}: {exc}'
        return result
    result['rc'] = returncode
    result['stdout'] = stdout[:MAX_FILE_BYTES].decode('utf-8', 'replace')
    result['stderr'] = stderr[:65536].decode('utf-8', 'replace')
    if returncode != 0:
        lines = [line for line in result['stderr'].strip().splitlines() if line.strip()]
        result['error'] = f'exit {returncode}: ' + (' | '.join(lines[-3:]) if lines else 'no message')
    return result


def read_file(path: str) -> str:
    """A configuration file's text; EditError when it is not a readable regular file of sane size."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise EditError(f'{path}: {exc.strerror or exc}')
    if not os.path.isfile(path):
        raise EditError(f'{path} is not a regular file')
    if info.st_size > MAX_FILE_BYTES:
        raise EditError(f'{path} is {info.st_size} bytes, larger than any configuration')
    try:
        with open(path, 'rb') as handle:
            return handle.read(MAX_FILE_BYTES).decode('utf-8', 'surrogateescape')
    except OSError as exc:
        raise EditError(f'{path}: {exc.strerror or exc}')


def unified_diff_entry(path: str, before: str, after: str) -> dict:
    """One entry of an Ansible diff list."""
    return {'before_header': path, 'after_header': f'{path} (after)', 'before': before, 'after': after}


def _copy_owner_mode(source: str, target: str) -> None:
    info = os.stat(source)
    os.chmod(target, info.st_mode & 0o7777)
    if hasattr(os, 'chown') and os.geteuid() == 0:
        os.chown(target, info.st_uid, info.st_gid)


def write_candidate(original: str, text: str) -> str:
    """The candidate file beside `original` (`.NAME.mailsec-candidate-XXXX`), owner and mode copied."""
    directory, name = os.path.split(original)
    handle, path = tempfile.mkstemp(prefix=f'.{name}.mailsec-candidate-', dir=directory or '.')
    try:
        with os.fdopen(handle, 'wb') as stream:
            stream.write(text.encode('utf-8', 'surrogateescape'))
            stream.flush()
            os.fsync(stream.fileno())
        _copy_owner_mode(original, path)
    except BaseException:
        _remove(path)
        raise
    return path


def backup_path(original: str, moment: float | None = None) -> str:
    stamp = time.strftime('%Y%m%dT%H%M%S', time.localtime(moment if moment is not None else time.time()))
    candidate = f'{original}.{stamp}{BACKUP_SUFFIX}'
    counter = 1
    while os.path.lexists(candidate):
        counter += 1
        candidate = f'{original}.{stamp}-{counter}{BACKUP_SUFFIX}'
    return candidate


def _remove(path: str | None) -> None:
    if path:
        try:
            os.unlink(path)
        except OSError:
            pass


def apply(changes: dict, validate=None, check_mode: bool = False, backup: bool = True) -> dict:
    """Make `changes` ({path: new text}) as one transaction.

    `validate(candidates)` gets {original path: candidate path} and returns a list of tool runs
    (see run_tool) or raises EditError; it is called only when something changes.

    Returns {'changed', 'diff', 'files', 'backups', 'validation'}; EditError with stage
    'validate' or 'swap' leaves every original as it was.
    """
    originals = {}
    for path in changes:
        originals[path] = read_file(path)
    changed_paths = [path for path in changes if changes[path] != originals[path]]
    result = {'changed': bool(changed_paths), 'files': changed_paths, 'backups': {}, 'validation': [],
              'diff': [unified_diff_entry(path, originals[path], changes[path]) for path in changed_paths]}
    if not changed_paths or check_mode:
        if changed_paths and check_mode and validate is not None:
            # Validate in check mode too: --check must tell whether the MTA would take the change.
            result['validation'] = _validated(changed_paths, changes, validate)
        return result
    candidates = {}
    try:
        for path in changed_paths:
            candidates[path] = write_candidate(path, changes[path])
        if validate is not None:
            result['validation'] = validate(dict(candidates)) or []
    except EditError:
        for candidate in candidates.values():
            _remove(candidate)
        raise
    except OSError as exc:
        for candidate in candidates.values():
            _remove(candidate)
        raise EditError(f'cannot write a candidate: {exc.strerror or exc}', stage='validate')

    moment = time.time()
    swapped = []
    try:
        for path in changed_paths:
            saved = None
            if backup:
                saved = backup_path(path, moment)
                shutil.copy2(path, saved)
                _copy_owner_mode(path, saved)
                result['backups'][path] = saved
            os.replace(candidates.pop(path), path)
            swapped.append(path)
    except OSError as exc:
        undone = _undo(swapped, result['backups'])
        for candidate in candidates.values():
            _remove(candidate)
        raise EditError(f'swapping the new configuration in failed ({exc.strerror or exc}); '
                        + ('the originals are back' if undone else 'restore from the backups by hand: '
                           + ', '.join(result['backups'].values())), stage='swap')
    return result


def _validated(paths: list, changes: dict, validate) -> list:
    candidates = {}
    try:
        for path in paths:
            candidates[path] = write_candidate(path, changes[path])
        return validate(dict(candidates)) or []
    except OSError as exc:
        raise EditError(f'cannot write a candidate: {exc.strerror or exc}', stage='validate')
    finally:
        for candidate in candidates.values():
            _remove(candidate)


def _undo(swapped: list, backups: dict) -> bool:
    done = True
    for path in swapped:
        saved = backups.get(path)
        if not saved:
            done = False
            continue
        try:
            restore(saved, path)
        except OSError:
            done = False
    return done


def restore(saved: str, original: str) -> None:
    """Put a backup back over its original, atomically (the backup itself is kept)."""
    directory, name = os.path.split(original)
    handle, temporary = tempfile.mkstemp(prefix=f'.{name}.mailsec-restore-', dir=directory or '.')
    os.close(handle)
    try:
        shutil.copy2(saved, temporary)
        _copy_owner_mode(saved, temporary)
        os.replace(temporary, original)
    except BaseException:
        _remove(temporary)
        raise
