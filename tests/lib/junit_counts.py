"""Sum test counts over JUnit XML files: prints ``tests=N passed=N failed=N errors=N skipped=N``.

tests/run.sh uses this to tell "ran and passed" from "ran nothing": ansible-test units exits 0 even
when pytest collected no test, so the JUnit files are the only evidence of what ran.
"""

from __future__ import annotations

import sys
from xml.etree import ElementTree

COUNTED = ('tests', 'failures', 'errors', 'skipped')


def suite_counts(path: str) -> dict[str, int]:
    root = ElementTree.parse(path).getroot()
    suites = [root] if root.tag == 'testsuite' else list(root.iter('testsuite'))
    totals = dict.fromkeys(COUNTED, 0)
    for suite in suites:
        for key in COUNTED:
            totals[key] += int(suite.get(key, 0))
    return totals


def main(paths: list[str]) -> int:
    totals = dict.fromkeys(COUNTED, 0)
    for path in paths:
        try:
            counts = suite_counts(path)
        except (OSError, ElementTree.ParseError) as error:
            print(f'unreadable JUnit file {path}: {error}', file=sys.stderr)
            return 1
        for key in COUNTED:
            totals[key] += counts[key]
    passed = totals['tests'] - totals['failures'] - totals['errors'] - totals['skipped']
    print(f"tests={totals['tests']} passed={passed} failed={totals['failures']} "
          f"errors={totals['errors']} skipped={totals['skipped']}")
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
