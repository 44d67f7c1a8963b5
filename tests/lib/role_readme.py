# -*- coding: utf-8 -*-
# Copyright: mailsec.starttls contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The variables section of a role's README, generated from its meta/argument_specs.yml.

    python3 tests/lib/role_readme.py roles/audit            # rewrite the section in roles/audit/README.md
    python3 tests/lib/role_readme.py --check roles/audit    # exit 1 when the README is out of step

The section sits between the two marker lines below; everything else in the README is written by hand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

BEGIN = '<!-- BEGIN variables: generated from meta/argument_specs.yml by tests/lib/role_readme.py -->'
END = '<!-- END variables -->'


def _text(value) -> str:
    if isinstance(value, list):
        value = ' '.join(str(item) for item in value)
    return ' '.join(str(value or '').split()).replace('|', '\\|')


def _default(option: dict) -> str:
    if 'default' not in option:
        return '' if not option.get('required') else '*required*'
    return '`' + yaml.safe_dump(option['default'], default_flow_style=True, width=10000).strip().removesuffix('...').strip() + '`'


def _type(option: dict) -> str:
    kind = option.get('type', 'str')
    if kind == 'list' and option.get('elements'):
        kind = f'list of {option["elements"]}'
    if option.get('choices'):
        kind += ': ' + ', '.join(f'`{choice}`' for choice in option['choices'])
    return kind


def _rows(options: dict, prefix: str = '') -> list:
    rows = []
    for name, option in options.items():
        rows.append(f'| `{prefix}{name}` | {_type(option)} | {_default(option)} | {_text(option.get("description"))} |')
        if option.get('options'):
            rows.extend(_rows(option['options'], prefix=f'{prefix}{name}[].' if option.get('type') == 'list'
                              else f'{prefix}{name}.'))
    return rows


def render(role: Path) -> str:
    specs = yaml.safe_load((role / 'meta' / 'argument_specs.yml').read_text())['argument_specs']
    lines = [BEGIN]
    for entry_point, spec in specs.items():
        lines += ['', f'Entry point `{entry_point}`: {_text(spec.get("short_description"))}', '',
                  '| variable | type | default | meaning |', '|---|---|---|---|']
        lines += _rows(spec.get('options') or {})
    lines += ['', END]
    return '\n'.join(lines)


def updated(readme_text: str, section: str) -> str:
    if BEGIN not in readme_text or END not in readme_text:
        raise SystemExit(f'the README has no generated section (the lines {BEGIN!r} and {END!r})')
    head, rest = readme_text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    return head + section + tail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--check', action='store_true', help='only compare; exit 1 when out of step')
    parser.add_argument('role', type=Path)
    args = parser.parse_args()
    readme = args.role / 'README.md'
    current = readme.read_text()
    wanted = updated(current, render(args.role))
    if current == wanted:
        return 0
    if args.check:
        print(f'{readme} is out of step with meta/argument_specs.yml: run python3 tests/lib/role_readme.py {args.role}',
              file=sys.stderr)
        return 1
    readme.write_text(wanted)
    return 0


if __name__ == '__main__':
    sys.exit(main())
