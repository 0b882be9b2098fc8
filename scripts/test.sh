#!/usr/bin/env bash
# Runs every test: brings the local stack up (real Kafka and PostgreSQL, see
# scripts/stack.sh), makes sure Prometheus is installed (scripts/prometheus.sh) and Go is
# on PATH (tests/tests/deploy.rs reads the compose file and the Dockerfile with Docker's
# own loaders, built from tools/deploy-check), then runs the unit tests and the
# end-to-end tests against it (the pipeline-tests feature e2e; a plain `cargo test` runs
# the unit tests only).
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p txn-model`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/build-deps.sh
scripts/stack.sh up
# a real Prometheus scrapes the binaries in tests/tests/prometheus.rs
scripts/prometheus.sh >/dev/null
# Go builds tools/deploy-check (its modules come from the Go module proxy)
[ -x /usr/local/go/bin/go ] && export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "test: error: Go is not installed: the deployment tests build tools/deploy-check with it (https://go.dev/dl, or apt-get install golang-go)" >&2; exit 1; }
# a hung test must not eat the CI budget
rm -f target/test-figures.txt
timeout --foreground 45m cargo test --workspace --features pipeline-tests/e2e "$@"
if [ -s target/test-figures.txt ]; then echo "--- figures of the fault tests ---"; cat target/test-figures.txt; fi
