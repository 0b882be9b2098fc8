#!/usr/bin/env bash
# Compares sink settings (or builds) on the same drain: DRAIN_MESSAGES (1,000,000)
# messages published once to a 6-partition topic, then drained by each variant in turn,
# DRAIN_ROUNDS (2) rounds, every run from a quiet server into its own table, the order of
# the variants the same in each round. Prints, per run: seconds from the sink's start to the
# last offset committed, its peak RSS and CPU; with DRAIN_SAMPLE=1 also what the sink's
# PostgreSQL sessions were doing (pg_stat_activity every 10 ms for 4 s from 0.3 s in).
#
#   bench/drain_ab.sh "5000=--batch-size 5000" "20000=--batch-size 20000"
#   bench/drain_ab.sh "queue2=" "queue64=-K queued.max.messages.kbytes=65536 -K fetch.max.bytes=52428800"
#   bench/drain_ab.sh "old=bin:/path/to/old/sink" "new="        # two builds
#
# A variant is LABEL=[bin:PATH ]FLAGS (LABEL: lower-case letters, digits, _). docs/SCALING.md
# quotes its figures. A benchmark, not a test: it asserts nothing.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"
N=${DRAIN_MESSAGES:-1000000}
ROUNDS=${DRAIN_ROUNDS:-2}
RUN=$(date +%s)
OUT=$(mktemp -d)
log() { printf 'drain_ab: %s\n' "$*" >&2; }
die() { printf "drain_ab: error: %s\n" "$*" >&2; exit 1; }
[ $# -ge 1 ] || die "give at least one variant, LABEL=[bin:PATH ]FLAGS (see the header)"
for v in "$@"; do [[ "${v%%=*}" =~ ^[a-z0-9_]+$ ]] || die "bad variant label in $v"; done

# shellcheck source=common.sh
source bench/common.sh
T=bench_ab_$RUN
SINK=
cleanup() {
  [ -z "$SINK" ] || { pkill -TERM -P "$SINK" 2>/dev/null || true; }
  "${KJAVA[@]}" org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOT" --delete --topic "$T" >/dev/null 2>&1 || true
  rm -rf "$OUT"
}
trap cleanup EXIT
"${KJAVA[@]}" org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOT" --create --topic "$T" --partitions 6 --replication-factor 1 >/dev/null
log "publishing $N messages"
$BIN/producer --topic "$T" --count "$N" --rate 0 2>"$OUT/producer.log" || die "the producer failed: $(tail -1 "$OUT/producer.log")"

sample() { # the sink's sessions' state:wait_event, every 10 ms for 4 s
  python3 - "$POSTGRES_USER" <<'PY'
import collections, os, subprocess, sys, time
counts, n = collections.Counter(), 0
q = ("SELECT state || ':' || coalesce(wait_event, 'running') FROM pg_stat_activity "
     "WHERE backend_type = 'client backend' AND application_name = 'txn-sink';\nSELECT 'END';\n")
env = dict(os.environ, PGPASSWORD=os.environ["POSTGRES_PASSWORD"])
p = subprocess.Popen(["psql", "-X", "-q", "-At", "-h", "127.0.0.1", "-p", os.environ["POSTGRES_PORT"],
                      "-U", sys.argv[1], "-d", os.environ["POSTGRES_DB"]],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
end = time.time() + 4
while time.time() < end:
    p.stdin.write(q); p.stdin.flush()
    while (line := p.stdout.readline().strip()) != "END":
        counts[line] += 1
    n += 1
    time.sleep(0.01)
total = sum(counts.values()) or 1
print(f"  {n} samples: " + ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in counts.most_common(6)))
PY
}
export POSTGRES_PASSWORD POSTGRES_PORT POSTGRES_DB

for round in $(seq "$ROUNDS"); do
  for v in "$@"; do
    label=${v%%=*}; spec=${v#*=}; bin=$BIN/sink
    if [[ "$spec" == bin:* ]]; then bin=${spec#bin:}; bin=${bin%% *}; spec=${spec#bin:"$bin"}; fi
    table=${T}_${label}_$round
    quiet
    # shellcheck disable=SC2086
    /usr/bin/time -f "%M %U %S" -o "$OUT/sink.rss" "$bin" --topic "$T" --table "$table" --group-id "$table" $spec 2>"$OUT/sink.log" &
    SINK=$!
    if [ "${DRAIN_SAMPLE:-0}" = 1 ]; then (sleep 0.3; sample >"$OUT/sample.txt") & SAMPLER=$!; fi
    waited=$($BIN/wait_rows --table "$table" --count "$N") || die "the drain did not finish: $(tail -1 "$OUT/sink.log")"
    stop_timed "$SINK"; SINK=
    read -r rss user sys <"$OUT/sink.rss"
    echo "$label round=$round secs=$(sed -E 's/.*secs=([0-9.]+).*/\1/' <<<"$waited") rss_mb=$((rss / 1024)) cpu_secs=$(awk -v a="$user" -v b="$sys" 'BEGIN{printf "%.1f", a+b}')"
    if [ "${DRAIN_SAMPLE:-0}" = 1 ]; then wait "$SAMPLER" || true; cat "$OUT/sample.txt"; fi
    sql -c "DROP TABLE $table, ${table}_offsets, ${table}_dead_letters"
  done
done
