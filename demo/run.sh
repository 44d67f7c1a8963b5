#!/usr/bin/env bash
# The README's first command: set this machine up, start the bundled demo mail host on loopback and
# run the main job against it. `bash demo/run.sh stop` stops the demo host.
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

mailsec_log "demo: running the main job"
ANSIBLE_COLLECTIONS_PATH=$collections ANSIBLE_NOCOLOR=${ANSIBLE_NOCOLOR:-0} \
    ANSIBLE_PYTHON_INTERPRETER=$venv/bin/python \
    "$venv/bin/ansible-playbook" -i demo/inventory.yml demo/main.yml -e "starttls_report_dir=$REPORT_DIR"
