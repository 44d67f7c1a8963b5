#!/usr/bin/env bash
# CI smoke step for the benchmark: the bench's own checks (fixture and result checkers), then a
# small run (40 listeners, one repeat, engine + module, peers when installed) whose results must
# all be correct. Takes about 15 s. Throughput targets are not judged here: CI machines are shared.
set -euo pipefail

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$bench_dir/.."
cache_dir=${MAILSEC_CACHE:-$HOME/.cache/mailsec-starttls}

# The fixture needs Python 3.11+ (StreamWriter.start_tls); pytest comes from the test venv when
# the system Python lacks it.
pick_python() {
    local candidate
    for candidate in "${MAILSEC_BENCH_PYTHON:-}" python3 "$cache_dir"/venv-core-*/bin/python; do
        [[ -n $candidate ]] || continue
        if "$candidate" -c 'import sys, pytest; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    return 1
}
python=$(pick_python) || { echo "bench smoke: no Python 3.11+ with pytest found" >&2; exit 1; }

status=0
"$python" -m pytest -q -p no:cacheprovider bench/test_bench.py || status=$?
"$python" bench/bench_probe.py --smoke --enforce --require-module "$@" || status=$?

# The controller at fleet scale, small: 400 hosts made from the checked-in lab capture, judged and
# reported in all four formats (and the HTML page checked in Chromium when it is installed).
fleet_python=$cache_dir/venv-core-2.19/bin/python
[[ -x $fleet_python ]] || fleet_python=$python
fleet_browser=()
if command -v chromium >/dev/null || command -v chromium-browser >/dev/null || [[ -n ${MAILSEC_CHROMIUM:-} ]]; then
    fleet_browser=(--browser)
fi
"$fleet_python" bench/bench_fleet.py --smoke --enforce "${fleet_browser[@]}" || status=$?

# The audit over a fleet (5 aliases of the demo host, ping vs audit playbook), the host
# inspection cost (lab subset postfix,exim,dovecot) and the probe through a jump host: one run each, correctness and the result
# checkers' self-tests only, each in its own network/PID/mount namespace, 15-30 s each. They start
# real MTAs, so they need root, unshare and the lab (tests/lab/install.sh); elsewhere they SKIP.
if [[ $(id -u) == 0 && -x /usr/sbin/postfix && -x /usr/sbin/dovecot ]] && command -v unshare >/dev/null; then
    "$python" bench/bench_audit.py --smoke --enforce || status=$?
    "$python" bench/bench_host_info.py --smoke --enforce || status=$?
    "$python" bench/bench_jump.py --smoke --enforce || status=$?
else
    echo "bench smoke: SKIP bench_audit.py, bench_host_info.py and bench_jump.py (need root, unshare and tests/lab/install.sh)"
fi
exit "$status"
