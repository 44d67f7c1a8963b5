# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Build the collection's docsite with antsibull-docs and Sphinx, offline, warnings as errors.

    python3 tests/lib/docsite.py --collections-path PATH --dest DIR

Run it with the Python of the test environment "tools" (antsibull-docs, Sphinx, myst-parser) and the
tested ansible-core's ansible-doc on PATH; PATH holds an installed mailsec.starttls (ansible-galaxy
collection install). The site has the plugin and role docs, the extra docs of docs/docsite
(extra-docs.yml, links.yml, rst/) and, as its guides, the Markdown files of docs/ (rendered by
myst-parser). Offline: the few Ansible documentation labels the generated pages refer to resolve through
a small local intersphinx inventory (ANSIBLE_LABELS) instead of one fetched from docs.ansible.com.
Exit status 0 only when every step passes without a warning; the HTML is in DIR/build/html.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

COLLECTION = 'mailsec.starttls'
ANSIBLE_DOCS = 'https://docs.ansible.com/projects/ansible/devel/'
# Labels of the Ansible documentation that antsibull-docs' generated pages link to: name -> (page, title).
ANSIBLE_LABELS = {
    'ansible_configuration_settings': ('reference_appendices/config.html', 'Ansible Configuration Settings'),
    'action_plugins': ('plugins/action.html', 'Action plugins'),
    'common_return_values': ('reference_appendices/common_return_values.html', 'Return Values'),
    'ansible_collections.ansible.builtin.lineinfile_module': ('collections/ansible/builtin/lineinfile_module.html',
                                                              'ansible.builtin.lineinfile module'),
}
# The guides, in the order of the site's table of contents.
GUIDES = ('quickstart', 'policy', 'findings', 'remediation', 'reports', 'ci', 'publishing', 'mta_tls_info',
          'listener_probe', 'architecture')
GUIDES_DIR = 'guides'
# The extra docs page (docs/docsite/rst) that lists them.
GUIDES_PAGE = 'guide_audit'
_LINK = re.compile(r'\[([^\]]+)\]\(([^)\s#]+)(#[^)\s]*)?\)')


def write_inventory(path: Path) -> None:
    """An intersphinx inventory (Sphinx's objects.inv format, version 2) holding ANSIBLE_LABELS."""
    lines = [f'{name} std:label -1 {page}#{name.replace("_", "-")} {title}' for name, (page, title) in ANSIBLE_LABELS.items()]
    header = ('# Sphinx inventory version 2\n# Project: Ansible\n# Version: devel\n'
              '# The remainder of this file is compressed using zlib.\n').encode()
    path.write_bytes(header + zlib.compress(('\n'.join(lines) + '\n').encode()))


def copy_guide(source: Path, target: Path) -> None:
    """A docs/ guide for the site: links to other guides stay links, links to files that are not guides
    (an example inventory, the JSON schema) become the file's name in code."""
    def relink(match):
        text, name, anchor = match.group(1), match.group(2), match.group(3) or ''
        if name.startswith(('http://', 'https://', 'mailto:')) or (
                name.endswith('.md') and '/' not in name and Path(name).stem in GUIDES):
            return match.group(0)
        return f'{text} (`docs/{name}{anchor}` in the collection)'
    target.write_text(_LINK.sub(relink, source.read_text()))


def run(command: list, cwd: Path, env: dict) -> None:
    print('+', ' '.join(command), flush=True)
    completed = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    output = completed.stdout + completed.stderr
    warnings = [line for line in output.splitlines() if 'WARNING' in line or 'ERROR' in line]
    if completed.returncode != 0 or warnings:
        sys.stdout.write(output)
        raise SystemExit(f'docsite: {command[0]} {command[1]} failed (exit {completed.returncode}, '
                         f'{len(warnings)} warning(s) or error(s))')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--collections-path', required=True, type=Path)
    parser.add_argument('--dest', required=True, type=Path)
    args = parser.parse_args()
    root = args.collections_path / 'ansible_collections' / 'mailsec' / 'starttls'
    tools = Path(sys.executable).parent
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(args.collections_path.resolve()), ANSIBLE_NOCOLOR='1')
    env['PATH'] = os.pathsep.join([env.get('PATH', ''), str(tools)])
    if args.dest.exists():
        shutil.rmtree(args.dest)
    args.dest.mkdir(mode=0o700, parents=True)  # antsibull-docs wants a directory only its owner can write
    site = args.dest.resolve()

    run([str(tools / 'antsibull-docs'), 'lint-collection-docs', '--plugin-docs', str(root)], site, env)
    run([str(tools / 'antsibull-docs'), 'sphinx-init', '--use-current', '--fail-on-error', '--dest-dir', str(site),
         COLLECTION], site, env)
    write_inventory(site / 'ansible_devel.inv')
    with open(site / 'conf.py', 'a', encoding='utf-8') as conf:
        conf.write('\n# Offline (tests/lib/docsite.py): a local inventory of the Ansible labels the pages use;\n'
                   '# the guides are Markdown (myst-parser).\n'
                   f'intersphinx_mapping = {{"ansible_devel": ({ANSIBLE_DOCS!r}, "../ansible_devel.inv")}}\n'
                   'extensions.append("myst_parser")\n'
                   'myst_heading_anchors = 3\n'
                   'source_suffix = {".rst": "restructuredtext", ".md": "markdown"}\n')
    rst = site / 'rst'
    rst.mkdir(mode=0o700, exist_ok=True)
    run([str(tools / 'antsibull-docs'), '--config-file', str(site / 'antsibull-docs.cfg'), 'collection',
         '--cleanup', 'everything', '--fail-on-error', '--use-current', '--dest-dir', str(rst), COLLECTION], site, env)
    guides = rst / 'collections' / 'mailsec' / 'starttls' / 'docsite' / GUIDES_DIR
    guides.mkdir(parents=True)
    for name in GUIDES:
        copy_guide(root / 'docs' / f'{name}.md', guides / f'{name}.md')
    # The extra docs' linter wants toctree entries that exist in the collection; the guides exist only here.
    with open(guides.parent / f'{GUIDES_PAGE}.rst', 'a', encoding='utf-8') as page:
        page.write('\n.. toctree::\n   :maxdepth: 1\n   :caption: The guides\n\n'
                   + ''.join(f'   {GUIDES_DIR}/{name}\n' for name in GUIDES))
    run([str(tools / 'sphinx-build'), '-M', 'html', str(rst), str(site / 'build'), '-c', str(site), '-W',
         '--keep-going', '-q'], site, env)
    print(f'docsite: {site / "build" / "html" / "index.html"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
