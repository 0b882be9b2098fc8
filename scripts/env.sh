# Sourced by scripts/stack.sh and bench/run.sh: load_env reads .env, else .env.example,
# into the environment (variables already set win, as they do for dotenvy), and derives
# KAFKA_PORT and KAFKA_CONTROLLER_PORT. Needs ROOT and die().
load_env() {
  local file="$ROOT/.env"
  [ -f "$file" ] || file="$ROOT/.env.example"
  [ -f "$file" ] || die "neither .env nor .env.example found in $ROOT"
  # Variables already set in the environment win, as they do for dotenvy.
  while IFS= read -r line || [ -n "$line" ]; do
    line="${line%%#*}"
    [[ "$line" =~ ^[[:space:]]*([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || continue
    local key="${BASH_REMATCH[1]}" value="${BASH_REMATCH[2]}"
    value="${value%"${value##*[![:space:]]}"}"
    value="${value#\"}"; value="${value%\"}"
    [ -n "${!key+x}" ] || export "$key=$value"
  done <"$file"
  KAFKA_BOOTSTRAP_SERVERS=${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}
  POSTGRES_HOST=${POSTGRES_HOST:-127.0.0.1}
  POSTGRES_PORT=${POSTGRES_PORT:-5432}
  POSTGRES_DB=${POSTGRES_DB:-kafka_sink}
  POSTGRES_USER=${POSTGRES_USER:-kafka_sink}
  POSTGRES_PASSWORD=${POSTGRES_PASSWORD:-kafka_sink}
  local first="${KAFKA_BOOTSTRAP_SERVERS%%,*}"
  KAFKA_PORT="${first##*:}"
  KAFKA_CONTROLLER_PORT=$((KAFKA_PORT + 100))
}

