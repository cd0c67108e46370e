#!/usr/bin/env bash
# The fault lab's network: coordinator members and test clients, each in a
# Linux network namespace of its own, joined by one bridge that is connected
# to nothing else (nothing leaves the machine). Needs root and iproute2.
#
#   bash scripts/netlab.sh up KIND        # KIND: etcd, zookeeper or consul (3 members),
#                                         # postgres, mariadb or redis (one server),
#                                         # sqlite (no server); + 3 client namespaces
#   bash scripts/netlab.sh down           # stop everything, remove namespaces
#   bash scripts/netlab.sh env            # print DLOCK_LAB_* variables
#   bash scripts/netlab.sh leader         # the member that leads (m1..m3)
#   bash scripts/netlab.sh healthy        # exit 0 when the cluster serves
#
# Faults (the nemesis calls these; each is undone by `heal` or its pair):
#   isolate MEMBER        MEMBER cannot reach the other members (clients still can)
#   cut NODE              NODE's link down: nobody reaches it, it reaches nobody
#   sever CLIENT MEMBER   CLIENT and MEMBER cannot reach each other
#   heal                  every link up, every partition route removed
#   kill MEMBER | restart MEMBER | stop MEMBER | cont MEMBER
#   clock-step MEMBER SECONDS   MEMBER's wall clock jumps SECONDS ahead, for
#                         good (SQL and Redis servers up with DLOCK_LAB_FAKETIME=1)
#
# Partitions are blackhole routes inside the namespaces (this kernel has no
# netem and no iptables). DLOCK_LAB_ID=N (0..99, default 0) names one lab of
# several that may run at once: its namespaces are dlabN-m1.., its subnet
# 10.77.N.0/24. Member i is 10.77.N.1i, client i is 10.77.N.2i; the bridge
# (root namespace) is 10.77.N.1.
#
# DLOCK_LAB_FAKETIME=1 at `up` runs the PostgreSQL, MariaDB or Redis server
# under libfaketime (package faketime), its offset read from $RUN/clock-offset,
# so that `clock-step` can step its wall clock while it runs. Its monotonic
# clock stays real.
set -euo pipefail
cd "$(dirname "$0")/.."

LAB=${DLOCK_LAB_ID:-0}
[[ $LAB =~ ^[0-9]{1,2}$ ]] || { echo "netlab: DLOCK_LAB_ID must be 0..99" >&2; exit 64; }
RUN=${DLOCK_RUN_DIR:-$PWD/.run}/lab$LAB
BRIDGE=dlab$LAB
MEMBERS=(m1 m2 m3)
CLIENTS=(c1 c2 c3)

log() { echo "netlab: $*" >&2; }
die() { log "$*"; exit 1; }

ip_of() {
    case $1 in
        m[1-9]) echo "10.77.$LAB.1${1#m}" ;;
        c[1-9]) echo "10.77.$LAB.2${1#c}" ;;
        *) die "unknown node $1 (m1..m3, c1..c3)" ;;
    esac
}
ns() { echo "dlab$LAB-$1"; }
veth() { echo "dlv$LAB-$1"; }
in_ns() { local n=$1; shift; ip netns exec "$(ns "$n")" "$@"; }

[[ $(id -u) == 0 ]] || die "needs root (network namespaces)"

add_node() {
    local n=$1 addr
    addr=$(ip_of "$n")
    ip netns add "$(ns "$n")"
    ip link add "$(veth "$n")" type veth peer name eth0 netns "$(ns "$n")"
    ip link set "$(veth "$n")" master "$BRIDGE" up
    in_ns "$n" ip link set lo up
    in_ns "$n" ip addr add "$addr/24" dev eth0
    in_ns "$n" ip link set eth0 up
}

net_up() {
    ip link add "$BRIDGE" type bridge
    ip addr add "10.77.$LAB.1/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    for n in "${MEMBERS[@]}" "${CLIENTS[@]}"; do add_node "$n"; done
}

pidfile() { echo "$RUN/$1.pid"; }

# The command prefix that runs a server under libfaketime when asked for.
# FAKETIME_NO_CACHE: every clock read sees the offset file as it is now (a
# few µs a query). FAKETIME_DONT_FAKE_MONOTONIC: the server's timers stay real.
# FAKETIME_DISABLE_SHM: no shared semaphore (root would create it, and the
# server, running as its own user, could not open it). The prefix goes right
# before the server binary, after setpriv. An argument is a library to
# preload before libfaketime.
faketime_prefix() {
    [[ ${DLOCK_LAB_FAKETIME:-0} == 1 ]] || return 0
    local lib pre=${1:-}
    lib=$(ls /usr/lib/*/faketime/libfaketimeMT.so.1 2>/dev/null | head -1)
    [[ -n $lib ]] || die "DLOCK_LAB_FAKETIME=1: libfaketime not installed (scripts/install-deps.sh)"
    [[ -f $RUN/clock-offset ]] || echo "+0" > "$RUN/clock-offset"
    chmod 644 "$RUN/clock-offset"
    echo env "LD_PRELOAD=${pre:+$pre:}$lib" "FAKETIME_TIMESTAMP_FILE=$RUN/clock-offset" \
        FAKETIME_NO_CACHE=1 FAKETIME_DONT_FAKE_MONOTONIC=1 FAKETIME_DISABLE_SHM=1
}

# The server's wall clock as it reads it, in whole seconds since the epoch.
server_epoch() {
    case $(kind) in
        postgres) pg_psql -d postgres -At -c "SELECT extract(epoch FROM clock_timestamp())::bigint" ;;
        mariadb) mariadb --no-defaults --socket="$RUN/my-m1/mysqld.sock" -uroot -N -e 'SELECT UNIX_TIMESTAMP()' ;;
        redis) redis_epoch ;;
        *) die "clock-step: only the SQL and Redis servers run under libfaketime" ;;
    esac
}

# clock-step MEMBER SECONDS: adds SECONDS to the offset, then checks that the
# server's clock moved by it (a step that did not happen must fail loudly).
clock_step() {
    local m=$1 secs=$2 now offset server
    [[ $m == m1 && -f $RUN/clock-offset ]] || die "clock-step: $m does not run under libfaketime"
    [[ $secs =~ ^[0-9]+$ ]] || die "clock-step: SECONDS must be a whole number"
    offset=$(tr -d '+\n' < "$RUN/clock-offset")
    offset=$((offset + secs))
    echo "+$offset" > "$RUN/clock-offset.new"
    mv "$RUN/clock-offset.new" "$RUN/clock-offset"
    now=$(date +%s)
    server=$(server_epoch) || die "clock-step: cannot read the server's clock"
    if (( server - now < offset - 2 )); then
        die "clock-step: the server reads $server, $((server - now)) s ahead, not $offset"
    fi
}
alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }
member_pid() { cat "$(pidfile "$1")" 2>/dev/null || true; }

# ------------------------------------------------------------------ etcd
etcd_cluster() {
    local parts=() m
    for m in "${MEMBERS[@]}"; do parts+=("$m=http://$(ip_of "$m"):2380"); done
    local IFS=,
    echo "${parts[*]}"
}

start_etcd_member() {
    local m=$1 addr state=${2:-new}
    addr=$(ip_of "$m")
    mkdir -p "$RUN/etcd-$m"
    # exec: the recorded PID is etcd's own (ip netns exec execs too).
    # --pre-vote (the default from etcd 3.5; this is 3.4): a member cut off
    # from its peers does not force an election when it returns.
    (exec ip netns exec "$(ns "$m")" /usr/bin/etcd --name "$m" --data-dir "$RUN/etcd-$m/data" \
        --listen-client-urls "http://$addr:2379" --advertise-client-urls "http://$addr:2379" \
        --listen-peer-urls "http://$addr:2380" --initial-advertise-peer-urls "http://$addr:2380" \
        --initial-cluster "$(etcd_cluster)" --initial-cluster-state "$state" \
        --initial-cluster-token dlab --pre-vote \
        >> "$RUN/etcd-$m/log" 2>&1 < /dev/null) &
    echo $! > "$(pidfile "$m")"
}

etcd_endpoints() {
    local parts=() m
    for m in "${MEMBERS[@]}"; do parts+=("http://$(ip_of "$m"):2379"); done
    local IFS=,
    echo "${parts[*]}"
}

etcd_healthy() {
    ETCDCTL_API=3 etcdctl --endpoints="$(etcd_endpoints)" --command-timeout=2s \
        endpoint health >/dev/null 2>&1
}

etcd_leader() {
    local m status id leader
    for m in "${MEMBERS[@]}"; do
        status=$(ETCDCTL_API=3 etcdctl --endpoints="http://$(ip_of "$m"):2379" \
            --command-timeout=1s endpoint status -w json 2>/dev/null) || continue
        id=$(grep -o '"member_id":[0-9]*' <<< "$status" | cut -d: -f2)
        leader=$(grep -o '"leader":[0-9]*' <<< "$status" | cut -d: -f2)
        if [[ -n $id && $id == "$leader" ]]; then
            echo "$m"
            return 0
        fi
    done
    return 1
}

# ------------------------------------------------------------------ ZooKeeper
JAVA=/usr/bin/java
ZK_CP=/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar

start_zookeeper_member() {
    local m=$1 i=${1#m} addr d
    addr=$(ip_of "$m")
    d=$RUN/zk-$m
    mkdir -p "$d/data"
    echo "$i" > "$d/data/myid"
    # tickTime 500: short sessions, as in scripts/coordinators.sh.
    # syncLimit 2 (1 s): a server cut off from its peers drops its clients
    # within a third of the lab's 4 s sessions, so they move to another
    # server while their guards' liveness proof still holds (dlock-zookeeper
    # README: syncLimit × tickTime ≤ session_timeout / 3).
    {
        echo "tickTime=500"
        echo "minSessionTimeout=1000"
        echo "maxSessionTimeout=60000"
        echo "initLimit=10"
        echo "syncLimit=2"
        echo "dataDir=$d/data"
        echo "clientPort=2181"
        echo "clientPortAddress=$addr"
        echo "admin.enableServer=false"
        echo "4lw.commands.whitelist=srvr,ruok,mntr"
        local n
        for n in "${MEMBERS[@]}"; do
            echo "server.${n#m}=$(ip_of "$n"):2888:3888"
        done
    } > "$d/zoo.cfg"
    (exec ip netns exec "$(ns "$m")" "$JAVA" -Xmx200m -XX:+UseSerialGC \
        -Dzookeeper.admin.enableServer=false -cp "$ZK_CP" \
        org.apache.zookeeper.server.quorum.QuorumPeerMain "$d/zoo.cfg" \
        >> "$d/log" 2>&1 < /dev/null) &
    echo $! > "$(pidfile "$m")"
}

zk_mode() {
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/2181" && printf srvr >&3 && cat <&3' _ "$(ip_of "$1")" \
        2>/dev/null | sed -n 's/^Mode: //p'
}

zookeeper_healthy() {
    local m modes=""
    for m in "${MEMBERS[@]}"; do modes+="$(zk_mode "$m") "; done
    [[ $modes == *leader* && $(grep -o follower <<< "$modes" | wc -l) -ge 1 ]]
}

zookeeper_leader() {
    local m
    for m in "${MEMBERS[@]}"; do
        [[ $(zk_mode "$m") == leader ]] && { echo "$m"; return 0; }
    done
    return 1
}

zookeeper_env() {
    local hosts=() m
    for m in "${MEMBERS[@]}"; do hosts+=("$(ip_of "$m"):2181"); done
    local IFS=,
    echo "DLOCK_LAB_ZOOKEEPER_URL=zk://${hosts[*]}"
    for m in "${MEMBERS[@]}"; do echo "DLOCK_LAB_ZOOKEEPER_URL_$m=zk://$(ip_of "$m"):2181"; done
}

# ------------------------------------------------------------------ Consul
start_consul_member() {
    local m=$1 addr d joins=() n
    addr=$(ip_of "$m")
    d=$RUN/consul-$m
    mkdir -p "$d/data"
    for n in "${MEMBERS[@]}"; do joins+=("-retry-join=$(ip_of "$n")"); done
    # raft_multiplier 1: fast elections, as in scripts/coordinators.sh.
    printf 'performance {\n  raft_multiplier = 1\n}\nlimits {\n  http_max_conns_per_client = 1000\n}\ndisable_update_check = true\n' \
        > "$d/consul.hcl"
    (exec ip netns exec "$(ns "$m")" /usr/bin/consul agent -server -bootstrap-expect=3 \
        -node="$m" -data-dir="$d/data" -config-file="$d/consul.hcl" \
        -bind="$addr" -advertise="$addr" -client="$addr" "${joins[@]}" \
        >> "$d/log" 2>&1 < /dev/null) &
    echo $! > "$(pidfile "$m")"
}

# The deployment Consul documents, and dlock assumes: an application talks
# to the Consul agent on its own node, which forwards to the servers and
# moves between them. c3 gets one (a client agent in its namespace); c1 and
# c2 talk to one server's HTTP API each.
start_consul_agent() {
    local c=$1 addr d joins=() n
    addr=$(ip_of "$c")
    d=$RUN/consul-agent-$c
    mkdir -p "$d/data"
    for n in "${MEMBERS[@]}"; do joins+=("-retry-join=$(ip_of "$n")"); done
    printf 'limits {\n  http_max_conns_per_client = 1000\n}\ndisable_update_check = true\n' \
        > "$d/consul.hcl"
    (exec ip netns exec "$(ns "$c")" /usr/bin/consul agent \
        -node="agent-$c" -data-dir="$d/data" -config-file="$d/consul.hcl" \
        -bind="$addr" -advertise="$addr" -client="$addr" "${joins[@]}" \
        >> "$d/log" 2>&1 < /dev/null) &
    echo $! > "$(pidfile "agent-$c")"
    local i
    for i in $(seq 1 100); do
        if curl -sf --max-time 2 -X PUT -d ok "http://$addr:8500/v1/kv/dlab-probe" 2>/dev/null | grep -q true; then
            log "consul: agent on $c serving"
            return 0
        fi
        sleep 0.2
    done
    tail -n 20 "$d/log" >&2 || true
    die "consul: the agent on $c did not serve within 20 s"
}

consul_leader_addr() {
    curl -s --max-time 1 "http://$(ip_of "$1"):8500/v1/status/leader" 2>/dev/null | tr -d '"'
}

consul_healthy() {
    local m l
    for m in "${MEMBERS[@]}"; do
        l=$(consul_leader_addr "$m")
        [[ -n $l ]] || return 1
    done
    curl -sf --max-time 2 -X PUT -d ok "http://$(ip_of m1):8500/v1/kv/dlab-probe" 2>/dev/null | grep -q true
}

consul_leader() {
    local m l
    for m in "${MEMBERS[@]}"; do
        l=$(consul_leader_addr "$m")
        [[ -n $l ]] || continue
        for n in "${MEMBERS[@]}"; do
            [[ $l == "$(ip_of "$n"):8300" ]] && { echo "$n"; return 0; }
        done
    done
    return 1
}

consul_env() {
    echo "DLOCK_LAB_CONSUL_URL=consul://$(ip_of m3):8500"
    local m
    for m in "${MEMBERS[@]}"; do echo "DLOCK_LAB_CONSUL_URL_$m=consul://$(ip_of "$m"):8500"; done
    echo "DLOCK_LAB_CONSUL_URL_agent_c3=consul://$(ip_of c3):8500"
}

# ------------------------------------------------------------------ PostgreSQL
# One server (m1), as dlock's SQL backends use one; the clients reach it
# over the bridge with a password, as applications do.
PG_BIN=""
for d in /usr/lib/postgresql/*/bin; do [[ -x $d/postgres ]] && PG_BIN=$d; done
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }

start_postgres_member() {
    local m=$1 addr d
    addr=$(ip_of "$m")
    d=$RUN/pg-$m
    [[ -n $PG_BIN ]] || die "postgres: not installed (scripts/install-deps.sh)"
    mkdir -p "$d/sock"
    chown postgres:postgres "$d" "$d/sock"
    chmod 700 "$d"
    if [[ ! -s $d/data/PG_VERSION ]]; then
        as_pg "$PG_BIN/initdb" -D "$d/data" -U postgres -E UTF8 --locale=C \
            --auth-local=trust --auth-host=scram-sha-256 >> "$d/log" 2>&1 \
            || die "postgres: initdb failed (see $d/log)"
        echo "host all all 10.77.0.0/16 scram-sha-256" >> "$d/data/pg_hba.conf"
    fi
    # shellcheck disable=SC2046 # the prefix is words on purpose
    (exec ip netns exec "$(ns "$m")" setpriv --reuid=postgres --regid=postgres --init-groups -- \
        $(faketime_prefix) "$PG_BIN/postgres" -D "$d/data" -c port=5432 -c listen_addresses="$addr" \
        -c unix_socket_directories="$d/sock" -c max_connections=300 \
        >> "$d/log" 2>&1 < /dev/null) &
    echo $! > "$(pidfile "$m")"
}

pg_psql() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$RUN/pg-m1/sock" -p 5432 -U postgres "$@"; }

postgres_healthy() {
    "$PG_BIN/pg_isready" -q -h "$RUN/pg-m1/sock" -p 5432 -t 1 || return 1
    [[ -f $RUN/pg-m1/setup-done ]] && return 0
    pg_psql -d postgres >> "$RUN/pg-m1/log" 2>&1 <<'SQL' || return 1
SET password_encryption = 'scram-sha-256';
CREATE ROLE dlock LOGIN PASSWORD 'dlock';
CREATE DATABASE dlock OWNER dlock;
SQL
    touch "$RUN/pg-m1/setup-done"
}

postgres_leader() { echo m1; }
postgres_env() { echo "DLOCK_LAB_POSTGRES_URL=postgres://dlock:dlock@$(ip_of m1):5432/dlock"; }

# ------------------------------------------------------------------ MariaDB
start_mariadb_member() {
    local m=$1 addr d
    addr=$(ip_of "$m")
    d=$RUN/my-$m
    mkdir -p "$d"
    chown mysql:mysql "$d"
    chmod 750 "$d"
    if [[ ! -d $d/data/mysql ]]; then
        mariadb-install-db --no-defaults --datadir="$d/data" --user=mysql \
            --skip-test-db --auth-root-authentication-method=socket >> "$d/log" 2>&1 \
            || die "mariadb: mariadb-install-db failed (see $d/log)"
    fi
    # shellcheck disable=SC2046 # the prefix is words on purpose
    (exec ip netns exec "$(ns "$m")" $(faketime_prefix) /usr/sbin/mariadbd --no-defaults --user=mysql \
        --datadir="$d/data" --socket="$d/mysqld.sock" --pid-file="$d/mariadbd.pid" \
        --port=3306 --bind-address="$addr" --skip-name-resolve \
        --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
        --max-connections=500 >> "$d/log" 2>&1 < /dev/null) &
    echo $! > "$(pidfile "$m")"
}

mariadb_healthy() {
    local d=$RUN/my-m1
    mariadb --no-defaults --socket="$d/mysqld.sock" -uroot -e 'SELECT 1' >/dev/null 2>&1 || return 1
    [[ -f $d/setup-done ]] && return 0
    mariadb --no-defaults --socket="$d/mysqld.sock" -uroot >> "$d/log" 2>&1 <<'SQL' || return 1
CREATE DATABASE IF NOT EXISTS dlock;
CREATE USER IF NOT EXISTS 'dlock'@'%' IDENTIFIED BY 'dlock';
GRANT ALL PRIVILEGES ON dlock.* TO 'dlock'@'%';
FLUSH PRIVILEGES;
SQL
    touch "$d/setup-done"
}

mariadb_leader() { echo m1; }
mariadb_env() { echo "DLOCK_LAB_MYSQL_URL=mysql://dlock:dlock@$(ip_of m1):3306/dlock"; }

# ------------------------------------------------------------------ Redis
# One server (m1), as dlock-redis uses one, with the append-only file on so
# that a kill -9 and restart keeps the locks. The clients log in as dlock
# over the bridge. The default user is off, so nothing gets in without the
# password, but keeps every permission: Redis 7.0 replays the AOF as the
# default user and would otherwise drop every MULTI/EXEC block, and so every
# script's writes, on a restart (see scripts/coordinators.sh). The script
# itself talks to the server through a Unix socket, which a partition of the
# bridge cannot cut (as for the SQL servers).
redis_sock() { echo "$RUN/redis-m1/redis.sock"; }
redis_cli_m1() {
    timeout 2 redis-cli --no-auth-warning -s "$(redis_sock)" --user dlock --pass dlock "$@"
}

# Redis allocates with jemalloc, and jemalloc and libfaketime deadlock as
# the server starts: each one's initialization calls into the other
# (libfaketime issue #130). Under libfaketime Redis allocates with glibc's
# malloc instead: libc_malloc_debug (glibc 2.34 and later) defines malloc
# and its kin over glibc's allocator, and preloaded first it takes them from
# jemalloc for Redis and every library it loads; jemalloc is then left with
# Redis's allocator statistics only.
redis_faketime_prefix() {
    [[ ${DLOCK_LAB_FAKETIME:-0} == 1 ]] || return 0
    local lib
    lib=$(ls /usr/lib/*/libc_malloc_debug.so.0 2>/dev/null | head -1)
    [[ -n $lib ]] || die "DLOCK_LAB_FAKETIME=1: Redis needs libc_malloc_debug.so.0 (glibc 2.34 or later)"
    faketime_prefix "$lib"
}

start_redis_member() {
    local m=$1 addr d pre
    addr=$(ip_of "$m")
    d=$RUN/redis-$m
    # Assigned apart from `local`, so that set -e stops the script if it fails.
    pre=$(redis_faketime_prefix)
    mkdir -p "$d/data"
    # user default off, without permissions, as coordinators.sh runs it:
    # the AOF trap of redis/redis#14541 stays set under the nemesis too.
    # protected-mode no: the clients are not on loopback. (Redis 7.0 lets
    # them in anyway while the default user is off and has no "nopass";
    # this keeps it so should the ACL lines change.)
    cat > "$d/redis.conf" <<EOF
bind $addr
port 6379
unixsocket $d/redis.sock
unixsocketperm 700
protected-mode no
daemonize no
logfile ""
dir $d/data
save ""
appendonly yes
appendfsync everysec
maxclients 10000
user default off
user dlock on >dlock ~* &* +@all
EOF
    # shellcheck disable=SC2086 # the prefix is words on purpose
    (exec ip netns exec "$(ns "$m")" $pre /usr/bin/redis-server "$d/redis.conf" \
        >> "$d/log" 2>&1 < /dev/null) &
    echo $! > "$(pidfile "$m")"
}

# TIME answers two lines, seconds and microseconds. redis-cli may exit 0
# on an error reply, so insist on a number.
redis_epoch() {
    local t
    t=$(redis_cli_m1 TIME) || return 1
    t=${t%%$'\n'*}
    [[ $t =~ ^[0-9]+$ ]] || return 1
    echo "$t"
}

# PONG only once the AOF is replayed (before that Redis answers -LOADING).
redis_healthy() { [[ $(redis_cli_m1 ping 2>/dev/null) == PONG ]]; }
redis_leader() { echo m1; }
redis_env() { echo "DLOCK_LAB_REDIS_URL=redis://dlock:dlock@$(ip_of m1):6379/0"; }

# ------------------------------------------------------------------ SQLite
# No server: the clients share one database file (SQLite's one host).
start_sqlite_member() { :; }
sqlite_healthy() { :; }
sqlite_leader() { echo none; }
sqlite_env() { echo "DLOCK_LAB_SQLITE_URL=sqlite://$RUN/sqlite/lab.db"; }

# ------------------------------------------------------------------ any kind
# The members a kind runs: three for the clusters, one server for SQL and
# Redis.
members_of() {
    case $1 in
        etcd | zookeeper | consul) echo "${MEMBERS[@]}" ;;
        postgres | mariadb | redis) echo m1 ;;
        sqlite) mkdir -p "$RUN/sqlite" && chmod 777 "$RUN/sqlite"; echo m1 ;;
    esac
}
kind() { cat "$RUN/kind" 2>/dev/null || die "no lab is up (netlab.sh up KIND)"; }

etcd_env() {
    local hosts=() m
    for m in "${MEMBERS[@]}"; do hosts+=("$(ip_of "$m"):2379"); done
    local IFS=,
    echo "DLOCK_LAB_ETCD_URL=etcd://${hosts[*]}"
    for m in "${MEMBERS[@]}"; do echo "DLOCK_LAB_ETCD_URL_$m=etcd://$(ip_of "$m"):2379"; done
}

up_kind() {
    local k=$1 m i
    for m in $(members_of "$k"); do "start_${k}_member" "$m" new; done
    for i in $(seq 1 150); do
        if "${k}_healthy"; then
            log "$k: serving"
            if [[ $k == consul ]]; then start_consul_agent c3; fi
            return 0
        fi
        sleep 0.2
    done
    tail -n 20 "$RUN"/*-m*/log >&2 || true
    die "$k: not serving within 30 s"
}

# ------------------------------------------------------------------ commands
down() {
    local n pid
    for n in "${MEMBERS[@]}" "${CLIENTS[@]}"; do
        if ip netns list 2>/dev/null | grep -qw "$(ns "$n")"; then
            for pid in $(ip netns pids "$(ns "$n")" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
            ip netns delete "$(ns "$n")" 2>/dev/null || true
        fi
        ip link delete "$(veth "$n")" 2>/dev/null || true
    done
    ip link delete "$BRIDGE" 2>/dev/null || true
    rm -rf "$RUN"
}

heal() {
    local n peer
    for n in "${MEMBERS[@]}" "${CLIENTS[@]}"; do
        ip link set "$(veth "$n")" up 2>/dev/null || true
        for peer in "${MEMBERS[@]}" "${CLIENTS[@]}"; do
            in_ns "$n" ip route del blackhole "$(ip_of "$peer")/32" 2>/dev/null || true
        done
    done
}

# blackhole A B: A's packets to B are dropped (and B's to A).
blackhole() {
    in_ns "$1" ip route replace blackhole "$(ip_of "$2")/32"
    in_ns "$2" ip route replace blackhole "$(ip_of "$1")/32"
}

env_vars() {
    echo "DLOCK_LAB_NETLAB=$PWD/scripts/netlab.sh"
    [[ -f $RUN/kind ]] && "$(kind)_env"
    return 0
}

cmd=${1:-}
shift || true
case $cmd in
    up)
        k=${1:-etcd}
        case $k in
            etcd | zookeeper | consul | postgres | mariadb | redis | sqlite) ;;
            *) die "up: KIND is etcd, zookeeper, consul, postgres, mariadb, redis or sqlite" ;;
        esac
        down
        mkdir -p "$RUN"
        echo "$k" > "$RUN/kind"
        net_up
        up_kind "$k"
        ;;
    down) down ;;
    env) env_vars ;;
    heal) heal ;;
    leader) "$(kind)_leader" || die "no leader" ;;
    healthy) "$(kind)_healthy" ;;
    isolate)
        for peer in "${MEMBERS[@]}"; do [[ $peer == "$1" ]] || blackhole "$1" "$peer"; done ;;
    cut) ip link set "$(veth "$1")" down ;;
    sever) blackhole "$1" "$2" ;;
    kill) pid=$(member_pid "$1"); alive "$pid" && kill -9 "$pid" || true ;;
    restart)
        pid=$(member_pid "$1")
        if alive "$pid"; then kill -9 "$pid"; sleep 0.2; fi
        "start_$(kind)_member" "$1" existing ;;
    stop) kill -STOP "$(member_pid "$1")" ;;
    clock-step) clock_step "$1" "$2" ;;
    cont) kill -CONT "$(member_pid "$1")" ;;
    exec) n=$1; shift; in_ns "$n" "$@" ;;
    *) sed -n '2,20p' "$0" >&2; exit 64 ;;
esac
