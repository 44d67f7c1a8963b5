# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The adapter registry: cheap detection in step with each adapter's detect(), adapters imported
only for the MTAs a host has."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ansible_collections.mailsec.starttls.plugins.module_utils import _mta
from ansible_collections.mailsec.starttls.plugins.module_utils._mta import ADAPTERS, REGISTRY, get_adapter, may_be_present
from ansible_collections.mailsec.starttls.plugins.module_utils._mta.base import MtaAdapter
from ansible_collections.mailsec.starttls.plugins.module_utils._mta.context import HostContext


class RecordingContext(HostContext):
    """A host context over an empty or nearly empty root that notes every path asked about."""

    def __init__(self, root: str) -> None:
        super().__init__(root=root, use_tools='never')
        self.asked: list = []
        self.options = {}
        self.processes = []

    def exists(self, host_path: str) -> bool:
        self.asked.append(host_path)
        return super().exists(host_path)


def _root_with(tmp_path, name: str, host_path: str | None) -> str:
    root = tmp_path / name
    root.mkdir()
    if host_path:
        real = root / host_path.lstrip('/')
        real.parent.mkdir(parents=True, exist_ok=True)
        real.write_text('')
    return str(root)


@pytest.mark.parametrize('mta', sorted(REGISTRY))
def test_cheap_detection_covers_every_default_the_adapter_looks_at(tmp_path, mta):
    entry = REGISTRY[mta]
    empty = RecordingContext(_root_with(tmp_path, 'empty', None))
    assert get_adapter(mta).detect(empty) == []
    assert not entry.may_be_present(empty)
    asked = sorted(set(empty.asked))
    assert asked, f'{mta} detect() looked at no path at all'
    for index, host_path in enumerate(asked):
        ctx = RecordingContext(_root_with(tmp_path, f'only{index}', host_path))
        found = get_adapter(mta).detect(ctx)
        if found:
            # The adapter finds the MTA from this file alone: the registry must look at it too.
            assert host_path in entry.paths, f'{mta}: {host_path} makes detect() find an instance'
            assert entry.may_be_present(RecordingContext(ctx.root))
    for index, host_path in enumerate(entry.paths):
        # And no registry path is dead weight: each one alone is enough for detect() (Exim's Debian
        # paths on a Debian system).
        alone = _root_with(tmp_path, f'listed{index}', host_path)
        on_debian = _root_with(tmp_path, f'debian{index}', host_path)
        (tmp_path / f'debian{index}' / 'etc').mkdir(exist_ok=True)
        (tmp_path / f'debian{index}' / 'etc' / 'debian_version').write_text('12.8\n')
        assert any(get_adapter(mta).detect(RecordingContext(root)) for root in (alone, on_debian)), \
            f'{mta}: {host_path} alone finds nothing'


def test_cheap_detection_from_processes_and_options(tmp_path):
    ctx = RecordingContext(_root_with(tmp_path, 'empty', None))
    assert not any(may_be_present(ctx, name) for name in REGISTRY)
    ctx.processes = [{'pid': 7, 'mta': 'dovecot', 'role': 'master'}]
    assert [name for name in REGISTRY if may_be_present(ctx, name)] == ['dovecot']
    ctx.processes = []
    ctx.options = {'config_paths': {'sendmail': ['/srv/mail/sendmail.cf']}, 'binaries': {'exim': '/opt/exim'}}
    assert sorted(name for name in REGISTRY if may_be_present(ctx, name)) == ['exim', 'sendmail']
    # Names the registry does not know (a class set by hand) are never skipped.
    assert may_be_present(ctx, 'homemade')


def test_adapter_mapping_is_lazy_and_takes_extra_classes():
    assert list(ADAPTERS)[:len(REGISTRY)] == list(REGISTRY) == list(_mta.MTA_NAMES)
    assert 'postfix' in ADAPTERS and 'nonesuch' not in ADAPTERS
    assert ADAPTERS['exim'].name == 'exim' and issubclass(ADAPTERS['exim'], MtaAdapter)

    class Homemade(MtaAdapter):
        name = 'homemade'

    ADAPTERS['homemade'] = Homemade
    try:
        assert 'homemade' in list(ADAPTERS) and len(ADAPTERS) == len(REGISTRY) + 1
        assert isinstance(get_adapter('homemade'), Homemade)
    finally:
        del ADAPTERS['homemade']
    assert 'homemade' not in ADAPTERS and len(ADAPTERS) == len(REGISTRY)
    with pytest.raises(KeyError):
        ADAPTERS['homemade']  # pylint: disable=pointless-statement


GATHER_SCRIPT = r'''
import json, sys
from ansible_collections.mailsec.starttls.plugins.module_utils._host import gather_host
from ansible_collections.mailsec.starttls.plugins.module_utils._mta import ADAPTERS
result = gather_host({'root': sys.argv[1], 'use_tools': 'never', 'scan_sockets': False})
prefix = 'ansible_collections.mailsec.starttls.plugins.module_utils._mta.'
print(json.dumps({'mtas': sorted({item['mta'] for item in result['mtas']}),
                  'imported': sorted(name for name in ADAPTERS if prefix + name in sys.modules),
                  'loaded': ADAPTERS.loaded()}))
'''


def test_a_host_imports_only_the_adapters_of_its_mtas(tmp_path):
    root = tmp_path / 'root'
    (root / 'etc/postfix').mkdir(parents=True)
    (root / 'etc/postfix/main.cf').write_text('inet_interfaces = loopback-only\n')
    (root / 'etc/postfix/master.cf').write_text('smtp inet n - y - - smtpd\n')
    (root / 'etc/dovecot').mkdir(parents=True)
    (root / 'etc/dovecot/dovecot.conf').write_text('protocols = imap\n')
    (root / 'proc').mkdir()
    # A fresh interpreter: this one has imported every adapter for the other tests already.
    outcome = subprocess.run([sys.executable, '-c', GATHER_SCRIPT, str(root)], capture_output=True, text=True,
                             env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)), check=False)
    assert outcome.returncode == 0, outcome.stderr
    report = json.loads(outcome.stdout)
    assert report['mtas'] == ['dovecot', 'postfix']
    assert report['imported'] == ['dovecot', 'postfix']
    assert report['loaded'] == ['postfix', 'dovecot']
