# Sourced by bench/run.sh and bench/curve.sh (after they set ROOT, log and die): starts the
# stack, loads the environment, builds the release binaries, and defines the helpers both
# use to drive Kafka and PostgreSQL and to start every timed step from a quiet server.
command -v /usr/bin/time >/dev/null || apt-get install -y -qq time >/dev/null
scripts/stack.sh up
# shellcheck source=../scripts/env.sh
source scripts/env.sh
load_env
# the producer's summary is read as text: run.sh compares it with ProducerPerformance's line
export LOG_FORMAT=text
log "building release binaries"
cargo build -q --release -p producer -p sink -p bench
BIN=target/release
KJAVA=(java -Xmx512m -cp ".stack/kafka/libs/*" -Dlog4j2.configurationFile="$ROOT/scripts/kafka/tools-log4j2.properties")
BOOT=$KAFKA_BOOTSTRAP_SERVERS
sql() { PGPASSWORD=$POSTGRES_PASSWORD psql -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$POSTGRES_PORT" -U "$POSTGRES_USER" -d "$POSTGRES_DB" "$@"; }
now() { date +%s.%N; }
# CPU seconds of a process, of its children that exited (PostgreSQL's backends) and of
# those still running (its checkpointer, WAL writer, background writer, autovacuum)
cpu_secs() {
  local kids
  kids=$(pgrep -P "$1" | sed 's|.*|/proc/&/stat|' | xargs -r ls 2>/dev/null || true)
  # shellcheck disable=SC2086
  cat "/proc/$1/stat" $kids 2>/dev/null |
    awk -v t="$(getconf CLK_TCK)" 'NR == 1 {s = $14+$15+$16+$17; next} {s += $14+$15} END {printf "%.2f", s/t}'
}
PGPID=$(head -1 .stack/postgres/data/postmaster.pid)
KPID=$(cat .stack/kafka/node1/kafka.pid)
# A quiet server: the last step's dirty pages written, no autovacuum at work, a pause.
quiet() {
  scripts/stack.sh psql -q -c "CHECKPOINT" >/dev/null
  local busy
  while busy=$(sql -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'") && [ "$busy" != 0 ]; do sleep 0.5; done
  [ "$busy" = 0 ] || die "cannot ask PostgreSQL whether autovacuum runs"
  sleep 2
}
# Stops a program started under /usr/bin/time: the signal goes to time's child.
stop_timed() { pkill -TERM -P "$1" || true; wait "$1" || true; }
