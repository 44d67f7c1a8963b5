# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One configuration writer per MTA: each writes the files of one lab instance (its listeners, the
certificate bindings of its scenarios and the isolation settings that keep it off the network)
into that instance's directory. Adding an MTA to the lab adds one writer here."""

from __future__ import annotations

import os

from lab_certs import LabCertificates  # pylint: disable=import-error
from lab_common import MARKER, group_id, user_id  # pylint: disable=import-error
from lab_daemons import Daemon  # pylint: disable=import-error


def configure(daemon: Daemon, certs: LabCertificates) -> Daemon:
    """Create the instance's directory and write its configuration there."""
    daemon.directory.mkdir(parents=True)
    WRITERS[daemon.spec.mta](daemon, certs)
    return daemon


def write_postfix(daemon: Daemon, certs: LabCertificates) -> None:
    spec, directory = daemon.spec, daemon.directory
    conf, queue, data = directory / 'conf', directory / 'queue', directory / 'data'
    for path in (conf, queue, data):
        path.mkdir()
    os.chown(data, user_id('postfix'), -1)   # master refuses to start otherwise
    main = {
        'compatibility_level': '3.6',
        'queue_directory': str(queue),
        'data_directory': str(data),
        'mail_owner': 'postfix',
        'setgid_group': 'postdrop',
        'myhostname': spec.settings['hostname'],
        'mydomain': 'lab.test',
        'myorigin': '$myhostname',
        'mydestination': '',
        # master.cf services name their own IP; Postfix accepts only real interface addresses here.
        'inet_interfaces': 'loopback-only',
        'inet_protocols': 'ipv4',
        'mynetworks': '127.0.0.0/8',
        'smtpd_relay_restrictions': 'reject',
        # Isolation: no DNS, no reverse lookups of clients, nothing delivered, no notices.
        'smtpd_peername_lookup': 'no',
        'smtp_dns_support_level': 'disabled',
        'smtp_host_lookup': 'native',
        'lmtp_host_lookup': 'native',
        'default_transport': 'error:mailsec lab sends no mail',
        'relay_transport': 'error:mailsec lab sends no mail',
        'local_transport': 'error:mailsec lab delivers no mail',
        'notify_classes': '',
        'alias_maps': '',
        'alias_database': '',
        'local_recipient_maps': '',
        'biff': 'no',
        'maillog_file': str(directory / 'maillog'),
        'maillog_file_prefixes': str(certs.root),
        'import_environment': f'MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C {MARKER}',
        'smtpd_tls_loglevel': '1',
    }
    main.update({key: certs.resolve(value) for key, value in spec.settings['main'].items()})
    (conf / 'main.cf').write_text(f'# mailsec lab: Postfix instance {spec.instance}\n'
                                  + ''.join(f'{key} = {value}\n' for key, value in main.items()))
    lines = [f'# mailsec lab: Postfix instance {spec.instance}; one service per listener\n']
    for listener in spec.listeners:
        lines.append(f'{listener.service} inet n - n - - smtpd\n')
        lines.extend(f'  -o {key}={certs.resolve(value)}\n' for key, value in listener.options)
    lines.append(POSTFIX_INTERNAL_SERVICES)
    (conf / 'master.cf').write_text(''.join(lines))


def write_exim(daemon: Daemon, certs: LabCertificates) -> None:
    spec, directory = daemon.spec, daemon.directory
    exim_uid, exim_gid = user_id('Debian-exim'), group_id('Debian-exim')
    for sub in ('spool', 'log'):
        (directory / sub).mkdir()
        os.chown(directory / sub, exim_uid, exim_gid)   # the daemon runs as Debian-exim
    interfaces = ' ; '.join(f'{l.address}.{l.port}' for l in spec.listeners)
    ports = sorted({l.port for l in spec.listeners})
    settings = {
        'primary_hostname': 'exim.lab.test',
        'qualify_domain': 'lab.test',
        'local_interfaces': f'<; {interfaces}',
        'daemon_smtp_ports': ' : '.join(str(p) for p in ports),
        'tls_on_connect_ports': '465',
        'spool_directory': str(directory / 'spool'),
        'log_file_path': str(directory / 'log' / '%slog'),
        'pid_file_path': str(directory / 'exim.pid'),
        'keep_environment': MARKER,
        # Isolation: no reverse lookups, no ident callbacks; no routers so nothing leaves.
        'host_lookup': '',
        'rfc1413_hosts': '',
        'never_users': 'root',
        # Exim retries a failed bind 9 times, 30 s apart; a lab should fail fast instead.
        'daemon_startup_retries': '1',
        'daemon_startup_sleep': '1s',
        'acl_smtp_rcpt': 'lab_reject',
        'tls_advertise_hosts': '*',
    }
    for key in ('tls_certificate', 'tls_privatekey', 'tls_advertise_hosts'):
        if key in spec.settings:
            settings[key] = certs.resolve(spec.settings[key])
    body = ''.join(f'{key} = {value}\n' for key, value in settings.items())
    daemon.config_path.write_text(
        f'# mailsec lab: Exim instance {spec.instance}\n{body}\nbegin acl\n\nlab_reject:\n'
        '  deny message = mailsec lab accepts no mail\n\nbegin routers\n\nbegin transports\n')
    daemon.config_path.chmod(0o644)   # Exim keeps root only for a config nobody else can write
    daemon.pidfile = directory / 'exim.pid'


def write_dovecot(daemon: Daemon, certs: LabCertificates) -> None:
    spec, directory, settings = daemon.spec, daemon.directory, daemon.spec.settings
    (directory / 'mail').mkdir()
    (directory / 'users').write_text('lab:{PLAIN}lab-password-not-secret\n')
    addresses = list(dict.fromkeys(l.address for l in spec.listeners))
    protocols = []
    by_port: dict[int, list[str]] = {}
    for listener in spec.listeners:
        by_port.setdefault(listener.port, []).append(listener.address)
    for protocol, ports in (('imap', (143, 993)), ('pop3', (110, 995)), ('lmtp', (24,)), ('sieve', (4190,))):
        if any(port in by_port for port in ports):
            protocols.append(protocol)
    lines = [
        f'# mailsec lab: Dovecot instance {spec.instance}\n',
        f'instance_name = mailsec-lab-{spec.instance}\n',
        f'base_dir = {directory}/run\n',
        f'state_dir = {directory}/state\n',
        f'log_path = {directory}/dovecot.log\n',
        f'hostname = {settings["hostname"]}\n',
        f'protocols = {" ".join(protocols)}\n',
        # Every inet_listener names its addresses; `listen` only keeps any default one on loopback.
        f'listen = {addresses[0]}\n',
        f'import_environment = TZ {MARKER}\n',
        f'ssl = {settings["ssl"]}\n',
    ]
    cert = settings.get('cert')
    if cert:
        lines += [f'ssl_cert = <{certs.path(cert, "crt")}\n', f'ssl_key = <{certs.path(cert, "key")}\n']
    lines += [
        f'mail_location = maildir:{directory}/mail/%u\n',
        f'passdb {{\n  driver = passwd-file\n  args = {directory}/users\n}}\n',
        f'userdb {{\n  driver = static\n  args = uid=dovecot gid=dovecot home={directory}/mail/%u\n}}\n',
    ]
    services = (('imap-login', 'imap', ((143, 'imap', False), (993, 'imaps', True))),
                ('pop3-login', 'pop3', ((110, 'pop3', False), (995, 'pop3s', True))),
                ('managesieve-login', 'sieve', ((4190, 'sieve', False),)),
                ('lmtp', 'lmtp', ((24, 'lmtp', False),)))
    for service, protocol, listeners in services:
        if protocol not in protocols:
            continue
        lines.append(f'service {service} {{\n')
        for port, name, implicit_tls in listeners:
            if port in by_port:
                lines.append(f'  inet_listener {name} {{\n    address = {", ".join(by_port[port])}\n'
                             f'    port = {port}\n' + ('    ssl = yes\n' if implicit_tls else '') + '  }\n')
            elif protocol != 'lmtp':
                # Without this the login service would add its default listener on `listen`.
                lines.append(f'  inet_listener {name} {{\n    port = 0\n  }}\n')
        lines.append('}\n')
    for address, overrides in settings.get('local', {}).items():
        lines.append(f'local {address} {{\n'
                     + ''.join(f'  {key} = {certs.resolve(value)}\n' for key, value in overrides.items())
                     + '}\n')
    daemon.config_path.write_text(''.join(lines))
    daemon.pidfile = directory / 'run' / 'master.pid'


def write_opensmtpd(daemon: Daemon, certs: LabCertificates) -> None:
    spec, directory = daemon.spec, daemon.directory
    (directory / 'spool').mkdir(mode=0o711)
    (directory / 'spool').chmod(0o711)   # smtpd insists on rwx--x--x
    (directory / 'run').mkdir()
    lines = [f'# mailsec lab: OpenSMTPD instance {spec.instance}\n']
    for pki, (cert, key) in spec.settings['pki'].items():
        lines.append(f'pki {pki} cert "{certs.path(cert, "crt")}"\n')
        lines.append(f'pki {pki} key "{certs.path(key, "key")}"\n')
    for listener in spec.listeners:
        listen = dict(listener.options)['listen']
        lines.append(f'listen on {listener.address} port {listener.port} {listen} hostname smtpd.lab.test\n'
                     .replace('  ', ' '))
    lines.append('match from any for any reject\n')
    daemon.config_path.write_text(''.join(lines))
    daemon.pidfile = directory / 'run' / 'smtpd.pid'


WRITERS = {'postfix': write_postfix, 'exim': write_exim, 'dovecot': write_dovecot, 'opensmtpd': write_opensmtpd}


POSTFIX_INTERNAL_SERVICES = """
# internal services (no chroot: the lab runs from its own directories)
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""
