#!/usr/bin/env python3
"""An independent verifier of Reachline's evidence, written from the specifications alone
(RFC 9162 section 2.1, C2SP signed-note, tlog-checkpoint, tlog-proof, tlog-witness, and the leaf
table in crates/reachline-ledger/src/leaf.rs), with nothing of Reachline's code: hashlib and hmac
from the standard library, Ed25519 from the `cryptography` package.

    verify_proof.py bundle FILE KEY              a bundle / proof file (and its address reveal)
    verify_proof.py consistency OLD BODY KEY     OLD: a signed checkpoint; BODY: the output of
                                                 `reachline ledger consistency` (witness form)

    verify_proof.py tiles DIR KEY                a log published by `reachline ledger publish`
                                                 (C2SP tlog-tiles): every entry bundle and hash
                                                 tile against the signed checkpoint

KEY is the verifier key `name+hexid+base64`. Exit status 0 when everything verifies.
"""

import base64
import hashlib
import hmac
import struct
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def fail(why):
    print("FAILED: " + why)
    sys.exit(1)


def leaf_hash(data):
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def parse_key(text):
    # name+hexid+base64; the base64 part may hold '+', so split on the first two only.
    name, hexid, b64 = text.strip().split("+", 2)
    raw = base64.b64decode(b64)
    if raw[0] != 1 or len(raw) != 33:
        fail("not an Ed25519 verifier key")
    kid = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    if kid.hex() != hexid:
        fail("the key id does not match the key")
    return name, kid, Ed25519PublicKey.from_public_bytes(raw[1:])


def open_checkpoint(note, key):
    """Checks the signed note's signature by KEY; returns (origin, size, root)."""
    name, kid, pub = key
    text, sep, sigs = note.partition("\n\n")
    if not sep:
        fail("the checkpoint has no signature block")
    text += "\n"
    ok = False
    for line in sigs.splitlines():
        if not line.startswith("\u2014 "):
            fail("a signature line does not start with an em dash")
        signer, b64 = line[2:].rsplit(" ", 1)
        blob = base64.b64decode(b64)
        if signer == name and blob[:4] == kid:
            try:
                pub.verify(blob[4:], text.encode())
            except InvalidSignature:
                fail("the checkpoint's signature does not verify")
            ok = True
    if not ok:
        fail("the checkpoint carries no signature of this key")
    lines = text.split("\n")
    return lines[0], int(lines[1]), base64.b64decode(lines[2])


def root_from_inclusion(index, size, leaf, proof):
    """RFC 9162 2.1.3.2."""
    if index >= size:
        fail("index %d is outside the tree of size %d" % (index, size))
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            fail("the inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        fail("the inclusion proof is too short")
    return r


def verify_consistency(old, new, old_root, new_root, proof):
    """RFC 9162 2.1.4.2 (old 0 is accepted with an empty proof, as the witness protocol has it)."""
    if old == 0:
        return not proof
    if old == new:
        return not proof and old_root == new_root
    if old & (old - 1) == 0:
        proof = [old_root] + proof
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


def decode_leaf(b):
    """The fields of a version-1 leaf that a reveal needs: borrower, contact, commitment."""
    at = [0]

    def take(n):
        if at[0] + n > len(b):
            fail("a leaf is cut short")
        v = b[at[0]:at[0] + n]
        at[0] += n
        return v

    def s():
        (n,) = struct.unpack(">H", take(2))
        return take(n).decode()

    def opt(f):
        flag = take(1)[0]
        if flag not in (0, 1):
            fail("a presence byte is neither 0 nor 1")
        return f() if flag else None

    if take(1)[0] != 1:
        fail("not a version-1 leaf")
    kind = take(1)[0]
    if kind in (2, 3, 6, 7, 9, 10):
        s()
    elif kind == 8:
        s()
        take(1)
    elif kind not in (1, 4, 5):
        fail("unknown leaf kind %d" % kind)
    take(8)  # time
    (borrower,) = struct.unpack(">q", take(8))
    opt(lambda: take(8))  # notice
    contact = opt(lambda: struct.unpack(">q", take(8))[0])
    opt(s)  # channel
    opt(s)  # provider message id
    opt(lambda: (s(), take(4)))  # template
    opt(lambda: take(32))  # content hash
    commitment = opt(lambda: take(32))
    if at[0] != len(b):
        fail("bytes follow a leaf's last field")
    return borrower, contact, commitment


def bundle(path, key_text):
    key = parse_key(key_text)
    lines = open(path, encoding="utf-8").read().split("\n")
    i, checkpoint, entries, reveal = 0, None, [], None
    while i < len(lines) and lines[i]:
        if lines[i] == "reachline/address-reveal@v1":
            borrower = int(lines[i + 1].split(" ", 1)[1])
            rkey = base64.b64decode(lines[i + 2].split(" ", 1)[1])
            contacts = {}
            for line in lines[i + 3:]:
                if line:
                    _, cid, address = line.split(" ", 2)
                    contacts[int(cid)] = address
            reveal = (borrower, rkey, contacts)
            break
        if lines[i] != "c2sp.org/tlog-proof@v1":
            fail("line %d: expected a tlog-proof header" % (i + 1))
        extra = base64.b64decode(lines[i + 1].removeprefix("extra "))
        index = int(lines[i + 2].removeprefix("index "))
        i += 3
        proof = []
        while lines[i]:
            proof.append(base64.b64decode(lines[i]))
            i += 1
        start = i = i + 1
        while lines[i]:
            i += 1
        i += 1
        while i < len(lines) and lines[i].startswith("\u2014 "):
            i += 1
        note = "\n".join(lines[start:i]) + "\n"
        if checkpoint is None:
            checkpoint = note
        elif note != checkpoint:
            fail("the blocks carry different checkpoints")
        entries.append((index, extra, proof))
    if not entries:
        fail("no proof blocks")
    origin, size, root = open_checkpoint(checkpoint, key)
    revealed = 0
    for index, extra, proof in entries:
        if root_from_inclusion(index, size, leaf_hash(extra), proof) != root:
            fail("leaf %d is not in the tree of size %d" % (index, size))
        if reveal:
            borrower, contact, commitment = decode_leaf(extra)
            if borrower == reveal[0] and contact in reveal[2] and commitment is not None:
                mac = hmac.new(reveal[1], reveal[2][contact].encode(), hashlib.sha256).digest()
                if mac != commitment:
                    fail("leaf %d does not commit to the revealed address" % index)
                revealed += 1
    print("OK: %d leaves included in %s at size %d; %d address commitments match"
          % (len(entries), origin, size, revealed))


def consistency(old_path, body_path, key_text):
    key = parse_key(key_text)
    _, old_size, old_root = open_checkpoint(open(old_path, encoding="utf-8").read(), key)
    head, _, new_note = open(body_path, encoding="utf-8").read().partition("\n\n")
    head = head.split("\n")
    if head[0] != "old %d" % old_size:
        fail("the proof is from size %s, the old checkpoint has %d" % (head[0], old_size))
    proof = [base64.b64decode(h) for h in head[1:] if h]
    origin, new_size, new_root = open_checkpoint(new_note, key)
    if not verify_consistency(old_size, new_size, old_root, new_root, proof):
        fail("the checkpoint of size %d is not a prefix of the one of size %d" % (old_size, new_size))
    print("OK: %s at size %d extends size %d" % (origin, new_size, old_size))


def mth(hashes):
    """RFC 9162 2.1.1: the root of a list of leaf hashes."""
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return node_hash(mth(hashes[:k]), mth(hashes[k:]))


def tile_path(level, n, width):
    """C2SP tlog-tiles: tile/<L>/<N>[.p/<W>], N in zero-padded 3-digit elements, all but the
    last prefixed with x."""
    parts = []
    while True:
        parts.append("%03d" % (n % 1000))
        n //= 1000
        if n == 0:
            break
    parts = ["x" + p for p in reversed(parts[1:])] + [parts[0]]
    return "tile/%s/%s%s" % (level, "/".join(parts), "" if width == 256 else ".p/%d" % width)


def tiles(directory, key_text):
    import os

    key = parse_key(key_text)
    origin, size, root = open_checkpoint(open(os.path.join(directory, "checkpoint"), encoding="utf-8").read(), key)
    read = lambda path: open(os.path.join(directory, path), "rb").read()
    leaves = []
    for n in range((size + 255) // 256):
        width = min(256, size - n * 256)
        data = read(tile_path("entries", n, width))
        at, entries = 0, []
        while at < len(data):
            (length,) = struct.unpack(">H", data[at:at + 2])
            entries.append(data[at + 2:at + 2 + length])
            at += 2 + length
        if at != len(data) or len(entries) != width:
            fail("%s: %d entries, expected %d" % (tile_path("entries", n, width), len(entries), width))
        leaves.extend(leaf_hash(e) for e in entries)
    if len(leaves) != size or (size > 0 and mth(leaves) != root):
        fail("the entries do not rebuild the checkpoint's root")
    level, hashes, checked = 0, leaves, 0
    while hashes:
        above = []
        for n in range((len(hashes) + 255) // 256):
            chunk = hashes[n * 256:(n + 1) * 256]
            path = tile_path(level, n, len(chunk))
            if read(path) != b"".join(chunk):
                fail("%s does not hold the hashes the entries give" % path)
            checked += 1
            if len(chunk) == 256:
                above.append(mth(chunk))
        level, hashes = level + 1, above
    print("OK: %s at size %d: %d entry bundles and %d hash tiles rebuild the signed root"
          % (origin, size, (size + 255) // 256, checked))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "bundle":
        bundle(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "tiles":
        tiles(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 5 and sys.argv[1] == "consistency":
        consistency(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        print(__doc__)
        sys.exit(2)
