#!/usr/bin/env bash
# bench/run.sh: every Reachline benchmark in one run, and Kannel beside it as the reference
# gateway, pushing the same messages through the same SMSC peer; one Markdown table.
#
#   bench/run.sh            about 4 minutes on a 2-core machine (after the build)
#   bench/run.sh --quick    about 1–2 minutes, smaller sizes (CI)
#
# Options: --no-kannel, --no-postgres, --out DIR (default bench/results), -h.
# Environment: CARGO_TARGET_DIR (default target/), REACHLINE_BENCH_POSTGRES_URL (default
# postgres://postgres@127.0.0.1:5432/postgres; a fresh database is made and dropped per
# benchmark), and BENCH_<SIZE> to override one size (see `sizes` below).
#
# The SMSC peer is `reachline sandbox-smsc --all-delivered`, started once; Reachline's engine
# and `bench smpp` and Kannel all send to it, and each one's parts are counted in its log.
# Kannel (Debian's `kannel`, installed if missing) runs bearerbox + smsbox from a generated
# kannel.conf: one SMPP transceiver bind to the peer, a window of 64 submits (as Reachline's
# engine), and delivery reports requested on every message (dlr-mask 3, i.e.
# registered_delivery 1, as Reachline sets on every part), called back to an HTTP sink. It
# keeps no message store and no access log: Kannel at its lightest. Its messages are the very
# messages Reachline's engine put on the peer in the same run (rebuilt from the peer's log),
# sent through its HTTP sendsms interface by bench/kannel.py over 64 kept-alive connections.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
quick=0 kannel=1 postgres=1 out="$root/bench/results"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --no-kannel) kannel=0 ;;
    --no-postgres) postgres=0 ;;
    --out) out=$2; shift ;;
    -h | --help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
started=$(date +%s)
load_before=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')

# Sizes: the full run, then --quick.
size() { local v="BENCH_$1"; if [ -n "${!v:-}" ]; then echo "${!v}"; elif [ "$quick" = 1 ]; then echo "$3"; else echo "$2"; fi; }
IMPORT_BORROWERS=$(size IMPORT_BORROWERS 50000 10000)
POLICY_BORROWERS=$(size POLICY_BORROWERS 200000 50000)
LEDGER_LEAVES=$(size LEDGER_LEAVES 1000000 100000)
LEDGER_PROOFS=$(size LEDGER_PROOFS 2000 500)
ENGINE_BORROWERS=$(size ENGINE_BORROWERS 50000 10000)
WEBHOOK_SECONDS=$(size WEBHOOK_SECONDS 5 2)
WEBHOOK_SENDS=$(size WEBHOOK_SENDS 50000 10000)
SMPP_COUNT=$(size SMPP_COUNT 20000 5000)

target=${CARGO_TARGET_DIR:-$root/target}
bin="$target/release/reachline"
pg_url=${REACHLINE_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
export REACHLINE_BENCH_POSTGRES_URL="$pg_url"
work=$(mktemp -d "${TMPDIR:-/tmp}/reachline-bench.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
# stop PID [SECONDS]: stops one process we started, by its id: TERM, then KILL after
# SECONDS (10). Kannel's bearerbox takes half a minute over a TERM; it holds nothing here.
stop() {
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 1 $((${2:-10} * 10))); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 100); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
# jget FILE EXPR: EXPR over the JSON document in FILE (as d), printed.
jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {"d": d}))' "$@"; }
# note NAME TEXT: why a benchmark or column was skipped or failed, for the table's notes.
note() { printf '%s\n' "$2" >"$work/$1.status"; log "$1: $2"; }

# 1. The release binary, built once.
log "building the release binary (cargo build --release -p reachline)"
(cd "$root" && cargo build --release -q -p reachline)

# Kannel, from Debian's repositories if it is missing.
if [ "$kannel" = 1 ] && ! command -v bearerbox >/dev/null 2>&1; then
  log "installing Kannel (apt-get install -y kannel)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q kannel >"$work/apt.log" 2>&1 ||
    { apt-get update -q >>"$work/apt.log" 2>&1 && apt-get install -y -q kannel >>"$work/apt.log" 2>&1; } ||
    { note kannel "not installed (apt-get install kannel failed: $(tail -n 1 "$work/apt.log"))"; kannel=0; }
fi
[ "$kannel" = 0 ] && [ ! -f "$work/kannel.status" ] && note kannel "skipped (--no-kannel)"

# PostgreSQL: the columns are skipped, with the reason, when the server is not reachable.
pg_args=(--no-postgres)
if [ "$postgres" = 0 ]; then
  note postgres "skipped (--no-postgres)"
elif ! python3 - "$pg_url" <<'EOF'; then
import socket, sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
socket.create_connection((u.hostname or "127.0.0.1", u.port or 5432), timeout=3).close()
EOF
  note postgres "skipped: no PostgreSQL server answers at ${pg_url%%\?*} (set REACHLINE_BENCH_POSTGRES_URL)"
  postgres=0
elif command -v psql >/dev/null 2>&1 && ! psql "$pg_url" -Atqc 'select 1' >/dev/null 2>"$work/psql.err"; then
  note postgres "skipped: PostgreSQL at ${pg_url%%\?*} refused us: $(head -n 1 "$work/psql.err")"
  postgres=0
else
  pg_args=(--postgres "$pg_url")
  command -v psql >/dev/null 2>&1 && psql "$pg_url" -Atqc 'show server_version' >"$work/postgres.version" 2>/dev/null || true
fi

# 2. The SMSC peer, once, for everything that sends.
log "starting the SMSC peer (reachline sandbox-smsc --all-delivered)"
peer_log="$work/peer.jsonl"
: >"$peer_log"
"$bin" sandbox-smsc --listen 127.0.0.1:0 --port-file "$work/peer.port" --log "$peer_log" \
  --all-delivered --log-when-idle-ms 200 2>"$work/peer.err" &
peer_pid=$!
pids+=("$peer_pid")
for _ in $(seq 1 100); do [ -s "$work/peer.port" ] && break; sleep 0.1; done
[ -s "$work/peer.port" ] || { log "the SMSC peer did not start: $(cat "$work/peer.err")"; exit 1; }
peer_port=$(cat "$work/peer.port")
peer_lines() { wc -l <"$peer_log"; }
# Waits until the peer's log holds $1 lines (it writes them once no part has come for 200 ms).
wait_peer_lines() { for _ in $(seq 1 300); do [ "$(peer_lines)" -ge "$1" ] && return 0; sleep 0.1; done; return 1; }

# 3. Reachline's benchmarks. Each writes one JSON object; a failure leaves its figures out.
failures=0
bench() {
  local name=$1; shift
  log "reachline bench $* --json"
  if "$bin" bench "$@" --json >"$work/$name.json" 2>"$work/$name.err"; then return 0; fi
  note "$name" "failed: $(tail -n 1 "$work/$name.err")"
  rm -f "$work/$name.json"
  failures=$((failures + 1))
}
bench import import --borrowers "$IMPORT_BORROWERS" --dir "$work/import" "${pg_args[@]}"
bench policy policy --borrowers "$POLICY_BORROWERS" --threads 2
bench ledger ledger --leaves "$LEDGER_LEAVES" --proofs "$LEDGER_PROOFS" --dir "$work/ledger" "${pg_args[@]}"
bench webhooks-sqlite webhooks --seconds "$WEBHOOK_SECONDS" --connections 64 --sends "$WEBHOOK_SENDS" --dir "$work/webhooks"
if [ "$postgres" = 1 ]; then
  bench webhooks-postgres webhooks --seconds "$WEBHOOK_SECONDS" --connections 64 --sends "$WEBHOOK_SENDS" \
    --dir "$work/webhooks" --postgres "$pg_url"
fi

# The engine: one business day planned and dispatched to the shared peer, each attempt
# recorded, every send and receipt a ledger leaf.
engine_first=$(peer_lines)
# With PostgreSQL, the same book is also run by three engine processes on one database at once
# (bench engine --nodes 3), as three `reachline run` nodes share one: the "3 nodes" column.
nodes_args=()
[ "$postgres" = 1 ] && nodes_args=(--nodes 3)
bench engine engine --borrowers "$ENGINE_BORROWERS" --dir "$work/engine" --smsc-host 127.0.0.1 \
  --smsc-port "$peer_port" --ledger "${pg_args[@]}" "${nodes_args[@]}"
sqlite_parts=0
if [ -f "$work/engine.json" ]; then
  sqlite_parts=$(jget "$work/engine.json" 'd["backends"][0]["figures"]["parts"]')
  all_parts=$(jget "$work/engine.json" 'sum(b["figures"]["peer_parts"] for b in d["backends"])')
  wait_peer_lines $((engine_first + all_parts)) || log "the peer logged fewer parts than the engine counted"
  # The messages each back end's run put on the peer for its notices, rebuilt from their parts;
  # the contact checks' links follow them (run after the dispatch), so the next run's parts
  # start after all of this run's (`peer_parts`).
  skip=$engine_first
  for i in $(jget "$work/engine.json" '" ".join(str(i) for i in range(len(d["backends"])))'); do
    parts=$(jget "$work/engine.json" "d['backends'][$i]['figures']['parts']")
    python3 "$root/bench/kannel.py" messages --count --log "$peer_log" --skip "$skip" --take "$parts" \
      >"$work/engine-peer-$i.json"
    skip=$((skip + $(jget "$work/engine.json" "d['backends'][$i]['figures']['peer_parts']")))
  done
fi

# 4. Kannel: the SQLite run's messages again, through Kannel to the same peer.
kannel_failed() {
  note kannel "failed: $1; bearerbox's log ends: $(tail -n 1 "$work/kannel/bearerbox.log" 2>/dev/null)"
  failures=$((failures + 1))
}
kannel_run() {
  log "Kannel: rebuilding the engine's $sqlite_parts parts into messages"
  python3 "$root/bench/kannel.py" messages --log "$peer_log" --skip "$engine_first" --take "$sqlite_parts" \
    >"$work/kannel-messages.jsonl" 2>"$work/kannel-messages.err"
  log "  $(cat "$work/kannel-messages.err")"
  local k="$work/kannel" admin smsbox_port sendsms
  mkdir -p "$k"
  admin=$(free_port) smsbox_port=$(free_port) sendsms=$(free_port)
  cat >"$k/kannel.conf" <<EOF
# Generated by bench/run.sh: one SMPP transceiver bind to the benchmark's SMSC peer.
group = core
admin-port = $admin
admin-password = bench
status-password = bench
admin-allow-ip = "127.0.0.1"
smsbox-port = $smsbox_port
box-allow-ip = "127.0.0.1"
log-file = "$k/bearerbox.log"
log-level = 2
dlr-storage = internal

group = smsc
smsc = smpp
smsc-id = peer
host = 127.0.0.1
port = $peer_port
transceiver-mode = true
smsc-username = reachline
smsc-password = secret
system-type = ""
max-pending-submits = 64
enquire-link-interval = 30

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = $smsbox_port
sendsms-port = $sendsms
log-file = "$k/smsbox.log"
log-level = 2

group = sendsms-user
username = bench
password = bench
max-messages = 10
concatenation = true
EOF
  bearerbox -v 4 "$k/kannel.conf" >"$k/bearerbox.out" 2>&1 &
  local bb=$!
  pids+=("$bb")
  wait_port "$smsbox_port" || { kannel_failed "bearerbox did not start"; return 0; }
  smsbox -v 4 "$k/kannel.conf" >"$k/smsbox.out" 2>&1 &
  local sb=$!
  pids+=("$sb")
  wait_port "$sendsms" || { kannel_failed "smsbox did not start"; stop "$bb" 3; return 0; }
  local online=0
  for _ in $(seq 1 150); do
    if curl -s "http://127.0.0.1:$admin/status.txt?password=bench" | grep -q 'SMPP:.*(online'; then online=1; break; fi
    sleep 0.1
  done
  if [ "$online" = 0 ]; then kannel_failed "Kannel did not bind to the SMSC peer"; stop "$sb" 3; stop "$bb" 3; return 0; fi
  log "Kannel: the load client's own ceiling (bench/kannel.py calibrate)"
  python3 "$root/bench/kannel.py" calibrate --count "$sqlite_parts" --connections 64 >"$work/kannel-client.json"
  log "Kannel: $(wc -l <"$work/kannel-messages.jsonl") messages through sendsms, dlr-mask 3"
  python3 "$root/bench/kannel.py" load --sendsms "http://127.0.0.1:$sendsms/cgi-bin/sendsms" \
    --messages "$work/kannel-messages.jsonl" --peer-log "$peer_log" --expect-parts "$sqlite_parts" \
    --connections 64 --quiet 5 >"$work/kannel.json" 2>"$work/kannel.err" ||
    { kannel_failed "$(tail -n 1 "$work/kannel.err")"; rm -f "$work/kannel.json"; }
  for p in "bearerbox:$bb" "smsbox:$sb"; do
    awk '/^VmHWM:/ {print $2 * 1024}' "/proc/${p#*:}/status" >"$work/kannel-${p%%:*}.hwm" 2>/dev/null || true
  done
  stop "$sb" 3
  stop "$bb" 3
  dpkg-query -W -f '${Version}' kannel >"$work/kannel.version" 2>/dev/null || true
}
if [ "$kannel" = 1 ]; then
  if [ "$sqlite_parts" -gt 0 ]; then kannel_run; else note kannel "skipped: the engine put no parts on the peer"; fi
fi

# The bare SMPP client, to the same peer.
bench smpp smpp --host 127.0.0.1 --port "$peer_port" --count "$SMPP_COUNT" --window 64

stop "$peer_pid"

# 5. One table, and the results kept.
mkdir -p "$out"
stamp=$(date -u +%Y-%m-%dT%H%MZ)
python3 "$root/bench/table.py" --work "$work" --root "$root" --quick "$quick" --seconds $(($(date +%s) - started)) \
  --load-before "$load_before" \
  --md "$out/$stamp.md" --json "$out/$stamp.json" \
  --sizes "import=$IMPORT_BORROWERS policy=$POLICY_BORROWERS ledger=$LEDGER_LEAVES proofs=$LEDGER_PROOFS engine=$ENGINE_BORROWERS webhook_seconds=$WEBHOOK_SECONDS webhook_sends=$WEBHOOK_SENDS smpp=$SMPP_COUNT"
log "written $out/$stamp.md and $out/$stamp.json ($(($(date +%s) - started)) s in all)"
if [ "$failures" -gt 0 ]; then
  log "$failures benchmark(s) failed: see the notes under the table"
  exit 1
fi
