#!/usr/bin/env bash
# The benchmark: producer and sink against the local stack, each against a baseline run
# in the same script on the same machine, figures quoted as ratios. Writes BENCHMARKS.md.
#
#   bench/run.sh                 # 1,000,000 messages (about ten minutes)
#   BENCH_MESSAGES=100000 bench/run.sh   # a quicker look
#
# 1. producer: N messages at --rate 0 (BENCH_TRIALS runs, medians compared), versus Kafka's ProducerPerformance with the same
#    payloads (our JSON lines via --payload-file), acks=all, idempotence, lz4, linger 5 ms;
# 2. sink drain: N messages preloaded in a 6-partition topic; from sink start to the last
#    row committed (its default --writers); versus `psql \copy` of the same rows (CSV)
#    into an empty table of the same definition with 1, 2 and BENCH_STREAMS (4) parallel
#    streams (the file split in parts), the best of which is the ceiling; every timed
#    step starts from a quiet server (CHECKPOINT, no autovacuum worker running, 2 s of
#    rest) and the order of sink and ceiling alternates between trials; and versus a
#    consumer written the way the seed's works (one INSERT and commit per message) on
#    BENCH_PER_ROW (20,000) messages;
# 3. latency at 10 messages/s for 60 s: from the message's timestamp to the row being
#    visible (polled every 2 ms), p50 and p99;
# 4. peak resident memory of producer and sink during 1 and 2;
# 5. peak resident memory of the sink draining BENCH_LARGE (1,000) messages of 900 KB into
#    a slow table (a statement trigger sleeps 0.2 s per write):
#    with librdkafka's default queue here (2 MiB), then behind a 256 MiB fetch queue with
#    the byte budget (--buffer-mb 64, the default) and without it (--buffer-mb 1048576:
#    bounded by --batch-size alone, as before the budget), runs alternated.
# It is a benchmark, not a test: it asserts nothing.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"
N=${BENCH_MESSAGES:-1000000}
PER_ROW=${BENCH_PER_ROW:-20000}
LAT_RATE=10
LAT_SECS=${BENCH_LATENCY_SECS:-60}
RUN=$(date +%s)
OUT=$(mktemp -d)
log() { printf 'bench: %s\n' "$*" >&2; }
die() { printf "bench: error: %s\n" "$*" >&2; exit 1; }

# shellcheck source=common.sh
source bench/common.sh
topic() { "${KJAVA[@]}" org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOT" --create --topic "$1" --partitions "$2" --replication-factor 1 >/dev/null; }
rss_mb() { awk '{printf "%.1f", $1/1024}' "$1"; }

# --- 1. producer ---------------------------------------------------------------------
# BENCH_TRIALS (3) alternating runs of each, so that a broker stall during one run does not
# decide the ratio: the medians are compared, and every run is listed.
TRIALS=${BENCH_TRIALS:-3}
$BIN/producer --dry-run --count 20000 --rate 0 --seed 1 >"$OUT/payloads.jsonl" 2>/dev/null
median() { sort -n | awk '{v[NR]=$1} END{printf "%.3f", (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
OURS_ALL=(); PP_ALL=(); PRSS_MAX=0
for t in $(seq "$TRIALS"); do
  TP_T=bench_p_${RUN}_$t
  topic "$TP_T" 6
  log "1. producer (run $t of $TRIALS): $N messages at --rate 0"
  /usr/bin/time -f %M -o "$OUT/producer.rss" \
    $BIN/producer --topic "$TP_T" --count "$N" --rate 0 2>"$OUT/producer.log"
  S_T=$(grep "records sent" "$OUT/producer.log" | tail -1 | sed 's/.*INFO producer: //')
  [ "$t" = 1 ] && { TP=$TP_T; SUMMARY=$S_T; }
  OURS_ALL+=("$(sed -E 's/.* ([0-9.]+) records\/sec.*/\1/' <<<"$S_T")")
  PRSS_MAX=$(awk -v a="$PRSS_MAX" -v b="$(cat "$OUT/producer.rss")" 'BEGIN{print (b > a) ? b : a}')
  if [ "$t" = 1 ]; then
    OURS_MBS=$(sed -E 's/.*\(([0-9.]+) MB\/sec\).*/\1/' <<<"$S_T")
    SIZE=$(awk -v r="${OURS_ALL[0]}" -v m="$OURS_MBS" 'BEGIN{printf "%d", m*1048576/r}')
  fi
  TPP=bench_pp_${RUN}_$t
  topic "$TPP" 6
  log "1. ProducerPerformance (run $t of $TRIALS): $N records of our payloads (mean $SIZE bytes)"
  "${KJAVA[@]}" org.apache.kafka.tools.ProducerPerformance --topic "$TPP" --num-records "$N" \
    --payload-file "$OUT/payloads.jsonl" --throughput -1 \
    --producer-props bootstrap.servers="$BOOT" acks=all enable.idempotence=true linger.ms=5 compression.type=lz4 \
    >"$OUT/pp.log" 2>&1
  P_T=$(grep "records sent" "$OUT/pp.log" | tail -1)
  [ "$t" = 1 ] && PP_SUMMARY=$P_T
  PP_ALL+=("$(sed -E 's/^[0-9]+ records sent, ([0-9.]+) records\/sec.*/\1/' <<<"$P_T")")
done
echo "$PRSS_MAX" >"$OUT/producer.rss"
OURS_RPS=$(printf '%s\n' "${OURS_ALL[@]}" | median)
PP_RPS=$(printf '%s\n' "${PP_ALL[@]}" | median)
P_RATIO=$(awk -v a="$OURS_RPS" -v b="$PP_RPS" 'BEGIN{printf "%.2f", a/b}')
P_TRIALS="ours ${OURS_ALL[*]}; ProducerPerformance ${PP_ALL[*]} (records/s, in run order)"

# --- 2. sink drain -------------------------------------------------------------------
# BENCH_TRIALS runs of the drain and of each ceiling, alternating which goes first;
# medians compared, the ceiling being the best of the stream counts.
TS=bench_sink_$RUN
STREAMS=(1 2 "${BENCH_STREAMS:-4}")
D_ALL=(); SRSS_MAX=0
declare -A C_BY C_PG_CPU C_PSQL_CPU
psql_copy() { sql -c "\\copy $1 FROM '$2' CSV"; }
export -f sql psql_copy
export POSTGRES_PASSWORD POSTGRES_PORT POSTGRES_USER POSTGRES_DB
ceiling() { # trial: psql \copy of rows.csv with each stream count into an empty table
  local t=$1 k
  for k in "${STREAMS[@]}"; do
    local table=${TS}_copy_${t}_$k
    sql -c "CREATE TABLE $table (LIKE ${TS}_shape INCLUDING ALL)"
    rm -f "$OUT"/part.* "$OUT"/psql.cpu.*
    split -n "l/$k" -d "$OUT/rows.csv" "$OUT/part."
    quiet
    log "2. ceiling (run $t of $TRIALS): psql \\copy in $k stream(s)"
    local t0 t1 part i=0 pids=() pg0
    pg0=$(cpu_secs "$PGPID")
    t0=$(now)
    for part in "$OUT"/part.*; do
      /usr/bin/time -f "%U %S" -o "$OUT/psql.cpu.$i" bash -c 'psql_copy "$0" "$1"' "$table" "$part" & pids+=($!)
      i=$((i + 1))
    done
    for part in "${pids[@]}"; do wait "$part" || die "a psql \\copy stream failed: see above"; done
    t1=$(now)
    C_BY[$k]+="$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}') "
    if [ "$t" = 1 ]; then
      sleep 0.5 # the backends exit, so that the postmaster has their CPU time
      C_PG_CPU[$k]=$(awk -v a="$pg0" -v b="$(cpu_secs "$PGPID")" 'BEGIN{printf "%.1f", b-a}')
      C_PSQL_CPU[$k]=$(cat "$OUT"/psql.cpu.* | awk '{s += $1 + $2} END{printf "%.1f", s}')
    fi
    sql -c "DROP TABLE $table"
  done
}
drain() { # trial
  local t=$1
  TS_T=${TS}_$t
  quiet
  log "2. sink (run $t of $TRIALS): draining the $N messages of $TP"
  # wait_rows starts with the sink and polls the sink's offsets table over one connection
  # (a count(*) of the growing table, or a psql per poll, would steal CPU from the sink)
  PG0=$(cpu_secs "$PGPID"); K0=$(cpu_secs "$KPID")
  /usr/bin/time -f "%M %U %S" -o "$OUT/sink.rss" \
    $BIN/sink --topic "$TP" --table "$TS_T" --group-id "bench_${RUN}_$t" 2>"$OUT/sink.log" &
  SINK=$!
  WAITED=$($BIN/wait_rows --table "$TS_T" --count "$N")
  stop_timed "$SINK"
  sleep 0.5 # the backends exit, so that the postmaster has their CPU time
  D_ALL+=("$(sed -E 's/.*secs=([0-9.]+).*/\1/' <<<"$WAITED")")
  SRSS_MAX=$(awk -v a="$SRSS_MAX" -v b="$(cut -d' ' -f1 "$OUT/sink.rss")" 'BEGIN{print (b > a) ? b : a}')
  if [ "$t" = 1 ]; then
    SINK_CPU=$(awk '{printf "%.1f", $2+$3}' "$OUT/sink.rss")
    PG_CPU=$(awk -v a="$PG0" -v b="$(cpu_secs "$PGPID")" 'BEGIN{printf "%.1f", b-a}')
    K_CPU=$(awk -v a="$K0" -v b="$(cpu_secs "$KPID")" 'BEGIN{printf "%.1f", b-a}')
    sql -c "\\copy (SELECT * FROM $TS_T) TO '$OUT/rows.csv' CSV"
    sql -c "CREATE TABLE ${TS}_shape (LIKE $TS_T INCLUDING ALL)"
  fi
  sql -c "DROP TABLE IF EXISTS $TS_T, ${TS_T}_offsets, ${TS_T}_dead_letters"
}
for t in $(seq "$TRIALS"); do
  # the first trial drains first (its rows are the ceiling's file); then the order alternates
  if [ $((t % 2)) = 1 ]; then drain "$t"; ceiling "$t"; else ceiling "$t"; drain "$t"; fi
done
sql -c "DROP TABLE IF EXISTS ${TS}_shape"
echo "$SRSS_MAX" >"$OUT/sink.rss"
SINK_SECS=$(printf '%s\n' "${D_ALL[@]}" | median | xargs printf '%.2f')
SINK_RPS=$(awk -v n="$N" -v s="$SINK_SECS" 'BEGIN{printf "%.0f", n/s}')
# the ceiling: the stream count whose median is best
COPY_SECS=; COPY_STREAMS=; C_LINES=()
for k in "${STREAMS[@]}"; do
  # shellcheck disable=SC2086
  m=$(printf '%s\n' ${C_BY[$k]} | median | xargs printf '%.2f')
  C_LINES+=("$k stream(s): ${C_BY[$k]% } s (median $m)")
  if [ -z "$COPY_SECS" ] || awk -v a="$m" -v b="$COPY_SECS" 'BEGIN{exit !(a < b)}'; then COPY_SECS=$m; COPY_STREAMS=$k; fi
done
COPY_RPS=$(awk -v n="$N" -v s="$COPY_SECS" 'BEGIN{printf "%.0f", n/s}')
CPU_FLOOR=$(awk -v a="$SINK_CPU" -v b="$PG_CPU" -v c="$K_CPU" -v n="$(nproc)" 'BEGIN{printf "%.2f", (a+b+c)/n}')
FLOOR_RATIO=$(awk -v a="$COPY_SECS" -v b="$CPU_FLOOR" 'BEGIN{printf "%.2f", a/b}')
COPY_ONE=$(printf '%s\n' ${C_BY[1]} | median | xargs printf '%.2f')
C1_RATIO=$(awk -v a="$COPY_ONE" -v b="$SINK_SECS" 'BEGIN{printf "%.2f", a/b}')
WRITERS=$(grep -o '"writers":[0-9]*\|writers=[0-9]*' "$OUT/sink.log" | head -1 | grep -o '[0-9]*$' || echo "?")
D_TRIALS="sink ${D_ALL[*]} s; psql \\copy $(printf '%s; ' "${C_LINES[@]}")in run order"

PROFILE="(perf is not installed: \`apt-get install linux-perf\` adds a profile here)"
if command -v perf >/dev/null; then
  log "2. profile: the same drain again, under perf (not timed)"
  perf record -q -F 499 -a -g -o "$OUT/perf.data" >/dev/null 2>&1 &
  PERF=$!
  $BIN/sink --topic "$TP" --table "${TS}_perf" --group-id "bench_perf_$RUN" 2>/dev/null &
  SINK=$!
  $BIN/wait_rows --table "${TS}_perf" --count "$N" >/dev/null
  kill -INT "$PERF"; wait "$PERF" || true
  kill -TERM "$SINK"; wait "$SINK" || true
  sql -c "DROP TABLE IF EXISTS ${TS}_perf, ${TS}_perf_offsets, ${TS}_perf_dead_letters"
  perf_top() { perf report -i "$OUT/perf.data" --stdio --no-children -g none --percent-limit 1.5 "$@" 2>/dev/null | grep -v '^#' | grep -v '^$' | head -12 || true; }
  PROFILE="Share of all samples (both cores, idle included), by command:
\`\`\`
$(perf_top --sort comm)
\`\`\`
Within PostgreSQL (share of its samples):
\`\`\`
$(perf_top --comm postgres --percentage relative --sort sym)
\`\`\`
Within the sink's main thread (share of its samples; librdkafka's threads are \`rdk:*\` above):
\`\`\`
$(perf_top --comm sink --percentage relative --sort sym)
\`\`\`"
fi

log "2. baseline: one INSERT and commit per message, $PER_ROW messages"
PR=$($BIN/per_row_consumer --topic "$TP" --table "bench_perrow_$RUN" --count "$PER_ROW")
PR_RPS=$(sed -E 's/.*rows_per_sec=([0-9.]+).*/\1/' <<<"$PR")
C_RATIO=$(awk -v a="$SINK_RPS" -v b="$COPY_RPS" 'BEGIN{printf "%.2f", a/b}')
R_RATIO=$(awk -v a="$SINK_RPS" -v b="$PR_RPS" 'BEGIN{printf "%.1f", a/b}')

# --- 3. latency ----------------------------------------------------------------------
TL=bench_l_$RUN
LAT_N=$((LAT_RATE * LAT_SECS))
topic "$TL" 3
log "3. latency: $LAT_RATE messages/s for $LAT_SECS s"
$BIN/sink --topic "$TL" --table "$TL" --group-id "bench_l_$RUN" 2>"$OUT/sink_l.log" &
SINK=$!
until [ "$(sql -c "SELECT to_regclass('$TL') IS NOT NULL")" = t ]; do sleep 0.1; done
$BIN/latency_probe --table "$TL" --count "$LAT_N" >"$OUT/latency.txt" &
PROBE=$!
sleep 3 # the sink joins its group
$BIN/producer --topic "$TL" --rate "$LAT_RATE" --count "$LAT_N" 2>/dev/null
wait "$PROBE"
kill -TERM "$SINK"; wait "$SINK" || true
P50=$(sed -E 's/.*p50_ms=([0-9.]+).*/\1/' "$OUT/latency.txt")
P99=$(sed -E 's/.*p99_ms=([0-9.]+).*/\1/' "$OUT/latency.txt")

# --- 5. memory with large messages ----------------------------------------------------
LN=${BENCH_LARGE:-1000}
TM=bench_m_$RUN
topic "$TM" 1
log "5. memory: publishing $LN messages of 900 KB"
$BIN/large_messages --topic "$TM" --count "$LN" >/dev/null
BIGQ=(-K queued.max.messages.kbytes=262144 -K fetch.max.bytes=52428800 -K max.partition.fetch.bytes=52428800)
# A database slower than the fetch (every write statement takes 0.2 s more): the backlog
# piles up in the sink's buffers unless something bounds them in bytes.
sql -c "CREATE OR REPLACE FUNCTION bench_slow_write() RETURNS trigger LANGUAGE plpgsql AS \$\$ BEGIN PERFORM pg_sleep(0.2); RETURN NULL; END \$\$"
mem_run() { # name, sink flags...: peak RSS in MB and drain seconds of one run
  local name=$1; shift
  local table=${TM}_$name
  sed "s/transactions_sink/$table/g" sql/001_transactions_sink.sql | sql -f -
  sql -c "CREATE TRIGGER slow AFTER INSERT ON $table FOR EACH STATEMENT EXECUTE FUNCTION bench_slow_write()"
  /usr/bin/time -f "%M" -o "$OUT/mem.rss" $BIN/sink --topic "$TM" --table "$table" --group-id "${table}_g" "$@" 2>"$OUT/mem_$name.log" &
  local pid=$!
  local waited
  waited=$($BIN/wait_rows --table "$table" --count "$LN")
  stop_timed "$pid"
  sql -c "DROP TABLE IF EXISTS $table, ${table}_offsets, ${table}_dead_letters"
  printf '%s %s' "$(rss_mb "$OUT/mem.rss")" "$(sed -E 's/.*secs=([0-9.]+).*/\1/' <<<"$waited")"
}
M_DEFAULT=(); M_BUDGET=(); M_NOBUDGET=()
for t in 1 2; do
  log "5. memory (run $t of 2): default queue; 256 MiB queue with and without the byte budget"
  M_DEFAULT+=("$(mem_run "d$t")")
  M_BUDGET+=("$(mem_run "b$t" "${BIGQ[@]}" --buffer-mb 64)")
  M_NOBUDGET+=("$(mem_run "n$t" "${BIGQ[@]}" --buffer-mb 1048576)")
done
peak() { printf '%s\n' "$@" | awk 'BEGIN{m=0} {if ($1 > m) m = $1} END{printf "%.1f", m}'; }
secs() { printf '%s\n' "$@" | awk '{printf "%s%.2f", (NR > 1 ? ", " : ""), $2}'; }
MD_RSS=$(peak "${M_DEFAULT[@]}"); MB_RSS=$(peak "${M_BUDGET[@]}"); MN_RSS=$(peak "${M_NOBUDGET[@]}")
M_RATIO=$(awk -v a="$MB_RSS" -v b="$MN_RSS" 'BEGIN{printf "%.2f", a/b}')

# --- 4. report -----------------------------------------------------------------------
for t in "bench_perrow_$RUN" "$TL"; do sql -c "DROP TABLE IF EXISTS $t, ${t}_offsets, ${t}_dead_letters" || true; done
sql -c "DROP FUNCTION IF EXISTS bench_slow_write()" || true
PRSS=$(rss_mb "$OUT/producer.rss"); SRSS=$(rss_mb "$OUT/sink.rss")
# The cost curve is its own, longer run (bench/curve.sh); its last results are shown here.
CURVE="(not measured yet: run \`bench/curve.sh\`, about 25 minutes)"
if [ -s bench/curve.csv ]; then
  CURVE="Made by \`bench/curve.sh\` (its own run of about 25 minutes; the image by
\`cargo run -p bench --bin plot_curve\` from \`bench/curve.csv\`): each variant's table
filled in steps (\`CURVE_STEP\`, 1M rows by default), each step drained by a fresh sink from a quiet server. Rows/s of
the step that starts with the table holding that many rows; in brackets PostgreSQL's CPU
seconds for the step's million rows:

![drain rate as the table grows](docs/img/cost-curve.svg)

$(awk -F, 'NR > 1 {
    if ($4 + 0 <= 0) next
    r = $3 / $4; k = $2 / 1e6
    cell[$1, k] = sprintf("%.0f (%s)", r, $6); if (k > max) max = k
    if (!($1 in order)) { order[$1] = ++n; name[n] = $1 }
  }
  END {
    cols[1] = 0; cols[2] = int(max / 2); cols[3] = max
    printf "| variant (ids:collation) | empty | %dM rows | %dM rows |\n|---|---|---|---|\n", cols[2], cols[3]
    for (i = 1; i <= n; i++) printf "| %s | %s | %s | %s |\n", name[i], cell[name[i], cols[1]], cell[name[i], cols[2]], cell[name[i], cols[3]]
  }' bench/curve.csv)"
fi
mark() { awk -v v="$1" -v t="$2" -v dir="$3" 'BEGIN{ok = (dir == ">=") ? (v >= t) : (v < t); print ok ? "met" : "**missed**"}'; }
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
PGV=$(sql -c "SHOW server_version")
RUSTV=$(rustc --version | cut -d' ' -f2)
RDK=$(grep -A1 'name = "rdkafka-sys"' Cargo.lock | tail -1 | sed -E 's/.*\+([0-9.]+)".*/\1/')
cat >BENCHMARKS.md <<MD
# Benchmarks

Written by \`bench/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'). Every figure is measured in
the same run on the same machine as its baseline, and quoted as a ratio: the machine is
shared and noisy, so absolute numbers move between runs while ratios hold better.

- machine: $(nproc) cores ($CPU), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo); everything on loopback
- versions: Apache Kafka 4.1.1 (single KRaft node, \`scripts/stack.sh\`), PostgreSQL $PGV, librdkafka $RDK, rustc $RUSTV, release build
- messages: $N ($SIZE bytes of JSON on average; \`tx_id\`s UUIDv7, the producer's default), topic of 6 partitions

| measure | ours | baseline | ratio | target |
|---|---|---|---|---|
| producer, records/s at \`--rate 0\` (median of $TRIALS runs) | $OURS_RPS | ProducerPerformance $PP_RPS | **$P_RATIO×** | ≥ 1.0× ($(mark "$P_RATIO" 1.0 ">=")) |
| sink drain, rows/s (start to last row committed, $WRITERS writers; median of $TRIALS runs) | $SINK_RPS ($SINK_SECS s) | best \`psql \\copy\`: $COPY_STREAMS stream(s), $COPY_RPS ($COPY_SECS s) | **$C_RATIO×** | ≥ 0.9× ($(mark "$C_RATIO" 0.9 ">=")) |
| sink drain versus one \`psql \\copy\` stream | $SINK_RPS | $COPY_ONE s | **$C1_RATIO×** | |
| sink drain versus the seed-style consumer | $SINK_RPS | one INSERT + commit per message: $PR_RPS | **$R_RATIO×** | ≥ 50× ($(mark "$R_RATIO" 50 ">=")) |
| latency at $LAT_RATE msg/s for $LAT_SECS s, message timestamp → row visible | p50 $P50 ms, p99 $P99 ms | | | p99 < 50 ms ($(mark "$P99" 50 "<")) |
| peak resident memory, producer (1) | $PRSS MB | | | < 32 MB ($(mark "$PRSS" 32 "<")) |
| peak resident memory, sink (2) | $SRSS MB | | | < 64 MB ($(mark "$SRSS" 64 "<")) |

Memory with large messages (5): $LN valid messages of 900 KB (an extra field the sink
ignores) on one partition, written to a database slower than the fetch (a statement
trigger adds 0.2 s to every write); peak resident memory of the sink over two runs of
each, drain seconds in run order:

| sink | peak RSS | drain s |
|---|---|---|
| librdkafka's queue as the sink sets it (2 MiB), byte budget 64 MiB (defaults) | $MD_RSS MB | $(secs "${M_DEFAULT[@]}") |
| 256 MiB fetch queue (\`-K queued.max.messages.kbytes=262144\`, 50 MB fetches), byte budget 64 MiB | $MB_RSS MB | $(secs "${M_BUDGET[@]}") |
| 256 MiB fetch queue, no byte budget (\`--buffer-mb 1048576\`: batches bounded by count only, as before) | $MN_RSS MB | $(secs "${M_NOBUDGET[@]}") |

With the budget the sink's own buffers stay within 64 MiB whatever the queue; what remains
is librdkafka's queue, which the operator sizes. Budget versus none: **$M_RATIO×** the memory.

Producer runs: $P_TRIALS.

Drain runs: $D_TRIALS.

Producer summary (run 1): \`$SUMMARY\`

ProducerPerformance (run 1): \`$PP_SUMMARY\`

Where the time of the drain goes (CPU seconds during drain run 1, ${D_ALL[0]} s, $(nproc) cores):
sink $SINK_CPU s, PostgreSQL $PG_CPU s (its backend and background processes), Kafka $K_CPU s.
The same rows through \`psql \\copy\` (trial 1): $(for k in "${STREAMS[@]}"; do printf '%s stream(s): PostgreSQL %s s, psql %s s; ' "$k" "${C_PG_CPU[$k]}" "${C_PSQL_CPU[$k]}"; done)
So on $(nproc) cores no schedule can drain faster than the CPU the drain needs, spread evenly:
$CPU_FLOOR s (sink + PostgreSQL + Kafka CPU / $(nproc)), which is **$FLOOR_RATIO×** the best
\`psql \\copy\`: the most this machine allows the sink's ratio, however its writes are scheduled.

$PROFILE

## Cost curve: the drain rate as the table grows

$CURVE

Notes
- ProducerPerformance runs with the producer's own settings (acks=all, idempotence, lz4,
  linger 5 ms) and our JSON payloads (\`--payload-file\`), so both send the same bytes.
- The ceiling is PostgreSQL's own bulk load into the same indexed table, the best of 1, 2
  and 4 parallel \`psql \\copy\` streams (each timed step from a quiet server: CHECKPOINT,
  no autovacuum worker, 2 s of rest; sink and ceiling alternate which goes first); the sink does more
  per row (Kafka fetch, JSON decoding and validation, offsets and dead letters in the same
  transaction, conflict detection), but its COPY is binary while \`psql \\copy\` parses CSV,
  which costs PostgreSQL more per row: so the ratio can come near or above 1.0×. Most of
  PostgreSQL's time is the primary-key B-tree (\`_bt_compare\`: random UUIDs as VARCHAR).
- Latency includes the producer's linger (5 ms), the broker, the sink's fetch and the
  database commit; the probe polls every 2 ms.
MD
log "wrote BENCHMARKS.md"
cat BENCHMARKS.md
