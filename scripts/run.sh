#!/usr/bin/env bash
# Runs the whole pipeline locally: brings the stack up, starts the sink in the background
# and the producer in the foreground. Ctrl-C stops the producer (which drains its in-flight
# messages) and then the sink (which writes its batch in hand and commits).
# Extra arguments go to the producer (e.g. `scripts/run.sh --rate 5`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/build-deps.sh
scripts/stack.sh up
cargo build -q -p producer -p sink

target/debug/sink &
sink_pid=$!
stop_sink() {
  kill -TERM "$sink_pid" 2>/dev/null || true
  wait "$sink_pid" 2>/dev/null || true
}
trap stop_sink EXIT

cat >&2 <<'MSG'
run: the sink is running; the producer publishes one transaction every 10 s by default.
run: watch the rows arrive in another terminal with
run:   PGPASSWORD=kafka_sink psql -h localhost -U kafka_sink -d kafka_sink -c 'SELECT * FROM transactions_sink ORDER BY ingested_at DESC LIMIT 5'
run: Ctrl-C stops both.
MSG
# The producer gets Ctrl-C from the terminal; run it without exec so the trap stops the sink.
target/debug/producer "$@" || true
