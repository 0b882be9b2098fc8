#!/usr/bin/env bash
# Starts, stops and reports the local stack without Docker:
#   - a real Apache Kafka 4.x broker (KRaft, combined broker + controller), or a cluster
#     of three, from the official jars on Maven Central (Java 17+ and Maven needed);
#   - a PostgreSQL server from the machine's Debian packages (installed with apt
#     when missing), with the database and user of the pipeline.
#
# Usage: scripts/stack.sh [--brokers N] [--state DIR] [--tls] up|down|status|clean [kafka|postgres]
#        scripts/stack.sh [--state DIR] psql [PSQL ARGS]   (superuser psql into POSTGRES_DB)
#
#   --brokers 3     a three-node Kafka cluster (replication factor 3, min.insync.replicas=2)
#                   on ports KAFKA_PORT..KAFKA_PORT+2 (also: KAFKA_BROKERS=3)
#   --state DIR     keep this stack's data, logs and pids in DIR (default .stack/), so tests
#                   can run private stacks on other ports (also: STACK_STATE_DIR)
#   --tls           as a managed service is: a throw-away CA and server certificate in
#                   DIR/tls (ca.crt is what clients trust), PostgreSQL accepting only TLS
#                   connections over TCP (hostssl; plain ones are rejected), and each Kafka
#                   node with an extra SASL_SSL listener on its port + 200, advertised as
#                   localhost, with SCRAM-SHA-256 and -512 users KAFKA_SASL_USERNAME
#                   (default kafka_sink) / KAFKA_SASL_PASSWORD (default kafka_sink) created
#                   when the storage is formatted (also: STACK_TLS=1). PLAINTEXT stays.
#                   STACK_TLS_SAN sets the certificate's names (default
#                   DNS:localhost,IP:127.0.0.1; the tests use DNS:localhost alone, so that
#                   127.0.0.1 is a wrong host name).
#   kafka|postgres  act on one server only: `down postgres` then `up postgres` restarts
#                   PostgreSQL (fast shutdown)
#
# Ports and credentials come from .env, else .env.example (the same variables the producer
# and sink read). KAFKA_PORT is the port of the first KAFKA_BOOTSTRAP_SERVERS entry; node
# i listens on KAFKA_PORT+i-1 and its controller on KAFKA_PORT+100+i-1. The Kafka jars live
# in .stack/kafka/libs (shared by every stack); the rest under the state folder
# (git-ignored). `up` is idempotent (it starts only what is not running) and returns only
# once everything accepts connections; `down` stops and keeps the data; `clean` also
# removes the state folder.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIBS="$ROOT/.stack/kafka/libs"
BROKERS=${KAFKA_BROKERS:-1}
STATE=${STACK_STATE_DIR:-$ROOT/.stack}
TLS=${STACK_TLS:-0}
while [ $# -gt 0 ]; do
  case "$1" in
    --brokers) BROKERS=$2; shift 2 ;;
    --state) STATE=$2; shift 2 ;;
    --tls) TLS=1; shift ;;
    *) break ;;
  esac
done
case "$BROKERS" in 1|3) ;; *) echo "stack: error: --brokers must be 1 or 3" >&2; exit 2 ;; esac
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
KAFKA_DIR="$STATE/kafka"
PG_DIR="$STATE/postgres"
TLS_DIR="$STATE/tls"

log() { printf 'stack: %s\n' "$*" >&2; }
die() { printf 'stack: error: %s\n' "$*" >&2; exit 1; }

# --- configuration -----------------------------------------------------------
# shellcheck source=env.sh
source "$ROOT/scripts/env.sh"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A killed process can linger as a zombie where nothing reaps orphans: that is not alive.
pid_alive() {
  [ -f "$1" ] || return 1
  local state
  state=$(ps -o stat= -p "$(head -n1 "$1")" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "${state#Z}" = "$state" ]
}

# Waits until $2 (a command) succeeds, at most $1 seconds.
wait_for() {
  local limit=$1; shift
  local deadline=$((SECONDS + limit))
  until "$@"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.5
  done
}

stop_pid() { # pidfile name timeout
  local pidfile=$1 name=$2 limit=${3:-30}
  pid_alive "$pidfile" || { rm -f "$pidfile"; return 0; }
  local pid; pid=$(head -n1 "$pidfile")
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_for "$limit" bash -c "! kill -0 $pid 2>/dev/null"; then
    log "$name did not stop within $limit s: killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

# --- Kafka ---------------------------------------------------------------------
kafka_jars() {
  local stamp="$LIBS/.pom.sha256" want
  want=$(sha256sum "$ROOT/scripts/kafka/pom.xml" | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch the Kafka jars: apt-get install maven"
  command -v java >/dev/null || die "Java 17+ is needed to run Kafka: apt-get install openjdk-17-jre-headless"
  log "fetching the Kafka jars from Maven Central (once)"
  rm -rf "$LIBS"
  mkdir -p "$ROOT/.stack/kafka"
  mvn -B -q -f "$ROOT/scripts/kafka/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$LIBS" >"$ROOT/.stack/kafka/mvn.log" 2>&1 ||
    die "Maven could not fetch the Kafka jars; see .stack/kafka/mvn.log"
  echo "$want" >"$stamp"
}

# A stack is made with or without --tls and stays so (its formatted Kafka storage holds the
# SCRAM users, its PostgreSQL the host rules): starting it the other way is refused, where it
# would silently run without the security asked for.
stack_mode() {
  local stamp="$STATE/mode" want=plain made
  [ "$TLS" = 1 ] && want=tls
  if [ -f "$stamp" ]; then
    made=$(cat "$stamp")
  elif [ -e "$KAFKA_DIR/cluster.id" ] || [ -e "$PG_DIR/data/PG_VERSION" ]; then
    made=plain
  else
    made=$want
  fi
  if [ "$made" != "$want" ]; then
    [ "$made" = tls ] && die "the stack in $STATE was made with --tls: start it with --tls, or remove it first (scripts/stack.sh --state $STATE clean)"
    die "the stack in $STATE was made without --tls: start it without, or remove it first (scripts/stack.sh --state $STATE clean) or use another --state"
  fi
  echo "$made" >"$stamp"
}

# --- TLS (--tls) -------------------------------------------------------------------
# A throw-away CA and a server certificate for localhost and 127.0.0.1, made once per
# state folder. Clients trust $TLS_DIR/ca.crt.
tls_certs() {
  [ -s "$TLS_DIR/server.crt" ] && [ -s "$TLS_DIR/kafka.pem" ] && return 0
  command -v openssl >/dev/null || die "--tls needs openssl: apt-get install openssl"
  mkdir -p "$TLS_DIR"
  chmod 755 "$TLS_DIR"
  log "making a throw-away CA and a server certificate in $TLS_DIR"
  printf '%s\n' '[req]' 'distinguished_name = dn' 'prompt = no' 'x509_extensions = v3_ca' \
    '[dn]' 'CN = kafka-sink stack CA' '[v3_ca]' 'basicConstraints = critical,CA:TRUE' \
    'keyUsage = critical,keyCertSign,cRLSign' 'subjectKeyIdentifier = hash' >"$TLS_DIR/ca.cnf"
  printf '%s\n' 'basicConstraints = CA:FALSE' 'keyUsage = critical,digitalSignature,keyEncipherment' \
    'extendedKeyUsage = serverAuth' "subjectAltName = ${STACK_TLS_SAN:-DNS:localhost,IP:127.0.0.1}" >"$TLS_DIR/server.ext"
  (
    cd "$TLS_DIR" || exit 1
    umask 077
    openssl req -x509 -config ca.cnf -newkey rsa:2048 -nodes -days 30 \
      -keyout ca.key -out ca.crt 2>/dev/null &&
      openssl req -new -newkey rsa:2048 -nodes -subj "/CN=localhost" \
        -keyout server.key -out server.csr 2>/dev/null &&
      openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
        -extfile server.ext -out server.crt 2>/dev/null &&
      # Kafka's PEM key store: the key (PKCS#8) and the certificate in one file
      openssl pkcs8 -topk8 -nocrypt -in server.key -out server.pk8 &&
      cat server.pk8 server.crt >kafka.pem &&
      chmod 644 ca.crt server.crt
  ) || die "openssl could not make the certificates in $TLS_DIR"
}
tls_port() { echo $(($(broker_port "$1") + 200)); }

node_dir() { echo "$KAFKA_DIR/node$1"; }
broker_port() { echo $((KAFKA_PORT + $1 - 1)); }
controller_port() { echo $((KAFKA_CONTROLLER_PORT + $1 - 1)); }

bootstrap() {
  local i out=""
  for i in $(seq 1 "$BROKERS"); do out="${out:+$out,}127.0.0.1:$(broker_port "$i")"; done
  echo "$out"
}

kafka_config() { # node
  local i=$1 dir voters="" rf=1 isr=1 n
  dir=$(node_dir "$i")
  mkdir -p "$dir/data" "$dir/logs"
  for n in $(seq 1 "$BROKERS"); do
    voters="${voters:+$voters,}$n@127.0.0.1:$(controller_port "$n")"
  done
  if [ "$BROKERS" -ge 3 ]; then rf=3; isr=2; fi
  cat >"$dir/server.properties" <<EOF
# Generated by scripts/stack.sh: node $i of $BROKERS, combined broker + controller (KRaft).
process.roles=broker,controller
node.id=$i
controller.quorum.voters=$voters
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$dir/data
num.partitions=3
auto.create.topics.enable=true
default.replication.factor=$rf
min.insync.replicas=$isr
# internal topics: as many replicas as there are nodes
offsets.topic.replication.factor=$rf
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
group.initial.rebalance.delay.ms=0
log.cleaner.dedupe.buffer.size=16777216
EOF
  if [ "$TLS" = 1 ]; then
    cat >>"$dir/server.properties" <<EOF
# --tls: an extra SASL_SSL listener with SCRAM users (made at format time)
listeners=PLAINTEXT://127.0.0.1:$(broker_port "$i"),CONTROLLER://127.0.0.1:$(controller_port "$i"),SASL_SSL://127.0.0.1:$(tls_port "$i")
advertised.listeners=PLAINTEXT://127.0.0.1:$(broker_port "$i"),SASL_SSL://localhost:$(tls_port "$i")
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.location=$TLS_DIR/kafka.pem
EOF
  else
    cat >>"$dir/server.properties" <<EOF
listeners=PLAINTEXT://127.0.0.1:$(broker_port "$i"),CONTROLLER://127.0.0.1:$(controller_port "$i")
advertised.listeners=PLAINTEXT://127.0.0.1:$(broker_port "$i")
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
EOF
  fi
  cat >"$dir/log4j2.properties" <<EOF
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = $dir/logs/server.log
appender.file.filePattern = $dir/logs/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 2
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
EOF
}

# Fills KAFKA_JAVA: Java with the jars and node $1's logging.
kafka_java_cmd() {
  local dir heap=${KAFKA_HEAP:-512m}
  dir=$(node_dir "$1")
  if [ "$BROKERS" -ge 3 ]; then heap=${KAFKA_HEAP:-384m}; fi
  KAFKA_JAVA=(java "-Xms$heap" "-Xmx$heap" -XX:+UseG1GC -Djava.awt.headless=true
    "-Dlog4j2.configurationFile=$dir/log4j2.properties"
    "-Dkafka.logs.dir=$dir/logs"
    -cp "$LIBS/*")
}
kafka_java() { local node=$1; shift; kafka_java_cmd "$node"; "${KAFKA_JAVA[@]}" "$@"; }

kafka_ready() {
  local dir; dir=$(node_dir "$1")
  pid_alive "$dir/kafka.pid" || {
    tail -n 20 "$dir/logs/stdout.log" >&2 2>/dev/null || true
    die "Kafka node $1 exited during start-up; logs are in $dir/logs"
  }
  port_open "$(broker_port "$1")"
}

kafka_up() {
  local i dir id started=()
  for i in $(seq 1 "$BROKERS"); do
    dir=$(node_dir "$i")
    if pid_alive "$dir/kafka.pid"; then continue; fi
    if port_open "$(broker_port "$i")"; then
      log "something already listens on 127.0.0.1:$(broker_port "$i"): using it as Kafka node $i"
      continue
    fi
    started+=("$i")
  done
  if [ ${#started[@]} -eq 0 ]; then
    log "Kafka already running: $(bootstrap)"
    return 0
  fi
  mkdir -p "$KAFKA_DIR"
  kafka_jars
  local scram=()
  if [ "$TLS" = 1 ]; then
    tls_certs
    local user=${KAFKA_SASL_USERNAME:-kafka_sink} pass=${KAFKA_SASL_PASSWORD:-kafka_sink}
    # (the format tool takes credentials only as arguments: a process of a few seconds)
    scram=(--add-scram "SCRAM-SHA-256=[name=$user,password=$pass]"
      --add-scram "SCRAM-SHA-512=[name=$user,password=$pass]")
  fi
  # every node of a cluster is formatted once, with the same cluster id
  if [ ! -s "$KAFKA_DIR/cluster.id" ]; then
    kafka_config 1
    kafka_java 1 kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1 >"$KAFKA_DIR/cluster.id"
  fi
  id=$(cat "$KAFKA_DIR/cluster.id")
  for i in "${started[@]}"; do
    dir=$(node_dir "$i")
    kafka_config "$i"
    if [ ! -f "$dir/data/meta.properties" ]; then
      kafka_java "$i" kafka.tools.StorageTool format -t "$id" -c "$dir/server.properties" \
        ${scram[@]+"${scram[@]}"} >"$dir/logs/format.log" 2>&1 || die "formatting Kafka storage failed; see $dir/logs/format.log"
    fi
    if [ "$TLS" = 1 ]; then
      log "starting Kafka node $i on 127.0.0.1:$(broker_port "$i") and SASL_SSL localhost:$(tls_port "$i")"
    else
      log "starting Kafka node $i on 127.0.0.1:$(broker_port "$i")"
    fi
    kafka_java_cmd "$i"
    setsid "${KAFKA_JAVA[@]}" kafka.Kafka "$dir/server.properties" \
      >"$dir/logs/stdout.log" 2>&1 </dev/null &
    echo $! >"$dir/kafka.pid"
  done
  # A broker port opens only once the broker is registered and unfenced.
  for i in "${started[@]}"; do
    if ! wait_for 120 kafka_ready "$i"; then
      tail -n 20 "$(node_dir "$i")/logs/server.log" >&2 2>/dev/null || true
      die "Kafka node $i did not start within 120 s; logs are in $(node_dir "$i")/logs"
    fi
  done
  log "Kafka is up: $(bootstrap)"
}

# Stops every node at once (a node that lost its quorum may not stop gracefully: stop_pid
# then kills it).
kafka_down() {
  local dir
  for dir in "$KAFKA_DIR"/node*; do
    [ -d "$dir" ] || continue
    stop_pid "$dir/kafka.pid" "Kafka node ${dir##*node}" 30 &
  done
  wait
}

# --- PostgreSQL ----------------------------------------------------------------
pg_bindir() {
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$dir/postgres" ] && { echo "$dir"; return 0; }
  done
  return 1
}

pg_install() {
  pg_bindir >/dev/null && return 0
  [ "$(id -u)" = 0 ] || die "PostgreSQL is not installed: run 'sudo apt-get install postgresql'"
  log "installing PostgreSQL from the Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  # policy-rc.d keeps the package from starting its own cluster on our port
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq postgresql >/dev/null || { rm -f /usr/sbin/policy-rc.d; die "apt-get install postgresql failed"; }
  rm -f /usr/sbin/policy-rc.d
  pg_bindir >/dev/null || die "PostgreSQL was installed but no server binary was found under /usr/lib/postgresql"
}

# PostgreSQL refuses to run as root: as root we run it as the 'postgres' user.
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

pg_psql() { # superuser psql over the private socket
  as_pg "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_DIR/run" -p "$POSTGRES_PORT" -U postgres "$@"
}

# Who may connect: over TCP with a SCRAM password (with --tls only over TLS: plain
# connections are rejected, as a managed service does); over the socket, whose folder
# only the server's user can enter, only that user (peer), as the superuser postgres.
pg_hba() {
  local host=host me
  [ "$TLS" = 1 ] && host=hostssl
  me=$(as_pg id -un)
  {
    echo "# Generated by scripts/stack.sh: the user running the server is the superuser"
    echo "stack $me postgres"
  } | as_pg tee "$PG_DIR/data/pg_ident.conf" >/dev/null
  {
    echo "# Generated by scripts/stack.sh"
    echo "local all all peer map=stack"
    echo "$host all all 127.0.0.1/32 scram-sha-256"
    echo "$host all all ::1/128 scram-sha-256"
    if [ "$TLS" = 1 ]; then
      echo "hostnossl all all 0.0.0.0/0 reject"
      echo "hostnossl all all ::/0 reject"
    fi
  } | as_pg tee "$PG_DIR/data/pg_hba.conf" >/dev/null
}

pg_up() {
  pg_install
  BIN=$(pg_bindir)
  if pid_alive "$PG_DIR/data/postmaster.pid" 2>/dev/null && [ -S "$PG_DIR/run/.s.PGSQL.$POSTGRES_PORT" ]; then
    log "PostgreSQL already running on 127.0.0.1:$POSTGRES_PORT"
  elif port_open "$POSTGRES_PORT"; then
    log "something already listens on 127.0.0.1:$POSTGRES_PORT: using it as PostgreSQL (database and user must exist)"
    return 0
  else
    mkdir -p "$PG_DIR/run"
    if [ "$(id -u)" = 0 ]; then
      id postgres >/dev/null 2>&1 || die "the 'postgres' system user is missing: reinstall the postgresql package"
      chown -R postgres: "$PG_DIR"
      as_pg test -w "$PG_DIR" || die "the postgres user cannot write $PG_DIR: move the project to a path it can reach"
    fi
    # the socket's folder: only the server's user may enter (other local users use TCP
    # with a password)
    chmod 700 "$PG_DIR/run"
    if [ ! -f "$PG_DIR/data/PG_VERSION" ]; then
      log "initialising a PostgreSQL cluster in $PG_DIR/data"
      as_pg "$BIN/initdb" -D "$PG_DIR/data" -U postgres -E UTF8 --locale=C.UTF-8 \
        --auth-local=peer --auth-host=scram-sha-256 >"$PG_DIR/initdb.log" 2>&1 ||
        die "initdb failed; see $PG_DIR/initdb.log"
    fi
    local tls_opts=""
    if [ "$TLS" = 1 ]; then
      tls_certs
      # the server's copy of its key: owned by the server's user, private
      cp "$TLS_DIR/server.crt" "$TLS_DIR/server.key" "$PG_DIR/"
      [ "$(id -u)" = 0 ] && chown postgres: "$PG_DIR/server.crt" "$PG_DIR/server.key"
      chmod 600 "$PG_DIR/server.key"
      tls_opts="-c ssl=on -c ssl_cert_file=$PG_DIR/server.crt -c ssl_key_file=$PG_DIR/server.key"
      log "starting PostgreSQL on 127.0.0.1:$POSTGRES_PORT (TLS only)"
    else
      log "starting PostgreSQL on 127.0.0.1:$POSTGRES_PORT"
    fi
    pg_hba
    as_pg "$BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 start \
      -o "-c listen_addresses=127.0.0.1 -p $POSTGRES_PORT -k $PG_DIR/run -c unix_socket_permissions=0700 -c max_connections=200 -c fsync=on $tls_opts" \
      >/dev/null || { tail -n 20 "$PG_DIR/server.log" >&2; die "PostgreSQL did not start; see $PG_DIR/server.log"; }
  fi
  # Role and database of the pipeline (idempotent). The password goes in on stdin (printf
  # is a shell builtin), never in a command line other users could read.
  local quoted=${POSTGRES_PASSWORD//\\/\\\\}
  quoted=${quoted//\'/\'\'}
  {
    printf '%s\n' "\\set pass '$quoted'"
    cat <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'user') \gexec
ALTER ROLE :"user" WITH LOGIN CREATEDB PASSWORD :'pass';
SQL
  } | pg_psql -d postgres -v user="$POSTGRES_USER"
  pg_psql -d postgres -v user="$POSTGRES_USER" -v db="$POSTGRES_DB" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SQL
  log "PostgreSQL is up: database $POSTGRES_DB, user $POSTGRES_USER"
}

pg_down() {
  local bin
  bin=$(pg_bindir) || return 0
  [ -f "$PG_DIR/data/postmaster.pid" ] || return 0
  log "stopping PostgreSQL"
  as_pg "$bin/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 60 stop >/dev/null 2>&1 || true
}

status() {
  local rc=0 i
  for i in $(seq 1 "$BROKERS"); do
    if port_open "$(broker_port "$i")"; then
      log "Kafka $i:    up   127.0.0.1:$(broker_port "$i")"
    else
      log "Kafka $i:    down (127.0.0.1:$(broker_port "$i"))"; rc=1
    fi
  done
  if port_open "$POSTGRES_PORT"; then
    log "PostgreSQL: up   127.0.0.1:$POSTGRES_PORT"
  else
    log "PostgreSQL: down (127.0.0.1:$POSTGRES_PORT)"; rc=1
  fi
  return $rc
}

load_env
if [ "${1:-}" = psql ]; then # superuser psql into the pipeline's database (tests, admin)
  shift
  BIN=$(pg_bindir) || die "PostgreSQL is not installed: run scripts/stack.sh up"
  [ -S "$PG_DIR/run/.s.PGSQL.$POSTGRES_PORT" ] || die "no PostgreSQL of this stack runs (no socket in $PG_DIR/run): run scripts/stack.sh up here; if port $POSTGRES_PORT is held by another checkout's stack, stop that one (its scripts/stack.sh down) or use its scripts/stack.sh psql"
  pg_psql -d "$POSTGRES_DB" "$@"
  exit
fi
what=${2:-all}
case "$what" in all|kafka|postgres) ;; *) die "unknown server $what: kafka or postgres" ;; esac
want() { [ "$what" = all ] || [ "$what" = "$1" ]; }
case "${1:-}" in
  up) stack_mode; if want postgres; then pg_up; fi; if want kafka; then kafka_up; fi ;;
  down) if want kafka; then kafka_down; fi; if want postgres; then pg_down; fi ;;
  status) status ;;
  clean) kafka_down; pg_down; rm -rf "$STATE/kafka" "$STATE/postgres" "$STATE/tls" "$STATE/mode"; [ "$STATE" = "$ROOT/.stack" ] || rm -rf "$STATE"; log "removed the state in $STATE" ;;
  *) echo "usage: $0 [--brokers N] [--state DIR] up|down|status|clean [kafka|postgres] | psql [ARGS]" >&2; exit 2 ;;
esac
