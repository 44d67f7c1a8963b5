# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The compile-once finder: modules from a zip, each source compiled once, same modules as zipimport gives."""

from __future__ import annotations

import builtins
import importlib
import sys
import zipfile
import zipimport

import pytest

from ansible_collections.mailsec.starttls.plugins.module_utils import _zipload

SOURCES = {
    'zlpkg/__init__.py': 'MARK = "package"\n',
    'zlpkg/sub.py': 'from zlpkg import inner\nVALUE = inner.leaf.LEAF + 1\n',
    'zlpkg/inner/__init__.py': 'from zlpkg.inner import leaf\n',
    'zlpkg/inner/leaf.py': 'LEAF = 41\n',
    'zlother/__init__.py': 'OTHER = True\n',
}


@pytest.fixture
def archive(tmp_path, monkeypatch):
    """A zip with the packages above on sys.path, and a count of compile() calls per file name."""
    path = tmp_path / 'payload.zip'
    with zipfile.ZipFile(path, 'w') as payload:
        for name, text in SOURCES.items():
            payload.writestr(name, text)
    monkeypatch.syspath_prepend(str(path))
    compiled: dict = {}
    real_compile = builtins.compile

    def counting_compile(source, filename, *args, **kwargs):
        compiled[filename] = compiled.get(filename, 0) + 1
        return real_compile(source, filename, *args, **kwargs)

    monkeypatch.setattr(builtins, 'compile', counting_compile)
    yield str(path), compiled
    for name in [name for name in sys.modules if name.split('.')[0] in ('zlpkg', 'zlother')]:
        del sys.modules[name]
    importlib.invalidate_caches()


needs_exec_module = pytest.mark.skipif(not hasattr(zipimport.zipimporter, 'exec_module'),
                                       reason='zipimporter.exec_module needs Python >= 3.10')


@needs_exec_module
def test_each_source_compiled_once_and_modules_whole(archive, monkeypatch):
    path, compiled = archive
    monkeypatch.setattr(sys, 'meta_path', [_zipload.CompileOnceFinder('zlpkg.')] + sys.meta_path)
    module = importlib.import_module('zlpkg.sub')
    assert module.VALUE == 42
    package = sys.modules['zlpkg.inner']
    assert package.__path__ == [f'{path}/zlpkg/inner']
    assert package.__file__ == f'{path}/zlpkg/inner/__init__.py'
    assert module.__file__ == f'{path}/zlpkg/sub.py'
    assert isinstance(module.__loader__, zipimport.zipimporter)
    in_zip = {name: count for name, count in compiled.items() if name.startswith(path)}
    # The top package is outside the prefix: zipimport loads it as usual (twice); the rest once.
    assert in_zip == {f'{path}/zlpkg/__init__.py': 2, f'{path}/zlpkg/sub.py': 1,
                      f'{path}/zlpkg/inner/__init__.py': 1, f'{path}/zlpkg/inner/leaf.py': 1}


def test_zipimport_alone_compiles_twice(archive):
    """What the finder is for: without it every module from the zip is compiled twice."""
    path, compiled = archive
    importlib.import_module('zlpkg.sub')
    assert compiled[f'{path}/zlpkg/sub.py'] == 2
    assert compiled[f'{path}/zlpkg/inner/leaf.py'] == 2


@needs_exec_module
def test_other_names_and_missing_modules(archive, monkeypatch):
    finder = _zipload.CompileOnceFinder('zlpkg.')
    monkeypatch.setattr(sys, 'meta_path', [finder] + sys.meta_path)
    importlib.import_module('zlpkg')
    package_path = sys.modules['zlpkg'].__path__
    assert finder.find_spec('zlother', None) is None
    assert finder.find_spec('zlpkg.nothing', package_path) is None
    assert finder.find_spec('zlpkg.sub', None) is None
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module('zlpkg.nothing')
    assert importlib.import_module('zlother').OTHER is True


def test_install_only_from_a_zip(monkeypatch):
    """Imported from the file system (as here) the module installs nothing."""
    monkeypatch.setattr(sys, 'meta_path', [finder for finder in sys.meta_path
                                           if not isinstance(finder, _zipload.CompileOnceFinder)])
    assert _zipload.install() is False
    assert not any(isinstance(finder, _zipload.CompileOnceFinder) for finder in sys.meta_path)
