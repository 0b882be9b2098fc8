#!/usr/bin/env bash
# Makes sure a Prometheus server binary is here (the tests scrape the binaries with a real
# one): Debian's `prometheus` package, installed when missing (as root; the package's own
# service is kept from starting). Prints the binary's path.
#
# Usage: scripts/prometheus.sh
set -euo pipefail
log() { printf 'prometheus: %s\n' "$*" >&2; }
die() { printf 'prometheus: error: %s\n' "$*" >&2; exit 1; }

if ! command -v prometheus >/dev/null; then
  [ "$(id -u)" = 0 ] || die "Prometheus is not installed: run 'sudo apt-get install prometheus' (Debian's package)"
  log "installing Prometheus from the Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  # policy-rc.d keeps the package from starting its own server on :9090 (one already
  # there is kept and put back)
  saved=""
  if [ -e /usr/sbin/policy-rc.d ]; then
    saved=$(mktemp)
    cp -p /usr/sbin/policy-rc.d "$saved"
  fi
  restore() { if [ -n "$saved" ]; then mv "$saved" /usr/sbin/policy-rc.d; else rm -f /usr/sbin/policy-rc.d; fi; }
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null ||
    { restore; die "apt-get install prometheus failed"; }
  restore
fi
command -v prometheus
