#!/usr/bin/env bash
# The README's "What the data looks like" figures, from a real run of the producer: users
# files for January to August 2025 written by `producer users generate`, then a seeded
# backfill of those eight months on the simulated clock (--dry-run: the same messages the
# producer publishes, as JSON lines), then bench's plot_data draws them into docs/img/
# (data-amounts.svg, data-hours.svg, data-currencies.svg, data-months.svg) and prints
# the figures behind them. Seeded: the same build draws the same images.
#
#   scripts/data-figures.sh                       # 200,000 transactions, ~20 s after the build
#   DATA_COUNT=50000 scripts/data-figures.sh      # fewer
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
COUNT="${DATA_COUNT:-200000}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cargo build -q --release -p producer -p bench --bin producer --bin plot_data
bin="target/release"
"$bin/producer" users generate --from 2025-01 --to 2025-08 --per-month 250 --seed 1 \
    --out "$work/users" --log-format json 2>"$work/users.log" ||
    { cat "$work/users.log" >&2; exit 1; }
"$bin/producer" --users "$work/users" --from 2025-01-01 --to 2025-08-31 \
    --count "$COUNT" --seed 1 --dry-run --log-format json \
    >"$work/transactions.jsonl" 2>"$work/producer.log" ||
    { cat "$work/producer.log" >&2; exit 1; }
echo "data-figures: $(wc -l <"$work/transactions.jsonl") transactions from $(cat "$work"/users/*.csv | grep -vc '^user_id') users"
"$bin/plot_data" --transactions "$work/transactions.jsonl" --users "$work/users" --out docs/img
