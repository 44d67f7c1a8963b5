#!/usr/bin/env bash
# The README's first command: set this machine up, start the bundled demo mail host on loopback and
# run the main job, the STARTTLS audit, against it. `bash demo/run.sh stop` stops the demo host.
#
# The demo host (tests/lab, profile demo) is real Postfix and Dovecot on 127.0.60.1, isolated from DNS
# and the network: Postfix port 25 advertises STARTTLS without a certificate bound (the KB Q237327
# state), port 587 and Dovecot's IMAP listeners are compliant.
set -euo pipefail

# shellcheck source=tests/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../tests/lib/common.sh"
cd "$MAILSEC_ROOT"

DEMO_ROOT=${MAILSEC_DEMO_ROOT:-/tmp/mailsec-demo}
REPORT_DIR=${MAILSEC_DEMO_REPORTS:-$MAILSEC_ROOT/reports}

if [[ ${1:-} == stop ]]; then
    python3 tests/lab/mta_lab.py stop --root "$DEMO_ROOT"
    exit 0
fi

if [[ $(id -u) != 0 ]]; then
    echo "demo/run.sh installs Debian packages and starts real mail servers: run it as root" >&2
    exit 1
fi

bash tests/setup.sh
venv=$(mailsec_venv_dir "$MAILSEC_PRIMARY_ENV")

mailsec_log "demo: starting the demo mail host in $DEMO_ROOT"
python3 tests/lab/mta_lab.py start --profile demo --root "$DEMO_ROOT" >/dev/null

# ansible finds the collection under a path that ends in ansible_collections/mailsec/starttls.
collections=$MAILSEC_CACHE/demo-collections
mkdir -p "$collections/ansible_collections/mailsec"
ln -sfn "$MAILSEC_ROOT" "$collections/ansible_collections/mailsec/starttls"

mailsec_log "demo: running the audit (playbook mailsec.starttls.audit)"
status=0
ANSIBLE_COLLECTIONS_PATH=$collections ANSIBLE_PYTHON_INTERPRETER=$venv/bin/python \
    "$venv/bin/ansible-playbook" -i demo/inventory.yml mailsec.starttls.audit \
    -e "starttls_report_dir=$REPORT_DIR" -e "starttls_ca_file=$DEMO_ROOT/certs/lab-ca.crt" || status=$?

if [[ ! -f $REPORT_DIR/starttls-report.md ]]; then
    echo "demo: the audit wrote no report (exit $status)" >&2
    exit 1
fi
echo
"$venv/bin/python" - "$REPORT_DIR/starttls-report.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
summary = report['summary']
print(f"STARTTLS audit: {summary['hosts']} hosts, {summary['listeners']} listeners, {summary['probes']} probes, "
      f"{summary['findings']} findings ({', '.join(f'{n} {s}' for s, n in summary['by_severity'].items() if n)})")
for finding in report['findings']:
    if finding['severity'] in ('critical', 'high', 'medium'):
        print(f"  {finding['severity']:8} {finding['id']:42} {finding['host']} {finding['summary']}")
PY
echo
echo "Reports: $REPORT_DIR/starttls-report.{json,junit.xml,md,html}"
if [[ $status == 2 ]]; then
    echo "The audit failed the run (exit 2), as its default policy does for an unwaived critical or high finding."
fi
echo "Stop the demo mail host with: bash demo/run.sh stop"
