#!/bin/sh
# Prepare a Debian 12 machine (as root) for the mail server lab in tests/lab/mta_lab.py.
#
# Installs Postfix (debconf "No configuration": no /etc/postfix/main.cf, nothing started) and
# Dovecot from apt, then fetches Exim and OpenSMTPD with `apt-get download` and unpacks them with
# `dpkg -x` into a private tree, because as MTAs they conflict with Postfix. The lab runs them
# from that tree inside a private mount namespace.
#
# Idempotent: packages already installed are not reinstalled and an unpacked tree whose package
# versions match is kept. Safe to run again at any time.
#
# Environment:
#   MAILSEC_LAB_PKGROOT  where to unpack Exim and OpenSMTPD (default /opt/mailsec-lab/root)
#   MAILSEC_LAB_DEBS     directory with already downloaded .deb files to use before asking apt
set -eu

PKGROOT="${MAILSEC_LAB_PKGROOT:-/opt/mailsec-lab/root}"
DEB_CACHE="$(dirname "$PKGROOT")/debs"
POLICY=/usr/sbin/policy-rc.d
POLICY_CREATED=0

APT_PACKAGES="postfix dovecot-core dovecot-imapd dovecot-pop3d dovecot-managesieved dovecot-lmtpd
openssl iproute2 procps util-linux ca-certificates"
# Shared libraries the unpacked exim4 and smtpd binaries link against. None of them conflicts
# with Postfix, so they are installed normally (libidn12 is the one a Postfix host lacks).
RUNTIME_LIBS="libidn12 libidn2-0 libdb5.3 libnsl2 libcrypt1 libgnutls30 libgnutls-dane0
libpcre2-8-0 libevent-2.1-7 libevent-core-2.1-7 libpam0g libssl3 zlib1g"
UNPACKED_PACKAGES="exim4-base exim4-config exim4-daemon-light opensmtpd"

log() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
command -v apt-get >/dev/null || die "apt-get not found: this script is for Debian 12"

restore_policy() {
    if [ "$POLICY_CREATED" = 1 ]; then
        rm -f "$POLICY"
        log "removed the temporary $POLICY"
    fi
}
trap restore_policy EXIT
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

# shellcheck disable=SC2086
missing="$(missing_packages $APT_PACKAGES $RUNTIME_LIBS)"
apt_updated=0
if [ -n "$missing" ]; then
    # shellcheck disable=SC2086
    log "installing: $(printf '%s ' $missing)"
    apt-get update
    apt_updated=1
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
else
    log "apt packages already installed"
fi

candidate_version() {
    apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2; exit}'
}

# One line per unpacked package: name=version. A tree made from other versions is rebuilt.
wanted=""
for package in $UNPACKED_PACKAGES; do
    version="$(candidate_version "$package")"
    if [ -z "$version" ] || [ "$version" = "(none)" ]; then
        if [ "$apt_updated" = 0 ]; then
            apt-get update
            apt_updated=1
            version="$(candidate_version "$package")"
        fi
    fi
    if [ -z "$version" ] || [ "$version" = "(none)" ]; then
        die "apt knows no candidate for $package"
    fi
    wanted="$wanted$package=$version
"
done

marker="$PKGROOT/.mailsec-lab-packages"
if [ -f "$marker" ] && [ "$(cat "$marker")" = "$(printf '%s' "$wanted")" ]; then
    log "unpacked tree $PKGROOT is current"
else
    mkdir -p "$DEB_CACHE"
    printf '%s' "$wanted" | while IFS='=' read -r package version; do
        [ -n "$package" ] || continue
        # Debian file names encode the epoch colon as %3a.
        file_version="$(printf '%s' "$version" | sed 's/:/%3a/')"
        found=""
        for dir in "${MAILSEC_LAB_DEBS:-}" "$DEB_CACHE"; do
            [ -n "$dir" ] || continue
            for deb in "$dir/${package}_${file_version}_"*.deb; do
                [ -f "$deb" ] && found="$deb"
            done
            [ -n "$found" ] && break
        done
        if [ -z "$found" ]; then
            log "downloading $package $version"
            (cd "$DEB_CACHE" && apt-get download "$package=$version")
            for deb in "$DEB_CACHE/${package}_${file_version}_"*.deb; do
                [ -f "$deb" ] && found="$deb"
            done
        fi
        [ -n "$found" ] || die "no .deb for $package $version"
        printf '%s\n' "$found"
    done >"$DEB_CACHE/.selected"

    staging="$PKGROOT.new"
    rm -rf "$staging"
    mkdir -p "$staging"
    while read -r deb; do
        log "unpacking $(basename "$deb")"
        dpkg -x "$deb" "$staging"
    done <"$DEB_CACHE/.selected"
    printf '%s' "$wanted" >"$staging/.mailsec-lab-packages"
    rm -rf "$PKGROOT"
    mv "$staging" "$PKGROOT"
fi

# Every shared library of the unpacked daemons must resolve from the system.
for binary in "$PKGROOT/usr/sbin/exim4" "$PKGROOT/usr/sbin/smtpd"; do
    [ -x "$binary" ] || die "$binary missing after unpacking"
    unresolved="$(ldd "$binary" | awk '/not found/ {print $1}')"
    [ -z "$unresolved" ] || die "$binary needs libraries that are not installed: $unresolved"
done

# Service users the daemons switch to. Dovecot's dovecot/dovenull and Postfix's postfix/postdrop
# come with their packages; the unpacked ones never ran a maintainer script.
ensure_system_user() {
    user="$1" home="$2"
    getent group "$user" >/dev/null || groupadd --system "$user"
    getent passwd "$user" >/dev/null ||
        useradd --system --gid "$user" --home-dir "$home" --no-create-home \
            --shell /usr/sbin/nologin "$user"
}
ensure_system_user Debian-exim /var/spool/exim4
# Debian's OpenSMTPD build runs as opensmtpd/opensmtpq (not OpenBSD's _smtpd/_smtpq).
ensure_system_user opensmtpd /var/lib/opensmtpd/empty
ensure_system_user opensmtpq /var/lib/opensmtpd/empty
for user in postfix dovecot dovenull; do
    getent passwd "$user" >/dev/null || die "user $user missing: its package did not install cleanly"
done

log "ready: $PKGROOT ($(printf '%s' "$wanted" | tr '\n' ' '))"
