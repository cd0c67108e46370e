#!/usr/bin/env bash
# dlock next to the floor and its peers, on the servers scripts/coordinators.sh
# starts (a benchmark, not a test: nothing here passes or fails on speed).
#
#   bash scripts/bench.sh [--no-peers] [--out RESULTS.jsonl] [--svg CHART.svg]
#
# 1. starts the coordinators (a no-op for those already running),
# 2. runs each adapter's bench (`cargo bench`, release build): the floor (one
#    raw durable write through the client library the adapter uses), then
#    dlock's uncontended acquire and BENCH_CLIENTS clients contending for one
#    name for BENCH_SECONDS (dlock_testkit::bench::compare), then the scale
#    run: the acquire with BENCH_FEW_NAMES (10) and BENCH_MANY_NAMES
#    (100,000) other names held, and BENCH_WAITERS (256) waiters on one
#    name over BENCH_WAITER_CONNECTIONS (8), counting the acquire requests
#    each release costs (dlock_testkit::bench::scale),
# 3. runs the peers (scripts/bench/peers.sh: ShedLock's statements,
#    pg_advisory_lock, GET_LOCK, Curator, kazoo, python etcd3, Consul and
#    redis-py clients) with the same definitions,
# 4. prints the tables (scripts/bench/table.py) and writes the JSON lines
#    (default .run/bench/results.jsonl) and, with --svg, a chart.
#
# Sizes: BENCH_WARMUP (200), BENCH_ITERS (2000), BENCH_CLIENTS (8),
# BENCH_SECONDS (15). A full run takes about 5 minutes after the build.
set -euo pipefail
cd "$(dirname "$0")/.."

peers=1
out=.run/bench/results.jsonl
svg=
while [[ $# -gt 0 ]]; do
    case "$1" in
        --no-peers) peers=0 ;;
        --out) out=$2; shift ;;
        --svg) svg=$2; shift ;;
        *) echo "bench.sh: unknown argument $1 (see the header)" >&2; exit 2 ;;
    esac
    shift
done

bash scripts/install-deps.sh
bash scripts/coordinators.sh start
# shellcheck disable=SC1091
source .run/env

mkdir -p "$(dirname "$out")"
: > "$out"
export DLOCK_BENCH_JSON
DLOCK_BENCH_JSON=$(readlink -f "$out")
# One bench at a time: they share two cores with the servers.
for b in "dlock-sql sql" "dlock-etcd etcd" "dlock-zookeeper zookeeper" "dlock-consul consul" "dlock-redis redis"; do
    read -r crate bench <<< "$b"
    cargo bench -p "$crate" --all-features --bench "$bench"
done
if [[ $peers == 1 ]]; then
    bash scripts/bench/peers.sh --out "$out"
fi

echo
python3 scripts/bench/table.py "$out" ${svg:+--svg "$svg"}
