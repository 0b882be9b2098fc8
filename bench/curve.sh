#!/usr/bin/env bash
# The cost curve: how the sink's drain rate changes as its table grows. For each variant
# (the kind of tx_id the producer makes, and the collation of the tx_id column), a table
# is filled in steps of CURVE_STEP (1,000,000) messages up to CURVE_ROWS (10,000,000):
# each step publishes its messages at --rate 0, waits for a quiet server (CHECKPOINT, no
# autovacuum worker, 2 s), then times one sink from its start to the last offset
# committed (it resumes where the last step's sink stopped). One variant at a time: its
# table and topic are dropped before the next starts, so the disk holds one 10M-row table
# (about 3 GB) at a time. Writes bench/curve.csv (one line per step) and draws
# docs/img/cost-curve.svg from it.
#
#   bench/curve.sh                                   # about 25 minutes
#   CURVE_ROWS=3000000 bench/curve.sh                # a quicker look
#   CURVE_VARIANTS="v4:C v7:C" bench/curve.sh        # chosen variants
#
# A variant is IDS:COLLATION: IDS is v4 (random, the seed's) or v7 (time-ordered);
# COLLATION is `default` (the database's: C.UTF-8 under scripts/stack.sh, en_US.utf8 in
# the compose image) or a collation name (C, en-US-x-icu, ...).
# It is a benchmark, not a test: it asserts nothing.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"
ROWS=${CURVE_ROWS:-10000000}
STEP=${CURVE_STEP:-1000000}
read -r -a VARIANTS <<<"${CURVE_VARIANTS:-v4:default v4:C v7:default v7:C v4:en-US-x-icu}"
CSV=${CURVE_CSV:-bench/curve.csv}
SVG=${CURVE_SVG:-docs/img/cost-curve.svg}
RUN=$(date +%s)
OUT=$(mktemp -d)
log() { printf 'curve: %s\n' "$*" >&2; }
die() { printf "curve: error: %s\n" "$*" >&2; exit 1; }

# shellcheck source=common.sh
source bench/common.sh
topics() { "${KJAVA[@]}" org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOT" "$@" >/dev/null; }
name() { # variant -> a table/topic name part
  tr -c 'a-z0-9\n' '_' <<<"${1,,}"
}
SINK=
cleanup() {
  [ -z "$SINK" ] || { pkill -TERM -P "$SINK" 2>/dev/null || true; }
  rm -rf "$OUT"
  for v in "${VARIANTS[@]}"; do
    local n; n=curve_${RUN}_$(name "$v")
    sql -c "DROP TABLE IF EXISTS $n, ${n}_offsets, ${n}_dead_letters" 2>/dev/null || true
    topics --delete --topic "$n" 2>/dev/null || true
  done
}
trap cleanup EXIT

# written whole at the end: a run that stops half way leaves the last complete results
echo "variant,rows_before,rows,secs,sink_cpu_secs,pg_cpu_secs,table_mb,index_mb" >"$OUT/curve.csv"
for v in "${VARIANTS[@]}"; do
  ids=${v%%:*}; coll=${v#*:}
  [[ "$ids" =~ ^v[47]$ ]] || die "variant $v: the ids are v4 or v7"
  n=curve_${RUN}_$(name "$v")
  topics --create --topic "$n" --partitions 6 --replication-factor 1
  # the shipped definition, with the collation asked for on tx_id (none: the database's)
  clause=; [ "$coll" = default ] || clause=" COLLATE \"$coll\""
  grep -q 'tx_id VARCHAR COLLATE "C" PRIMARY KEY' sql/001_transactions_sink.sql ||
    die "sql/001_transactions_sink.sql no longer declares tx_id as this script expects"
  sed -e "s/transactions_sink/$n/g" -e "s/tx_id VARCHAR COLLATE \"C\" PRIMARY KEY/tx_id VARCHAR$clause PRIMARY KEY/" \
    sql/001_transactions_sink.sql | sql -f -
  got=$(sql -c "SELECT coalesce(c.collname, '') FROM pg_attribute a LEFT JOIN pg_collation c ON c.oid = a.attcollation WHERE a.attrelid = '$n'::regclass AND a.attname = 'tx_id'")
  want=default; [ -z "$clause" ] || want=$coll
  [ "$got" = "$want" ] || die "variant $v: tx_id's collation is $got"

  for ((before = 0; before < ROWS; before += STEP)); do
    log "$v: publishing messages $before..$((before + STEP))"
    $BIN/producer --topic "$n" --count "$STEP" --rate 0 --tx-ids "$ids" 2>"$OUT/producer.log" ||
      die "the producer failed: $(tail -1 "$OUT/producer.log")"
    quiet
    log "$v: draining them into a table of $before rows"
    PG0=$(cpu_secs "$PGPID")
    /usr/bin/time -f "%U %S" -o "$OUT/sink.cpu" \
      $BIN/sink --topic "$n" --table "$n" --group-id "$n" 2>"$OUT/sink.log" &
    SINK=$!
    WAITED=$($BIN/wait_rows --table "$n" --count $((before + STEP)))
    pkill -TERM -P "$SINK" || true
    wait "$SINK" || true
    sleep 0.5 # the backends exit, so that the postmaster has their CPU time
    secs=$(sed -E 's/.*secs=([0-9.]+).*/\1/' <<<"$WAITED")
    sink_cpu=$(awk '{printf "%.1f", $1+$2}' "$OUT/sink.cpu")
    pg_cpu=$(awk -v a="$PG0" -v b="$(cpu_secs "$PGPID")" 'BEGIN{printf "%.1f", b-a}')
    sizes=$(sql -c "SELECT round(pg_table_size('$n')/1048576.0), round(pg_indexes_size('$n')/1048576.0)" | tr '|' ',')
    SINK=
    echo "$v,$before,$STEP,$secs,$sink_cpu,$pg_cpu,$sizes" | tee -a "$OUT/curve.csv" >&2
    # the drained messages are not needed: their disk is given back
    printf '{"partitions":[%s],"version":1}' \
      "$(for p in 0 1 2 3 4 5; do printf '%s{"topic":"%s","partition":%d,"offset":-1}' "$([ $p = 0 ] || echo ,)" "$n" $p; done)" >"$OUT/trim.json"
    "${KJAVA[@]}" org.apache.kafka.tools.DeleteRecordsCommand --bootstrap-server "$BOOT" \
      --offset-json-file "$OUT/trim.json" >/dev/null
  done
  sql -c "DROP TABLE $n, ${n}_offsets, ${n}_dead_letters"
  topics --delete --topic "$n"
done
cp "$OUT/curve.csv" "$CSV"
cargo run -q --release -p bench --bin plot_curve -- --csv "$CSV" --out "$SVG"
log "wrote $CSV and $SVG"
