# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading hostile files on a managed host, and making what they say safe to report.

Host inspection runs as root and reads files that any local user or broken package may have
shaped. Every file it reads (configurations, includes, certificates, keys, chain files, trust
bundles) goes through `read_regular`: regular files only, never a device, FIFO or directory (a
FIFO would block forever, /dev/zero would never end), opened without blocking and checked again
after opening, and never more than a size cap.

What a file says reaches the result only as a short `excerpt` that withholds anything that looks
like key material, and every string of the result passes `json_safe` so that a file name that
is not UTF-8 becomes an escaped representation instead of failing the task.
"""

from __future__ import annotations

import os
import re
import stat

# PEM armour of any kind: a configuration file never holds one.
PEM_BEGIN = re.compile(rb'-----BEGIN [A-Z0-9 ]{1,60}-----')
# Key containers that are not PEM (PuTTY) and key lines without armour.
KEY_MARKERS = (b'PRIVATE KEY', b'PuTTY-User-Key-File', b'-----BEGIN')
BASE64_LINE = re.compile(rb'^[ \t]*[A-Za-z0-9+/]{40,}={0,2}[ \t]*\r?$', re.M)
# A run of base64 characters long enough to carry part of a key (one PEM line is 64).
BASE64_RUN = re.compile(r'[A-Za-z0-9+/]{20,}={0,2}')
EXCERPT_CHARS = 40
# No string of a result is longer: a configuration value of megabytes (a hostile list of addresses)
# would otherwise be copied into every listener's evidence.
MAX_RESULT_STRING = 4096
WITHHELD = '[withheld: looks like key material]'


class RefusedFile(OSError):
    """A file that is not read: not a regular file, or larger than the cap.

    An OSError, so that callers that already report `exc.strerror` report the reason.
    """

    def __init__(self, reason: str):
        super().__init__(0, reason)


def file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, 'a directory'), (stat.S_ISFIFO, 'a FIFO'), (stat.S_ISCHR, 'a character device'),
                       (stat.S_ISBLK, 'a block device'), (stat.S_ISSOCK, 'a socket')):
        if test(mode):
            return name
    return 'not a regular file'


def read_regular(path: str, limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; raises OSError (RefusedFile when
    the file is not regular or too large). Never blocks and never reads more than limit + 1."""
    # stat first: opening some devices has side effects (a tape rewinds), so they are never opened.
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise RefusedFile(f'{file_kind(info.st_mode)}, not a regular file: not read')
    if info.st_size > limit:
        raise RefusedFile(f'{info.st_size} bytes, more than the {limit} read at most: not read')
    flags = os.O_RDONLY | getattr(os, 'O_NONBLOCK', 0) | getattr(os, 'O_NOCTTY', 0) | getattr(os, 'O_CLOEXEC', 0)
    descriptor = os.open(path, flags)
    try:
        # The name may have been swapped for a FIFO or device since the stat above.
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise RefusedFile(f'{file_kind(info.st_mode)}, not a regular file: not read')
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(descriptor, min(limit + 1 - size, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(descriptor)
    if size > limit:
        raise RefusedFile(f'more than the {limit} bytes read at most (it grew while read): not read')
    return b''.join(chunks)


def key_material_reason(data: bytes) -> str | None:
    """Why a file's bytes must not be parsed as configuration, or None.

    A configuration never holds PEM armour, a private key or binary data; a file that does is
    most likely a key or certificate that an include or `config_paths` points at by mistake (or
    on purpose), and no line of it may reach a warning.
    """
    if b'\0' in data:
        return 'binary data (NUL bytes), not a configuration file'
    if any(marker in data for marker in KEY_MARKERS) or PEM_BEGIN.search(data):
        return 'PEM or private key material, not a configuration file'
    lines = [line for line in data.splitlines() if line.strip() and not line.lstrip().startswith(b'#')]
    blobs = len(BASE64_LINE.findall(data))
    if blobs >= 2 and blobs * 2 >= len(lines):
        return 'mostly base64 blobs (key material?), not a configuration file'
    return None


def looks_secret(text: str) -> bool:
    """Whether a piece of file text may carry key material: PEM markers or a base64 run that
    mixes upper case, lower case and digits (configuration words and paths do not)."""
    if 'PRIVATE KEY' in text or '-----BEGIN' in text or '-----END' in text:
        return True
    return any(_mixed(match.group(0)) for match in BASE64_RUN.finditer(text))


def _mixed(run: str) -> bool:
    return (any(char.isupper() for char in run) and any(char.islower() for char in run)
            and any(char.isdigit() or char in '+/' for char in run))


def excerpt(text: str, limit: int = EXCERPT_CHARS, quoted: bool = True) -> str:
    """A short excerpt of a file line for a warning (quoted, or as it is when `quoted` is False);
    nothing of a line that may carry key material."""
    text = str(text)
    if looks_secret(text):
        return WITHHELD
    short = text[:limit]
    return (repr(short) if quoted else repr(short)[1:-1]) + ('...' if len(text) > limit else '')


def redact(message: str) -> str:
    """A message with anything that may be key material replaced (the last line of defence:
    call sites quote through `excerpt`)."""
    if 'PRIVATE KEY' in message or '-----BEGIN' in message or '-----END' in message:
        message = re.sub(r'-----(BEGIN|END)[^-\n]{0,80}-----', '[PEM marker withheld]', message)
        message = message.replace('PRIVATE KEY', '[withheld]')
    return BASE64_RUN.sub(lambda match: '[withheld]' if _mixed(match.group(0)) else match.group(0), message)


def safe_text(text: str, limit: int | None = None) -> str:
    """A string that JSON (and Ansible) accepts: file names that are not UTF-8 come from the OS
    as lone surrogates (surrogateescape); they become visible escapes such as \\xff. With `limit`,
    a longer string is cut and says so."""
    if limit is not None and len(text) > limit:
        text = f'{text[:limit]}... [{len(text) - limit} more characters not shown]'
    try:
        text.encode('utf-8')
        return text
    except UnicodeEncodeError:
        pass
    out = []
    for char in text:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f'\\x{code - 0xDC00:02x}')
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f'\\u{code:04x}')
        else:
            out.append(char)
    return ''.join(out)


def json_safe(value, limit: int | None = MAX_RESULT_STRING):
    """`value` with every string (dict keys included) made safe by `safe_text` and cut at `limit`;
    containers are changed in place, and only where something changed."""
    if isinstance(value, str):
        return safe_text(value, limit)
    if isinstance(value, dict):
        changed = False
        rebuilt = {}
        for key, item in value.items():
            safe_key = safe_text(key, limit) if isinstance(key, str) else key
            safe_item = json_safe(item, limit)
            changed = changed or safe_key is not key or safe_item is not item
            rebuilt[safe_key] = safe_item
        if not changed:
            return value
        value.clear()
        value.update(rebuilt)
        return value
    if isinstance(value, list):
        for index, item in enumerate(value):
            safe_item = json_safe(item, limit)
            if safe_item is not item:
                value[index] = safe_item
        return value
    if isinstance(value, tuple):
        return tuple(json_safe(item, limit) for item in value)
    return value
