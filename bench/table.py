#!/usr/bin/env python3
"""Folds the JSON that bench/run.sh collected in its work directory into one Markdown table
(printed, and written with --md) and one JSON document (--json). Standard library only."""

import argparse
import datetime
import json
import os
import platform
import subprocess

COLUMNS = ["SQLite (1 node)", "PostgreSQL (1 node)", "PostgreSQL (3 nodes)", "Kannel"]
NA = "—"


def load(work, name):
    try:
        with open(os.path.join(work, name + ".json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def status(work, name):
    try:
        with open(os.path.join(work, name + ".status")) as f:
            return f.read().strip()
    except OSError:
        return None


def text(work, name):
    try:
        with open(os.path.join(work, name)) as f:
            return f.read().strip()
    except OSError:
        return ""


def rate(v):
    return NA if v is None else f"{v:,.0f}"


def mib(v):
    return NA if not v else f"{v / (1 << 20):,.0f}"


def backend(doc, key, prefix):
    """The entry of doc[key] whose `backend` starts with prefix."""
    for b in (doc or {}).get(key, []):
        if b.get("backend", "").startswith(prefix):
            return b
    return None


def div(a, b):
    return a / b if a is not None and b else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--quick", default="0")
    ap.add_argument("--seconds", type=int, default=0)
    ap.add_argument("--sizes", default="")
    ap.add_argument("--load-before", default="?")
    ap.add_argument("--md")
    ap.add_argument("--json")
    a = ap.parse_args()
    w = a.work
    imp, pol, led, eng = load(w, "import"), load(w, "policy"), load(w, "ledger"), load(w, "engine")
    hooks = {"SQLite": load(w, "webhooks-sqlite"), "PostgreSQL": load(w, "webhooks-postgres")}
    smpp, kan, client = load(w, "smpp"), load(w, "kannel"), load(w, "kannel-client")
    pg_status = status(w, "postgres")
    pg_na = "skipped" if pg_status else NA

    def per_backend(fn):
        """The SQLite and PostgreSQL 1-node cells of a row."""
        cells = []
        for b in ("SQLite", "PostgreSQL"):
            try:
                v = fn(b)
            except (KeyError, TypeError, ZeroDivisionError):
                v = None
            cells.append(v if v is not None else (pg_na if b == "PostgreSQL" else NA))
        return cells

    # The messages and parts each engine run put on the peer (bench/kannel.py messages --count).
    for i, e in enumerate((eng or {}).get("backends", [])):
        peer = load(w, f"engine-peer-{i}") or {}
        e["figures"]["peer_messages"] = peer.get("messages")

    def engine(b):
        e = backend(eng, "backends", b)
        return e and e["figures"]

    # The several-node run: the engine benchmark's row named exactly so (bench engine --nodes).
    nodes = next((b["figures"] for b in (eng or {}).get("backends", []) if b["backend"].endswith(" nodes)")), None)
    nodes_na = pg_na if pg_status else (status(w, "engine") and "failed") or NA

    def several(fn):
        """The several-node cell of an engine row: its figure, or why there is none."""
        if not nodes:
            return nodes_na
        try:
            v = fn(nodes)
        except (KeyError, TypeError, ZeroDivisionError):
            v = None
        return NA if v is None else v

    def span(f):
        return f.get("end_to_end_seconds") or f["plan_seconds"] + f["dispatch_seconds"]

    book = (eng or {}).get("borrowers")
    policy_rate = rate(pol["runs"][-1]["borrowers_per_second"]) if pol else NA
    smpp_rate = rate(smpp["submits_per_second"]) if smpp else NA
    kannel_memory = None
    try:
        kannel_memory = sum(int(text(w, f"kannel-{p}.hwm")) for p in ("bearerbox", "smsbox"))
    except ValueError:
        pass

    def e2e(b, count):
        f = engine(b)
        return rate(div(f[count], span(f)))

    # Kannel's cells: its figure, or why there is none (skipped, or failed).
    why = "failed" if (status(w, "kannel") or "").startswith("failed") else "skipped"

    def kannel(fn):
        return fn() if kan else why

    def proof(b):
        r = backend(led, "backends", b)
        return f"{r['proof_gen_p50_us']:,.0f} / {r['proof_gen_p99_us']:,.0f} µs"

    # Each row: the metric, the SQLite and PostgreSQL 1-node cells, the several-node cell, Kannel's.
    rows = [
        ("import, rows/s (book validated and written)",
         per_backend(lambda b: rate(backend(imp, "backends", b)["summary"]["rows_per_second"])), NA, NA),
        (f"planning, book borrowers/s (engine: one pass over {book or '?'} borrowers)",
         per_backend(lambda b: rate(div(book, engine(b)["plan_seconds"]))),
         several(lambda f: rate(div(book, f["plan_seconds"]))), NA),
        ("planning, borrowers/s in the decision core alone (bench policy, 2 threads, no store)",
         per_backend(lambda b: policy_rate), NA, NA),
        ("dispatch, notices/s (each attempt recorded before and after the hand-over; beside the planning "
         "pass, as a step runs them, so timed from the pass's start)",
         per_backend(lambda b: rate(div(engine(b)["sent"], engine(b)["dispatch_seconds"]))),
         several(lambda f: rate(div(f["sent"], f["dispatch_seconds"]))), NA),
        ("**end to end, messages/s** to the shared SMSC peer (Reachline: first plan to last send; Kannel: "
         "first sendsms request to last part at the peer)",
         per_backend(lambda b: "**" + e2e(b, "peer_messages") + "**"),
         several(lambda f: "**" + rate(div(f["peer_messages"], span(f))) + "**"),
         kannel(lambda: "**" + rate(kan["messages_per_second"]) + "**")),
        ("end to end, SMS parts/s at the peer (same interval)",
         per_backend(lambda b: e2e(b, "parts")), several(lambda f: rate(div(f["parts"], span(f)))),
         kannel(lambda: rate(kan["parts_per_second"]))),
        ("receipts/s (Reachline: every part's receipt recorded, from the first send; Kannel: one delivery "
         "report per message called back, from the first request)",
         per_backend(lambda b: rate(div(engine(b)["receipts"], engine(b)["receipts_seconds"]))),
         several(lambda f: rate(div(f["receipts"], f["receipts_seconds"]))),
         kannel(lambda: rate(kan["reports_per_second"]))),
        ("ledger, durable appends/s",
         per_backend(lambda b: rate(backend(led, "backends", b)["appends_per_second"])), NA, NA),
        ("proof latency, generation p50 / p99", per_backend(proof), NA, NA),
        ("webhook receipts, requests/s (signed, matched, durably recorded)",
         per_backend(lambda b: rate(hooks[b]["webhooks"]["requests_per_second"])), NA, NA),
        ("bare SMPP client, submits/s (bench smpp, same peer, window 64, no store)",
         per_backend(lambda b: smpp_rate), NA, NA),
        ("peak memory, MiB (engine process; several nodes: the largest; Kannel: bearerbox + smsbox)",
         per_backend(lambda b: mib(engine(b)["peak_rss_bytes"])), several(lambda f: mib(f["peak_rss_bytes"])),
         kannel(lambda: mib(kannel_memory))),
        ("peak memory of the import, MiB",
         per_backend(lambda b: mib(backend(imp, "backends", b)["summary"]["peak_rss_bytes"])), NA, NA),
    ]
    table = ["| metric | " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    for metric, (sqlite, pg), three_cell, k in rows:
        table.append(f"| {metric} | {sqlite} | {pg} | {three_cell} | {k} |")

    notes = []
    if eng:
        for b in eng["backends"]:
            f = b["figures"]
            notes.append(
                f"Reachline on {b['backend']}: a business day ({eng['day']}) of a {book}-borrower book planned "
                f"in {f['plan_seconds']:.2f} s{'' if f.get('sequential') else ' beside its dispatch'} "
                f"({f['borrowers']} borrowers due, {f['decisions']} decisions; "
                f"contact checks run after the dispatch), {f['sent']} notices sent in {f['dispatch_seconds']:.2f} s "
                f"to {f['smsc']}: {f['peer_messages']} messages ({f['parts']} parts) at the peer in all, "
                f"{f['receipts']} receipts recorded, {f['ledger_leaves']} ledger leaves (one per message "
                f"sent, one per receipt that changed what is known of a send: a message's first part's).")
        if nodes:
            notes.append(
                f"PostgreSQL ({nodes['nodes']} nodes): {nodes['nodes']} engine processes on one fresh database "
                f"holding the same book, started together, as `reachline run` nodes share one: planning "
                f"slices claimed (16), outbox rows leased with SKIP LOCKED, one ledger (one node sequences, "
                f"the others queue their leaves to it). Notices sent by node: "
                f"{', '.join(str(n) for n in nodes['sent_by_node'])}; times from the first node's start to "
                f"the last node's end; every node on this one machine, beside the database.")
    if kan:
        notes.append(
            f"Kannel {text(w, 'kannel.version') or ''}: the SQLite run's {kan['messages']} messages again "
            f"({kan['parts_at_peer']} parts at the peer), {kan['http_accepted']} accepted by sendsms in "
            f"{kan['http_seconds']:.2f} s, the last part at the peer after {kan['end_to_end_seconds']:.2f} s, "
            f"{kan['reports']} delivery reports called back. One SMPP transceiver bind, 64 pending submits, "
            f"dlr-mask 3 (registered_delivery 1, as Reachline), internal DLR storage, no message store, "
            f"no access log, log level warning.")
        if client:
            ok = client["requests_per_second"]
            e = kan.get("messages_per_second") or 0
            notes.append(
                f"The load client (bench/kannel.py, {kan['connections']} kept-alive connections) reaches "
                f"{ok:,.0f} requests/s against its own sink while answering as many callbacks: "
                f"{ok / e if e else float('nan'):.1f}× Kannel's end-to-end rate, so the client is "
                f"{'not ' if e and ok > 2 * e else ''}the bottleneck.")
        for b in ("SQLite", "PostgreSQL"):
            f = engine(b)
            if f and f.get("peer_messages") and kan.get("messages_per_second"):
                r = f["peer_messages"] / span(f)
                notes.append(f"Reachline on {b}, end to end: {r / kan['messages_per_second']:.2f}× Kannel's rate.")
        if nodes and nodes.get("peer_messages") and kan.get("messages_per_second"):
            r = nodes["peer_messages"] / span(nodes)
            notes.append(f"Reachline on PostgreSQL, {nodes['nodes']} nodes, end to end: "
                         f"{r / kan['messages_per_second']:.2f}× Kannel's rate.")
    if smpp:
        notes.append(
            f"bench smpp: {smpp['messages']} messages, {smpp['receipts_matched']} receipts matched "
            f"({rate(smpp['receipts_per_second'])}/s).")
    for name in ("postgres", "kannel", "import", "policy", "ledger", "webhooks-sqlite", "webhooks-postgres",
                 "engine", "smpp"):
        s = status(w, name)
        if s:
            notes.append(f"{name}: {s}")

    try:
        commit = subprocess.run(["git", "-C", a.root, "describe", "--always", "--dirty"],
                                capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = "?"
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        load_after = " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        load_after = "?"
    pg_version = text(w, "postgres.version")
    machine = (f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}"
               + (f", PostgreSQL {pg_version} on the same machine" if pg_version else "")
               + f"; load average {a.load_before} before the run, {load_after} after")
    now = datetime.datetime.now(datetime.timezone.utc)
    head = (f"Reachline {commit}, {now:%Y-%m-%d %H:%M} UTC, {'--quick' if a.quick == '1' else 'full run'} "
            f"({a.sizes}), {a.seconds} s in all; {machine}.")
    md = "\n".join([head, ""] + table + [""] + [f"- {n}" for n in notes]) + "\n"
    print(md)
    if a.md:
        with open(a.md, "w") as f:
            f.write(md)
    if a.json:
        raw = {n: load(w, n) for n in ("import", "policy", "ledger", "webhooks-sqlite", "webhooks-postgres",
                                       "engine", "smpp", "kannel", "kannel-client")}
        doc = {
            "date": now.isoformat(), "commit": commit, "machine": machine, "quick": a.quick == "1",
            "sizes": dict(kv.split("=", 1) for kv in a.sizes.split()), "seconds": a.seconds,
            "columns": COLUMNS,
            "rows": [{"metric": m, "values": [s, p, n, k]} for m, (s, p), n, k in rows],
            "notes": notes, "raw": raw,
        }
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=1, ensure_ascii=False)
            f.write("\n")


if __name__ == "__main__":
    main()
