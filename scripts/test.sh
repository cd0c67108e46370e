#!/usr/bin/env bash
# Runs every dlock test against real coordinators, as CI does.
#
#   bash scripts/test.sh
#
# 1. installs the Debian packages the tests need when missing (install-deps.sh),
# 2. starts PostgreSQL, MariaDB, etcd, ZooKeeper, Consul and Redis (one with
#    AOF, one without) on loopback (coordinators.sh; a DLOCK_TEST_<X>_URL
#    already set in the environment means "use that server instead"), and
#    reads .run/env,
# 3. runs the whole workspace's tests with all backends (the conformance
#    suite runs unchanged against every coordinator), then the fault tests
#    that restart coordinators, one at a time, then the fault lab (clusters
#    in network namespaces under a nemesis), then the tests that compile
#    code (the macro's compile-fail cases, the doc tests),
# 4. runs every example (the README's first command among them),
# 5. stops the coordinators it started (DLOCK_KEEP_COORDINATORS=1 keeps them).
#
# Extra arguments go to the main `cargo nextest run` (e.g. a test filter).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

if [[ "${DLOCK_KEEP_COORDINATORS:-0}" != 1 ]]; then
    trap 'bash scripts/coordinators.sh stop >/dev/null 2>&1 || true' EXIT
fi
bash scripts/coordinators.sh start
# shellcheck disable=SC1091
source .run/env

# Every coordinator must be configured: a suite that cannot reach its
# coordinator fails; it never skips.
for v in DLOCK_TEST_POSTGRES_URL DLOCK_TEST_MYSQL_URL DLOCK_TEST_ETCD_URL \
         DLOCK_TEST_ZOOKEEPER_URL DLOCK_TEST_CONSUL_URL \
         DLOCK_TEST_REDIS_URL DLOCK_TEST_REDIS_VOLATILE_URL; do
    if [[ -z "${!v:-}" ]]; then
        echo "test.sh: $v is not set after starting the coordinators" >&2
        exit 1
    fi
done

export RUST_BACKTRACE=1
# Conformance cases mostly wait on leases; more threads than cores is fine.
cargo nextest run --workspace --all-features --no-fail-fast --test-threads 6 \
    -E 'not binary(faults) and not binary(/^lab/) and not binary(ui)' "$@"
# Fault tests restart shared coordinators: alone and one at a time.
cargo nextest run --workspace --all-features --no-fail-fast --test-threads 1 \
    --no-tests warn -E 'binary(faults)'
# The fault lab: 3-member clusters and clients in network namespaces
# (scripts/netlab.sh, root), a nemesis and a history checker. Each run has a
# network of its own (DLOCK_LAB_ID), so they run side by side.
cargo nextest run --workspace --all-features --no-fail-fast --test-threads 4 \
    --no-tests warn -E 'binary(/^lab/)'
# Tests that compile code (the macro's compile-fail cases, the doc tests)
# run alone: a cold compile beside the timing-bound cases above starves them
# of CPU on a 2-core machine.
cargo nextest run --workspace --all-features --no-fail-fast -E 'binary(ui)'
cargo test --workspace --all-features --doc

# The examples, each checking its own claim (exit non-zero otherwise) on
# SQLite; the README's first command, scheduled_nodes, last.
for ex in daily_email message_processor file_import migration singleton_worker scheduled_nodes; do
    echo "== example $ex"
    cargo run -q -p dlock-rs --example "$ex"
done
