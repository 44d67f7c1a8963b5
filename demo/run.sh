#!/usr/bin/env bash
# The README's first command: set this machine up, start the bundled demo mail host on loopback and
# run the main job, the STARTTLS audit, against it. `bash demo/run.sh stop` stops the demo host;
# `bash demo/run.sh remediate` then fixes the demo host and audits it again (the next `bash demo/run.sh`
# starts the demo host afresh, in the KB Q237327 state); `eval "$(bash demo/run.sh env)"` puts its
# ansible-core and this collection into your shell.
#
# The demo host (tests/lab, profile demo) is real Postfix and Dovecot on 127.0.60.1, isolated from DNS
# and the network: Postfix port 25 advertises STARTTLS without a certificate bound (the KB Q237327
# state), port 587 and Dovecot's IMAP listeners are compliant.
# Not root on Debian (or MAILSEC_DEMO_FALLBACK=1): a clearly labelled probe-only fallback audits
# simulated listeners (bench/fixture.py) in black-box mode instead.
set -euo pipefail

# shellcheck source=tests/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../tests/lib/common.sh"
cd "$MAILSEC_ROOT"

DEMO_ROOT=${MAILSEC_DEMO_ROOT:-/tmp/mailsec-demo}
REPORT_DIR=${MAILSEC_DEMO_REPORTS:-$MAILSEC_ROOT/reports}

# ansible finds the collection under a path that ends in ansible_collections/mailsec/starttls.
collections=$MAILSEC_CACHE/demo-collections

case ${1:-} in
    '') ;;
    stop)
        python3 tests/lab/mta_lab.py stop --root "$DEMO_ROOT"
        exit 0
        ;;
    remediate)
        # The second act: remediate the demo host (playbook mailsec.starttls.remediate: bind the
        # certificate port 587 already serves to port 25, reload Postfix, probe again from the host and
        # the controller), then audit it again, which now passes.
        venv=$(mailsec_venv_dir "$MAILSEC_PRIMARY_ENV")
        if ! python3 tests/lab/mta_lab.py status --root "$DEMO_ROOT" >/dev/null 2>&1; then
            echo "demo: the demo mail host is not running; start it with: bash demo/run.sh" >&2
            exit 1
        fi
        # The demo host's configuration is about to change: the next `bash demo/run.sh` starts it afresh.
        touch "$DEMO_ROOT/.remediated"
        mailsec_log "demo: remediating the demo host (playbook mailsec.starttls.remediate)"
        ANSIBLE_COLLECTIONS_PATH=$collections ANSIBLE_PYTHON_INTERPRETER=$venv/bin/python \
            "$venv/bin/ansible-playbook" -i demo/inventory.yml mailsec.starttls.remediate \
            -e "starttls_report_dir=$REPORT_DIR" -e "starttls_ca_file=$DEMO_ROOT/certs/lab-ca.crt" \
            -e '{"starttls_remediate_listeners": [{"address": "127.0.60.1"}]}'
        mailsec_log "demo: auditing the demo host again"
        status=0
        ANSIBLE_COLLECTIONS_PATH=$collections ANSIBLE_PYTHON_INTERPRETER=$venv/bin/python \
            "$venv/bin/ansible-playbook" -i demo/inventory.yml mailsec.starttls.audit \
            -e "starttls_report_dir=$REPORT_DIR" -e "starttls_ca_file=$DEMO_ROOT/certs/lab-ca.crt" || status=$?
        echo "Changes: $REPORT_DIR/starttls-remediation-demo-mail.json; audit exit $status (0: compliant)"
        exit "$status"
        ;;
    env)
        # Shell settings that put the demo's ansible-core and this checkout's collection first:
        # eval "$(bash demo/run.sh env)"
        venv=$(mailsec_venv_dir "$MAILSEC_PRIMARY_ENV")
        if [[ ! -x $venv/bin/ansible-playbook || ! -e $collections/ansible_collections/mailsec/starttls ]]; then
            echo "demo: not set up yet: run 'bash demo/run.sh' first" >&2
            exit 1
        fi
        # shellcheck disable=SC2016  # $PATH is for the shell that evaluates this line
        printf 'export PATH=%q:"$PATH"\n' "$venv/bin"
        printf 'export ANSIBLE_COLLECTIONS_PATH=%q\n' "$collections"
        printf 'export ANSIBLE_PYTHON_INTERPRETER=%q\n' "$venv/bin/python"
        exit 0
        ;;
    *)
        echo "usage: bash demo/run.sh [stop|remediate|env]" >&2
        exit 2
        ;;
esac

mkdir -p "$collections/ansible_collections/mailsec"
ln -sfn "$MAILSEC_ROOT" "$collections/ansible_collections/mailsec/starttls"

if [[ ${MAILSEC_DEMO_FALLBACK:-0} == 1 || $(id -u) != 0 || ! -f /etc/debian_version ]]; then
    # Without root on Debian there are no real MTAs to start: audit simulated listeners instead,
    # from the network alone, and say so.
    echo "*** PROBE-ONLY FALLBACK: not root on Debian, so no real Postfix or Dovecot can be started."
    echo "*** The audit runs in black-box mode against SIMULATED listeners (bench/fixture.py) on 127.0.60.9."
    MAILSEC_SKIP_APT=1 bash tests/setup.sh
    venv=$(mailsec_venv_dir "$MAILSEC_PRIMARY_ENV")
    work=$(mktemp -d)
    trap 'kill "$fixture_pid" 2>/dev/null; rm -rf "$work"' EXIT
    python3 bench/fixture.py --n 10 --address 127.0.60.9 --base-port 2525 --manifest "$work/fixture.json" \
        --max-lifetime 600 >"$work/fixture.log" 2>&1 &
    fixture_pid=$!
    for _attempt in $(seq 100); do [[ -s $work/fixture.json ]] && break; sleep 0.1; done
    "$venv/bin/python" - "$work/fixture.json" "$work/inventory.json" <<'PY'
import json, sys
fixture = json.load(open(sys.argv[1]))
listeners = [f"{item['address']}:{item['port']}/smtp" for item in fixture['listeners']]
inventory = {'all': {'hosts': {'simulated-mx': {
    'ansible_connection': 'local', 'starttls_host_inspection': False, 'starttls_listeners': listeners,
    'starttls_ca_file': fixture['ca_file']}}}}
json.dump(inventory, open(sys.argv[2], 'w'))
PY
    rm -f "$REPORT_DIR"/starttls-report.*
    status=0
    ANSIBLE_COLLECTIONS_PATH=$collections ANSIBLE_PYTHON_INTERPRETER=$venv/bin/python \
        "$venv/bin/ansible-playbook" -i "$work/inventory.json" mailsec.starttls.audit \
        -e "starttls_report_dir=$REPORT_DIR" || status=$?
    echo "*** PROBE-ONLY FALLBACK (simulated listeners): reports in $REPORT_DIR, audit exit $status"
    exit 0
fi

bash tests/setup.sh
venv=$(mailsec_venv_dir "$MAILSEC_PRIMARY_ENV")

if [[ -e $DEMO_ROOT/.remediated ]]; then
    # `bash demo/run.sh remediate` fixed it: start from the KB Q237327 state again.
    python3 tests/lab/mta_lab.py stop --root "$DEMO_ROOT" >/dev/null
    rm -f "$DEMO_ROOT/.remediated"
fi
mailsec_log "demo: starting the demo mail host in $DEMO_ROOT"
python3 tests/lab/mta_lab.py start --profile demo --root "$DEMO_ROOT" >/dev/null

mailsec_log "demo: running the audit (playbook mailsec.starttls.audit)"
# Reports of an earlier run must never pass for this run's.
rm -f "$REPORT_DIR"/starttls-report.*
status=0
ANSIBLE_COLLECTIONS_PATH=$collections ANSIBLE_PYTHON_INTERPRETER=$venv/bin/python \
    "$venv/bin/ansible-playbook" -i demo/inventory.yml mailsec.starttls.audit \
    -e "starttls_report_dir=$REPORT_DIR" -e "starttls_ca_file=$DEMO_ROOT/certs/lab-ca.crt" || status=$?

if [[ ! -f $REPORT_DIR/starttls-report.md ]]; then
    echo "demo: the audit wrote no report (exit $status)" >&2
    exit 1
fi
echo
# The demo exists to show the KB Q237327 finding: without it, something is wrong, and the demo fails.
"$venv/bin/python" - "$REPORT_DIR/starttls-report.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
summary = report['summary']
print(f"STARTTLS audit: {summary['hosts']} hosts, {summary['listeners']} listeners, {summary['probes']} probes, "
      f"{summary['findings']} findings ({', '.join(f'{n} {s}' for s, n in summary['by_severity'].items() if n)})")
for finding in report['findings']:
    if finding['severity'] in ('critical', 'high', 'medium'):
        print(f"  {finding['severity']:8} {finding['id']:42} {finding['host']} {finding['summary']}")
if not any(finding['id'] == 'starttls-advertised-without-certificate' for finding in report['findings']):
    sys.exit('demo: FAILED: the audit did not report the KB Q237327 listener (127.0.60.1:25)')
PY
echo
echo "Reports: $REPORT_DIR/starttls-report.{json,junit.xml,md,html}"
if [[ $status == 2 ]]; then
    echo "The audit failed the run (exit 2), as its default policy does for an unwaived critical or high finding."
fi
echo "Remediate the demo host and audit it again with: bash demo/run.sh remediate"
echo "Stop the demo mail host with: bash demo/run.sh stop"
