#!/usr/bin/env bash
# Checks (and, as root, installs) what building the workspace needs beyond Rust: librdkafka
# is compiled with TLS against the system OpenSSL, which needs its headers (libssl-dev) and
# pkg-config. Everything else (zstd, librdkafka itself) is built from vendored sources.
set -euo pipefail
have() { [ -f /usr/include/openssl/ssl.h ] && command -v pkg-config >/dev/null; }
have && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "build-deps: error: OpenSSL headers or pkg-config are missing: run 'sudo apt-get install libssl-dev pkg-config'" >&2
  exit 1
fi
echo "build-deps: installing libssl-dev and pkg-config from the Debian packages" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq libssl-dev pkg-config >/dev/null
have || { echo "build-deps: error: libssl-dev was installed but /usr/include/openssl/ssl.h is still missing" >&2; exit 1; }
