#!/bin/sh
# Prepare a Debian 12 machine (as root) for the mail server lab in tests/lab/mta_lab.py.
#
# Installs Postfix (debconf "No configuration": no /etc/postfix/main.cf, nothing started) and
# Dovecot from apt, then fetches Exim and OpenSMTPD with `apt-get download` and unpacks them with
# `dpkg -x` into a private tree, because as MTAs they conflict with Postfix. The lab runs them
# from that tree inside a private mount namespace. Sendmail's m4 configuration kit (sendmail-cf)
# and m4 go into the same tree: the unit tests compile .mc files with them (Sendmail itself would
# replace Postfix, so there is no Sendmail daemon).
#
# Idempotent: packages already installed are not reinstalled and an unpacked tree whose package
# versions match is kept. Safe to run again at any time.
#
# Output: one progress line per step on standard error; what apt-get, apt-cache and dpkg say goes
# to a log file, whose path and last lines are printed when a step fails.
#
# Environment:
#   MAILSEC_LAB_PKGROOT    where to unpack Exim and OpenSMTPD (default /opt/mailsec-lab/root)
#   MAILSEC_LAB_DEB_CACHE  where downloaded .deb files are kept (default: debs/ beside the pkgroot)
#   MAILSEC_LAB_DEBS       directory with already downloaded .deb files to use before asking apt
#   MAILSEC_LAB_INSTALL_LOG  the log file (default: install.log beside the pkgroot)
set -eu

PKGROOT="${MAILSEC_LAB_PKGROOT:-/opt/mailsec-lab/root}"
BASE="$(dirname "$PKGROOT")"
DEB_CACHE="${MAILSEC_LAB_DEB_CACHE:-$BASE/debs}"
LOG="${MAILSEC_LAB_INSTALL_LOG:-$BASE/install.log}"
POLICY=/usr/sbin/policy-rc.d
POLICY_CREATED=0
STEP="starting"

APT_PACKAGES="postfix dovecot-core dovecot-imapd dovecot-pop3d dovecot-managesieved dovecot-lmtpd
openssl iproute2 procps util-linux ca-certificates"
# Shared libraries the unpacked exim4 and smtpd binaries link against. None of them conflicts
# with Postfix, so they are installed normally (libidn12 is the one a Postfix host lacks).
RUNTIME_LIBS="libidn12 libidn2-0 libdb5.3 libnsl2 libcrypt1 libgnutls30 libgnutls-dane0
libpcre2-8-0 libevent-2.1-7 libevent-core-2.1-7 libpam0g libssl3 zlib1g"
UNPACKED_PACKAGES="exim4-base exim4-config exim4-daemon-light opensmtpd sendmail-cf m4"

# Progress goes to standard error, so that it never mixes with data a step writes to stdout.
log() { printf 'install.sh: %s\n' "$*" >&2; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }
step() { STEP="$*"; log "$*"; printf '\n==== %s ====\n' "$*" >>"$LOG"; }
# Runs a command with its output in the log only.
quietly() { "$@" >>"$LOG" 2>&1; }

[ "$(id -u)" = 0 ] || die "must run as root"
command -v apt-get >/dev/null || die "apt-get not found: this script is for Debian 12"

mkdir -p "$BASE" "$DEB_CACHE"
: >"$LOG" || die "cannot write the log file $LOG"

finish() {
    status=$?
    if [ "$POLICY_CREATED" = 1 ]; then
        rm -f "$POLICY"
    fi
    if [ "$status" != 0 ]; then
        printf 'install.sh: FAILED while: %s (exit %s)\n' "$STEP" "$status" >&2
        printf 'install.sh: last lines of the log %s:\n' "$LOG" >&2
        tail -n 25 "$LOG" | sed 's/^/    /' >&2
        printf 'install.sh: the whole log: %s\n' "$LOG" >&2
    fi
}
trap finish EXIT
trap 'exit 130' INT TERM

# Package maintainer scripts must not start any daemon: the lab starts its own, with its own
# configuration, on loopback only.
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\n# temporary, created by mailsec lab install.sh\nexit 101\n' >"$POLICY"
    chmod 0755 "$POLICY"
    POLICY_CREATED=1
fi

missing_packages() {
    for package in "$@"; do
        status="$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)"
        [ "$status" = "install ok installed" ] || printf '%s\n' "$package"
    done
}

apt_updated=0
apt_update() {
    if [ "$apt_updated" = 0 ]; then
        step "apt-get update"
        quietly apt-get update
        apt_updated=1
    fi
}

# shellcheck disable=SC2086
missing="$(missing_packages $APT_PACKAGES $RUNTIME_LIBS)"
if [ -n "$missing" ]; then
    apt_update
    # shellcheck disable=SC2086
    step "apt-get install $(printf '%s ' $missing)"
    echo "postfix postfix/main_mailer_type select No configuration" | quietly debconf-set-selections
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive quietly apt-get install -y --no-install-recommends $missing
else
    log "apt packages already installed"
fi

candidate_version() {
    apt-cache policy "$1" 2>>"$LOG" | awk '/Candidate:/ {print $2; exit}'
}

# One line per unpacked package: name=version. A tree made from other versions is rebuilt.
wanted=""
for package in $UNPACKED_PACKAGES; do
    version="$(candidate_version "$package")"
    if [ -z "$version" ] || [ "$version" = "(none)" ]; then
        apt_update
        version="$(candidate_version "$package")"
    fi
    if [ -z "$version" ] || [ "$version" = "(none)" ]; then
        die "apt knows no candidate for $package"
    fi
    wanted="$wanted$package=$version
"
done

# Path of the cached .deb of a package version in a directory, or nothing.
cached_deb() {
    dir="$1" package="$2" version="$3"
    # Debian file names encode the epoch colon as %3a.
    file_version="$(printf '%s' "$version" | sed 's/:/%3a/')"
    for deb in "$dir/${package}_${file_version}_"*.deb; do
        if [ -f "$deb" ]; then
            printf '%s\n' "$deb"
            return 0
        fi
    done
    return 1
}

marker="$PKGROOT/.mailsec-lab-packages"
if [ -f "$marker" ] && [ "$(cat "$marker")" = "$(printf '%s' "$wanted")" ]; then
    log "unpacked tree $PKGROOT is current"
else
    selected="$DEB_CACHE/.selected"
    : >"$selected"
    # Not a pipeline: the loop runs in this shell, so that a failed step stops the script.
    old_ifs=$IFS
    IFS='
'
    for line in $wanted; do
        IFS=$old_ifs
        package="${line%%=*}" version="${line#*=}"
        found=""
        if [ -n "${MAILSEC_LAB_DEBS:-}" ]; then
            found="$(cached_deb "$MAILSEC_LAB_DEBS" "$package" "$version" || true)"
        fi
        [ -n "$found" ] || found="$(cached_deb "$DEB_CACHE" "$package" "$version" || true)"
        if [ -z "$found" ]; then
            step "downloading $package $version"
            (cd "$DEB_CACHE" && quietly apt-get download "$package=$version")
            found="$(cached_deb "$DEB_CACHE" "$package" "$version" || true)"
        fi
        [ -n "$found" ] || die "no .deb for $package $version in $DEB_CACHE after apt-get download"
        printf '%s\n' "$found" >>"$selected"
    done
    IFS=$old_ifs

    staging="$PKGROOT.new"
    rm -rf "$staging"
    mkdir -p "$staging"
    while IFS= read -r deb; do
        step "unpacking $(basename "$deb")"
        quietly dpkg -x "$deb" "$staging"
    done <"$selected"
    printf '%s' "$wanted" >"$staging/.mailsec-lab-packages"
    rm -rf "$PKGROOT"
    mv "$staging" "$PKGROOT"
fi

# Every shared library of the unpacked daemons must resolve from the system.
step "checking the unpacked daemons"
for binary in "$PKGROOT/usr/sbin/exim4" "$PKGROOT/usr/sbin/smtpd" "$PKGROOT/usr/bin/m4"; do
    [ -x "$binary" ] || die "$binary missing after unpacking"
    unresolved="$(ldd "$binary" | awk '/not found/ {print $1}')"
    [ -z "$unresolved" ] || die "$binary needs libraries that are not installed: $unresolved"
done

# Service users the daemons switch to. Dovecot's dovecot/dovenull and Postfix's postfix/postdrop
# come with their packages; the unpacked ones never ran a maintainer script.
ensure_system_user() {
    user="$1" home="$2"
    getent group "$user" >/dev/null || quietly groupadd --system "$user"
    getent passwd "$user" >/dev/null ||
        quietly useradd --system --gid "$user" --home-dir "$home" --no-create-home \
            --shell /usr/sbin/nologin "$user"
}
step "service users"
ensure_system_user Debian-exim /var/spool/exim4
# Debian's OpenSMTPD build runs as opensmtpd/opensmtpq (not OpenBSD's _smtpd/_smtpq).
ensure_system_user opensmtpd /var/lib/opensmtpd/empty
ensure_system_user opensmtpq /var/lib/opensmtpd/empty
for user in postfix dovecot dovenull; do
    getent passwd "$user" >/dev/null || die "user $user missing: its package did not install cleanly"
done

STEP="done"
log "ready: $PKGROOT ($(printf '%s' "$wanted" | tr '\n' ' '))"
