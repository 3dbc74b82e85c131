#!/usr/bin/env python3
"""An SMTP peer for interop tests, on PyPI `aiosmtpd` (not Reachline's code).

Answers per recipient by the local part's first word:
  gone…     550 5.1.1 (no such user)          full…   452 4.2.2 (mailbox full)
  disabled… 550 5.2.1 (mailbox disabled)      spam…   550 5.7.1 (policy)
  later…    250, then an RFC 3464 bounce (5.1.1) to the envelope sender, appended to --mbox
  anything else: 250.

    python tools/smtp_peer.py --port 2525 --mbox bounces.mbox
"""

import argparse
import asyncio
import email.utils
import time

from aiosmtpd.controller import Controller

CODES = {
    "gone": "550 5.1.1 Recipient address rejected: User unknown",
    "full": "452 4.2.2 Mailbox full",
    "disabled": "550 5.2.1 Mailbox disabled",
    "spam": "550 5.7.1 Message rejected by policy",
}

DSN = """Return-Path: <>
To: <{sender}>
From: MAILER-DAEMON@peer.example
Subject: Undelivered Mail Returned to Sender
Date: {date}
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="{boundary}"

--{boundary}
Content-Type: text/plain

The mail could not be delivered.

--{boundary}
Content-Type: message/delivery-status

Reporting-MTA: dns; peer.example
Arrival-Date: {date}

Final-Recipient: rfc822; {rcpt}
Original-Recipient: rfc822;{rcpt}
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 user unknown

--{boundary}--
"""


class Handler:
    def __init__(self, mbox):
        self.mbox = mbox

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0].lower()
        for word, reply in CODES.items():
            if local.startswith(word):
                return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        for rcpt in envelope.rcpt_tos:
            if rcpt.split("@")[0].lower().startswith("later"):
                date = email.utils.formatdate()
                with open(self.mbox, "a") as f:
                    f.write("From MAILER-DAEMON %s\n" % time.asctime())
                    f.write(DSN.format(sender=envelope.mail_from, rcpt=rcpt, date=date,
                                       boundary="b%d" % int(time.time() * 1e6)))
                    f.write("\n")
        return "250 2.0.0 Ok: queued"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=2525)
    ap.add_argument("--mbox", required=True)
    a = ap.parse_args()
    c = Controller(Handler(a.mbox), hostname=a.host, port=a.port)
    c.start()
    print("listening", a.port, flush=True)
    try:
        asyncio.get_event_loop().run_forever()
    except KeyboardInterrupt:
        pass
    finally:
        c.stop()


if __name__ == "__main__":
    main()
