# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The store inspector read with an identity taken from the live daemon, or an unknown one."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from ansible_collections.mailsec.starttls.plugins.module_utils import _certs

FIXTURES = Path(__file__).parent / 'fixtures' / 'certs'
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason='needs root to give files to other owners')
# Ids that no passwd on a test machine is expected to name: the daemon's own, in its container.
BOXED_UID, BOXED_GID = 64123, 64124


@pytest.fixture
def group_key():
    directory = Path(tempfile.mkdtemp(prefix='mailsec-identity-test-'))
    directory.chmod(0o755)
    for name in ('leaf-rsa.pem', 'leaf-rsa.key', 'intermediate-ca.pem'):
        shutil.copyfile(FIXTURES / name, directory / name)
        (directory / name).chmod(0o644)
    key = directory / 'leaf-rsa.key'
    key.chmod(0o640)
    os.chown(key, 0, BOXED_GID)
    yield directory
    shutil.rmtree(directory)


def inspect(directory, reader):
    return _certs.inspect_store(str(directory / 'leaf-rsa.pem'), str(directory / 'leaf-rsa.key'),
                                [str(directory / 'intermediate-ca.pem')], reader_user=reader)


@needs_root
def test_identity_from_the_daemon_reads_its_group_key(group_key):
    result = inspect(group_key, {'name': 'exim-boxed', 'uid': BOXED_UID, 'gids': [BOXED_GID]})
    assert result['key']['readable'] is True
    assert result['key']['exposed'] is False
    assert not [problem for problem in result['problems'] if problem['id'] in ('key-unreadable', 'private-key-exposed')]
    assert result['certificate']['readable_by'] == 'exim-boxed'


@needs_root
def test_unknown_identity_is_never_unreadable(group_key):
    result = inspect(group_key, {'name': 'exim-boxed', 'uid': None, 'gids': [], 'reason': 'user not found'})
    assert result['key']['readable'] is None
    assert result['key']['exposed'] is None
    problems = [problem['id'] for problem in result['problems']]
    assert 'key-unreadable' not in problems and 'private-key-exposed' not in problems
    unknown = {entry['check']: entry['reason'] for entry in result['unknown']}
    assert 'user not found' in unknown['key-unreadable']
    assert 'private-key-exposed' in unknown
    assert result['usable'] is None
