#!/usr/bin/env python3
"""An SMTP peer for interop tests, on PyPI `aiosmtpd` (not Reachline's code).

Answers per recipient by the local part's first word:
  gone…     550 5.1.1 (no such user)          full…   452 4.2.2 (mailbox full)
  disabled… 550 5.2.1 (mailbox disabled)      spam…   550 5.7.1 (policy)
  later…    250, then an RFC 3464 bounce (5.1.1) to the envelope sender, appended to --mbox
  anything else: 250.

With --maildir DIR, bounces also go to a Maildir (written to tmp/, renamed into new/, as mail
systems deliver). With --inbox FILE, every message taken for a recipient is appended to FILE as one JSON line
{"to", "from", "subject", "text"} with the body decoded (what the recipient would read).

    python tools/smtp_peer.py --port 2525 --mbox bounces.mbox [--inbox inbox.jsonl]
"""

import argparse
import asyncio
import email
import email.policy
import email.utils
import json
import mailbox
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
    def __init__(self, mbox, inbox=None, maildir=None):
        self.mbox = mbox
        self.inbox = inbox
        self.maildir = maildir

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
                dsn = DSN.format(sender=envelope.mail_from, rcpt=rcpt, date=date,
                                 boundary="b%d" % int(time.time() * 1e6))
                with open(self.mbox, "a") as f:
                    f.write("From MAILER-DAEMON %s\n" % time.asctime())
                    f.write(dsn)
                    f.write("\n")
                if self.maildir:
                    mailbox.Maildir(self.maildir, create=True).add(dsn)
        if self.inbox:
            msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
            body = msg.get_body(preferencelist=("plain",)) or msg
            with open(self.inbox, "a") as f:
                for rcpt in envelope.rcpt_tos:
                    if rcpt.split("@")[0].lower().startswith("later"):
                        continue
                    f.write(json.dumps({"to": rcpt, "from": envelope.mail_from,
                                        "subject": str(msg["subject"] or ""),
                                        "text": body.get_content()}, ensure_ascii=False) + "\n")
        return "250 2.0.0 Ok: queued"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=2525)
    ap.add_argument("--mbox", required=True)
    ap.add_argument("--inbox")
    ap.add_argument("--maildir")
    a = ap.parse_args()
    if a.maildir:
        mailbox.Maildir(a.maildir, create=True)
    c = Controller(Handler(a.mbox, a.inbox, a.maildir), hostname=a.host, port=a.port)
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
