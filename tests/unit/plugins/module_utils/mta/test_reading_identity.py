# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Whose eyes read the key: the live daemon's identity first, the configuration's user when
nothing runs, unknown when neither can be read."""

from __future__ import annotations

import os

EXIM_CONF = 'local_interfaces = 127.0.20.7\nexim_user = exim-boxed\nbegin routers\n'
STATUS = 'Name:\t{comm}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t{gid}\t{gid}\t{gid}\t{gid}\nGroups:\t{groups}\n'


def status(host, pid: int, comm: str, uid: int, gid: int, groups=()) -> None:
    text = STATUS.format(comm=comm, uid=uid, gid=gid, groups=' '.join(str(item) for item in groups))
    host.write(f'/proc/{pid}/status', text, dedent=False)


def exim_daemon(host) -> None:
    host.write('/etc/exim4/exim4.conf', EXIM_CONF)
    host.process(700, 'exim4', ['/usr/sbin/exim4', '-C', '/etc/exim4/exim4.conf', '-bd', '-q30m'])
    status(host, 700, 'exim4', 0, 0)


def gather_exim(host) -> dict:
    return host.gather(mtas=['exim'], config_paths={'exim': ['/etc/exim4/exim4.conf']})


def test_user_from_the_daemons_own_passwd(host):
    exim_daemon(host)
    # The host's passwd does not know the user; the daemon's own root does.
    host.write('/etc/passwd', 'root:x:0:0:root:/root:/bin/sh\n')
    host.write('/proc/700/root/etc/passwd', 'root:x:0:0::/:/bin/sh\nexim-boxed:x:150:151::/:/sbin/nologin\n')
    host.write('/proc/700/root/etc/group', 'exim-boxed:x:151:\nssl-cert:x:111:exim-boxed,other\n')
    result = gather_exim(host)
    identity = result['mtas'][0]['reading_identity']
    assert (identity['name'], identity['uid'], identity['gids']) == ('exim-boxed', 150, [111, 151])
    assert '/proc/700/root/etc/passwd' in identity['source']
    assert result['listeners'][0]['reader_identity']['uid'] == 150


def test_a_child_running_as_the_user_shows_the_real_ids(host):
    exim_daemon(host)
    host.write('/proc/700/root/etc/passwd', 'root:x:0:0::/:/bin/sh\nexim-boxed:x:160:161::/:/sbin/nologin\n')
    host.write('/proc/700/root/etc/group', '')
    # A local delivery running as its recipient is not the reader; the receiving child is.
    host.process(701, 'exim4', ['/usr/sbin/exim4', '-Mc', 'x'], ppid=700)
    status(host, 701, 'exim4', 1001, 1001, groups=[1001])
    host.process(702, 'exim4', ['/usr/sbin/exim4', '-bd', '-q30m'], ppid=700)
    status(host, 702, 'exim4', 160, 161, groups=[161, 170])
    identity = gather_exim(host)['mtas'][0]['reading_identity']
    assert (identity['uid'], identity['gids']) == (160, [161, 170])
    assert 'child pid 702' in identity['source']


def test_unknown_when_the_daemon_user_cannot_be_found(host):
    exim_daemon(host)
    host.write('/proc/700/root/etc/passwd', 'root:x:0:0::/:/bin/sh\n')
    identity = gather_exim(host)['mtas'][0]['reading_identity']
    assert identity['uid'] is None
    assert 'exim-boxed not found' in identity['reason']


def test_configuration_user_when_nothing_runs(host):
    host.write('/etc/exim4/exim4.conf', EXIM_CONF)
    host.write('/etc/passwd', 'root:x:0:0::/:/bin/sh\nexim-boxed:x:150:151::/:/sbin/nologin\n')
    host.write('/etc/group', 'ssl-cert:x:111:exim-boxed\n')
    identity = gather_exim(host)['mtas'][0]['reading_identity']
    assert (identity['uid'], identity['gids'], identity['live']) == (150, [111, 151], False)
    assert 'no daemon runs' in identity['source']
    os.remove(host.path('/etc/passwd'))
    identity = gather_exim(host)['mtas'][0]['reading_identity']
    assert identity['uid'] is None and 'could not be read' in identity['reason']


def test_a_rootless_master_reads_as_itself(host):
    host.write('/etc/smtpd.conf', 'listen on 127.0.41.1\n')
    host.process(800, 'smtpd', ['/usr/sbin/smtpd', '-f', '/etc/smtpd.conf'])
    status(host, 800, 'smtpd', 1000, 1000, groups=[1000, 27])
    host.write('/proc/800/root/etc/passwd', 'mailer:x:1000:1000::/:/bin/sh\n')
    host.write('/proc/800/root/etc/group', '')
    identity = host.gather(mtas=['opensmtpd'])['mtas'][0]['reading_identity']
    assert (identity['name'], identity['uid'], identity['gids']) == ('mailer', 1000, [27, 1000])
    assert 'live daemon pid 800' in identity['source']
