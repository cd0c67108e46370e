#!/usr/bin/env python3
"""Renders scripts/bench.sh's JSON lines as the comparison tables
(markdown: uncontended, contended, scale) and, with --svg PATH, a bar chart
of contended throughput.

    python3 scripts/bench/table.py RESULTS.jsonl [--svg docs/bench.svg]

Each line is one row: {"backend", "impl", "kind": floor|dlock|peer,
"acquire_p50_us", "acquire_p99_us", "contended": {...} | null, and for
dlock rows "scale": {...}}, written by
the adapters' benches (dlock_testkit::bench) and scripts/bench/peers.py.
Standard library only, so it runs anywhere python3 does.
"""
import json
import sys
from collections import defaultdict

ORDER = ["postgres", "mysql", "sqlite", "etcd", "zookeeper", "consul", "redis"]
NAMES = {"postgres": "PostgreSQL", "mysql": "MariaDB", "sqlite": "SQLite",
         "etcd": "etcd", "zookeeper": "ZooKeeper", "consul": "Consul", "redis": "Redis"}


def load(path):
    rows = defaultdict(lambda: {"floor": None, "dlock": None, "peer": []})
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            slot = rows[r["backend"]]
            if r["kind"] == "peer":
                slot["peer"].append(r)
            else:
                slot[r["kind"]] = r  # a later run of the same bench wins
    return rows


def num(v, fmt="{:,.0f}"):
    return "—" if v is None else fmt.format(v)


def backends(rows):
    return [b for b in ORDER if b in rows] + sorted(b for b in rows if b not in ORDER)


def uncontended(rows):
    out = ["| backend | floor µs | dlock acquire µs | ÷ floor | dlock p99 µs | peers' acquire p50 µs |",
           "|---|--:|--:|--:|--:|---|"]
    for b in backends(rows):
        s = rows[b]
        floor, dl = s["floor"], s["dlock"]
        f50 = floor and floor["acquire_p50_us"]
        d50 = dl and dl["acquire_p50_us"]
        ratio = num(d50 / f50, "{:.2f}") if f50 and d50 else "—"
        peers = sorted((p for p in s["peer"] if p.get("acquire_p50_us")),
                       key=lambda p: p["acquire_p50_us"])
        best = "; ".join(f"{p['impl']} {p['acquire_p50_us']:,.0f}" for p in peers) or "—"
        out.append(f"| {NAMES.get(b, b)} | {num(f50)} | {num(d50)} | {ratio} | "
                   f"{num(dl and dl['acquire_p99_us'])} | {best} |")
    return "\n".join(out)


def contended(rows):
    out = ["| backend | dlock acq/s | handoff p50 µs | handoff ÷ floor | same holder again | "
           "min/max per client | peers' acq/s |",
           "|---|--:|--:|--:|--:|--:|---|"]
    for b in backends(rows):
        s = rows[b]
        c = s["dlock"] and s["dlock"].get("contended")
        if not c:
            continue
        f50 = s["floor"] and s["floor"]["acquire_p50_us"]
        ratio = num(c["handoff_p50_us"] / f50, "{:.2f}") if f50 else "—"
        peers = sorted((p for p in s["peer"] if p.get("contended")),
                       key=lambda p: -p["contended"]["acq_per_s"])
        best = "; ".join(f"{p['impl']} {p['contended']['acq_per_s']:,.0f}" for p in peers) or "—"
        flag = " (overlaps: %d!)" % c["overlaps"] if c.get("overlaps") else ""
        out.append(f"| {NAMES.get(b, b)} | {c['acq_per_s']:,.0f}{flag} | {c['handoff_p50_us']:,.0f} | "
                   f"{ratio} | {c['same_holder_pct']:.0f}% | {c['fairness_min_max']:.2f} | {best} |")
    return "\n".join(out)


def scale(rows):
    out = ["| backend | acquire p50 µs, few held | many held | many ÷ few | fill s | "
           "waiters / connections | acquire attempts per release | waits per release | drain s |",
           "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for b in backends(rows):
        sc = rows[b]["dlock"] and rows[b]["dlock"].get("scale")
        if not sc:
            continue
        out.append(f"| {NAMES.get(b, b)} | {num(sc['few_p50_us'])} ({sc['few_names']:,}) | "
                   f"{num(sc['many_p50_us'])} ({sc['many_names']:,}) | {sc['many_over_few']:.2f} | "
                   f"{sc['fill_seconds']:.0f} | {sc['waiters']} / {sc['waiter_connections']} | "
                   f"{sc['attempts_per_release']:.1f} | {sc['waits_per_release']:.1f} | "
                   f"{sc['drain_seconds']:.1f} |")
    return "\n".join(out) if len(out) > 2 else ""


def svg(rows):
    """Horizontal bars: contended acquisitions per second, dlock and each peer."""
    bars = []
    for b in backends(rows):
        s = rows[b]
        if s["dlock"] and s["dlock"].get("contended"):
            bars.append((f"{NAMES.get(b, b)}: dlock", s["dlock"]["contended"]["acq_per_s"], True))
        for p in s["peer"]:
            if p.get("contended"):
                bars.append((f"{NAMES.get(b, b)}: {p['impl']}", p["contended"]["acq_per_s"], False))
    if not bars:
        return ""
    top = max(v for _, v, _ in bars) or 1.0
    clients = next((r["contended"]["clients"] for s in rows.values()
                    for r in [s["dlock"], *s["peer"]] if r and r.get("contended")), "?")
    label_w, bar_w, h = 330, 420, 22
    height = 40 + h * len(bars)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 80}" height="{height}" '
             'font-family="sans-serif" font-size="12">',
             f'<text x="4" y="18" font-weight="bold">Contended acquisitions per second '
             f'({clients} clients, one name, 1 ms hold), higher is better</text>']
    for i, (label, v, ours) in enumerate(bars):
        y = 30 + i * h
        w = max(1, int(bar_w * v / top))
        color = "#2b6cb0" if ours else "#a0aec0"
        label = label.replace("&", "&amp;").replace("<", "&lt;")
        parts.append(f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end">{label}</text>')
        parts.append(f'<rect x="{label_w}" y="{y + 2}" width="{w}" height="{h - 6}" fill="{color}"/>')
        parts.append(f'<text x="{label_w + w + 4}" y="{y + 14}">{v:,.0f}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main(argv):
    if not argv or argv[0].startswith("-"):
        sys.exit(__doc__)
    rows = load(argv[0])
    print("Uncontended: one client, a free name, acquire p50 (floor: one raw durable write "
          "through the same client library).\n")
    print(uncontended(rows))
    print("\nContended: clients on one name, each acquire (waiting) → hold 1 ms → release.\n")
    print(contended(rows))
    big = scale(rows)
    if big:
        print("\nScale: acquire p50 of a free name with few and with many other names held; "
              "then waiters on one held name, released once, drain one by one (each holds 1 ms), "
              "and what each release cost in acquire requests and waits.\n")
        print(big)
    if "--svg" in argv:
        path = argv[argv.index("--svg") + 1]
        with open(path, "w") as f:
            f.write(svg(rows))
        print(f"\n(chart: {path})")


if __name__ == "__main__":
    main(sys.argv[1:])
