#!/usr/bin/env bash
# Prepare this machine for `bash tests/run.sh`. Idempotent; written for a new Debian 12 machine, as root.
#
#  1. Debian packages the tests need (and tests/lab/install.sh, which installs the MTAs, if present).
#  2. Python virtual environments (one per tested ansible-core line, one for unit tests on the oldest
#     target Python; see tests/lib/common.sh), outside the repository under
#     ${MAILSEC_CACHE:-$HOME/.cache/mailsec-starttls}; reused while their requirement files are unchanged.
#  3. ansible-test's pip bootstrap cache, seeded with tests/lib/get_pip_offline.py (no internet here).
#
# Output: one progress line per step; what apt-get and pip say goes to $MAILSEC_CACHE/setup.log, whose
# path and last lines are printed when a step fails.
#
# Environment: MAILSEC_CACHE (where environments live), MAILSEC_PYTHON_X_Y, e.g. MAILSEC_PYTHON_3_13
# (interpreter overrides), MAILSEC_SKIP_APT=1 (skip step 1, for machines already set up by hand).
set -Eeuo pipefail

# shellcheck source=tests/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

started=$SECONDS
mkdir -p "$MAILSEC_CACHE"
# One setup at a time on a machine: the demo, the tests of two checkouts and CI share the environments.
exec 9>"$MAILSEC_CACHE/setup.lock"
if ! flock -n 9; then
    mailsec_log "waiting for another tests/setup.sh to finish..."
    flock 9
fi
SETUP_LOG=$MAILSEC_CACHE/setup.log
: >"$SETUP_LOG"
setup_failed() {
    local status=$1 line=$2
    mailsec_log "setup FAILED at tests/setup.sh:$line (exit $status)"
    mailsec_log "last lines of $SETUP_LOG:"
    tail -n 25 "$SETUP_LOG" | sed 's/^/    /' >&2
    mailsec_log "the whole log: $SETUP_LOG"
}
trap 'setup_failed $? $LINENO' ERR
export DEBIAN_FRONTEND=noninteractive

# Runs a command with its output in the setup log only.
quietly() {
    printf '\n==== %s ====\n' "$*" >>"$SETUP_LOG"
    "$@" >>"$SETUP_LOG" 2>&1
}

# openssh-server: jump-host vantage tests; nmap: benchmark peer; shellcheck: ansible-test's shellcheck
# sanity test; rsync and git: building the collection tree; openssl: test certificates; chromium: the
# HTML report rendered in a real browser (tests/integration/test_report_html.py).
APT_PACKAGES=(ca-certificates git rsync openssl openssh-server nmap shellcheck python3-venv chromium fonts-dejavu-core)

install_apt_packages() {
    if [[ ${MAILSEC_SKIP_APT:-0} == 1 ]]; then
        mailsec_log "apt: skipped (MAILSEC_SKIP_APT=1)"
        return
    fi
    if [[ $(id -u) != 0 ]]; then
        mailsec_log "apt: not root, cannot install: ${APT_PACKAGES[*]}"
        return 1
    fi
    local missing=() package
    for package in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
    done
    if ((${#missing[@]})); then
        # apt-get update first: on a new machine the package lists may be missing or stale.
        mailsec_log "apt: update"
        quietly apt-get update
        mailsec_log "apt: installing ${missing[*]}"
        quietly apt-get install -y --no-install-recommends "${missing[@]}"
    else
        mailsec_log "apt: all present (${APT_PACKAGES[*]})"
    fi
}

run_lab_install() {
    local lab_install=$MAILSEC_ROOT/tests/lab/install.sh
    if [[ ${MAILSEC_SKIP_APT:-0} == 1 ]]; then
        mailsec_log "lab: skipped (MAILSEC_SKIP_APT=1; the lab installs Debian packages)"
    elif [[ -f $lab_install ]]; then
        mailsec_log "lab: bash tests/lab/install.sh"
        MAILSEC_LAB_INSTALL_LOG=${MAILSEC_LAB_INSTALL_LOG:-$MAILSEC_CACHE/lab-install.log} bash "$lab_install"
    else
        mailsec_log "lab: tests/lab/install.sh not present yet, skipped"
    fi
}

# Links pythonX.Y -> real interpreter for every target Python found (see common.sh).
link_target_pythons() {
    mkdir -p "$MAILSEC_PYTHONS_DIR"
    local version interpreter found=()
    for version in "${MAILSEC_TARGET_PYTHONS[@]}"; do
        if interpreter=$(mailsec_find_python "$version"); then
            ln -sfn "$interpreter" "$MAILSEC_PYTHONS_DIR/python$version"
            found+=("$version")
        else
            rm -f "$MAILSEC_PYTHONS_DIR/python$version"
        fi
    done
    mailsec_log "pythons: ${found[*]} linked in $MAILSEC_PYTHONS_DIR"
}

build_env() {
    local name=$1 python_version=${MAILSEC_ENV_PYTHON[$1]} interpreter venv
    venv=$(mailsec_venv_dir "$name")
    if ! interpreter=$(mailsec_find_python "$python_version"); then
        mailsec_log "env $name: no Python $python_version interpreter found (set MAILSEC_PYTHON_${python_version//./_})"
        return 1
    fi
    if mailsec_env_current "$name"; then
        touch "$venv"
        mailsec_log "env $name: up to date ($venv)"
        return 0
    fi
    mailsec_log "env $name: building with $interpreter in $venv"
    rm -rf "$venv"
    quietly "$interpreter" -m venv "$venv"
    local pip=("$venv/bin/python" -m pip --disable-pip-version-check --quiet)
    local install_args=() file
    while IFS= read -r file; do
        [[ -f $file ]] || continue
        if [[ $file == */constraints.txt ]]; then
            install_args+=(-c "$file")
        else
            install_args+=(-r "$file")
        fi
    done < <(mailsec_env_requirement_files "$name")
    # pip 25.0 is the last release line that installs on every Python we use (3.8 included).
    quietly "${pip[@]}" install --upgrade 'pip==25.0.1'
    quietly "${pip[@]}" install "${install_args[@]}"
    quietly "$venv/bin/python" -m pip check
    "$venv/bin/python" -m pip freeze --all >"$venv/.mailsec-freeze.txt"
    mailsec_env_stamp "$name" "$interpreter" >"$venv/.mailsec-stamp"
    mailsec_log "env $name: ready ($(grep -m1 -E '^(ansible-core|pytest)==' "$venv/.mailsec-freeze.txt"))"
}

# ansible-test runs ~/.ansible/test/cache/get_pip_<X_Y>.py to put pip <X.Y> into each new virtual
# environment. The pip release is fixed per ansible-core release in get_venv_packages().
seed_get_pip_cache() {
    local name venv versions version target
    local cache_dir=$HOME/.ansible/test/cache
    local seed=$MAILSEC_ROOT/tests/lib/get_pip_offline.py
    local marker='# mailsec-starttls: stand-in for get-pip.py'
    mkdir -p "$cache_dir"
    for name in "${MAILSEC_CORE_ENVS[@]}"; do
        venv=$(mailsec_venv_dir "$name")
        versions=$("$venv/bin/python" - <<'EOF'
import pathlib, re
import ansible_test
source = pathlib.Path(ansible_test.__file__).parent / '_internal' / 'python_requirements.py'
text = source.read_text()
body = text[text.index('def get_venv_packages'):]
body = body[:body.index('\ndef ', 1)]
print(' '.join(sorted(set(re.findall(r"pip\s*=\s*'([0-9.]+)'", body)))))
EOF
)
        if [[ -z $versions ]]; then
            mailsec_log "get-pip: cannot read the pip version of ansible-test in $name"
            return 1
        fi
        for version in $versions; do
            target=$cache_dir/get_pip_${version//./_}.py
            # A genuine get-pip.py (downloaded elsewhere) is left alone.
            if [[ -f $target ]] && ! head -n1 "$target" | grep -qF "$marker"; then
                mailsec_log "get-pip: $target is a real get-pip.py, kept"
                continue
            fi
            if cmp -s "$seed" "$target"; then
                mailsec_log "get-pip: $target current ($name, pip $version)"
            else
                cp "$seed" "$target"
                mailsec_log "get-pip: seeded $target ($name, pip $version)"
            fi
        done
    done
}

install_apt_packages
run_lab_install
link_target_pythons
mkdir -p "$MAILSEC_CACHE"
for name in "${MAILSEC_ENV_NAMES[@]}"; do
    build_env "$name"
done
seed_get_pip_cache
# Environments of requirement files no checkout used for a week (old branches, old CI clones).
find "$MAILSEC_CACHE" -mindepth 1 -maxdepth 1 -type d -name 'venv-*-*' -mtime +7 -exec rm -rf {} + 2>/dev/null || true
mailsec_log "setup done in $((SECONDS - started)) s"
