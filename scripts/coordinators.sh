#!/usr/bin/env bash
# Start, stop, kill and restart the real coordinators dlock's tests run
# against, as plain background processes on 127.0.0.1 (no Docker, no systemd).
#
#   scripts/coordinators.sh start   [NAMES...]   start (default: all) and wait until ready
#   scripts/coordinators.sh stop    [NAMES...]   graceful stop (default: all); data stays
#   scripts/coordinators.sh kill    NAMES...     SIGKILL (fault tests); data stays
#   scripts/coordinators.sh restart [--hard] NAMES...
#                                                stop (--hard: kill -9) and start again on
#                                                the same ports and data, wait until ready
#   scripts/coordinators.sh status               which are running
#   scripts/coordinators.sh env                  print the env file
#   scripts/coordinators.sh logs    NAME [N]     last N (default 40) lines of a server's log
#   scripts/coordinators.sh clean                stop all and delete the run directory
#
# NAMES: postgres mariadb etcd zookeeper consul consul-acl redis redis-volatile
#
# Packages come from scripts/install-deps.sh (Debian 12). Needs root: the
# PostgreSQL and MariaDB servers drop to the postgres / mysql users.
#
# Run directory: ${DLOCK_RUN_DIR:-<repo>/.run}, one subdirectory per server
# holding data/, log, pid and ports (the ports it was first started on;
# restart always reuses them). After start/stop/restart the script writes
# <run dir>/env, which tests read (or `. .run/env` in a shell):
#
#   DLOCK_TEST_POSTGRES_URL    postgres://dlock:dlock@127.0.0.1:25432/dlock
#   DLOCK_TEST_MYSQL_URL       mysql://dlock:dlock@127.0.0.1:23306/dlock   (MariaDB 10.11)
#   DLOCK_TEST_ETCD_URL        etcd://127.0.0.1:22379
#   DLOCK_TEST_ZOOKEEPER_URL   zk://127.0.0.1:22181
#   DLOCK_TEST_CONSUL_URL      consul://127.0.0.1:28500  (real server, data survives restart)
#   DLOCK_TEST_CONSUL_ACL_URL  consul://127.0.0.1:28600  (-dev agent, ACLs on, default deny)
#   DLOCK_TEST_CONSUL_ACL_TOKEN  its management ("master") token
#   DLOCK_TEST_REDIS_URL       redis://dlock:dlock@127.0.0.1:26379/0  (AOF on, data survives restart)
#   DLOCK_TEST_REDIS_VOLATILE_URL  redis://dlock:dlock@127.0.0.1:26380/0  (no AOF, no RDB)
#   DLOCK_TEST_COORDINATORS    absolute path of this script (tests call `restart NAME`)
#   DLOCK_RUN_DIR              the run directory (so that call finds the same servers)
#
# Only servers that are running (or external, below) get a line.
#
# External servers: if DLOCK_TEST_<X>_URL is already set when `start` runs and
# differs from the URL this script would write, that server is NOT started;
# the given URL is passed through into the env file (for consul-acl also
# DLOCK_TEST_CONSUL_ACL_TOKEN). DLOCK_TEST_MYSQL8_URL is passed through too
# when set. stop/kill/restart refuse to touch an external server.
#
# Ports (all on 127.0.0.1; override with the variable on the first start):
#   postgres    25432                        DLOCK_POSTGRES_PORT
#   mariadb     23306                        DLOCK_MARIADB_PORT
#   etcd        22379 client, 22380 peer     DLOCK_ETCD_PORT, DLOCK_ETCD_PEER_PORT
#   zookeeper   22181                        DLOCK_ZOOKEEPER_PORT
#   consul      28500 http, 28501 dns, 28502 grpc, 28510 server, 28511 serf-lan,
#               28512 serf-wan               DLOCK_CONSUL_PORT, DLOCK_CONSUL_{DNS,GRPC,SERVER,SERF_LAN,SERF_WAN}_PORT
#   consul-acl  28600 http, 28601 dns, 28602 grpc, 28610 server, 28611 serf-lan,
#               28612 serf-wan               DLOCK_CONSUL_ACL_PORT, DLOCK_CONSUL_ACL_{DNS,...}_PORT
#   redis       26379                        DLOCK_REDIS_PORT
#   redis-volatile  26380                    DLOCK_REDIS_VOLATILE_PORT
#
# Other knobs: DLOCK_READY_TIMEOUT (s, default 60 for start, 25 for restart).
#
# Every state-changing command holds an flock on <run dir>/.lock, so
# concurrent callers (parallel tests) are serialized. Calling start twice is
# a no-op for servers already running and ready.
set -euo pipefail

SCRIPT=$(readlink -f "${BASH_SOURCE[0]}")
ROOT=$(cd "$(dirname "$SCRIPT")/.." && pwd)
RUN_DIR=$(readlink -m "${DLOCK_RUN_DIR:-$ROOT/.run}")
ALL=(postgres mariadb etcd zookeeper consul consul-acl redis redis-volatile)

STOP_TIMEOUT=10
START_READY_TIMEOUT=${DLOCK_READY_TIMEOUT:-60}
RESTART_READY_TIMEOUT=${DLOCK_READY_TIMEOUT:-25}
READY_TIMEOUT=$START_READY_TIMEOUT

PG_BIN=${DLOCK_PG_BIN:-}
if [[ -z $PG_BIN ]]; then
    for d in /usr/lib/postgresql/*/bin; do [[ -x $d/postgres ]] && PG_BIN=$d; done
fi
JAVA=/usr/bin/java
ZK_CP=/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar
REDIS_SERVER=/usr/bin/redis-server

# ---------------------------------------------------------------- helpers

log() { printf 'coordinators: %s\n' "$*" >&2; }
die() { printf 'coordinators: error: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

is_name() {
    local n
    for n in "${ALL[@]}"; do [[ $n == "$1" ]] && return 0; done
    return 1
}

check_names() {
    local n
    for n in "$@"; do
        is_name "$n" || die "unknown server '$n' (known: ${ALL[*]})"
    done
}

sdir() { printf '%s/%s' "$RUN_DIR" "$1"; }

# Port keys per server; "port" is the one clients use.
port_keys() {
    case $1 in
        postgres | mariadb | zookeeper | redis | redis-volatile) echo port ;;
        etcd) echo port peer ;;
        consul | consul-acl) echo port dns grpc server serf_lan serf_wan ;;
    esac
}

default_port() {
    local base
    case $1 in
        postgres) echo 25432; return ;;
        mariadb) echo 23306; return ;;
        zookeeper) echo 22181; return ;;
        redis) echo 26379; return ;;
        redis-volatile) echo 26380; return ;;
        etcd) [[ $2 == port ]] && echo 22379 || echo 22380; return ;;
        consul) base=28500 ;;
        consul-acl) base=28600 ;;
    esac
    case $2 in
        port) echo $((base)) ;;
        dns) echo $((base + 1)) ;;
        grpc) echo $((base + 2)) ;;
        server) echo $((base + 10)) ;;
        serf_lan) echo $((base + 11)) ;;
        serf_wan) echo $((base + 12)) ;;
    esac
}

port_var() {
    local s=${1^^}
    s=${s//-/_}
    if [[ $2 == port ]]; then echo "DLOCK_${s}_PORT"; else echo "DLOCK_${s}_${2^^}_PORT"; fi
}

# Resolve a server's ports into the associative array PORT.
#   mode "start":   env var > recorded > default
#   mode "restart": recorded > env var > default (same ports as before)
declare -A PORT
resolve_ports() {
    local name=$1 mode=$2 key var rec val
    local file
    file=$(sdir "$name")/ports
    PORT=()
    for key in $(port_keys "$name"); do
        var=$(port_var "$name" "$key")
        rec=""
        [[ -f $file ]] && rec=$(sed -n "s/^$key=//p" "$file")
        if [[ $mode == restart && -n $rec ]]; then
            val=$rec
        elif [[ -n ${!var:-} ]]; then
            val=${!var}
        elif [[ -n $rec ]]; then
            val=$rec
        else
            val=$(default_port "$name" "$key")
        fi
        [[ $val =~ ^[0-9]+$ ]] || die "$var: not a port number: '$val'"
        PORT[$key]=$val
    done
}

record_ports() {
    local name=$1 key
    local file
    file=$(sdir "$name")/ports
    for key in $(port_keys "$name"); do echo "$key=${PORT[$key]}"; done > "$file.tmp"
    mv "$file.tmp" "$file"
}

url_var() {
    case $1 in
        postgres) echo DLOCK_TEST_POSTGRES_URL ;;
        mariadb) echo DLOCK_TEST_MYSQL_URL ;;
        etcd) echo DLOCK_TEST_ETCD_URL ;;
        zookeeper) echo DLOCK_TEST_ZOOKEEPER_URL ;;
        consul) echo DLOCK_TEST_CONSUL_URL ;;
        consul-acl) echo DLOCK_TEST_CONSUL_ACL_URL ;;
        redis) echo DLOCK_TEST_REDIS_URL ;;
        redis-volatile) echo DLOCK_TEST_REDIS_VOLATILE_URL ;;
    esac
}

# URL of the server this script manages (needs PORT resolved).
managed_url() {
    local p=${PORT[port]}
    case $1 in
        postgres) echo "postgres://dlock:dlock@127.0.0.1:$p/dlock" ;;
        mariadb) echo "mysql://dlock:dlock@127.0.0.1:$p/dlock" ;;
        etcd) echo "etcd://127.0.0.1:$p" ;;
        zookeeper) echo "zk://127.0.0.1:$p" ;;
        consul | consul-acl) echo "consul://127.0.0.1:$p" ;;
        redis | redis-volatile) echo "redis://dlock:dlock@127.0.0.1:$p/0" ;;
    esac
}

ext_file() { printf '%s/external/%s' "$RUN_DIR" "$1"; }

is_external() { [[ -f $(ext_file "$1") ]]; }

# A PID counts as alive if it exists and is not a zombie (PID 1 here may not
# reap orphans, so a killed server can linger as a zombie).
alive() {
    local pid=$1 st
    [[ -n $pid && -r /proc/$pid/stat ]] || return 1
    st=$(sed -e 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [[ -n $st && $st != Z && $st != X ]]
}

expected_exe() {
    case $1 in
        postgres) echo postgres ;;
        mariadb) echo mariadbd ;;
        etcd) echo etcd ;;
        zookeeper) echo java ;;
        consul | consul-acl) echo consul ;;
        # Debian's /usr/bin/redis-server is a symlink to redis-check-rdb (one
        # binary that picks its role from argv[0]): /proc/PID/exe names the
        # target, so compare with that.
        redis | redis-volatile) basename "$(readlink -f "$REDIS_SERVER")" ;;
    esac
}

# PID of the running server NAME, or nothing. The recorded PID must be alive,
# run the expected binary and mention this server's directory on its command
# line, so a recycled PID is never mistaken for ours.
server_pid() {
    local name=$1 d pid exe
    d=$(sdir "$name")
    [[ -f $d/pid ]] || return 0
    pid=$(<"$d/pid")
    alive "$pid" || return 0
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 0
    [[ ${exe##*/} == "$(expected_exe "$name")" ]] || return 0
    tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF "$d/" || return 0
    echo "$pid"
}

children_of() {
    local parent=$1 f ppid
    for f in /proc/[0-9]*/stat; do
        ppid=$(sed -e 's/^.*) //' "$f" 2>/dev/null | cut -d' ' -f2) || continue
        [[ $ppid == "$parent" ]] && { f=${f#/proc/}; echo "${f%/stat}"; }
    done
    return 0
}

wait_gone() {
    local deadline=$(($(date +%s) + $2)) pid
    while :; do
        local any=0
        for pid in $1; do alive "$pid" && any=1; done
        [[ $any -eq 0 ]] && return 0
        [[ $(date +%s) -ge $deadline ]] && return 1
        sleep 0.05
    done
}

port_in_use() {
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# A killed server's process can be a zombie while its other threads still
# hold the port (seen with ZooKeeper's JVM): on restart, wait for the ports.
wait_ports_free() {
    local name=$1 deadline=$(($(date +%s) + $2)) key busy
    while :; do
        busy=0
        for key in $(port_keys "$name"); do
            port_in_use "${PORT[$key]}" && busy=1
        done
        [[ $busy -eq 0 ]] && return 0
        [[ $(date +%s) -ge $deadline ]] && return 0 # check_ports_free reports it
        sleep 0.1
    done
}

check_ports_free() {
    local name=$1 key p holder
    for key in $(port_keys "$name"); do
        p=${PORT[$key]}
        if port_in_use "$p"; then
            holder=$(ss -Htlnp "sport = :$p" 2>/dev/null | grep -o 'users:.*' | head -1 || true)
            die "$name: port $p ($(port_var "$name" "$key")) on 127.0.0.1 is already in use${holder:+ by $holder}; stop whatever holds it or choose another port with $(port_var "$name" "$key")=..."
        fi
    done
}

# Start a detached server: own session (no terminal signals), stdin from
# /dev/null, output appended to its log, lock fd 9 closed (or the server
# would hold our flock forever). setsid execs directly here, so $! is the
# server's PID (setpriv execs too).
launch() {
    local name=$1 d
    shift
    d=$(sdir "$name")
    printf '\n=== %s: starting %s\n' "$(date -Is)" "$*" >> "$d/log"
    setsid "$@" < /dev/null >> "$d/log" 2>&1 9>&- &
    echo $! > "$d/pid"
    # Not a job of ours: no "Killed" notice if we stop it in this same run.
    disown "$!" 2> /dev/null || true
}

fail_with_log() {
    local name=$1 msg=$2 d
    d=$(sdir "$name")
    {
        printf 'coordinators: error: %s: %s\n' "$name" "$msg"
        printf -- '---- last 40 lines of %s/log ----\n' "$d"
        tail -n 40 "$d/log" 2>/dev/null || true
        printf -- '---- end of log ----\n'
    } >&2
    return 1
}

# wait_ready NAME CHECK_FN...: poll CHECK until it succeeds, the server dies,
# or READY_TIMEOUT passes.
wait_ready() {
    local name=$1 pid
    shift
    local deadline=$(($(date +%s) + READY_TIMEOUT))
    pid=$(<"$(sdir "$name")/pid")
    while :; do
        if "$@" > /dev/null 2>&1; then return 0; fi
        if ! alive "$pid"; then
            fail_with_log "$name" "server process $pid exited before it was ready"
            return 1
        fi
        if [[ $(date +%s) -ge $deadline ]]; then
            fail_with_log "$name" "not ready after ${READY_TIMEOUT}s (check: $*)"
            return 1
        fi
        sleep 0.1
    done
}

# ---------------------------------------------------------------- PostgreSQL

as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }

pg_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "${PORT[port]}" -t 2; }

pg_psql() {
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$(sdir postgres)/sock" -p "${PORT[port]}" -U postgres "$@"
}

# Remove lock files whose PID is gone (or a zombie): after a kill -9 the
# postmaster.pid names a dead PID and the next start would refuse to run.
pg_clear_stale_locks() {
    local d f pid
    d=$(sdir postgres)
    for f in "$d/data/postmaster.pid" "$d"/sock/.s.PGSQL.*.lock; do
        [[ -f $f ]] || continue
        pid=$(head -n1 "$f" | tr -d ' -')
        if ! alive "$pid" || [[ $(readlink "/proc/$pid/exe" 2>/dev/null) != */postgres ]]; then
            log "postgres: removing stale $(basename "$f") (PID $pid is gone)"
            rm -f "$f"
        else
            die "postgres: $f names live postgres PID $pid that this script did not start; stop it first"
        fi
    done
}

start_postgres() {
    local d
    d=$(sdir postgres)
    [[ -n $PG_BIN ]] || die "postgres: no /usr/lib/postgresql/*/bin/postgres (run scripts/install-deps.sh)"
    mkdir -p "$d/sock"
    chown postgres:postgres "$d" "$d/sock"
    chmod 700 "$d"
    as_pg test -w "$d" || die "postgres: user postgres cannot write $d (a parent directory is not searchable?); set DLOCK_RUN_DIR to e.g. /tmp/dlock-run"
    if [[ ! -s $d/data/PG_VERSION ]]; then
        rm -rf "$d/data" "$d/setup-done"
        log "postgres: initdb $d/data"
        as_pg "$PG_BIN/initdb" -D "$d/data" -U postgres -E UTF8 --locale=C \
            --auth-local=trust --auth-host=scram-sha-256 >> "$d/log" 2>&1 \
            || fail_with_log postgres "initdb failed" || return 1
    fi
    pg_clear_stale_locks
    launch postgres setpriv --reuid=postgres --regid=postgres --init-groups -- \
        "$PG_BIN/postgres" -D "$d/data" \
        -c port="${PORT[port]}" -c listen_addresses=127.0.0.1 \
        -c unix_socket_directories="$d/sock" -c max_connections=300
    wait_ready postgres pg_ready || return 1
    if [[ ! -f $d/setup-done ]]; then
        pg_psql -d postgres <<'SQL' >> "$d/log" 2>&1 || fail_with_log postgres "creating role/database dlock failed" || return 1
SET password_encryption = 'scram-sha-256';
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dlock') THEN
    CREATE ROLE dlock LOGIN PASSWORD 'dlock';
  END IF;
END $$;
SELECT 'CREATE DATABASE dlock OWNER dlock'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'dlock') \gexec
SQL
        touch "$d/setup-done"
    fi
}

# ---------------------------------------------------------------- MariaDB

my_sock() { printf '%s/mysqld.sock' "$(sdir mariadb)"; }

my_ready() {
    mariadb-admin --no-defaults --connect-timeout=2 --socket="$(my_sock)" -uroot ping
}

my_tcp_ok() {
    mariadb --no-defaults --connect-timeout=2 -h127.0.0.1 -P"${PORT[port]}" -udlock -pdlock dlock -e 'select 1'
}

start_mariadb() {
    local d
    d=$(sdir mariadb)
    mkdir -p "$d"
    chown mysql:mysql "$d"
    chmod 750 "$d"
    setpriv --reuid=mysql --regid=mysql --init-groups -- test -w "$d" \
        || die "mariadb: user mysql cannot write $d (a parent directory is not searchable?); set DLOCK_RUN_DIR to e.g. /tmp/dlock-run"
    if [[ ! -d $d/data/mysql ]]; then
        rm -rf "$d/data" "$d/setup-done"
        log "mariadb: mariadb-install-db $d/data"
        mariadb-install-db --no-defaults --datadir="$d/data" --user=mysql \
            --skip-test-db --auth-root-authentication-method=socket >> "$d/log" 2>&1 \
            || fail_with_log mariadb "mariadb-install-db failed" || return 1
    fi
    # Debian's own config (skipped by --no-defaults) sets utf8mb4; keep that.
    launch mariadb /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$d/data" \
        --socket="$(my_sock)" --pid-file="$d/mariadbd.pid" \
        --port="${PORT[port]}" --bind-address=127.0.0.1 --skip-name-resolve \
        --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
        --max-connections=500
    wait_ready mariadb my_ready || return 1
    if [[ ! -f $d/setup-done ]]; then
        mariadb --no-defaults --socket="$(my_sock)" -uroot >> "$d/log" 2>&1 <<'SQL' \
            || fail_with_log mariadb "creating user/database dlock failed" || return 1
CREATE DATABASE IF NOT EXISTS dlock;
CREATE USER IF NOT EXISTS 'dlock'@'%' IDENTIFIED BY 'dlock';
GRANT ALL PRIVILEGES ON dlock.* TO 'dlock'@'%';
FLUSH PRIVILEGES;
SQL
        touch "$d/setup-done"
    fi
    wait_ready mariadb my_tcp_ok || return 1
}

# ---------------------------------------------------------------- etcd

etcd_ready() {
    curl -s --max-time 2 "http://127.0.0.1:${PORT[port]}/health" | grep -q '"health":"true"'
}

start_etcd() {
    local d c p
    d=$(sdir etcd)
    c=http://127.0.0.1:${PORT[port]}
    p=http://127.0.0.1:${PORT[peer]}
    mkdir -p "$d"
    # The --initial-* flags only matter on the first start; later starts
    # read the member list from the data directory.
    launch etcd /usr/bin/etcd --name dlock --data-dir "$d/data" \
        --listen-client-urls "$c" --advertise-client-urls "$c" \
        --listen-peer-urls "$p" --initial-advertise-peer-urls "$p" \
        --initial-cluster "dlock=$p" --initial-cluster-state new \
        --logger zap --log-outputs stderr
    wait_ready etcd etcd_ready
}

# ---------------------------------------------------------------- ZooKeeper

zk_cmd() {
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf %s "$2" >&3 && cat <&3' _ "${PORT[port]}" "$1"
}

zk_ready() { zk_cmd srvr | grep -q 'Mode: standalone'; }

start_zookeeper() {
    local d
    d=$(sdir zookeeper)
    mkdir -p "$d/data"
    # tickTime 500 so sessions can be short: ZooKeeper clamps a client's
    # requested session timeout to [minSessionTimeout, maxSessionTimeout]
    # (defaults 2 and 20 ticks) and checks expiry once per tick.
    cat > "$d/zoo.cfg" <<EOF
# written by scripts/coordinators.sh
tickTime=500
minSessionTimeout=1000
maxSessionTimeout=60000
initLimit=10
syncLimit=5
dataDir=$d/data
clientPort=${PORT[port]}
clientPortAddress=127.0.0.1
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,stat,mntr,conf,cons,wchs,dump,envi
EOF
    launch zookeeper "$JAVA" -Xmx256m -XX:+UseSerialGC \
        -Dzookeeper.admin.enableServer=false \
        -cp "$ZK_CP" org.apache.zookeeper.server.ZooKeeperServerMain "$d/zoo.cfg"
    wait_ready zookeeper zk_ready
}

# ---------------------------------------------------------------- Consul

consul_http() { printf 'http://127.0.0.1:%s' "${PORT[port]}"; }

consul_port_flags() {
    printf '%s\n' -bind=127.0.0.1 -client=127.0.0.1 -advertise=127.0.0.1 \
        "-http-port=${PORT[port]}" "-dns-port=${PORT[dns]}" "-grpc-port=${PORT[grpc]}" \
        "-server-port=${PORT[server]}" "-serf-lan-port=${PORT[serf_lan]}" \
        "-serf-wan-port=${PORT[serf_wan]}"
}

consul_leader() {
    local l
    l=$(curl -s --max-time 2 "$(consul_http)/v1/status/leader") || return 1
    [[ -n $l && $l != '""' ]]
}

# consul_kv_put [TOKEN]: a KV write through the Raft log must succeed.
consul_kv_put() {
    local hdr=()
    [[ -n ${1:-} ]] && hdr=(-H "X-Consul-Token: $1")
    [[ $(curl -s --max-time 2 "${hdr[@]}" -X PUT --data ready \
        "$(consul_http)/v1/kv/dlock-coordinators/ready") == true ]]
}

consul_ready() { consul_leader && consul_kv_put; }

# Remove the readiness probe's key again (tests may list the whole KV store).
consul_kv_cleanup() {
    local hdr=()
    [[ -n ${1:-} ]] && hdr=(-H "X-Consul-Token: $1")
    curl -s --max-time 2 "${hdr[@]}" -X DELETE "$(consul_http)/v1/kv/dlock-coordinators?recurse" > /dev/null || true
}

start_consul() {
    local d
    d=$(sdir consul)
    mkdir -p "$d/data"
    # raft_multiplier 1: the fast Raft timings of -dev, so leader election
    # after a restart takes about a second instead of several.
    cat > "$d/consul.hcl" <<'EOF'
# written by scripts/coordinators.sh
performance {
  raft_multiplier = 1
}
limits {
  http_max_conns_per_client = 1000
}
disable_update_check = true
EOF
    local flags
    mapfile -t flags < <(consul_port_flags)
    launch consul /usr/bin/consul agent -server -bootstrap-expect=1 \
        -data-dir="$d/data" -config-file="$d/consul.hcl" -node=dlock-consul \
        "${flags[@]}"
    wait_ready consul consul_ready || return 1
    consul_kv_cleanup
}

acl_token() { cat "$(sdir consul-acl)/token"; }

consul_acl_ready() {
    local code
    consul_leader || return 1
    consul_kv_put "$(acl_token)" || return 1
    # Without a token the same write must be refused.
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 -X PUT --data x \
        "$(consul_http)/v1/kv/dlock-coordinators/anonymous")
    [[ $code == 403 ]]
}

start_consul-acl() {
    local d
    d=$(sdir consul-acl)
    mkdir -p "$d"
    [[ -s $d/token ]] || cat /proc/sys/kernel/random/uuid > "$d/token"
    chmod 600 "$d/token"
    # Consul 1.8 names the bootstrap management token acl.tokens.master
    # (1.11+ calls it initial_management). The agent token lets the agent
    # itself register its node under default-deny.
    cat > "$d/acl.hcl" <<EOF
# written by scripts/coordinators.sh
acl {
  enabled = true
  default_policy = "deny"
  down_policy = "extend-cache"
  enable_token_persistence = false
  tokens {
    master = "$(acl_token)"
    agent = "$(acl_token)"
  }
}
limits {
  http_max_conns_per_client = 1000
}
disable_update_check = true
EOF
    chmod 600 "$d/acl.hcl"
    local flags
    mapfile -t flags < <(consul_port_flags)
    launch consul-acl /usr/bin/consul agent -dev -config-file="$d/acl.hcl" \
        -node=dlock-consul-acl "${flags[@]}"
    wait_ready consul-acl consul_acl_ready || return 1
    consul_kv_cleanup "$(acl_token)"
}

# ---------------------------------------------------------------- Redis

redis_cli() {
    timeout 3 redis-cli --no-auth-warning -h 127.0.0.1 -p "${PORT[port]}" \
        --user dlock --pass dlock "$@"
}

# PONG only once the dataset is loaded: while it replays the AOF, Redis
# answers -LOADING.
redis_ready() { [[ $(redis_cli ping) == PONG ]]; }

# write_redis_conf NAME APPENDONLY: the server's whole configuration. It
# includes nothing from /etc/redis, so Debian's defaults (daemonize, a log
# file and dir under /var) cannot leak in.
write_redis_conf() {
    local name=$1 aof=$2 d
    d=$(sdir "$name")
    # set-proc-title no: by default Redis rewrites its command line to
    # "redis-server 127.0.0.1:PORT", and server_pid() needs this server's
    # directory (the config file's path) on it.
    # save "": no RDB snapshots; "redis" persists through the AOF only,
    # "redis-volatile" not at all.
    # user default off: nobody can log in as the default user, so a wrong
    # password is refused, as on a hardened production server. Deliberately
    # with no permissions either: Redis 7.0 replays the AOF as the default
    # user and EXEC re-checks the ACL, so it silently drops every MULTI/EXEC
    # block (a script with two or more writes reaches the AOF as one) on a
    # restart (redis/redis#14541). dlock's scripts write with one command
    # each so that this cannot lose a lock; the fault test that restarts
    # this server proves it only while the trap is set.
    cat > "$d/redis.conf.tmp" <<EOF
# written by scripts/coordinators.sh
bind 127.0.0.1
port ${PORT[port]}
protected-mode no
daemonize no
supervised no
set-proc-title no
logfile ""
dir $d/data
save ""
appendonly $aof
appendfsync everysec
maxclients 10000
notify-keyspace-events ""
user default off
user dlock on >dlock ~* &* +@all
EOF
    chmod 600 "$d/redis.conf.tmp"
    mv "$d/redis.conf.tmp" "$d/redis.conf"
}

# Runs as root, like etcd and Consul. SIGTERM (stop) makes Redis fsync the
# AOF and exit; after a SIGKILL it replays the AOF on start (a torn last
# command is dropped: aof-load-truncated defaults to yes).
start_redis() {
    local d
    d=$(sdir redis)
    mkdir -p "$d/data"
    write_redis_conf redis yes
    launch redis "$REDIS_SERVER" "$d/redis.conf"
    wait_ready redis redis_ready
}

# No persistence at all: for the test that the adapter refuses a server
# that would forget its locks on a restart.
start_redis-volatile() {
    local d
    d=$(sdir redis-volatile)
    mkdir -p "$d/data"
    write_redis_conf redis-volatile no
    launch redis-volatile "$REDIS_SERVER" "$d/redis.conf"
    wait_ready redis-volatile redis_ready
}

# ---------------------------------------------------------------- generic

ready_check_fn() {
    case $1 in
        postgres) echo pg_ready ;;
        mariadb) echo my_ready ;;
        etcd) echo etcd_ready ;;
        zookeeper) echo zk_ready ;;
        consul) echo consul_ready ;;
        consul-acl) echo consul_acl_ready ;;
        redis | redis-volatile) echo redis_ready ;;
    esac
}

# start_one NAME MODE: start NAME unless it already runs; MODE start|restart
# picks how ports are resolved.
start_one() {
    local name=$1 mode=$2 d pid t0
    t0=$(now)
    d=$(sdir "$name")
    resolve_ports "$name" "$mode"
    mkdir -p "$d"
    pid=$(server_pid "$name")
    if [[ -n $pid ]]; then
        wait_ready "$name" "$(ready_check_fn "$name")" || return 1
        log "$name: already running (pid $pid) on 127.0.0.1:${PORT[port]}"
        return 0
    fi
    [[ $mode == restart ]] && wait_ports_free "$name" 15
    check_ports_free "$name"
    record_ports "$name"
    if ! "start_$name"; then
        # Do not leave a half-started server holding the ports; its data
        # and log stay for a look.
        stop_one "$name" || true
        return 1
    fi
    log "$name: ready on 127.0.0.1:${PORT[port]} (pid $(<"$d/pid"), $(elapsed "$t0") s)"
}

stop_one() {
    local name=$1 hard=${2:-} pid kids sig=TERM d
    d=$(sdir "$name")
    pid=$(server_pid "$name")
    if [[ -z $pid ]]; then
        rm -f "$d/pid"
        return 0
    fi
    # PostgreSQL's backends run in their own sessions: take them along.
    kids=""
    [[ $name == postgres ]] && kids=$(children_of "$pid" | tr '\n' ' ')
    if [[ $hard == hard ]]; then
        kill -KILL "$pid" $kids 2> /dev/null || true
        wait_gone "$pid $kids" 10 || die "$name: pid $pid still alive after SIGKILL"
        log "$name: killed (pid $pid)"
        return 0
    fi
    [[ $name == postgres ]] && sig=INT # fast shutdown
    kill -"$sig" "$pid" 2> /dev/null || true
    if ! wait_gone "$pid" "$STOP_TIMEOUT"; then
        log "$name: pid $pid did not stop within ${STOP_TIMEOUT}s after SIG$sig; sending SIGKILL"
        [[ $name == postgres ]] && kids=$(children_of "$pid" | tr '\n' ' ')
        kill -KILL "$pid" $kids 2> /dev/null || true
        wait_gone "$pid $kids" 10 || die "$name: pid $pid still alive after SIGKILL"
    fi
    rm -f "$d/pid"
    log "$name: stopped (pid $pid)"
}

write_env() {
    local tmp=$RUN_DIR/env.tmp.$$ name f pid
    {
        echo "# Written by scripts/coordinators.sh on $(date -Is). Source it: . $RUN_DIR/env"
        printf 'export DLOCK_RUN_DIR=%q\n' "$RUN_DIR"
        printf 'export DLOCK_TEST_COORDINATORS=%q\n' "$SCRIPT"
        for name in "${ALL[@]}"; do
            f=$(ext_file "$name")
            if [[ -f $f ]]; then
                echo "# $name: external server, not managed by this script"
                cat "$f"
                continue
            fi
            pid=$(server_pid "$name")
            [[ -n $pid ]] || continue
            resolve_ports "$name" restart
            printf 'export %s=%q\n' "$(url_var "$name")" "$(managed_url "$name")"
            [[ $name == consul-acl ]] && printf 'export DLOCK_TEST_CONSUL_ACL_TOKEN=%q\n' "$(acl_token)"
        done
        if [[ -f $RUN_DIR/external/mysql8 ]]; then cat "$RUN_DIR/external/mysql8"; fi
    } > "$tmp"
    chmod 644 "$tmp"
    mv "$tmp" "$RUN_DIR/env"
}

# Record (or forget) an external server given through DLOCK_TEST_<X>_URL.
# Returns 0 when NAME is external and must not be started.
note_external() {
    local name=$1 var f
    var=$(url_var "$name")
    f=$(ext_file "$name")
    resolve_ports "$name" start
    if [[ -n ${!var:-} && ${!var} != "$(managed_url "$name")" ]]; then
        if [[ -n $(server_pid "$name") ]]; then
            die "$name: $var=${!var} is set, but this script's own $name is running; stop it first or unset $var"
        fi
        mkdir -p "$RUN_DIR/external"
        {
            printf 'export %s=%q\n' "$var" "${!var}"
            if [[ $name == consul-acl ]]; then
                [[ -n ${DLOCK_TEST_CONSUL_ACL_TOKEN:-} ]] \
                    || log "warning: $var is set but DLOCK_TEST_CONSUL_ACL_TOKEN is not"
                printf 'export DLOCK_TEST_CONSUL_ACL_TOKEN=%q\n' "${DLOCK_TEST_CONSUL_ACL_TOKEN:-}"
            fi
        } > "$f"
        log "$name: external, using $var=${!var} (not started)"
        return 0
    fi
    rm -f "$f"
    return 1
}

init_run_dir() {
    mkdir -p "$RUN_DIR"
    chmod 755 "$RUN_DIR"
    touch "$RUN_DIR/.dlock-run-dir"
    exec 9> "$RUN_DIR/.lock"
    flock -w 300 9 || die "another coordinators.sh holds $RUN_DIR/.lock for more than 300 s"
}

refuse_external() {
    local name
    for name in "$@"; do
        is_external "$name" && die "$name is external ($(sed -n 's/^export [A-Z_]*URL=//p' "$(ext_file "$name")")); this script does not manage it"
    done
    return 0
}

# ---------------------------------------------------------------- commands

cmd_start() {
    local names=("$@") name t0 pids=() failed=() i
    [[ ${#names[@]} -gt 0 ]] || names=("${ALL[@]}")
    check_names "${names[@]}"
    [[ $(id -u) -eq 0 ]] || die "must run as root (postgres and mariadb drop to their own users)"
    init_run_dir
    t0=$(now)
    if [[ -n ${DLOCK_TEST_MYSQL8_URL:-} ]]; then
        mkdir -p "$RUN_DIR/external"
        printf 'export DLOCK_TEST_MYSQL8_URL=%q\n' "$DLOCK_TEST_MYSQL8_URL" > "$RUN_DIR/external/mysql8"
    else
        rm -f "$RUN_DIR/external/mysql8"
    fi
    local todo=()
    for name in "${names[@]}"; do
        note_external "$name" || todo+=("$name")
    done
    # Start them in parallel; each waits for its own readiness.
    for name in "${todo[@]}"; do
        start_one "$name" start &
        pids+=($!)
    done
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || failed+=("${todo[$i]}")
    done
    write_env
    if [[ ${#failed[@]} -gt 0 ]]; then
        die "failed to start: ${failed[*]} (env written for the others: $RUN_DIR/env)"
    fi
    log "all ready in $(elapsed "$t0") s; env: $RUN_DIR/env"
}

cmd_stop() {
    local names=("$@") name pids=() rc=0
    [[ ${#names[@]} -gt 0 ]] || names=("${ALL[@]}")
    check_names "${names[@]}"
    [[ -d $RUN_DIR ]] || return 0
    init_run_dir
    for name in "${names[@]}"; do
        is_external "$name" && continue
        stop_one "$name" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    write_env
    return $rc
}

cmd_kill() {
    [[ $# -gt 0 ]] || die "usage: $0 kill NAME..."
    check_names "$@"
    refuse_external "$@"
    init_run_dir
    local name
    for name in "$@"; do
        if [[ -z $(server_pid "$name") ]]; then
            log "$name: not running"
            continue
        fi
        stop_one "$name" hard
    done
}

cmd_restart() {
    local hard="" names=() name t0
    for a in "$@"; do
        case $a in
            --hard) hard=hard ;;
            -*) die "restart: unknown option $a" ;;
            *) names+=("$a") ;;
        esac
    done
    [[ ${#names[@]} -gt 0 ]] || die "usage: $0 restart [--hard] NAME..."
    check_names "${names[@]}"
    refuse_external "${names[@]}"
    init_run_dir
    READY_TIMEOUT=$RESTART_READY_TIMEOUT
    t0=$(now)
    for name in "${names[@]}"; do
        stop_one "$name" "$hard"
        start_one "$name" restart || { write_env; die "$name: restart failed"; }
    done
    write_env
    log "restarted ${names[*]}${hard:+ (hard)} in $(elapsed "$t0") s"
}

cmd_status() {
    local name pid
    for name in "${ALL[@]}"; do
        if is_external "$name"; then
            printf '%-14s external   %s\n' "$name" "$(sed -n 's/^export [A-Z_]*URL=//p' "$(ext_file "$name")")"
            continue
        fi
        resolve_ports "$name" restart
        pid=$(server_pid "$name")
        if [[ -n $pid ]]; then
            printf '%-14s running    pid %-7s %s\n' "$name" "$pid" "$(managed_url "$name")"
        else
            printf '%-14s stopped\n' "$name"
        fi
    done
    return 0
}

cmd_clean() {
    [[ -d $RUN_DIR ]] || return 0
    [[ -f $RUN_DIR/.dlock-run-dir ]] || die "$RUN_DIR has no .dlock-run-dir marker; not deleting it"
    cmd_stop "${ALL[@]}"
    rm -rf "$RUN_DIR"
    log "removed $RUN_DIR"
}

usage() { sed -n '2,/^set -euo/p' "$SCRIPT" | sed -e '$d' -e 's/^# \{0,1\}//'; }

main() {
    local cmd=${1:-}
    [[ $# -gt 0 ]] && shift
    case $cmd in
        start) cmd_start "$@" ;;
        stop) cmd_stop "$@" ;;
        kill) cmd_kill "$@" ;;
        restart) cmd_restart "$@" ;;
        status) cmd_status ;;
        env) cat "$RUN_DIR/env" ;;
        logs)
            [[ $# -ge 1 ]] || die "usage: $0 logs NAME [LINES]"
            check_names "$1"
            tail -n "${2:-40}" "$(sdir "$1")/log"
            ;;
        clean) cmd_clean ;;
        -h | --help | help) usage ;;
        *)
            usage >&2
            exit 2
            ;;
    esac
}

main "$@"
