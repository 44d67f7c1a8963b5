# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one place that runs external commands (openssl, postconf, exim, doveconf).

The engine runs inside modules and on the controller (action and filter plugins), where no
AnsibleModule and so no run_command exists; every command therefore goes through here, with a
timeout, no shell, no standard input unless given, and output bounded by the caller.
"""

from __future__ import annotations

import subprocess

# The directories the MTAs' own tools (postconf, postfix, exim, doveconf, smtpd) are looked up in and
# run with: never the caller's PATH, which may hold anything. No MTA's private daemon directory
# (/usr/lib/postfix/sbin, /usr/libexec/postfix): those hold daemons whose names are other MTAs'
# tools (Postfix's `smtpd` daemon is not OpenSMTPD's `smtpd`).
TOOL_PATH = ('/usr/sbin', '/usr/bin', '/sbin', '/bin', '/usr/local/sbin', '/usr/local/bin')


class CommandError(Exception):
    """The command could not run or did not finish in time (its exit status is not an error here)."""


def run(argv: list, input_bytes: bytes | None = None, env: dict | None = None, timeout: float = 30.0) -> tuple:
    """(returncode, stdout bytes, stderr bytes); CommandError when it cannot run or times out."""
    try:
        # pylint: disable-next=ansible-bad-function
        completed = subprocess.run(argv, input=input_bytes, stdin=None if input_bytes is not None else subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=timeout,
                                   check=False)
    except subprocess.TimeoutExpired:
        raise CommandError(f'timed out after {timeout:g} s')
    except (OSError, subprocess.SubprocessError) as exc:
        raise CommandError(str(getattr(exc, 'strerror', None) or exc))
    return completed.returncode, completed.stdout, completed.stderr
