#!/usr/bin/env bash
# Install every Debian package dlock's tests need, when missing.
#
#   bash scripts/install-deps.sh
#
# Idempotent: each package is checked with `dpkg -s` first, so on a machine
# that already has everything this takes about a second and touches nothing.
# Meant for Debian 12 (bookworm) as root, without systemd or Docker
# (each step says why it is there):
#
#   postgresql (15)                  PostgreSQL coordinator
#   mariadb-server mariadb-client    MySQL-protocol coordinator (10.11)
#   etcd-server etcd-client          etcd 3.4 + etcdctl
#   zookeeper libslf4j-java          ZooKeeper 3.8 (run with /usr/bin/java)
#   protobuf-compiler libprotobuf-dev  protoc + google/protobuf/*.proto for
#                                    the etcd-client crate's build script
#   faketime                         libfaketime: a test skews a child's clock
#   redis-server (7.0)               Redis coordinator (brings redis-tools:
#                                    redis-cli for readiness checks)
#   curl                             readiness checks, Consul HTTP API
#   consul (1.8.7)                   not in bookworm: installed from Debian 11
#                                    (bullseye) through a temporary apt source
#
# Package scripts must not start services: /usr/sbin/policy-rc.d (exit 101)
# is created if the machine does not have one already.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps.sh: must run as root (it calls apt-get)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-y -q -o DPkg::Lock::Timeout=300 --no-install-recommends)

BOOKWORM_PKGS=(
    postgresql
    mariadb-server mariadb-client
    etcd-server etcd-client
    zookeeper libslf4j-java
    protobuf-compiler libprotobuf-dev
    faketime
    redis-server
    curl ca-certificates
)

log() { printf 'install-deps: %s\n' "$*" >&2; }

installed() {
    # dpkg -s succeeds for removed-but-configured packages too; require
    # "install ok installed".
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

apt_update() {
    apt-get -q -o DPkg::Lock::Timeout=300 -o Acquire::Retries=3 update >/dev/null
}

missing=()
for p in "${BOOKWORM_PKGS[@]}"; do
    installed "$p" || missing+=("$p")
done
need_consul=0
installed consul || need_consul=1

if [[ ${#missing[@]} -eq 0 && $need_consul -eq 0 ]]; then
    log "all packages present"
    exit 0
fi

if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    log "creating /usr/sbin/policy-rc.d (exit 101) so packages do not start services"
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
fi

if [[ ${#missing[@]} -gt 0 ]]; then
    log "installing: ${missing[*]}"
    apt_update
    apt-get install "${APT_OPTS[@]}" "${missing[@]}"
fi

if [[ $need_consul -eq 1 ]]; then
    # Consul 1.8.7 is packaged in Debian 11 only. Add a bullseye source made
    # from this machine's own bookworm source (same mirror, same keyring),
    # install consul, then take the source away again so later upgrades only
    # see bookworm. No mirror host name is written into the repository.
    src=/etc/apt/sources.list.d/dlock-bullseye-tmp.sources
    trap 'rm -f "$src"' EXIT
    if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
        # deb822: rewrite the Suites: lines only.
        #   bookworm -> bullseye, bookworm-security -> bullseye-security,
        #   bookworm-updates dropped.
        sed -E '/^Suites:/ {
                    s/[[:space:]]bookworm-updates\b//g
                    s/\bbookworm-security\b/bullseye-security/g
                    s/\bbookworm\b/bullseye/g
                }' /etc/apt/sources.list.d/debian.sources > "$src"
    elif [[ -f /etc/apt/sources.list ]]; then
        # One-line format fallback: keep the "deb" lines, same rewrite.
        src=/etc/apt/sources.list.d/dlock-bullseye-tmp.list
        trap 'rm -f "$src"' EXIT
        grep -E '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list \
            | grep -v 'bookworm-updates' \
            | sed -E 's/\bbookworm-security\b/bullseye-security/g; s/\bbookworm\b/bullseye/g' \
            > "$src"
    else
        log "no /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list to derive a bullseye source from"
        exit 1
    fi
    log "installing consul from bullseye (temporary apt source $src)"
    apt_update
    apt-get install "${APT_OPTS[@]}" consul
    rm -f "$src"
    trap - EXIT
    apt_update
fi

# Final check: everything must be there now.
still=()
for p in "${BOOKWORM_PKGS[@]}" consul; do
    installed "$p" || still+=("$p")
done
if [[ ${#still[@]} -gt 0 ]]; then
    log "still missing after install: ${still[*]}"
    exit 1
fi
log "done: $(consul version | head -1), $(etcd --version 2>/dev/null | head -1), $(protoc --version)"
