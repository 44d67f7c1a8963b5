# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every part of the mail server lab shares: its error, the marker in its processes'
environment, the resolver its daemons see, and small file and account look-ups."""

from __future__ import annotations

from pathlib import Path

# Every process the lab starts gets MARKER=<root> in its environment, for people reading `ps e`.
# stop() does not rely on it (Dovecot and OpenSMTPD overwrite theirs): see lab_proc.is_lab_process().
MARKER = 'MAILSEC_LAB'

# The resolver the daemons see. Nothing listens there, so a lookup fails at once on loopback
# instead of leaving the machine; tests bind a sink on it to prove that no daemon asks at all.
UNUSED_RESOLVER = '127.0.99.53'


class LabError(RuntimeError):
    """The lab could not do what was asked; the message says which daemon and why."""


def clean_environment(root: Path) -> dict[str, str]:
    """The environment of every command the lab runs: nothing of the caller's (proxies, locale,
    PATH) reaches a daemon or openssl."""
    return {'PATH': '/usr/sbin:/usr/bin:/sbin:/bin', 'LANG': 'C', 'TZ': 'UTC', MARKER: str(root)}


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors='replace')
    except OSError:
        return ''
    return '\n'.join(text.splitlines()[-lines:])


def user_id(name: str) -> int:
    import pwd  # pylint: disable=import-outside-toplevel
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        raise LabError(f'user {name} does not exist -- run tests/lab/install.sh') from None


def group_id(name: str) -> int:
    import grp  # pylint: disable=import-outside-toplevel
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise LabError(f'group {name} does not exist -- run tests/lab/install.sh') from None
