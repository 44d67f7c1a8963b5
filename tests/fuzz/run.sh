#!/usr/bin/env bash
# Every fuzz harness for a fixed time budget: `bash tests/fuzz/run.sh [SECONDS]` (default 60 in all),
# half to the probe's reply reader (run_reply_reader.sh), half to the MTA configuration parsers
# (run_parsers.sh). Exit status 1 when either finds an input that breaks an invariant.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
seconds=${1:-60}
if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds < 2)); then
    printf 'usage: bash tests/fuzz/run.sh [SECONDS]\n' >&2
    exit 2
fi
half=$((seconds / 2))
status=0
bash "$here/run_reply_reader.sh" "$half" || status=1
MAILSEC_FUZZ_SECONDS=$half bash "$here/run_parsers.sh" || status=1
exit "$status"
