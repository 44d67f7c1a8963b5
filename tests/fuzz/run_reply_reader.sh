#!/usr/bin/env bash
# Fuzz the probe's reply reader for a fixed time budget: `bash tests/fuzz/run_reply_reader.sh [SECONDS]` (default 30).
#
# With atheris installed in the Python used (the core-2.19 test environment, tests/lib/venv-core-2.19.txt),
# runs the coverage-guided harness tests/fuzz/fuzz_reply_reader.py over the corpus in
# tests/fuzz/corpus-reply/ for SECONDS, each input limited to 10 s and the process to 512 MiB. Without
# atheris, runs the harness's own corpus driver (every corpus file, then seeded mutations) for the same
# budget and says so. New inputs found go to a temporary directory, never into the corpus: add an
# interesting one by hand. A crash leaves its input under $MAILSEC_CACHE/fuzz/ and fails the script.
#
# Environment: MAILSEC_CACHE, MAILSEC_FUZZ_PYTHON (interpreter to use), MAILSEC_FUZZ_DRIVER=corpus
# (force the pure-Python driver).
set -uo pipefail

# shellcheck source=tests/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

seconds=${1:-30}
if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds < 1)); then
    printf 'usage: bash tests/fuzz/run_reply_reader.sh [SECONDS]\n' >&2
    exit 2
fi

python=${MAILSEC_FUZZ_PYTHON:-$(mailsec_venv_dir "$MAILSEC_PRIMARY_ENV")/bin/python}
if [[ ! -x $python ]]; then
    printf 'fuzz: no interpreter at %s (run "bash tests/setup.sh" first)\n' "$python" >&2
    exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/mailsec-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
# The harness imports the collection by its FQCN: a tree that points at this checkout.
mkdir -p "$work/tree/ansible_collections/mailsec" "$work/new-inputs"
ln -s "$MAILSEC_ROOT" "$work/tree/ansible_collections/mailsec/starttls"
corpus=$MAILSEC_ROOT/tests/fuzz/corpus-reply
harness=$MAILSEC_ROOT/tests/fuzz/fuzz_reply_reader.py
artifacts=$MAILSEC_CACHE/fuzz
mkdir -p "$artifacts"

export PYTHONPATH="$work/tree${PYTHONPATH:+:$PYTHONPATH}"
if [[ ${MAILSEC_FUZZ_DRIVER:-} != corpus ]] && "$python" -c 'import atheris' 2>/dev/null; then
    printf 'fuzz: reply reader with atheris for %s s (%s)\n' "$seconds" "$python"
    # -timeout per input, -rss_limit_mb for the whole process; the corpus directory is only read.
    timeout -k 10 $((seconds + 120)) "$python" "$harness" -max_total_time="$seconds" -timeout=10 \
        -rss_limit_mb=512 -print_final_stats=1 -artifact_prefix="$artifacts/reply-" \
        "$work/new-inputs" "$corpus" 2>"$work/log"
    status=$?
    grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|==[0-9]+== ERROR|INFO: Seed)' "$work/log" || true
    if ((status != 0)); then
        tail -n 40 "$work/log"
        printf 'fuzz: reply reader FAILED (status %s); crashing input under %s\n' "$status" "$artifacts"
        exit 1
    fi
    printf 'fuzz: reply reader OK (atheris, %s s, %s new inputs not kept)\n' "$seconds" \
        "$(find "$work/new-inputs" -type f | wc -l)"
else
    printf 'fuzz: atheris is not installed for %s; pure-Python corpus driver for %s s\n' "$python" "$seconds"
    if ! timeout -k 10 $((seconds + 120)) "$python" "$harness" --corpus-driver "$seconds" "$corpus"; then
        printf 'fuzz: reply reader FAILED (corpus driver)\n'
        exit 1
    fi
    printf 'fuzz: reply reader OK (corpus driver, %s s)\n' "$seconds"
fi
