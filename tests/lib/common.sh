# shellcheck shell=bash
# Shared by tests/setup.sh and tests/run.sh: where things live and how the test environments are named.
# Sourced, never executed.
# The settings below are read by the scripts that source this file, which shellcheck cannot see here.
# shellcheck disable=SC2034

# CI may start with a minimal environment; ansible-test and pip need HOME.
if [[ -z ${HOME:-} ]]; then
    HOME=$(getent passwd "$(id -u)" | cut -d: -f6)
    export HOME
fi

MAILSEC_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
MAILSEC_CACHE=${MAILSEC_CACHE:-$HOME/.cache/mailsec-starttls}

# Test environments (virtual environments under $MAILSEC_CACHE), each made from
# tests/lib/venv-<name>.txt on the Python version given here:
#   core-<line>  ansible-core <line>: ansible-test sanity and units, (first one) integration;
#   target-<py>  no ansible-core, only what module and module_utils unit tests need, to run them on
#                the oldest Python a managed host may have (ansible-test takes it as target Python);
#   tools        galaxy-importer, ansible-builder, ansible-runner, antsibull-docs, Sphinx: the
#                integration tests run them against the built collection (test_tooling.py).
MAILSEC_ENV_NAMES=(core-2.19 core-2.21 target-3.8 tools)
declare -A MAILSEC_ENV_PYTHON=([core-2.19]=3.11 [core-2.21]=3.13 [target-3.8]=3.8 [tools]=3.11)
MAILSEC_TOOLS_ENV=tools
MAILSEC_CORE_ENVS=(core-2.19 core-2.21)
MAILSEC_PRIMARY_ENV=core-2.19
MAILSEC_LINT_ENV=core-2.21
MAILSEC_TARGET_ENV=target-3.8

# Python versions that ansible-test may use as sanity targets (compile, import). Collections must
# import on the oldest target Python (3.8 for ansible-core 2.19), so every one found is offered.
MAILSEC_TARGET_PYTHONS=(3.8 3.9 3.10 3.11 3.12 3.13 3.14)

# Bump when the way environments are built changes, so that existing ones are rebuilt.
MAILSEC_ENV_SCHEMA=1

mailsec_log() {
    printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

# Absolute path of a real interpreter for Python X.Y, or nothing. pyenv shims are never returned:
# a shim for a version that is not activated exits with an error instead of running Python.
mailsec_find_python() {
    local version=$1 override_var candidate
    override_var="MAILSEC_PYTHON_${version//./_}"
    if [[ -n ${!override_var:-} ]]; then
        printf '%s\n' "${!override_var}"
        return 0
    fi
    local pyenv_root=${PYENV_ROOT:-$HOME/.pyenv}
    # Newest patch release first (version sort), then the distribution's interpreter.
    while IFS= read -r candidate; do
        if [[ -x $candidate ]] && "$candidate" -c 'import venv, ensurepip' >/dev/null 2>&1; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done < <(
        compgen -G "$pyenv_root/versions/$version.*/bin/python$version" | sort -rV
        printf '%s\n' "/usr/local/bin/python$version" "/usr/bin/python$version"
    )
    return 1
}

# An environment's directory carries the stamp of what it is made of (venv-NAME-STAMP): checkouts
# with different requirement files (two branches, CI beside a developer) each get their own and never
# rebuild one another's. Unused ones are pruned by tests/setup.sh after a week.
mailsec_venv_dir() {
    local name=$1 interpreter stamp=missing
    if interpreter=$(mailsec_find_python "${MAILSEC_ENV_PYTHON[$name]}"); then
        stamp=$(mailsec_env_stamp "$name" "$interpreter")
    fi
    printf '%s/venv-%s-%s\n' "$MAILSEC_CACHE" "$name" "${stamp:0:12}"
}

# Files whose content defines an environment; any change to them rebuilds it. Core environments
# take their versions from tests/lib/constraints.txt; the target environment's own file pins all.
mailsec_env_requirement_files() {
    local name=$1
    if [[ $name == tools ]]; then
        printf '%s\n' "$MAILSEC_ROOT/tests/lib/venv-$name.txt"
        return
    fi
    printf '%s\n' "$MAILSEC_ROOT/tests/lib/venv-$name.txt" "$MAILSEC_ROOT/tests/unit/requirements.txt"
    if [[ $name == core-* ]]; then
        printf '%s\n' \
            "$MAILSEC_ROOT/tests/lib/constraints.txt" \
            "$MAILSEC_ROOT/tests/integration/requirements.txt" \
            "$MAILSEC_ROOT/requirements.txt"
    fi
}

# The stamp an environment must carry to be reused: requirement files' content plus the interpreter.
mailsec_env_stamp() {
    local name=$1 interpreter=$2 file
    {
        printf 'schema %s\ninterpreter %s\n' "$MAILSEC_ENV_SCHEMA" "$interpreter"
        "$interpreter" -c 'import sys; print("version", sys.version)'
        while IFS= read -r file; do
            [[ -f $file ]] || continue
            printf 'file %s\n' "${file#"$MAILSEC_ROOT"/}"
            cat "$file"
        done < <(mailsec_env_requirement_files "$name")
    } | sha256sum | cut -d' ' -f1
}

# Whether an environment exists and was built completely (its stamp file is written last).
mailsec_env_current() {
    local name=$1 venv interpreter
    interpreter=$(mailsec_find_python "${MAILSEC_ENV_PYTHON[$name]}") || return 1
    venv=$(mailsec_venv_dir "$name")
    [[ -x $venv/bin/python && -f $venv/.mailsec-stamp ]] || return 1
    [[ $(<"$venv/.mailsec-stamp") == "$(mailsec_env_stamp "$name" "$interpreter")" ]]
}

# Directory of pythonX.Y links to real interpreters, put first on PATH so that ansible-test finds
# every target Python without going through pyenv shims.
MAILSEC_PYTHONS_DIR=$MAILSEC_CACHE/pythons
