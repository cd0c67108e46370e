#!/usr/bin/env python3
"""Peer side of the dlock benchmark: how other lock libraries do against the
same servers. Run through scripts/bench/peers.sh (venv, Curator build, env).

    peers.py --out PATH [PEER...]        (default: every peer, one at a time)

Each peer is measured two ways, with the same definitions as the Rust side:

* uncontended: one client, one free name; BENCH_WARMUP (200) rounds, then
  BENCH_ITERS (2000) rounds of: time acquire only, then release (untimed).
  p50 / p99 in µs.
* contended: BENCH_CLIENTS (8) OS processes (Curator: JVM threads), each with
  its own connection, on ONE name for BENCH_SECONDS (15): loop { blocking
  acquire; t_acq; sleep 1 ms; t_rel; release }. Times are CLOCK_MONOTONIC
  (time.monotonic_ns / System.nanoTime), comparable across processes.

One JSON line per peer is appended to --out and printed.
"""
import argparse
import json
import multiprocessing as mp
import os
import secrets
import socket
import subprocess
import sys
import time
from contextlib import closing
from urllib.parse import urlparse

HERE = os.path.dirname(os.path.abspath(__file__))
WARMUP = int(os.environ.get("BENCH_WARMUP", 200))
ITERS = int(os.environ.get("BENCH_ITERS", 2000))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", 8))
SECONDS = float(os.environ.get("BENCH_SECONDS", 15))
AT_MOST = 30  # ShedLock lock_at_most_for, s: far longer than any hold here
RETRY = 0.010  # ShedLock cannot wait: callers retry, usually every 10 ms


def env_url(var):
    return urlparse(os.environ[var])


# --------------------------------------------------------------- the peers
# A peer class: BACKEND, LABEL; setup(run) / teardown(run) around each phase
# (run = {"name": fresh random name, "table": fresh table}); an instance is
# one client with its own connection: acquire(wait), release(), close().


class PgShedLock:
    """ShedLock's JdbcTemplate statements on PostgreSQL (row pre-inserted, so
    acquire is ShedLock's UPDATE path), autocommit."""
    BACKEND, LABEL = "postgres", "ShedLock statements (psycopg2; contended: 10 ms retry)"

    @staticmethod
    def connect():
        import psycopg2
        c = psycopg2.connect(os.environ["DLOCK_TEST_POSTGRES_URL"])
        c.autocommit = True
        return c

    @classmethod
    def setup(cls, run):
        with closing(cls.connect()) as c, c.cursor() as cur:
            cur.execute(f"CREATE TABLE {run['table']} (name varchar(64) PRIMARY KEY, lock_until timestamp,"
                        " locked_at timestamp, locked_by varchar(255))")
            cur.execute(f"INSERT INTO {run['table']} VALUES (%s, now(), now(), '')", (run["name"],))

    @classmethod
    def teardown(cls, run):
        with closing(cls.connect()) as c, c.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {run['table']}")

    def __init__(self, run, who):
        self.conn, self.who, self.name, t = self.connect(), who, run["name"], run["table"]
        self.cur = self.conn.cursor()
        self.lock_sql = (f"UPDATE {t} SET lock_until = now() + interval '{AT_MOST} seconds', locked_at = now(),"
                         " locked_by = %s WHERE name = %s AND lock_until <= now()")
        # lock_at_least_for = 0
        self.unlock_sql = (f"UPDATE {t} SET lock_until = GREATEST(locked_at + interval '0 seconds', now())"
                           " WHERE name = %s AND locked_by = %s")

    def acquire(self, wait):
        while True:
            self.cur.execute(self.lock_sql, (self.who, self.name))
            if self.cur.rowcount == 1:
                return True
            if not wait:
                return False
            time.sleep(RETRY)

    def release(self):
        self.cur.execute(self.unlock_sql, (self.name, self.who))

    def close(self):
        self.conn.close()


class PgAdvisory(PgShedLock):
    """Session-level advisory lock; uncontended uses the non-blocking try."""
    LABEL = "pg_advisory_lock (psycopg2; uncontended: pg_try_advisory_lock)"
    setup = teardown = staticmethod(lambda run: None)

    def __init__(self, run, who):
        self.conn = self.connect()
        self.cur = self.conn.cursor()
        self.key = run["key"]

    def acquire(self, wait):
        if wait:
            self.cur.execute("SELECT pg_advisory_lock(%s)", (self.key,))
            return True
        self.cur.execute("SELECT pg_try_advisory_lock(%s)", (self.key,))
        return self.cur.fetchone()[0]

    def release(self):
        self.cur.execute("SELECT pg_advisory_unlock(%s)", (self.key,))


class MyShedLock(PgShedLock):
    """ShedLock's statements on MariaDB (DATETIME(3), NOW(3)), autocommit."""
    BACKEND, LABEL = "mysql", "ShedLock statements (pymysql; contended: 10 ms retry)"

    @staticmethod
    def connect():
        import pymysql
        u = env_url("DLOCK_TEST_MYSQL_URL")
        return pymysql.connect(host=u.hostname, port=u.port or 3306, user=u.username, password=u.password,
                               database=u.path.lstrip("/"), autocommit=True)

    @classmethod
    def setup(cls, run):
        with closing(cls.connect()) as c, c.cursor() as cur:
            cur.execute(f"CREATE TABLE {run['table']} (name varchar(64) PRIMARY KEY, lock_until datetime(3),"
                        " locked_at datetime(3), locked_by varchar(255))")
            cur.execute(f"INSERT INTO {run['table']} VALUES (%s, NOW(3), NOW(3), '')", (run["name"],))

    def __init__(self, run, who):
        self.conn, self.who, self.name, t = self.connect(), who, run["name"], run["table"]
        self.cur = self.conn.cursor()
        self.lock_sql = (f"UPDATE {t} SET lock_until = DATE_ADD(NOW(3), INTERVAL {AT_MOST} SECOND),"
                         " locked_at = NOW(3), locked_by = %s WHERE name = %s AND lock_until <= NOW(3)")
        self.unlock_sql = (f"UPDATE {t} SET lock_until = GREATEST(DATE_ADD(locked_at, INTERVAL 0 SECOND), NOW(3))"
                           " WHERE name = %s AND locked_by = %s")


class MyGetLock(MyShedLock):
    """MariaDB named lock: blocking GET_LOCK(name, timeout) / RELEASE_LOCK."""
    LABEL = "GET_LOCK (pymysql)"
    setup = teardown = staticmethod(lambda run: None)

    def __init__(self, run, who):
        self.conn = self.connect()
        self.cur = self.conn.cursor()
        self.name = run["name"]

    def acquire(self, wait):
        self.cur.execute("SELECT GET_LOCK(%s, 60)", (self.name,))
        return self.cur.fetchone()[0] == 1

    def release(self):
        self.cur.execute("SELECT RELEASE_LOCK(%s)", (self.name,))


class EtcdLock:
    """python-etcd3's Lock recipe: lease grant + create-if-absent txn; a
    loser watches the key and retries. Release = compare-value delete."""
    BACKEND, LABEL = "etcd", "etcd3 Lock recipe (python-etcd3 0.12)"
    setup = teardown = staticmethod(lambda run: None)  # keys go on release, leases expire (ttl)

    def __init__(self, run, who):
        import etcd3
        u = env_url("DLOCK_TEST_ETCD_URL")
        self.client = etcd3.client(host=u.hostname, port=u.port or 2379)
        self.lock = self.client.lock(run["name"], ttl=10)

    def acquire(self, wait):
        # The recipe's watch starts after its failed txn, so it can miss a
        # release and then waits for the next event; a bounded timeout keeps
        # the last waiter from hanging after the others stop. Retry on False.
        while not self.lock.acquire(timeout=5):
            pass
        return True

    def release(self):
        self.lock.release()

    def close(self):
        pass  # closing the channel under etcd3's watch thread makes it dump a traceback; exit closes it


class KazooLock:
    """kazoo's Lock recipe (ephemeral sequential node, watch predecessor)."""
    BACKEND, LABEL = "zookeeper", "kazoo Lock recipe"

    @staticmethod
    def zk():
        from kazoo.client import KazooClient
        u = env_url("DLOCK_TEST_ZOOKEEPER_URL")
        c = KazooClient(hosts=f"{u.hostname}:{u.port or 2181}")
        c.start(timeout=30)
        return c

    setup = staticmethod(lambda run: None)

    @classmethod
    def teardown(cls, run):
        zk = cls.zk()
        zk.delete(run["path"], recursive=True)
        zk.stop()

    def __init__(self, run, who):
        self.client = self.zk()
        self.lock = self.client.Lock(run["path"], who)

    def acquire(self, wait):
        return self.lock.acquire(blocking=wait)

    def release(self):
        self.lock.release()

    def close(self):
        self.client.stop()
        self.client.close()


class ConsulLock:
    """`consul lock` / Go api.Lock: a new session per acquire (TTL 10s,
    LockDelay 0, Behavior delete, as dlock-consul), GET the key, PUT
    ?acquire=session when free, else a blocking GET until the key changes.
    Release = PUT ?release=session, then destroy the session."""
    BACKEND, LABEL = "consul", "session + KV acquire, like consul lock (py-consul)"
    setup = staticmethod(lambda run: None)

    @staticmethod
    def consul():
        import consul
        u = env_url("DLOCK_TEST_CONSUL_URL")
        return consul.Consul(host=u.hostname, port=u.port or 8500)

    @classmethod
    def teardown(cls, run):
        cls.consul().kv.delete(run["name"], recurse=True)

    def __init__(self, run, who):
        self.c, self.who, self.key = self.consul(), who, run["name"] + "/.lock"

    def acquire(self, wait):
        self.sid = self.c.session.create(ttl=10, lock_delay=0, behavior="delete")
        index = None
        while True:
            index, kv = self.c.kv.get(self.key, index=index, wait="5s")  # blocking once index is set
            if not (kv and kv.get("Session")) and self.c.kv.put(self.key, self.who, acquire=self.sid):
                return True
            if not wait:
                return False

    def release(self):
        self.c.kv.put(self.key, self.who, release=self.sid)
        self.c.session.destroy(self.sid)

    def close(self):
        pass


class RedisPyLock:
    """redis-py's Lock: SET NX PX to take, Lua scripts to extend and release
    (matched on a random token), no fencing token. Its blocking acquire
    polls; `sleep` set to ShedLock's 10 ms retry (its default is 100 ms)."""
    BACKEND, LABEL = "redis", "redis-py Lock, SET NX PX (contended: 10 ms retry)"
    setup = staticmethod(lambda run: None)

    @staticmethod
    def client():
        import redis
        return redis.Redis.from_url(os.environ["DLOCK_TEST_REDIS_URL"])

    @classmethod
    def teardown(cls, run):
        cls.client().delete(run["name"])

    def __init__(self, run, who):
        self.r = self.client()
        self.lock = self.r.lock(run["name"], timeout=AT_MOST, sleep=RETRY)

    def acquire(self, wait):
        return self.lock.acquire(blocking=wait)

    def release(self):
        self.lock.release()

    def close(self):
        self.r.close()


class CuratorMutex(KazooLock):
    """Apache Curator InterProcessMutex (Java, curator/CuratorBench.java);
    raw samples come back over stdout. Cleanup reuses kazoo."""
    LABEL = "Curator InterProcessMutex (Java, Curator 5.4)"

    @staticmethod
    def java(*args):
        u = env_url("DLOCK_TEST_ZOOKEEPER_URL")
        cmd = ["java", "-cp", os.environ["CURATOR_CP"], "CuratorBench", args[0], f"{u.hostname}:{u.port or 2181}",
               *map(str, args[1:])]
        return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout.split("\n")[:-1]


PEERS = {
    "pg-shedlock": PgShedLock, "pg-advisory": PgAdvisory,
    "mysql-shedlock": MyShedLock, "mysql-getlock": MyGetLock,
    "etcd": EtcdLock, "zk-kazoo": KazooLock, "zk-curator": CuratorMutex, "consul": ConsulLock,
    "redis-py": RedisPyLock,
}


# ----------------------------------------------------------- measurements


def quantile(sorted_v, q):
    """Same as dlock-testkit's Samples::quantile: element (n-1)*q rounded half
    up (Rust's f64::round; Python's round() would round half to even)."""
    return sorted_v[min(int((len(sorted_v) - 1) * q + 0.5), len(sorted_v) - 1)] if sorted_v else None


def fresh_run():
    tag = secrets.token_hex(4)
    return {"name": f"bench-{tag}", "table": f"shedlock_bench_{tag}", "path": f"/bench-{tag}",
            "key": secrets.randbits(62)}


def uncontended(cls, run):
    """µs of each measured acquire."""
    if cls is CuratorMutex:
        return [int(ns) / 1e3 for ns in cls.java("uncontended", run["path"] + "/lock", WARMUP, ITERS)]
    lock, out = cls(run, f"{socket.gethostname()}-{os.getpid()}"), []
    try:
        for i in range(WARMUP + ITERS):
            t0 = time.monotonic_ns()
            ok = lock.acquire(False)
            t1 = time.monotonic_ns()
            assert ok, "acquire of a free lock failed"
            lock.release()
            if i >= WARMUP:
                out.append((t1 - t0) / 1e3)
    finally:
        lock.close()
    return out


def contender(cls, run, me, barrier, results):
    """One contended client (own process, own connection): its holds."""
    try:
        lock, holds = cls(run, f"{socket.gethostname()}-{os.getpid()}-{me}"), []
        barrier.wait()
        deadline = time.monotonic_ns() + int(SECONDS * 1e9)
        while time.monotonic_ns() < deadline:
            lock.acquire(True)
            t_acq = time.monotonic_ns()
            time.sleep(0.001)
            t_rel = time.monotonic_ns()
            lock.release()
            holds.append((me, t_acq, t_rel))
        lock.close()
        results.put(holds)
    except BaseException as e:  # report instead of leaving the parent waiting
        barrier.abort()
        results.put(f"client {me}: {e!r}")


def contended(cls, run):
    """Merged holds (client, t_acq ns, t_rel ns) of all clients."""
    if cls is CuratorMutex:
        return [tuple(map(int, l.split())) for l in cls.java("contended", run["path"] + "/lock", CLIENTS, SECONDS)]
    ctx = mp.get_context("spawn")  # fresh interpreters: gRPC / kazoo threads don't survive fork
    barrier, results = ctx.Barrier(CLIENTS), ctx.Queue()
    procs = [ctx.Process(target=contender, args=(cls, run, i, barrier, results)) for i in range(CLIENTS)]
    for p in procs:
        p.start()
    holds, ok = [], False
    try:
        for _ in procs:
            r = results.get(timeout=SECONDS + 120)
            if isinstance(r, str):
                raise RuntimeError(r)
            holds += r
        ok = True
    finally:
        for p in procs:  # after a failure, don't leave clients behind
            p.join(timeout=30 if ok else 0)
            if p.is_alive():
                p.kill()
    return holds


def contended_stats(holds):
    holds.sort(key=lambda h: h[1])
    pairs = list(zip(holds, holds[1:]))
    handoff = sorted((b[1] - a[2]) / 1e3 for a, b in pairs)
    # Mutual exclusion: a hold is [t_acq, t_rel]; one that starts before any
    # earlier hold ended is an overlap (running max, so not only neighbours).
    overlaps, last_rel = 0, 0
    for _, t_acq, t_rel in holds:
        overlaps += t_acq < last_rel
        last_rel = max(last_rel, t_rel)
    counts = [sum(1 for h in holds if h[0] == c) for c in range(CLIENTS)]
    return {"clients": CLIENTS, "seconds": SECONDS, "acquisitions": len(holds),
            "acq_per_s": round(len(holds) / SECONDS, 1),
            "handoff_p50_us": round(quantile(handoff, 0.5), 1) if handoff else None,
            "same_holder_pct": round(100 * sum(a[0] == b[0] for a, b in pairs) / len(pairs), 1) if pairs else None,
            "fairness_min_max": round(min(counts) / max(counts), 3) if max(counts) else 0.0,
            "overlaps": overlaps}


def measure(cls):
    row = {"backend": cls.BACKEND, "impl": cls.LABEL, "kind": "peer"}
    run = fresh_run()
    cls.setup(run)
    try:
        v = sorted(uncontended(cls, run))
    finally:
        cls.teardown(run)
    row["acquire_p50_us"], row["acquire_p99_us"] = round(quantile(v, 0.5), 1), round(quantile(v, 0.99), 1)
    run = fresh_run()
    cls.setup(run)
    try:
        row["contended"] = contended_stats(contended(cls, run))
    finally:
        cls.teardown(run)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("peers", nargs="*", metavar="PEER", help="any of: " + " ".join(PEERS))
    args = ap.parse_args()
    if set(args.peers) - set(PEERS):
        ap.error(f"unknown peer(s) {sorted(set(args.peers) - set(PEERS))}; known: {' '.join(PEERS)}")
    failed = []
    for name in args.peers or PEERS:
        print(f"peers: {name} ...", file=sys.stderr, flush=True)
        try:
            row = measure(PEERS[name])
        except Exception as e:
            print(f"peers: {name} FAILED: {e!r}", file=sys.stderr, flush=True)
            failed.append(name)
            continue
        line = json.dumps(row)
        print(line, flush=True)
        with open(args.out, "a") as f:
            f.write(line + "\n")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
