#!/usr/bin/env bash
# A longer fault-lab run: the nemesis schedule repeated for MINUTES on a
# 3-member cluster, then the table of holds, faults injected by kind and
# violations by kind (the same lab CI runs once, bounded).
#
#   bash scripts/chaos.sh etcd 5
#
# Needs root (network namespaces). Backends with a lab so far: etcd,
# zookeeper, consul, postgres, mysql (MariaDB), sqlite.
set -euo pipefail
cd "$(dirname "$0")/.."

backend=${1:-}
minutes=${2:-5}
case $backend in
    etcd) package=dlock-etcd ;;
    zookeeper) package=dlock-zookeeper ;;
    consul) package=dlock-consul ;;
    postgres | mysql | sqlite) package=dlock-sql; test=lab_$backend ;;
    *)
        echo "chaos.sh: no fault lab for ${backend:-?} yet (have: etcd, zookeeper, consul, postgres, mysql, sqlite)" >&2
        exit 64
        ;;
esac
[[ $minutes =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "chaos.sh: MINUTES must be a number" >&2; exit 64; }
DLOCK_LAB_MINUTES=$minutes exec cargo nextest run -p "$package" --all-features \
    --test "${test:-lab}" --no-capture --no-fail-fast -E 'test(/::faults$/)'
