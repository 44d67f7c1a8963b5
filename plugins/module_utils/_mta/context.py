# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""HostContext: the only door through which host inspection touches the machine.

Every file read, directory listing and command run by an MTA adapter goes through one
HostContext. It prefixes paths with an optional `root` (unit tests point it at a fixture
tree instead of /), caches what it read, never writes, and collects the warnings and the
things it could not see so that one odd configuration never stops the whole gather.

The files it reads are hostile input (host inspection runs as root): only regular files, each
with a size cap and a budget for all of them; a file that holds key material is never parsed
as configuration; includes are cycle-checked and counted (`IncludeGuard`), macro and variable
expansions are bounded in size and count (`ExpansionBudget`); warnings are de-duplicated in
constant time, capped in number, and never quote key material.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import time

from ansible_collections.mailsec.starttls.plugins.module_utils import _command
from ansible_collections.mailsec.starttls.plugins.module_utils._files import (
    RefusedFile,
    key_material_reason,
    read_regular,
    redact,
)

# Configuration files larger than this are not MTA configuration; refuse instead of reading.
MAX_CONFIG_BYTES = 4 * 1024 * 1024
# All configuration text one gather reads (every MTA, every include).
MAX_TOTAL_CONFIG_BYTES = 64 * 1024 * 1024
# PEM files inspected for their BEGIN lines (chain files): certificates and keys are small.
MAX_PEM_BYTES = 4 * 1024 * 1024
COMMAND_TIMEOUT = 10.0
MAX_COMMAND_OUTPUT = 4 * 1024 * 1024
# Warnings kept in the result; the rest are counted in one closing warning.
MAX_WARNINGS = 200
MAX_UNSEEN = 200
# Room kept beyond MAX_WARNINGS for warnings that a limit was reached or a file refused, so that
# junk lines before them cannot hide them.
MAX_LIMIT_WARNINGS = 50
# One warning's text: call sites may quote a configuration value, which can be long.
MAX_WARNING_CHARS = 400
# Includes of one MTA configuration: how many files may be included in all, how deep, how much text.
MAX_INCLUDES = 512
MAX_INCLUDE_DEPTH = 16
MAX_INCLUDE_BYTES = 16 * 1024 * 1024
# Macro / $variable expansion of one MTA configuration: one value, all values, and the number of
# substitutions. Real configurations stay far below (a long value is a few hundred characters).
MAX_EXPANDED_CHARS = 64 * 1024
MAX_EXPANSION_TOTAL = 8 * 1024 * 1024
MAX_EXPANSION_STEPS = 200000

# One logical line (continuation lines joined): longer ones are cut, with a warning.
MAX_LOGICAL_LINE = 64 * 1024

TOOL_PATH = _command.TOOL_PATH


class IncludeGuard:
    """Includes of one MTA configuration: cycle check (a file that includes itself, directly or
    through others, is not read again), depth, and a budget of included files and bytes, so that a
    small file that includes itself or fans out cannot cost an exponential number of parses."""

    def __init__(self, ctx, mta: str, max_includes: int = MAX_INCLUDES, max_depth: int = MAX_INCLUDE_DEPTH,
                 max_bytes: int = MAX_INCLUDE_BYTES):
        self.ctx = ctx
        self.mta = mta
        self.max_includes = max_includes
        self.max_depth = max_depth
        self.max_bytes = max_bytes
        self.stack: list = []
        self.count = 0
        self.bytes = 0
        self.exhausted = False

    def enter(self, path: str, where: str | None = None) -> bool:
        """Whether `path` may be parsed now (then call `leave(path)` after it); warns when not."""
        if path in self.stack:
            self.ctx.warn(f'include cycle: {path} includes itself (through {" -> ".join(self.stack[self.stack.index(path):])}); '
                          'not read again', where=where, mta=self.mta, limit=True)
            return False
        if len(self.stack) > self.max_depth:
            self.ctx.warn(f'includes nested deeper than {self.max_depth} levels; {path} not read', where=where,
                          mta=self.mta, limit=True)
            return False
        if self.count >= self.max_includes or self.bytes >= self.max_bytes:
            if not self.exhausted:
                self.exhausted = True
                self.ctx.warn(f'more than {self.max_includes} includes or {self.max_bytes} bytes of included text in '
                              f'one {self.mta} configuration; {path} and later includes not read', where=where,
                              mta=self.mta, limit=True)
            return False
        self.stack.append(path)
        if len(self.stack) > 1:
            self.count += 1
        return True

    def charge(self, text: str | None) -> None:
        if text:
            self.bytes += len(text)

    def leave(self, path: str) -> None:
        if self.stack and self.stack[-1] == path:
            self.stack.pop()
        elif path in self.stack:
            self.stack.remove(path)


class ExpansionBudget:
    """Size and count limits for the macro or $variable expansions of one MTA configuration.

    `allow(size)` is asked before a value of `size` characters is built; False means the value is
    left unexpanded (and one warning per place says so). A "billion laughs" configuration (each
    macro twice the previous) thus stops at one value of MAX_EXPANDED_CHARS instead of gigabytes.
    """

    def __init__(self, ctx, mta: str, max_chars: int = MAX_EXPANDED_CHARS, max_total: int = MAX_EXPANSION_TOTAL,
                 max_steps: int = MAX_EXPANSION_STEPS):
        self.ctx = ctx
        self.mta = mta
        self.max_chars = max_chars
        self.max_total = max_total
        self.max_steps = max_steps
        self.total = 0
        self.steps = 0
        self.exhausted = False

    def allow(self, size: int, where: str | None = None, what: str = 'expansion') -> bool:
        self.steps += 1
        if self.exhausted:
            return False
        if size > self.max_chars:
            if self.ctx is not None:
                self.ctx.warn(f'{what} would be {size} characters, more than {self.max_chars}: left unexpanded '
                              '(nested macros or variables that grow without bound)', where=where, mta=self.mta, limit=True)
            return False
        if self.total + size > self.max_total or self.steps > self.max_steps:
            self.exhausted = True
            if self.ctx is not None:
                self.ctx.warn(f'expansions of this {self.mta} configuration exceed {self.max_total} characters or '
                              f'{self.max_steps} substitutions: the rest is left unexpanded', where=where,
                              mta=self.mta, limit=True)
            return False
        self.total += size
        return True


class ParseLimits:
    """The include guard and the expansion budget of parsing one configuration of one MTA."""

    def __init__(self, ctx, mta: str):
        self.includes = IncludeGuard(ctx, mta)
        self.expansion = ExpansionBudget(ctx, mta)


class HostContext:
    """File reads and command runs for host inspection, relative to `root`.

    `use_tools`: 'auto' runs the MTAs' own tools (postconf, exim -bP, doveconf) when they are
    installed and `root` is '/'; 'never' only parses files; 'always' runs them even with a
    fixture root (the tools then read the real paths named in their arguments).
    """

    def __init__(self, root: str = '/', use_tools: str = 'auto', proc_root: str | None = None,
                 tool_path: tuple | None = None, environ_allowed: bool = True):
        self.root = root or '/'
        self.use_tools = use_tools
        if proc_root is None:
            proc_root = '/proc' if self.root == '/' else self.path('/proc')
        self.proc_root = proc_root
        self.tool_path = tuple(tool_path) if tool_path else TOOL_PATH
        self.environ_allowed = environ_allowed
        self.options: dict = {}
        self.processes: list = []
        self.memo: dict = {}
        # /proc/PID/root of MTA masters in another mount namespace: where to look for a file that
        # this process cannot see (a daemon in a container or a test lab reads its own view).
        self.foreign_roots: list = []
        self.warnings: list = []
        self.unseen: list = []
        self.commands: list = []
        # De-duplication in constant time: the keys of what is already in warnings / unseen.
        self._warning_keys: set = set()
        self._unseen_keys: set = set()
        self.suppressed_warnings: dict = {}
        self._text_cache: dict = {}
        self._refusals: dict = {}
        self.config_bytes = 0
        self._run_cache: dict = {}
        self._which_cache: dict = {}
        self.is_root = hasattr(os, 'geteuid') and os.geteuid() == 0

    # -- paths ---------------------------------------------------------------------------
    def path(self, host_path: str) -> str:
        """The real path of a host path under `root`."""
        if self.root == '/':
            return host_path
        return os.path.join(self.root, host_path.lstrip('/'))

    def resolve(self, host_path: str) -> str:
        """The real path to read: under `root`, else inside a foreign mount namespace that has it."""
        real = self.path(host_path)
        if not self.foreign_roots or os.path.lexists(real):
            return real
        for foreign in self.foreign_roots:
            candidate = foreign + host_path
            if os.path.lexists(candidate):
                return candidate
        return real

    def exists(self, host_path: str) -> bool:
        return os.path.exists(self.resolve(host_path))

    def isdir(self, host_path: str) -> bool:
        return os.path.isdir(self.resolve(host_path))

    def stat(self, host_path: str):
        try:
            return os.stat(self.resolve(host_path))
        except OSError:
            return None

    def listdir(self, host_path: str) -> list:
        try:
            return sorted(os.listdir(self.resolve(host_path)))
        except OSError:
            return []

    def glob(self, pattern: str) -> list:
        """Sorted host paths matching a shell pattern with wildcards in the last component only."""
        directory, name_pattern = os.path.split(pattern)
        if not any(char in name_pattern for char in '*?['):
            return [pattern] if self.exists(pattern) else []
        return [os.path.join(directory, name) for name in self.listdir(directory)
                if fnmatch.fnmatchcase(name, name_pattern)]

    def mtime(self, host_path: str) -> float | None:
        info = self.stat(host_path)
        return info.st_mtime if info else None

    # -- reads ---------------------------------------------------------------------------
    def read_text(self, host_path: str, mta: str | None = None, required: bool = False) -> str | None:
        """The text of a configuration file, or None (with a note on what could not be seen).

        Only regular files of at most MAX_CONFIG_BYTES, within MAX_TOTAL_CONFIG_BYTES for the whole
        gather; a file that holds PEM armour, a private key or binary data is refused and never
        quoted: it is no configuration, and an include of a key must not put the key in a warning.
        """
        if host_path in self._text_cache:
            if host_path in self._refusals:
                # Each MTA that reaches a refused file is told, not only the first.
                self.warn(self._refusals[host_path], mta=mta, limit=True)
            return self._text_cache[host_path]
        real = self.resolve(host_path)
        text = None
        try:
            if self.config_bytes >= MAX_TOTAL_CONFIG_BYTES:
                raise RefusedFile(f'more than {MAX_TOTAL_CONFIG_BYTES} bytes of configuration read already: not read')
            data = read_regular(real, MAX_CONFIG_BYTES)
            self.config_bytes += len(data)
            refusal = key_material_reason(data)
            if refusal:
                self._refusals[host_path] = f'{host_path} holds {refusal}: not parsed, nothing of it quoted'
                self.warn(self._refusals[host_path], mta=mta, limit=True)
            else:
                text = data.decode('utf-8', 'replace')
        except PermissionError:
            self.cannot_see(f'{host_path}: permission denied', mta=mta)
        except FileNotFoundError:
            if required:
                self.warn(f'{host_path}: no such file', mta=mta)
        except RefusedFile as exc:
            self._refusals[host_path] = f'{host_path}: {exc.strerror}'
            self.warn(self._refusals[host_path], mta=mta, limit=True)
        except OSError as exc:
            self.warn(f'{host_path}: {exc.strerror or exc}', mta=mta)
        self._text_cache[host_path] = text
        return text

    def pem_labels(self, host_path: str) -> list | None:
        """The PEM block labels of a file ('CERTIFICATE', 'PRIVATE KEY', ...), in order.

        Only the BEGIN lines are kept: key material is never returned or logged. None when the
        file cannot be read (missing, not a regular file, larger than MAX_PEM_BYTES).
        """
        try:
            data = read_regular(self.resolve(host_path), MAX_PEM_BYTES)
        except OSError:
            return None
        labels = []
        for raw_line in data.splitlines():
            if raw_line.startswith(b'-----BEGIN ') and raw_line.rstrip().endswith(b'-----'):
                labels.append(raw_line.strip()[11:-5].decode('ascii', 'replace'))
        return labels

    def include_guard(self, mta: str) -> IncludeGuard:
        """A fresh include guard for parsing one configuration of `mta`."""
        return IncludeGuard(self, mta)

    def expansion_budget(self, mta: str) -> ExpansionBudget:
        """A fresh expansion budget for one configuration of `mta`."""
        return ExpansionBudget(self, mta)

    def parse_limits(self, mta: str) -> ParseLimits:
        """Both of the above, for parsers that pass one object down."""
        return ParseLimits(self, mta)

    # -- commands ------------------------------------------------------------------------
    def tools_enabled(self) -> bool:
        if self.use_tools == 'never':
            return False
        if self.use_tools == 'always':
            return True
        return self.root == '/'

    def tool(self, name: str) -> str | None:
        """An MTA tool: the path given in options['binaries'][name], else found on the tool PATH."""
        given = (self.options.get('binaries') or {}).get(name)
        if given:
            return given if os.access(given, os.X_OK) else None
        return self.which(name)

    def which(self, name: str) -> str | None:
        if name in self._which_cache:
            return self._which_cache[name]
        found = None
        if os.path.isabs(name):
            found = name if os.access(name, os.X_OK) else None
        else:
            found = shutil.which(name, path=os.pathsep.join(self.tool_path))
        self._which_cache[name] = found
        return found

    def run(self, argv: list, mta: str | None = None, env: dict | None = None,
            timeout: float = COMMAND_TIMEOUT) -> dict:
        """Run one command once (cached); never raises.

        Returns {'rc', 'stdout', 'stderr', 'error', 'seconds'}; 'error' is None when it ran.
        """
        key = (tuple(argv), tuple(sorted((env or {}).items())))
        if key in self._run_cache:
            return self._run_cache[key]
        run_env = {'PATH': os.pathsep.join(self.tool_path), 'LC_ALL': 'C', 'LANG': 'C'}
        run_env.update(env or {})
        started = time.monotonic()
        result = {'rc': None, 'stdout': '', 'stderr': '', 'error': None, 'seconds': 0.0}
        try:
            returncode, stdout, stderr = _command.run(list(argv), env=run_env, timeout=timeout)
            result['rc'] = returncode
            result['stdout'] = stdout[:MAX_COMMAND_OUTPUT].decode('utf-8', 'replace')
            result['stderr'] = stderr[:65536].decode('utf-8', 'replace')
        except _command.CommandError as exc:
            result['error'] = str(exc)
        result['seconds'] = round(time.monotonic() - started, 4)
        self.commands.append({'argv': list(argv), 'rc': result['rc'], 'error': result['error'],
                              'seconds': result['seconds']})
        if result['error'] is None and result['rc'] != 0:
            first_line = (result['stderr'].strip().splitlines() or [''])[0]
            # The tool may quote the configuration line it refused (a key that an include pulled in).
            result['error'] = f'exit {result["rc"]}: {redact(first_line[:200])}'
        if result['error']:
            self.warn(f'{" ".join(argv)}: {result["error"]}', mta=mta)
        self._run_cache[key] = result
        return result

    # -- findings about the gather itself --------------------------------------------------
    def warn(self, message: str, where: str | None = None, mta: str | None = None,
             instance: str | None = None, limit: bool = False) -> None:
        """Record a warning once; at most MAX_WARNINGS are kept (`finish` counts the rest).

        `limit`: the warning says that a limit was reached or a file refused; MAX_LIMIT_WARNINGS more
        of those are kept. Call sites quote file text only through `excerpt`; `redact` here is the
        last line of defence against key material."""
        key = (message, where, mta, instance)
        if key in self._warning_keys:
            return
        if len(self.warnings) >= MAX_WARNINGS + (MAX_LIMIT_WARNINGS if limit else 0):
            self.suppressed_warnings[mta] = self.suppressed_warnings.get(mta, 0) + 1
            return
        self._warning_keys.add(key)
        self.warnings.append({'message': _short(redact(message)), 'where': where, 'mta': mta, 'instance': instance})

    def cannot_see(self, what: str, mta: str | None = None) -> None:
        key = (what, mta)
        if key in self._unseen_keys or len(self.unseen) >= MAX_UNSEEN:
            return
        self._unseen_keys.add(key)
        self.unseen.append({'what': _short(redact(what)), 'mta': mta})

    def finish(self) -> None:
        """Close the gather: one warning per MTA that says how many warnings were not kept."""
        for mta, count in sorted(self.suppressed_warnings.items(), key=lambda item: str(item[0])):
            self.warnings.append({'message': f'{count} more warnings not listed (at most {MAX_WARNINGS} are kept)',
                                  'where': None, 'mta': mta, 'instance': None})
        self.suppressed_warnings = {}


def _short(message: str) -> str:
    if len(message) <= MAX_WARNING_CHARS:
        return message
    return f'{message[:MAX_WARNING_CHARS]}... [{len(message) - MAX_WARNING_CHARS} more characters not shown]'
