# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Import this collection's modules from Ansible's module zip compiling each source once.

A module runs from the zip that AnsiballZ sends, and zipimport never caches bytecode; worse,
CPython's zipimporter (3.8 to 3.13 at least) compiles every module it imports twice: its
`find_spec` builds the spec through `get_filename`, which compiles the source only to learn the
file name, and `exec_module` compiles it again. For this collection's ~370 KiB of module_utils
that is 40-60 ms of CPU per host wasted on every run. The finder below answers first for
`ansible_collections.mailsec.starttls.*` found in such a zip: it builds the spec from the
archive's directory (no compiling) and leaves loading to the same zipimporter, which compiles once.

Importing this module installs the finder (a module imports it before the collection's other
modules); installed only when this file itself was imported from a zip (a module run by Ansible) and only
on Python >= 3.10 (the zipimporter's `exec_module`); anywhere else imports go as always.
"""

from __future__ import annotations

import sys
import zipimport
from importlib.machinery import ModuleSpec

PACKAGE_PREFIX = 'ansible_collections.mailsec.starttls.'


class CompileOnceFinder:
    """A meta path finder for the modules under one package prefix inside a zip archive; None for
    anything else (the next finder then looks as usual)."""

    def __init__(self, prefix: str = PACKAGE_PREFIX) -> None:
        self.prefix = prefix

    def find_spec(self, fullname: str, path=None, target=None):
        # pylint: disable=unused-argument
        if not fullname.startswith(self.prefix) or not path:
            return None
        name = fullname.rpartition('.')[2]
        for entry in path:
            importer = sys.path_importer_cache.get(entry)
            if importer is None and isinstance(entry, str) and '.zip' in entry:
                try:
                    importer = zipimport.zipimporter(entry)
                except zipimport.ZipImportError:
                    continue
                sys.path_importer_cache[entry] = importer
            if not isinstance(importer, zipimport.zipimporter):
                continue
            try:
                # A look-up in the archive's directory: no source is read.
                is_package = importer.is_package(fullname)
            except zipimport.ZipImportError:
                continue
            location = f'{entry}/{name}'
            spec = ModuleSpec(fullname, importer, origin=f'{location}/__init__.py' if is_package else f'{location}.py',
                              is_package=is_package)
            spec.has_location = True
            if is_package:
                spec.submodule_search_locations = [location]
            return spec
        return None


def install() -> bool:
    """Put the finder first on sys.meta_path when it applies; True when it is (or already was) there."""
    if any(isinstance(finder, CompileOnceFinder) for finder in sys.meta_path):
        return True
    spec = globals().get('__spec__')
    if not isinstance(getattr(spec, 'loader', None), zipimport.zipimporter):
        return False
    if not hasattr(zipimport.zipimporter, 'exec_module'):
        return False
    sys.meta_path.insert(0, CompileOnceFinder())
    return True


install()
