# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Files that are not what they seem: unrendered templates, and files of another kind given
as an MTA's configuration.

Configuration management keeps MTA configurations as templates (Jinja2, ERB, Go templates,
placeholder substitution). Such a file is not what the daemon reads: whatever it says about
listeners and certificates may change when it is rendered, so the adapters warn and the
listeners it yields are marked uncertain. Warnings name the construct and its line, never
more than a short, marker-only excerpt.
"""

from __future__ import annotations

import re

# (kind, pattern): markers of an unrendered template. Only shapes that no MTA configuration
# syntax uses: Exim and Postfix use ${...} and $name, Dovecot %{...} and %u, m4 `...'.
TEMPLATE_MARKERS = (
    # `{{ name }}` with spaces, or Go's `{{.Name}}`: Exim's `{{...}}` string arms never look like these.
    ('Jinja2/Go template expression', re.compile(r'\{\{-?\s+[^{}\n]{1,200}?\s+-?\}\}|\{\{\.[A-Za-z_][\w.]*\}\}')),
    ('Jinja2 statement', re.compile(r'\{%-?\s*(?:if|for|set|include|macro|block|extends|raw|else|elif|end\w*)\b[^\n]{0,200}?%\}')),
    ('Jinja2 comment', re.compile(r'\{#[^\n]{0,200}?#\}')),
    ('ERB/EPP tag', re.compile(r'<%[=#-]?[^\n]{0,200}?%>')),
    ('PH_ placeholder', re.compile(r'\bPH_[A-Z][A-Z0-9_]{2,}\b')),
    ('@@VAR@@ placeholder', re.compile(r'@@[A-Za-z_][A-Za-z0-9_]{1,60}@@')),
    ('%%VAR%% placeholder', re.compile(r'%%[A-Z_][A-Z0-9_]{1,60}%%')),
)

# The shape of other kinds of files, for naming what a file is when it is not the MTA's.
FORMAT_SIGNATURES = (
    ('a Cyrus SASL configuration (smtpd.conf of libsasl2)',
     re.compile(r'^\s*(?:pwcheck_method|mech_list|saslauthd_path|auxprop_plugin|sasldb_path|log_level|'
                r'sql_\w+|ldapdb_\w+)\s*:', re.MULTILINE)),
    ('a Postfix main.cf', re.compile(r'^\s*(?:smtpd?_\w+|myhostname|mydestination|inet_interfaces|compatibility_level|'
                                     r'relayhost|mynetworks|\w+_maps|\w+_directory)\s*=', re.MULTILINE)),
    ('a Postfix master.cf', re.compile(r'^\S+\s+(?:inet|unix|fifo|pass)\s+[-ny]\s+[-ny]\s+[-ny]\s', re.MULTILINE)),
    ('an Exim configuration', re.compile(r'^\s*(?:begin\s+(?:acl|routers|transports|authenticators|rewrite|retry)|'
                                         r'daemon_smtp_ports|tls_advertise_hosts|primary_hostname|local_interfaces|'
                                         r'tls_certificate|exim_user|\.include|\.ifn?def)\b', re.MULTILINE)),
    ('a Dovecot configuration', re.compile(r'^\s*(?:(?:protocols|ssl_cert|ssl_key|ssl_server_cert_file|listen|'
                                           r'mail_location|ssl)\s*=|(?:service|protocol|local|inet_listener)\s+\S+\s*\{|'
                                           r'!include)', re.MULTILINE)),
    ('an OpenSMTPD smtpd.conf', re.compile(r'^\s*(?:listen\s+on|pki\s+\S+\s+(?:cert|key|certificate)|'
                                           r'action\s+"?\w|match\s+(?:from|for))\b', re.MULTILINE)),
    ('a sendmail.cf', re.compile(r'^(?:O\s*DaemonPortOptions|V\d+/\w+|R\$)', re.MULTILINE)),
    ('a sendmail.mc (m4 source)', re.compile(r'^\s*(?:DAEMON_OPTIONS|FEATURE|OSTYPE|MAILER)\s*\(`', re.MULTILINE)),
    ('a shell script', re.compile(r'\A#!\s*/')),
    ('an HTML or XML document', re.compile(r'\A\s*<(?:!DOCTYPE|html|\?xml)', re.IGNORECASE)),
    ('a PEM file (certificate or key)', re.compile(r'^-----BEGIN [A-Z ]+-----', re.MULTILINE)),
)

MAX_MARKERS = 5
# The signatures above that are each MTA's own, and how a warning names its configuration.
OWN_FORMATS = {
    'postfix': (('a Postfix main.cf', 'a Postfix master.cf'), 'a Postfix configuration'),
    'exim': (('an Exim configuration',), 'an Exim configuration'),
    'dovecot': (('a Dovecot configuration',), 'a Dovecot configuration'),
    'opensmtpd': (('an OpenSMTPD smtpd.conf',), 'an OpenSMTPD smtpd.conf'),
    'sendmail': (('a sendmail.cf', 'a sendmail.mc (m4 source)'), 'a sendmail.cf or sendmail.mc'),
}


def template_markers(text: str) -> list:
    """[(line number, kind)] of template markers in the text, at most MAX_MARKERS."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for kind, pattern in TEMPLATE_MARKERS:
            if pattern.search(line):
                found.append((number, kind))
                break
        if len(found) >= MAX_MARKERS:
            break
    return found


def check_template(ctx, path: str, text: str, mta: str) -> list:
    """Warn once per file when it is an unrendered template; remember it for the listeners it
    yields (`templated_files`). Returns the markers found."""
    memo = ctx.memo.setdefault('templated_files', {})
    if path in memo:
        return memo[path]
    markers = template_markers(text)
    memo[path] = markers
    if markers:
        kinds = sorted({kind for _number, kind in markers})
        lines = ', '.join(str(number) for number, _kind in markers)
        ctx.warn(f'{path} is an unrendered template ({", ".join(kinds)} at line {lines}), not a configuration '
                 f'{mta} reads: what it yields is uncertain until it is rendered', where=f'{path}:{markers[0][0]}',
                 mta=mta)
    return markers


def guess_format(text: str, exclude: str | None = None) -> str | None:
    """What kind of file the text looks like (a phrase), or None."""
    for name, pattern in FORMAT_SIGNATURES:
        if exclude and exclude in name:
            continue
        if pattern.search(text):
            return name
    return None


def not_this_mta(ctx, path: str, text: str, mta: str, label: str, first_unknown: str | None) -> None:
    """Warn that a file given as `label` (e.g. 'an OpenSMTPD smtpd.conf') has no statement of it."""
    guess = guess_format(text, exclude=label.split(' ', 1)[-1] if label else None)
    what = f'; it looks like {guess}' if guess else ''
    first = f' (first line not understood: {first_unknown})' if first_unknown else ''
    ctx.warn(f'{path} does not look like {label}: none of its statements is one{first}{what}',
             where=path, mta=mta)


def templated_where(ctx, paths) -> list:
    """['file:line (kind)'] for the templated files among `paths`."""
    memo = ctx.memo.get('templated_files') or {}
    found = []
    for path in paths:
        for number, kind in memo.get(path) or []:
            found.append(f'{path}:{number} ({kind})')
            break
    return found


def foreign_format(text: str, mta: str) -> str | None:
    """What the text looks like when it shows no statement of `mta`'s own and the shape of
    another kind of file (a Cyrus SASL smtpd.conf given as OpenSMTPD's, a PEM key given as a
    configuration); else None."""
    own, _label = OWN_FORMATS.get(mta, ((), ''))
    for name, pattern in FORMAT_SIGNATURES:
        if name in own and pattern.search(text):
            return None
    for name, pattern in FORMAT_SIGNATURES:
        if name not in own and pattern.search(text):
            return name
    return None
