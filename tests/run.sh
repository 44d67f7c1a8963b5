#!/usr/bin/env bash
# The test command: `bash tests/run.sh` (after `bash tests/setup.sh`).
#
# Builds the collection tree ansible-test needs (<build>/ansible_collections/mailsec/starttls) from the
# working tree (tracked and untracked, not ignored, files), then runs every stage even when one fails:
#   sanity-2.19   ansible-test sanity, ansible-core 2.19 on Python 3.11, all target Pythons found
#   sanity-2.21   ansible-test sanity, ansible-core 2.21 on Python 3.13           (not with --quick)
#   units-2.19    ansible-test units, ansible-core 2.19, Python 3.11
#   units-2.21    ansible-test units, ansible-core 2.21, Python 3.13              (not with --quick)
#   units-py3.8   ansible-test units of modules and module_utils on Python 3.8 (oldest target)
#   ansible-lint  production profile, .ansible-lint
#   changelog     antsibull-changelog lint
#   fuzz          tests/fuzz/run.sh: the reply reader and the configuration parsers, fixed budget
#   integration   pytest tests/integration, ansible-core 2.19, real servers via tests/lab
# and closes with a summary whose last line is "stages: N passed, N failed[, N skipped]".
#
# It first runs tests/setup.sh (idempotent; MAILSEC_SKIP_SETUP=1 skips it). The integration tests run
# in a network namespace of their own (tests/integration/conftest.py), so they never clash with the
# demo host or anything else listening on the machine.
#
# Options: --only GROUP[,GROUP]  (sanity, units, lint, fuzz, integration; lint = ansible-lint + changelog)
#          --quick               skip the second ansible-core line (sanity-2.21, units-2.21)
# Environment: MAILSEC_CACHE, MAILSEC_SANITY_ARGS (extra ansible-test sanity arguments, e.g.
#          "--test pep8"), MAILSEC_PYTEST_ARGS (extra pytest arguments for integration; when they name
#          files under tests/integration, only those run).
set -uo pipefail

# shellcheck source=tests/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

usage() {
    sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

only_groups=""
quick=0
while (($#)); do
    case $1 in
        --only) only_groups=${2:-}; shift 2 || { usage >&2; exit 2; } ;;
        --only=*) only_groups=${1#--only=}; shift ;;
        --quick) quick=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) printf 'unknown option: %s\n\n' "$1" >&2; usage >&2; exit 2 ;;
    esac
done
for group in ${only_groups//,/ }; do
    case $group in
        sanity|units|lint|fuzz|integration) ;;
        *) printf 'unknown group for --only: %s (sanity, units, lint, fuzz, integration)\n' "$group" >&2; exit 2 ;;
    esac
done

wanted() {
    [[ -z $only_groups ]] && return 0
    [[ ,$only_groups, == *",$1,"* ]]
}

# One build directory per checkout, so that two checkouts on one machine (a developer's and CI's)
# never share a tree; a lock keeps two runs of one checkout apart.
checkout_key=$(printf '%s' "$MAILSEC_ROOT" | sha256sum | cut -c1-12)
BUILD=$MAILSEC_CACHE/build/$checkout_key
COLLECTION=$BUILD/ansible_collections/mailsec/starttls
RESULTS=$BUILD/results
mkdir -p "$BUILD"
touch "$BUILD"
# Build trees of checkouts not tested for a week (old CI clones) are dropped.
find "$MAILSEC_CACHE/build" -mindepth 1 -maxdepth 1 -mtime +7 ! -path "$BUILD*" -exec rm -rf {} + 2>/dev/null
exec 8>"$BUILD.lock"
if ! flock -n 8; then
    printf 'waiting for another tests/run.sh of %s to finish...\n' "$MAILSEC_ROOT" >&2
    flock 8
fi

# ------------------------------------------------------------------------------------------------
# Environments made by tests/setup.sh: run it first (idempotent, a few seconds on a prepared machine),
# so that this command works on a new machine too, before or after `bash demo/run.sh`.

if [[ ${MAILSEC_SKIP_SETUP:-0} != 1 ]]; then
    if ! bash "$MAILSEC_ROOT/tests/setup.sh"; then
        printf 'tests/setup.sh failed: the machine is not ready for the tests (see its messages above)\n' >&2
        printf 'stages: 0 passed, 1 failed\n'
        exit 1
    fi
fi

env_problem=""
for name in "${MAILSEC_ENV_NAMES[@]}"; do
    mailsec_env_current "$name" || env_problem+=" $name"
done
if [[ -n $env_problem ]]; then
    printf 'test environment(s)%s missing or out of date: run "bash tests/setup.sh" first\n' "$env_problem" >&2
    printf 'stages: 0 passed, 1 failed\n'
    exit 1
fi

# The command prefix for a test environment: its bin first (ansible-test, ansible-playbook, pytest),
# then the real interpreters for ansible-test's target Pythons, then the caller's PATH.
env_prefix() {
    local name=$1
    printf '%s\0' env "PATH=$(mailsec_venv_dir "$name")/bin:$MAILSEC_PYTHONS_DIR:$PATH" \
        "ANSIBLE_COLLECTIONS_PATH=$BUILD"
}

junit_counts() {
    "$(mailsec_venv_dir "$MAILSEC_PRIMARY_ENV")/bin/python" "$MAILSEC_ROOT/tests/lib/junit_counts.py" "$@"
}

# ------------------------------------------------------------------------------------------------
# Collection tree

build_tree() {
    rm -rf "$BUILD/ansible_collections" "$RESULTS"
    mkdir -p "$COLLECTION" "$RESULTS"
    if git -C "$MAILSEC_ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        # Tracked files (minus those deleted in the work tree) and untracked files not ignored.
        (cd "$MAILSEC_ROOT" &&
            git ls-files -z --cached --others --exclude-standard |
            while IFS= read -r -d '' path; do
                if [[ -e $path || -L $path ]]; then printf '%s\0' "$path"; fi
            done |
            rsync -a --from0 --files-from=- ./ "$COLLECTION/")
    else
        rsync -a --exclude=.git --exclude=/tests/output --exclude=__pycache__ --exclude='.venv*' \
            --exclude=/.ansible "$MAILSEC_ROOT/" "$COLLECTION/"
    fi
}

# ------------------------------------------------------------------------------------------------
# Stage bookkeeping

stage_names=()
stage_status=()
stage_seconds=()
stage_notes=()
pytest_lines=()

record() {
    stage_names+=("$1")
    stage_status+=("$2")
    stage_seconds+=("$3")
    stage_notes+=("$4")
}

banner() {
    printf '\n==================== %s ====================\n' "$*"
}

# Runs a command in a test environment, output shown and kept in $RESULTS/<stage>.log, with a time
# limit; returns the command's status.
run_logged() {
    local stage=$1 limit=$2 env_name=$3 prefix=()
    shift 3
    mapfile -d '' -t prefix < <(env_prefix "$env_name")
    timeout -k 30 "$limit" "${prefix[@]}" "$@" </dev/null 2>&1 | tee "$RESULTS/$stage.log"
    local status=${PIPESTATUS[0]}
    if ((status == 124 || status == 137)); then
        printf 'TIMEOUT: %s stopped after %s s\n' "$stage" "$limit" | tee -a "$RESULTS/$stage.log"
    fi
    return "$status"
}

# pytest's closing line ("==== 3 passed, 1 skipped in 2.1s ====") from a stage log, for the summary.
collect_pytest_lines() {
    local stage=$1 line
    while IFS= read -r line; do
        pytest_lines+=("$stage: $line")
    done < <(sed 's/\x1b\[[0-9;]*m//g' "$RESULTS/$stage.log" |
        grep -E '^=+ .*(passed|failed|error|skipped|no tests ran|deselected).* in [0-9.]+s.* =+$')
}

count_test_files() {
    find "$1" -type f \( -name 'test_*.py' -o -name '*_test.py' \) 2>/dev/null | wc -l
}

# ------------------------------------------------------------------------------------------------
# Stages

stage_sanity() {
    local name=$1 stage=sanity-${1#core-} start=$SECONDS status
    banner "$stage: ansible-test sanity (ansible-core ${name#core-}, Python ${MAILSEC_ENV_PYTHON[$name]})"
    local extra=()
    # shellcheck disable=SC2206  # word splitting of the user's extra arguments is intended
    extra=(${MAILSEC_SANITY_ARGS:-})
    # --local: the environment's own Python is the controller; the target Pythons for compile and
    # import are every pythonX.Y found on PATH ($MAILSEC_PYTHONS_DIR).
    (cd "$COLLECTION" && run_logged "$stage" 2400 "$name" \
        ansible-test sanity --local --color no "${extra[@]}")
    status=$?
    if ((status == 0)); then
        record "$stage" PASS $((SECONDS - start)) ""
    else
        record "$stage" FAIL $((SECONDS - start)) "exit $status; log $RESULTS/$stage.log"
    fi
}

# ansible-test units in environment $1 (ansible-core), on Python $2 with interpreter $3.
stage_units() {
    local name=$1 python_version=$2 interpreter=$3 stage=$4 start=$SECONDS status files counts
    banner "$stage: ansible-test units (ansible-core ${name#core-}, Python $python_version)"
    files=$(count_test_files "$COLLECTION/tests/unit")
    if ((files == 0)); then
        echo "no test files (test_*.py) under tests/unit yet"
        record "$stage" NO-TESTS $((SECONDS - start)) "tests/unit has no test files yet"
        return
    fi
    rm -rf "$COLLECTION/tests/output/junit"
    # Requirements are preinstalled by tests/setup.sh (no --requirements): nothing is fetched here.
    (cd "$COLLECTION" && run_logged "$stage" 1200 "$name" \
        ansible-test units --python "$python_version" --python-interpreter "$interpreter" --color no)
    status=$?
    collect_pytest_lines "$stage"
    # ansible-test units turns pytest's exit 5 (nothing collected) into success: count what ran.
    counts=$(junit_counts "$COLLECTION"/tests/output/junit/*.xml 2>&1) || counts="tests=0 ($counts)"
    if ((status != 0)); then
        record "$stage" FAIL $((SECONDS - start)) "exit $status; $counts; log $RESULTS/$stage.log"
    elif [[ $counts == tests=0* ]]; then
        record "$stage" FAIL $((SECONDS - start)) "$files test file(s) but no test ran; log $RESULTS/$stage.log"
    else
        record "$stage" PASS $((SECONDS - start)) "$counts"
    fi
}

stage_ansible_lint() {
    local stage=ansible-lint start=$SECONDS status
    banner "$stage: ansible-lint (production profile, ansible-core ${MAILSEC_LINT_ENV#core-})"
    # Always has work: galaxy.yml and meta/ besides roles, playbooks and other Ansible YAML.
    # --offline: no collection requirements or schema updates are fetched (no internet here).
    (cd "$COLLECTION" && run_logged "$stage" 900 "$MAILSEC_LINT_ENV" \
        ansible-lint --offline --nocolor -c "$COLLECTION/.ansible-lint")
    status=$?
    if ((status == 0)); then
        record "$stage" PASS $((SECONDS - start)) ""
    else
        record "$stage" FAIL $((SECONDS - start)) "exit $status; log $RESULTS/$stage.log"
    fi
}

stage_changelog() {
    local stage=changelog start=$SECONDS status
    banner "$stage: antsibull-changelog lint"
    # Fragments, then the release history file; both are checked even when the first fails.
    # shellcheck disable=SC2016  # expanded by the inner shell
    (cd "$COLLECTION" && run_logged "$stage" 300 "$MAILSEC_PRIMARY_ENV" bash -c \
        'antsibull-changelog lint; fragments=$?
         antsibull-changelog lint-changelog-yaml changelogs/changelog.yaml; history=$?
         exit $((fragments | history))')
    status=$?
    if ((status == 0)); then
        record "$stage" PASS $((SECONDS - start)) ""
    else
        record "$stage" FAIL $((SECONDS - start)) "exit $status; log $RESULTS/$stage.log"
    fi
}

stage_fuzz() {
    local stage=fuzz start=$SECONDS status
    banner "$stage: tests/fuzz/run.sh (${MAILSEC_FUZZ_BUDGET:-60} s in all)"
    run_logged "$stage" 900 "$MAILSEC_PRIMARY_ENV" bash "$MAILSEC_ROOT/tests/fuzz/run.sh" "${MAILSEC_FUZZ_BUDGET:-60}"
    status=$?
    if ((status == 0)); then
        record "$stage" PASS $((SECONDS - start)) ""
    else
        record "$stage" FAIL $((SECONDS - start)) "exit $status; log $RESULTS/$stage.log"
    fi
}

stage_integration() {
    local stage=integration start=$SECONDS status files counts
    banner "$stage: pytest tests/integration (ansible-core ${MAILSEC_PRIMARY_ENV#core-})"
    files=$(count_test_files "$MAILSEC_ROOT/tests/integration")
    if ((files == 0)); then
        echo "no test files (test_*.py) under tests/integration yet"
        record "$stage" NO-TESTS $((SECONDS - start)) "tests/integration has no test files yet"
        return
    fi
    local extra=()
    # shellcheck disable=SC2206  # word splitting of the user's extra arguments is intended
    extra=(${MAILSEC_PYTEST_ARGS:-})
    # The whole directory unless the extra arguments name test files or directories of their own.
    local where=tests/integration arg
    for arg in "${extra[@]}"; do
        [[ $arg == tests/integration* ]] && where=""
    done
    # Run from the working tree (failures point at the real files) against the built collection:
    # ansible/ansible-playbook find it through ANSIBLE_COLLECTIONS_PATH, Python through PYTHONPATH.
    (cd "$MAILSEC_ROOT" && run_logged "$stage" 2400 "$MAILSEC_PRIMARY_ENV" \
        env PYTHONPATH="$BUILD${PYTHONPATH:+:$PYTHONPATH}" \
        MAILSEC_BUILD="$BUILD" MAILSEC_COLLECTION_ROOT="$COLLECTION" \
        MAILSEC_TOOLS_VENV="$(mailsec_venv_dir "$MAILSEC_TOOLS_ENV")" \
        python -m pytest -p no:cacheprovider --junit-xml "$RESULTS/integration.xml" -r fEs \
        "${extra[@]}" ${where:+"$where"})
    status=$?
    collect_pytest_lines "$stage"
    counts=$(junit_counts "$RESULTS/integration.xml" 2>/dev/null) || counts=""
    case $status in
        0) record "$stage" PASS $((SECONDS - start)) "$counts" ;;
        5) record "$stage" FAIL $((SECONDS - start)) "pytest collected no test from $files test file(s) (exit 5)" ;;
        *) record "$stage" FAIL $((SECONDS - start)) "exit $status; $counts; log $RESULTS/$stage.log" ;;
    esac
}

# ------------------------------------------------------------------------------------------------

run_started=$SECONDS
build_tree || { printf 'could not build the collection tree in %s\nstages: 0 passed, 1 failed\n' "$COLLECTION"; exit 1; }
echo "collection tree: $COLLECTION ($(find "$COLLECTION" -type f | wc -l) files)"

# ansible-test keeps its sanity virtual environments in ~/.ansible/test/venv, shared by every
# checkout; two runs creating one at the same time would break it.
exec 7>"$MAILSEC_CACHE/ansible-test.lock"
if (wanted sanity || wanted units) && ! flock -n 7; then
    printf 'waiting for another checkout'"'"'s ansible-test run to finish...\n' >&2
    flock 7
fi

if wanted sanity; then
    for name in "${MAILSEC_CORE_ENVS[@]}"; do
        if ((quick)) && [[ $name != "$MAILSEC_PRIMARY_ENV" ]]; then
            record "sanity-${name#core-}" SKIP 0 "--quick"
            continue
        fi
        stage_sanity "$name"
    done
fi
if wanted units; then
    for name in "${MAILSEC_CORE_ENVS[@]}"; do
        if ((quick)) && [[ $name != "$MAILSEC_PRIMARY_ENV" ]]; then
            record "units-${name#core-}" SKIP 0 "--quick"
            continue
        fi
        stage_units "$name" "${MAILSEC_ENV_PYTHON[$name]}" "$(mailsec_venv_dir "$name")/bin/python" \
            "units-${name#core-}"
    done
    # Modules run on managed hosts: their unit tests also run on the oldest target Python, driven
    # by the primary ansible-core (ansible-test runs only modules/module_utils tests there).
    target_python=${MAILSEC_ENV_PYTHON[$MAILSEC_TARGET_ENV]}
    stage_units "$MAILSEC_PRIMARY_ENV" "$target_python" "$(mailsec_venv_dir "$MAILSEC_TARGET_ENV")/bin/python" \
        "units-py$target_python"
fi
flock -u 7
if wanted lint; then
    stage_ansible_lint
    stage_changelog
fi
if wanted fuzz; then
    stage_fuzz
fi
if wanted integration; then
    stage_integration
fi

# ------------------------------------------------------------------------------------------------
# Summary

banner "summary ($((SECONDS - run_started)) s; logs in $RESULTS)"
passed=0
failed=0
skipped=0
for i in "${!stage_names[@]}"; do
    printf '%-9s %-14s %5ss  %s\n' "${stage_status[i]}" "${stage_names[i]}" "${stage_seconds[i]}" "${stage_notes[i]}"
    case ${stage_status[i]} in
        PASS) passed=$((passed + 1)) ;;
        FAIL) failed=$((failed + 1)) ;;
        *) skipped=$((skipped + 1)) ;;
    esac
done
if ((${#pytest_lines[@]})); then
    echo
    printf '%s\n' "${pytest_lines[@]}"
fi
echo
if ((skipped)); then
    printf 'stages: %d passed, %d failed, %d skipped\n' "$passed" "$failed" "$skipped"
else
    printf 'stages: %d passed, %d failed\n' "$passed" "$failed"
fi
((failed == 0))
