# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""HostContext: the only door through which host inspection touches the machine.

Every file read, directory listing and command run by an MTA adapter goes through one
HostContext. It prefixes paths with an optional `root` (unit tests point it at a fixture
tree instead of /), caches what it read, never writes, and collects the warnings and the
things it could not see so that one odd configuration never stops the whole gather.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import stat
import time

from ansible_collections.mailsec.starttls.plugins.module_utils import _command

# Configuration files larger than this are not MTA configuration; refuse instead of reading.
MAX_CONFIG_BYTES = 4 * 1024 * 1024
COMMAND_TIMEOUT = 10.0
MAX_COMMAND_OUTPUT = 4 * 1024 * 1024

# A minimal PATH for the MTAs' own tools: never the caller's PATH, which may hold anything.
TOOL_PATH = ('/usr/sbin', '/usr/bin', '/sbin', '/bin', '/usr/local/sbin', '/usr/local/bin',
             '/usr/lib/postfix/sbin', '/usr/libexec/postfix')


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
        self._text_cache: dict = {}
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
        """The text of a file, or None (with a note on what could not be seen)."""
        if host_path in self._text_cache:
            return self._text_cache[host_path]
        real = self.resolve(host_path)
        text = None
        try:
            info = os.stat(real)
            if not stat.S_ISREG(info.st_mode):
                self.warn(f'{host_path} is not a regular file', mta=mta)
            elif info.st_size > MAX_CONFIG_BYTES:
                self.warn(f'{host_path} is {info.st_size} bytes, larger than any configuration; not read',
                          mta=mta)
            else:
                with open(real, 'rb') as handle:
                    text = handle.read(MAX_CONFIG_BYTES).decode('utf-8', 'replace')
        except PermissionError:
            self.cannot_see(f'{host_path}: permission denied', mta=mta)
        except FileNotFoundError:
            if required:
                self.warn(f'{host_path}: no such file', mta=mta)
        except OSError as exc:
            self.warn(f'{host_path}: {exc.strerror or exc}', mta=mta)
        self._text_cache[host_path] = text
        return text

    def pem_labels(self, host_path: str) -> list | None:
        """The PEM block labels of a file ('CERTIFICATE', 'PRIVATE KEY', ...), in order.

        Only the BEGIN lines are kept: key material is never returned or logged.
        """
        try:
            labels = []
            with open(self.resolve(host_path), 'rb') as handle:
                for raw_line in handle:
                    if raw_line.startswith(b'-----BEGIN ') and raw_line.rstrip().endswith(b'-----'):
                        labels.append(raw_line.strip()[11:-5].decode('ascii', 'replace'))
            return labels
        except OSError:
            return None

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
            result['error'] = f'exit {result["rc"]}: {first_line}'
        if result['error']:
            self.warn(f'{" ".join(argv)}: {result["error"]}', mta=mta)
        self._run_cache[key] = result
        return result

    # -- findings about the gather itself --------------------------------------------------
    def warn(self, message: str, where: str | None = None, mta: str | None = None,
             instance: str | None = None) -> None:
        entry = {'message': message, 'where': where, 'mta': mta, 'instance': instance}
        if entry not in self.warnings:
            self.warnings.append(entry)

    def cannot_see(self, what: str, mta: str | None = None) -> None:
        entry = {'what': what, 'mta': mta}
        if entry not in self.unseen:
            self.unseen.append(entry)
