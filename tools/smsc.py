#!/usr/bin/env python3
"""A configurable SMSC for interop tests, on the PyPI `smpp34` server (not Reachline's code).

Outcome per message by the last digit of the destination number, the same script as the Rust
sandbox (crates/reachline-channels/src/smpp/sandbox.rs):
  0 delivered (receipt body only, id in upper-case hex when it has a letter)   5 refused ESME_RINVDSTADR
  1 undeliverable, TLVs message_state 5 + GSM error 1      6 throttled once, then delivered
  2 undeliverable err:013 (body)                           7 refused ESME_RINVSRCADR
  3 undeliverable err:027 (body)                           8 receipt before submit_sm_resp... see below
  4 expired (body)                                         9 undeliverable err:255 (unmapped)
Digit 8 is delivered; smpp34's accept() sends the response itself, so this SMSC cannot put a
receipt ahead of it and treats 8 like 0 (the Rust sandbox covers early receipts).

Every accepted part is appended to --log as a JSON line {"dest", "text", "id"}, flushed, so a
test can check that nothing was lost or sent twice across a kill and restart.

    python tools/smsc.py --port 2775 [--log accepted.jsonl] [--throttle-every N] [--no-receipts]
"""

import argparse
import asyncio
import json
import sys

import smpp34


def receipt_for(digit: int, mid: str):
    """(body bytes, tlvs) of the receipt for a message id."""
    if digit == 1:
        tlvs = [
            smpp34.Tlv(smpp34.TLV_RECEIPTED_MESSAGE_ID, mid.encode() + b"\0"),
            smpp34.Tlv(smpp34.TLV_MESSAGE_STATE, bytes([5])),
            smpp34.Tlv(smpp34.TLV_NETWORK_ERROR_CODE, bytes([3, 0, 1])),
        ]
        return b"", tlvs
    if digit in (0, 8):
        # Upper-case hex, as some SMSCs report ids -- when the hex has a letter: an all-digit
        # hex form (16 -> "10") would name another message's decimal id.
        h = "%X" % int(mid)
        rid = h if any(c in "ABCDEF" for c in h) else mid
        body = "id:%s sub:001 dlvrd:001 submit date:2601291200 done date:2601291200 stat:DELIVRD err:000 text:" % rid
    elif digit == 2:
        body = "id:%s sub:001 dlvrd:000 submit date:2601291200 done date:260129120001 stat:UNDELIV err:013 text:" % mid
    elif digit == 3:
        body = "ID:%s STAT:undeliv ERR:027" % mid
    elif digit == 4:
        body = "id:%s submit date:2601291200 done date:2601301200 stat:EXPIRED err:000" % mid
    elif digit == 9:
        body = "id:%s stat:UNDELIV err:255" % mid
    else:
        body = "id:%s stat:DELIVRD err:000" % mid
    return body.encode(), []


def decode_text(ev) -> str:
    sm = ev.short_message
    if ev.esm_class & 0x40 and sm:
        sm = sm[1 + sm[0]:]
    if ev.data_coding == 8:
        return sm.decode("utf-16-be", errors="replace")
    return sm.decode("latin-1")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=2775)
    ap.add_argument("--log", help="append accepted parts here (omit for benchmarks)")
    ap.add_argument("--throttle-every", type=int, default=0)
    ap.add_argument("--no-receipts", action="store_true")
    ap.add_argument("--id-start", type=int, default=1)
    a = ap.parse_args()

    server = smpp34.Server(a.host, a.port, system_id="pysmsc")
    await server.start()
    print("listening", a.port, flush=True)
    log = open(a.log, "a", buffering=1) if a.log else None
    sessions = {}
    throttled_once = set()
    next_id = a.id_start
    count = 0
    tasks = set()

    async def push(esme, dest, src, digit, mid):
        body, tlvs = receipt_for(digit, mid)
        try:
            await esme.deliver_sm(src or "0", body, source_addr=dest, esm_class=0x04, source_addr_ton=1,
                                  source_addr_npi=1, tlvs=tlvs)
        except Exception as e:  # the session went away: the receipt is lost, as on a real SMSC
            print("receipt not delivered:", e, file=sys.stderr, flush=True)

    while True:
        ev = await server.next()
        if isinstance(ev, smpp34.Esme):
            sessions[ev.session_id] = ev
            continue
        if isinstance(ev, smpp34.Unbound):
            sessions.pop(ev.session_id, None)
            continue
        if not isinstance(ev, smpp34.SubmitSmEvent):
            continue
        count += 1
        dest = ev.destination_addr
        digit = int(dest[-1]) if dest and dest[-1].isdigit() else 0
        key = (dest, bytes(ev.short_message))
        if a.throttle_every and count % a.throttle_every == 0:
            ev.reject(smpp34.ESME_RTHROTTLED)
            continue
        if digit == 6 and key not in throttled_once:
            throttled_once.add(key)
            ev.reject(smpp34.ESME_RTHROTTLED)
            continue
        if digit == 5:
            ev.reject(smpp34.ESME_RINVDSTADR)
            continue
        if digit == 7:
            ev.reject(smpp34.ESME_RINVSRCADR)
            continue
        mid = "%010d" % next_id
        next_id += 1
        if log is not None:
            log.write(json.dumps({"dest": dest, "text": decode_text(ev), "id": mid}) + "\n")
        ev.accept(mid)
        esme = sessions.get(ev.session_id)
        if esme is not None and not a.no_receipts:
            t = asyncio.ensure_future(push(esme, dest, ev.source_addr, digit, mid))
            tasks.add(t)
            t.add_done_callback(tasks.discard)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
