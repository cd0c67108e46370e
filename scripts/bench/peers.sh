#!/usr/bin/env bash
# Peer benchmarks: other lock libraries against the same servers as dlock's
# benchmark; one JSON line per peer (schema in peers.py).
#
#   scripts/bench/peers.sh [--out PATH] [PEER...]   (default out: .run/bench-peers.jsonl)
#
# PEER: pg-shedlock pg-advisory mysql-shedlock mysql-getlock etcd zk-kazoo
#       zk-curator consul (default: all, one after another).
# Knobs: BENCH_ITERS (2000) BENCH_WARMUP (200) BENCH_CLIENTS (8) BENCH_SECONDS (15).
#
# Idempotent setup, quick once done:
#  * .run/bench-venv with requirements.txt (reinstalled when that file changes);
#  * Curator from Debian's libcurator-recipes-java (apt-get if missing; Maven
#    Central is not reachable here, so no pom.xml), CuratorBench.java built
#    with javac into .run/bench-curator when the source is newer.
# Servers must be running (scripts/coordinators.sh start); .run/env
# is sourced when DLOCK_TEST_* are unset.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RUN=$ROOT/.run
OUT=$RUN/bench-peers.jsonl
if [[ ${1:-} == --out ]]; then OUT=$2; shift 2; fi

if [[ -z ${DLOCK_TEST_POSTGRES_URL:-} && -f $RUN/env ]]; then . "$RUN/env"; fi

# Python clients, pinned.
VENV=$RUN/bench-venv
if ! cmp -s "$HERE/requirements.txt" "$VENV/.requirements.txt" 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q -r "$HERE/requirements.txt"
    cp "$HERE/requirements.txt" "$VENV/.requirements.txt"
fi

# Curator (Debian 12: 5.4.0) and its ZooKeeper 3.8 client, built with javac.
J=/usr/share/java
if [[ ! -f $J/curator-recipes.jar ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libcurator-recipes-java >/dev/null
fi
export CURATOR_CP=$RUN/bench-curator:$J/curator-recipes.jar:$J/curator-framework.jar:$J/curator-client.jar:$J/zookeeper.jar:$J/zookeeper-jute.jar:$J/guava.jar:$J/slf4j-api.jar:$J/slf4j-nop.jar
if [[ $HERE/curator/CuratorBench.java -nt $RUN/bench-curator/CuratorBench.class ]]; then
    mkdir -p "$RUN/bench-curator"
    javac -cp "$CURATOR_CP" -d "$RUN/bench-curator" "$HERE/curator/CuratorBench.java"
fi

exec "$VENV/bin/python" "$HERE/peers.py" --out "$OUT" "$@"
