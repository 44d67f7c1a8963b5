#!/usr/bin/env bash
# Fuzz the MTA configuration parsers for a fixed time budget (tests/fuzz/fuzz_parsers.py): atheris
# (coverage-guided) when the interpreter has it, else a pure-Python mutation driver over the same
# seed corpus. Exit status 1 and the failing input's path when an invariant breaks.
#
# Environment: MAILSEC_FUZZ_SECONDS (budget, default 40), MAILSEC_FUZZ_PYTHON (interpreter; default
# the core-2.19 test environment made by tests/setup.sh, else python3), MAILSEC_FUZZ_KEEP=1 (keep
# the working directory with the grown corpus and any failing input).
# Extra arguments go to fuzz_parsers.py (--fallback, --seed N, or libFuzzer flags such as -jobs=1).
set -euo pipefail

# shellcheck source=tests/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

seconds=${MAILSEC_FUZZ_SECONDS:-40}
python=${MAILSEC_FUZZ_PYTHON:-$(mailsec_venv_dir "$MAILSEC_PRIMARY_ENV")/bin/python}
[[ -x $python ]] || python=python3

work=$(mktemp -d "${TMPDIR:-/tmp}/mailsec-fuzz.XXXXXX")
if [[ ${MAILSEC_FUZZ_KEEP:-0} == 1 ]]; then
    mailsec_log "fuzz: working directory $work kept"
else
    trap 'rm -rf "$work"' EXIT
fi
# The harness imports the collection as ansible_collections.mailsec.starttls: a link to this tree.
mkdir -p "$work/path/ansible_collections/mailsec"
ln -s "$MAILSEC_ROOT" "$work/path/ansible_collections/mailsec/starttls"

mailsec_log "fuzz: $seconds s with $python"
PYTHONPATH="$work/path" "$python" "$MAILSEC_ROOT/tests/fuzz/fuzz_parsers.py" \
    --seconds "$seconds" --seed-corpus "$MAILSEC_ROOT/tests/fuzz/corpus" --work "$work/out" "$@"
