#!/usr/bin/env python3
"""Kannel's side of bench/run.sh, in one asyncio process (standard library only):

  messages   rebuilds whole messages (destination, text) from an SMSC peer's log of parts,
             so Kannel is given the very messages Reachline put on the same peer (--count:
             only how many)
  calibrate  the load client against this process's own HTTP sink: the requests/s it can
             make while also answering as many callbacks, i.e. the ceiling this process puts
             on Kannel (it must be well above Kannel's rate for Kannel's figure to be Kannel's)
  load       every message through Kannel's HTTP sendsms interface over kept-alive
             connections, delivery reports (dlr-mask 3) called back to the sink here; waits
             for the parts at the peer and for the reports, and prints one JSON object

The peer's log is JSON lines, one per accepted part: `reachline sandbox-smsc --log` writes
{"destination", "text", "concat": [ref, total, seq] | null, "session", …}; tools/smsc.py
writes {"dest", "text", "id"} (no concatenation: each part counts as a message).
"""

import argparse
import asyncio
import json
import os
import sys
import time
import urllib.parse


def peer_lines(path):
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def rebuild(path, skip, take):
    """Whole messages from the parts in lines skip..skip+take of the peer's log."""
    out, pending = [], {}
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i < skip:
                continue
            if i >= skip + take:
                break
            p = json.loads(line)
            dest = p.get("destination", p.get("dest"))
            concat = p.get("concat")
            if not concat:
                out.append((dest, p["text"]))
                continue
            ref, total, seq = concat
            key = (p.get("session"), dest, ref, total)
            parts = pending.setdefault(key, {})
            parts[seq] = p["text"]
            if len(parts) == total:
                del pending[key]
                out.append((dest, "".join(parts[k] for k in sorted(parts))))
    return out, sum(len(v) for v in pending.values())


class Sink:
    """An HTTP/1.1 server answering every request 200 with an empty body; counts the requests
    and keeps the time of the last one, and the `s` query parameter (Kannel's %d) of each."""

    def __init__(self):
        self.count = 0
        self.last = 0.0
        self.status = {}

    async def handle(self, reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line = head.split(b"\r\n", 1)[0]
                self.count += 1
                self.last = time.time()
                q = line.split(b" ")[1] if b" " in line else b""
                if b"s=" in q:
                    s = q.split(b"s=", 1)[1].split(b"&", 1)[0].decode()
                    self.status[s] = self.status.get(s, 0) + 1
                length = 0
                for h in head.split(b"\r\n")[1:]:
                    if h.lower().startswith(b"content-length:"):
                        length = int(h.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                keep = b"HTTP/1.1" in line and b"connection: close" not in head.lower()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n" + (b"\r\n" if keep else b"Connection: close\r\n\r\n"))
                if not keep:
                    await writer.drain()
                    break
        except (asyncio.IncompleteReadError, asyncio.CancelledError, ConnectionError):
            pass
        finally:
            writer.close()


async def client(host, port, paths, next_index, results):
    """One kept-alive connection sending GETs in turn; reconnects when the server closes."""
    reader = writer = None
    while True:
        i = next_index[0]
        if i >= len(paths):
            break
        next_index[0] = i + 1
        for attempt in range(3):
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                writer.write(b"GET " + paths[i] + b" HTTP/1.1\r\nHost: bench\r\n\r\n")
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length, close = 0, False
                for h in head.split(b"\r\n")[1:]:
                    hl = h.lower()
                    if hl.startswith(b"content-length:"):
                        length = int(h.split(b":", 1)[1])
                    elif hl.startswith(b"connection:") and b"close" in hl:
                        close = True
                if length:
                    await reader.readexactly(length)
                results[status] = results.get(status, 0) + 1
                if close:
                    writer.close()
                    writer = None
                break
            except (asyncio.IncompleteReadError, ConnectionError, OSError):
                if writer is not None:
                    writer.close()
                writer = None
                if attempt == 2:
                    results["error"] = results.get("error", 0) + 1
    if writer is not None:
        writer.close()


async def push(host, port, paths, connections):
    """Sends every path; returns (status counts, seconds from first request to last answer)."""
    results, next_index = {}, [0]
    t0 = time.time()
    await asyncio.gather(*(client(host, port, paths, next_index, results) for _ in range(connections)))
    return results, t0, time.time()


async def calibrate(a):
    sink = Sink()
    server = await asyncio.start_server(sink.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    text = urllib.parse.quote("【演示】您的借款第1期今日到期，请及时还款：https://r.example/x")
    paths = [f"/cgi-bin/sendsms?to=%2B8613800138000&text={text}&n={i}".encode() for i in range(a.count)]
    results, t0, t1 = await push("127.0.0.1", port, paths, a.connections)
    server.close()
    ok = results.get(200, 0)
    print(json.dumps({"requests": ok, "seconds": t1 - t0, "requests_per_second": ok / (t1 - t0),
                      "served": sink.count, "errors": a.count - ok}))


async def wait_until(cond, quiet, limit):
    """Waits until cond() holds, or its progress stops for `quiet` s, or `limit` s pass."""
    last, since, start = None, time.time(), time.time()
    while time.time() - start < limit:
        done, progress = cond()
        if done:
            return True
        if progress != last:
            last, since = progress, time.time()
        elif time.time() - since > quiet:
            return False
        await asyncio.sleep(0.02)
    return False


async def load(a):
    msgs = [json.loads(line) for line in open(a.messages, encoding="utf-8")]
    sink = Sink()
    server = await asyncio.start_server(sink.handle, "127.0.0.1", a.dlr_port)
    dlr_port = server.sockets[0].getsockname()[1]
    dlr_url = f"http://127.0.0.1:{dlr_port}/dlr?s=%d"
    base = urllib.parse.urlsplit(a.sendsms)
    q = lambda s: urllib.parse.quote(s, safe="")
    common = f"username={q(a.user)}&password={q(a.password)}&from={q(a.sender)}&charset=UTF-8"
    if a.dlr:
        common += f"&dlr-mask=3&dlr-url={q(dlr_url)}"
    paths = []
    for m in msgs:
        to = m["to"] if m["to"].startswith("+") else "+" + m["to"]
        coding = "" if m["text"].isascii() else "&coding=2"
        paths.append(f"{base.path}?{common}{coding}&to={q(to)}&text={q(m['text'])}".encode())
    before = peer_lines(a.peer_log)
    results, t0, t_answered = await push(base.hostname, base.port, paths, a.connections)
    accepted = results.get(202, 0) + results.get(200, 0)
    expect = a.expect_parts or len(msgs)

    def parts():
        # A peer that writes its log only when idle shows no progress while parts flow: the
        # reports coming back are the progress then.
        n = peer_lines(a.peer_log) - before
        return n >= expect, (n, sink.count)

    await wait_until(parts, a.quiet, a.limit)
    at_peer = peer_lines(a.peer_log) - before
    t_peer = os.stat(a.peer_log).st_mtime
    if a.dlr:
        await wait_until(lambda: (sink.count >= at_peer, sink.count), a.quiet, a.limit)
    server.close()
    out = {
        "messages": len(msgs),
        "http_accepted": accepted,
        "http_other": {str(k): v for k, v in results.items() if k not in (200, 202)},
        "http_seconds": t_answered - t0,
        "parts_at_peer": at_peer,
        "end_to_end_seconds": t_peer - t0,
        "messages_per_second": len(msgs) / (t_peer - t0) if at_peer >= expect else None,
        "parts_per_second": at_peer / (t_peer - t0),
        "reports": sink.count,
        "report_status": sink.status,
        "reports_seconds": (sink.last - t0) if sink.count else None,
        "reports_per_second": sink.count / (sink.last - t0) if sink.count else None,
        "connections": a.connections,
    }
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("messages")
    m.add_argument("--log", required=True)
    m.add_argument("--skip", type=int, default=0)
    m.add_argument("--take", type=int, required=True)
    m.add_argument("--count", action="store_true", help="print only the counts, as JSON")
    c = sub.add_parser("calibrate")
    c.add_argument("--count", type=int, default=20000)
    c.add_argument("--connections", type=int, default=64)
    ld = sub.add_parser("load")
    ld.add_argument("--sendsms", required=True, help="http://127.0.0.1:PORT/cgi-bin/sendsms")
    ld.add_argument("--user", default="bench")
    ld.add_argument("--password", default="bench")
    ld.add_argument("--sender", default="Reachline", help="the sender id, as Reachline's")
    ld.add_argument("--messages", required=True, help="JSON lines {to, text}")
    ld.add_argument("--peer-log", required=True)
    ld.add_argument("--expect-parts", type=int, default=0)
    ld.add_argument("--connections", type=int, default=64)
    ld.add_argument("--dlr", action=argparse.BooleanOptionalAction, default=True)
    ld.add_argument("--dlr-port", type=int, default=0)
    ld.add_argument("--quiet", type=float, default=10.0, help="give up after this long without progress")
    ld.add_argument("--limit", type=float, default=600.0)
    a = ap.parse_args()
    if a.cmd == "messages":
        msgs, left = rebuild(a.log, a.skip, a.take)
        if a.count:
            print(json.dumps({"messages": len(msgs), "parts": a.take, "incomplete_parts": left}))
            return
        for to, text in msgs:
            print(json.dumps({"to": to, "text": text}, ensure_ascii=False))
        print(f"{len(msgs)} messages rebuilt from {a.take} parts ({left} parts of incomplete messages left out)",
              file=sys.stderr)
    elif a.cmd == "calibrate":
        asyncio.run(calibrate(a))
    else:
        asyncio.run(load(a))


if __name__ == "__main__":
    main()
