#!/usr/bin/env bash
# Installs the peer tools that bench/bench_probe.py compares against, each into a private
# virtual environment so that they never leak into the collection's own test environment.
#   bench/setup.sh                 sslyze (pinned, the version PERFORMANCE-ANCHORS.md measured) + py-spy
#   bench/setup.sh --with-ansible  also ansible-core, for machines where the test setup has not made one
# nmap comes from Debian (apt-get install nmap); this script installs it only when it is missing.
set -euo pipefail

cache_dir="${MAILSEC_CACHE:-$HOME/.cache/mailsec-starttls}"   # the same cache as tests/lib/common.sh and benchlib.py
bench_venv="${MAILSEC_BENCH_VENV:-$cache_dir/bench-venv}"
python="${PYTHON:-python3}"
sslyze_spec="${SSLYZE_SPEC:-sslyze==6.3.1}"
with_ansible=0
for arg in "$@"; do
    case "$arg" in
        --with-ansible) with_ansible=1 ;;
        -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
        *) echo "unknown argument: $arg" >&2; exit 2 ;;
    esac
done

if ! command -v nmap >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nmap
    else
        echo "nmap is missing: install it with your package manager" >&2
    fi
fi
if [ ! -x /usr/bin/time ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    # Not needed by the bench itself (it reads rusage with os.wait4), only handy for manual runs.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time || true
fi

if [ ! -x "$bench_venv/bin/python" ]; then
    mkdir -p "$(dirname "$bench_venv")"
    "$python" -m venv "$bench_venv"
fi
"$bench_venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$bench_venv/bin/python" -m pip install -q --disable-pip-version-check "$sslyze_spec" py-spy
if [ "$with_ansible" = 1 ]; then
    ansible_venv="${MAILSEC_BENCH_ANSIBLE_VENV:-$cache_dir/bench-ansible-venv}"
    if [ ! -x "$ansible_venv/bin/python" ]; then
        "$python" -m venv "$ansible_venv"
    fi
    "$ansible_venv/bin/python" -m pip install -q --disable-pip-version-check 'ansible-core>=2.17'
    "$ansible_venv/bin/ansible" --version | head -1
fi
"$bench_venv/bin/sslyze" --help >/dev/null
echo "sslyze: $("$bench_venv/bin/python" -c 'import importlib.metadata as m; print(m.version("sslyze"))') in $bench_venv"
echo "py-spy: $("$bench_venv/bin/py-spy" --version)"
echo "nmap: $(nmap --version 2>/dev/null | head -1 || echo missing)"
