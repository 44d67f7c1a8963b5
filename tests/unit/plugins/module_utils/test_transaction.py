# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""_transaction: candidate beside the original, validation, atomic swap with backup, nothing changed on failure."""

from __future__ import annotations

import os

import pytest

from ansible_collections.mailsec.starttls.plugins.module_utils import _transaction


@pytest.fixture
def config(tmp_path):
    path = tmp_path / 'main.conf'
    path.write_text('# comment kept\nssl = yes\n')
    path.chmod(0o640)
    return path


def listing(directory):
    return sorted(os.listdir(directory))


def test_unchanged_text_is_no_change_and_writes_nothing(config):
    before = listing(config.parent)
    result = _transaction.apply({str(config): config.read_text()}, validate=lambda c: pytest.fail('validated'))
    assert result['changed'] is False and result['diff'] == [] and result['files'] == []
    assert listing(config.parent) == before


def test_change_swaps_in_with_backup_owner_and_mode_kept(config):
    seen = {}

    def validate(candidates):
        candidate = candidates[str(config)]
        # Beside the original, already holding the new text, while the original is untouched.
        assert os.path.dirname(candidate) == str(config.parent)
        seen['text'] = open(candidate).read()
        seen['original'] = config.read_text()
        return [{'argv': ['check'], 'rc': 0}]

    result = _transaction.apply({str(config): '# comment kept\nssl = no\n'}, validate=validate)
    assert seen == {'text': '# comment kept\nssl = no\n', 'original': '# comment kept\nssl = yes\n'}
    assert result['changed'] is True and result['files'] == [str(config)]
    assert config.read_text() == '# comment kept\nssl = no\n'
    assert oct(config.stat().st_mode & 0o777) == '0o640'
    backup = result['backups'][str(config)]
    assert backup.endswith(_transaction.BACKUP_SUFFIX) and open(backup).read() == '# comment kept\nssl = yes\n'
    assert result['diff'][0]['before'].endswith('ssl = yes\n') and result['diff'][0]['after'].endswith('ssl = no\n')
    assert result['validation'] == [{'argv': ['check'], 'rc': 0}]
    assert not [name for name in listing(config.parent) if 'candidate' in name]


def test_rejected_candidate_leaves_original_byte_identical(config):
    original = config.read_bytes()
    before = listing(config.parent)

    def validate(candidates):
        raise _transaction.EditError('the MTA says no', stage='validate')

    with pytest.raises(_transaction.EditError) as caught:
        _transaction.apply({str(config): 'broken\n'}, validate=validate)
    assert caught.value.stage == 'validate'
    assert config.read_bytes() == original
    assert listing(config.parent) == before


def test_check_mode_validates_but_changes_no_byte(config):
    original = config.read_bytes()
    before = listing(config.parent)
    calls = []
    result = _transaction.apply({str(config): 'ssl = no\n'}, validate=lambda c: calls.append(c) or [],
                                check_mode=True)
    assert result['changed'] is True and result['backups'] == {}
    assert len(calls) == 1
    assert config.read_bytes() == original and listing(config.parent) == before


def test_failed_swap_puts_earlier_files_back(tmp_path, monkeypatch):
    first, second = tmp_path / 'a.cf', tmp_path / 'b.cf'
    first.write_text('a1\n')
    second.write_text('b1\n')
    real_replace = os.replace
    calls = []

    def flaky_replace(source, target):
        calls.append(target)
        if str(target) == str(second) and len(calls) == 2:
            raise OSError(28, 'No space left on device')
        return real_replace(source, target)

    monkeypatch.setattr(_transaction.os, 'replace', flaky_replace)
    with pytest.raises(_transaction.EditError) as caught:
        _transaction.apply({str(first): 'a2\n', str(second): 'b2\n'})
    assert caught.value.stage == 'swap' and 'originals are back' in str(caught.value)
    assert first.read_text() == 'a1\n' and second.read_text() == 'b1\n'


@pytest.mark.parametrize('value', ['a\nb', 'a\rb', 'tab\there', 'nul\x00', 'esc\x1b[0m', 'del\x7f', 'c1\x85'])
def test_control_characters_are_refused(value):
    with pytest.raises(_transaction.EditError) as caught:
        _transaction.refuse_unsafe('certificate', value)
    assert caught.value.stage == 'arguments'


def test_plain_paths_pass():
    assert _transaction.refuse_unsafe('certificate', '/etc/ssl/mail/mx.example.org.crt') == \
        '/etc/ssl/mail/mx.example.org.crt'


def test_restore_puts_the_backup_back(config):
    result = _transaction.apply({str(config): 'ssl = no\n'})
    _transaction.restore(result['backups'][str(config)], str(config))
    assert config.read_text() == '# comment kept\nssl = yes\n'
