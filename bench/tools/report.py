#!/usr/bin/env python3
"""Format the results of bench/run.sh as Markdown.

Reads the JSON lines that run.sh recorded and the machine description,
prints the tables and writes them to --output. Throughput and latency are
medians over the rounds of each scenario and server.
"""

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict

# Title of each load scenario and description of each server's work in it.
SCENARIOS = [
    ("S0", "fixed 200 response", {
        "actias": 'Actias: script returning `{body="ok"}` (Actias has no fixed response without Lua)',
        "nginx": 'nginx: `return 200 "ok"`, no Lua',
        "floor": 'bare Pingora app: fixed `{"hello":"world"}`, no Lua (floor)',
    }),
    ("S1", "hello-world handler", {
        "actias": "Actias: `json.stringify({hello=\"world\"})`, Content-Type application/json",
        "nginx": "nginx: `content_by_lua_block` with `cjson.encode`",
    }),
    ("S2", "key-value read", {
        "actias": "Actias: `kv.namespace(\"bench\"):get(\"greeting\")` from the embedded store (redb)",
        "nginx": "nginx: `ngx.shared.bench:get(\"greeting\")` from a `lua_shared_dict`",
    }),
    ("S3", "pass-through to a local origin", {
        "actias": "Actias: route with only an origin",
        "nginx": "nginx: `proxy_pass`, upstream `keepalive 64`",
    }),
    ("S4", "add a request header, forward to the origin", {
        "actias": "Actias: script sets `request.headers[\"x-bench\"]`, returns nothing; "
                  "no response header (Actias cannot yet add one to a forwarded response)",
        "nginx": "nginx: `access_by_lua_block` `ngx.req.set_header` + `header_filter_by_lua_block`",
    }),
    ("S5", "hello handler on 1,000 routes (distinct hosts)", {
        "actias": "Actias: one route per host, each with the hello script",
        "nginx": "nginx: one `server` block per host, each with `content_by_lua_block`",
    }),
]
REFERENCE_SERVERS = {"floor"}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", required=True, help="JSON lines recorded by run.sh")
    parser.add_argument("--machine", required=True, help="machine description (JSON)")
    parser.add_argument("--output", required=True, help="Markdown file to write")
    parser.add_argument("--full-run", type=int, default=0, help="1 if ROUNDS >= 3 and DURATION >= 10")
    return parser.parse_args()


def percentile(values, fraction):
    """Nearest-rank percentile of VALUES, for example fraction=0.99."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def format_us(microseconds):
    if microseconds >= 1000:
        return f"{microseconds / 1000:.2f} ms"
    return f"{microseconds:.0f} µs"


def format_mib(kib):
    return f"{kib / 1024:.1f} MiB"


def load_table(records):
    """Return the throughput and latency table, with Actias/peer ratios."""
    runs = defaultdict(list)
    failures = defaultdict(list)
    for record in records:
        if record["kind"] == "load":
            runs[(record["scenario"], record["server"])].append(record)
        elif record["kind"] == "failure":
            failures[(record["scenario"], record["server"])].append(record["message"])

    lines = [
        "| Scenario | Server and work | Requests/s | p50 | p99 | Rounds (req/s) | Errors | Origin connections | Actias / best peer |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    medians = {}
    for scenario, title, servers in SCENARIOS:
        # A scenario left out of SCENARIOS has no records and no row.
        if not any(key[0] == scenario for key in list(runs) + list(failures)):
            continue
        rows = []
        for server, description in servers.items():
            rounds = runs.get((scenario, server), [])
            messages = failures.get((scenario, server), [])
            if not rounds:
                reason = "; ".join(messages) if messages else "not run"
                rows.append((server, f"| {scenario} {title} | {description} | {reason} | | | | | | |"))
                continue
            rates = [r["wrk"]["requests"] / r["wrk"]["duration_us"] * 1e6 for r in rounds]
            rps = statistics.median(rates)
            medians[(scenario, server)] = rps
            p50 = statistics.median(r["wrk"]["p50_us"] for r in rounds)
            p99 = statistics.median(r["wrk"]["p99_us"] for r in rounds)
            errors = sum(sum(r["wrk"]["errors"].values()) for r in rounds)
            accepts_text = ", ".join(
                f"{r['origin_accepts']} ({r['origin_accepts_measured']})"
                for r in rounds if r.get("origin_accepts") is not None
            )
            rounds_text = ", ".join(f"{rate:.0f}" for rate in rates)
            if messages:
                rounds_text += f" ({len(messages)} failed: {'; '.join(messages)})"
            rows.append((server, f"| {scenario} {title} | {description} | {rps:.0f} | {format_us(p50)} "
                                 f"| {format_us(p99)} | {rounds_text} | {errors} | {accepts_text} | RATIO |"))
        peers = [medians[(scenario, s)] for s in servers
                 if s != "actias" and s not in REFERENCE_SERVERS and (scenario, s) in medians]
        ratio = ""
        if (scenario, "actias") in medians and peers:
            ratio = f"{medians[(scenario, 'actias')] / max(peers):.2f}"
        for server, row in rows:
            lines.append(row.replace("RATIO", ratio if server == "actias" else ""))
    notes = []
    if ("S1", "actias") in medians and ("S0", "floor") in medians:
        notes.append(
            f"Actias S1 (hello handler) / Pingora floor (fixed response): "
            f"{medians[('S1', 'actias')] / medians[('S0', 'floor')]:.2f}"
        )
    return lines, notes


def startup_table(records):
    samples = defaultdict(list)
    failures = defaultdict(list)
    for record in records:
        if record["kind"] == "startup":
            samples[record["server"]].append(record["probe"])
        elif record["kind"] == "failure" and record["scenario"] == "S6":
            failures[record["server"]].append(record["message"])
    if not samples and not failures:
        return []
    lines = [
        "| Server | Starts | Start to first good response p50 | p99 | First request latency p50 | p99 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for server in sorted(set(samples) | set(failures)):
        probes = samples.get(server, [])
        if not probes:
            lines.append(f"| {server} | 0 | {'; '.join(failures[server])} | | | |")
            continue
        ready = [p["ready_ms"] for p in probes]
        first = [p["first_request_ms"] for p in probes]
        count = str(len(probes))
        if failures.get(server):
            count += f" ({'; '.join(failures[server])})"
        lines.append(
            f"| {server} | {count} | {statistics.median(ready):.1f} ms | {percentile(ready, 0.99):.1f} ms "
            f"| {statistics.median(first):.2f} ms | {percentile(first, 0.99):.2f} ms |"
        )
    return lines


def memory_table(records):
    memory = defaultdict(dict)
    failures = defaultdict(list)
    for record in records:
        if record["kind"] == "memory":
            memory[record["server"]][record["state"]] = record
        elif record["kind"] == "failure" and record["scenario"] == "MEM":
            failures[record["server"]].append(record["message"])
    if not memory and not failures:
        return []
    lines = [
        "| Server | Idle, 1 route | With idle connections | Per 10,000 idle connections | "
        "Idle, 1,000 routes | 1,000 routes minus 1 route |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for server in sorted(set(memory) | set(failures)):
        states = memory.get(server, {})
        idle = states.get("idle", {}).get("rss_kib")
        cells = [format_mib(idle) if idle is not None else ""]
        connections = states.get("connections")
        if connections and idle is not None:
            opened = connections["probe"]["open"]
            cells.append(f"{format_mib(connections['rss_kib'])} ({opened} open)")
            per_10k = (connections["rss_kib"] - idle) * 10000 / opened if opened else float("nan")
            cells.append(format_mib(per_10k))
        else:
            cells += ["", ""]
        routes = states.get("routes")
        if routes and idle is not None:
            cells.append(f"{format_mib(routes['rss_kib'])} ({routes['routes']} routes)")
            cells.append(format_mib(routes["rss_kib"] - idle))
        else:
            cells += ["n/a" if server in REFERENCE_SERVERS else "", ""]
        line = f"| {server} | " + " | ".join(cells) + " |"
        if failures.get(server):
            line += " " + "; ".join(failures[server])
        lines.append(line)
    return lines


def main():
    args = parse_args()
    with open(args.machine) as file:
        machine = json.load(file)
    with open(args.results) as file:
        records = [json.loads(line) for line in file if line.strip()]

    out = ["# Benchmark results", ""]
    if not args.full_run:
        out += [
            f"**Smoke run** ({machine['settings']}): it shows that the harness works end to end. "
            "Its numbers are too short to compare servers; a full run uses ROUNDS=3 DURATION=10 or more.",
            "",
        ]
    if machine.get("note"):
        out += [f"Note: {machine['note']}", ""]
    out += [
        f"Date: {machine['date']}. Command: `bench/run.sh` ({machine['settings']}).",
        "",
        "| Machine | |",
        "|---|---|",
        f"| CPU | {machine['cpu']}, {machine['cores']} cores |",
        f"| Memory | {machine['memory']} |",
        f"| Kernel | {machine['kernel']} |",
        f"| Load average at start (1, 5, 15 min) | {machine['loadavg']} |",
        f"| nginx | {machine['nginx']} |",
        f"| Lua module | {machine['lua_module']} |",
        f"| wrk | {machine['wrk']} |",
        f"| Actias commit | {machine['actias_commit']} |",
        f"| Actias binary | {machine['actias_bin']} |",
        f"| Pingora floor binary | {machine['floor_bin']} |",
        "",
        f"Each server runs one worker thread pinned to core {machine['server_cpu']}; wrk, the origin "
        f"and the probes run on core {machine['load_cpu']}. wrk keeps {machine['connections']} "
        "keep-alive connections open on loopback. Requests/s, p50 and p99 are medians over the "
        "rounds; latencies are wrk's, which do not correct for coordinated omission.",
        "",
        "## Throughput and latency",
        "",
    ]
    lines, notes = load_table(records)
    out += lines + [""]
    out += [
        "Actias / best peer is the ratio of median requests per second; the floor is a reference, not a peer. "
        "Origin connections is how many TCP connections the origin accepted from the proxy in each round, "
        "from the proxy's start to the end of the measured run, and in brackets during the measured run "
        "alone (after the warm-up).",
        "",
    ]
    out += [f"{note}." for note in notes] + ([""] if notes else [])
    startup = startup_table(records)
    if startup:
        out += [
            "## S6: first request after start",
            "",
            "Each server is started with the S1 hello route and polled every millisecond until a "
            "request returns the hello body. p99 is the nearest-rank 99th percentile, so with fewer than "
            "100 starts it is the slowest start.",
            "",
        ] + startup + [""]
    memory = memory_table(records)
    if memory:
        out += [
            "## Memory",
            "",
            "Resident memory (VmRSS, nginx master and worker added up), 1 s after start with the S1 "
            "hello route, while holding idle keep-alive connections that each completed one request, "
            "and 1 s after start with the S5 config.",
            "",
        ] + memory + [""]

    text = "\n".join(out)
    with open(args.output, "w") as file:
        file.write(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
