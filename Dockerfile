# syntax=docker/dockerfile:1
# Both binaries in one small image (the producer and the sink share every dependency):
#   docker build -t txn-pipeline .
#   docker run --rm txn-pipeline sink --help
# The compose file's `pipeline` profile builds it and runs each binary as its own service.

# build compiles the workspace's release binaries
FROM rust:1.95-bookworm AS build
WORKDIR /src
# librdkafka is compiled with TLS against the system OpenSSL: its headers and pkg-config
COPY scripts/build-deps.sh scripts/build-deps.sh
RUN scripts/build-deps.sh
COPY . .
# the registry and the target directory are cached across builds (BuildKit)
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p producer -p sink \
    && install -m 0755 target/release/producer target/release/sink /usr/local/bin/

# runtime is Debian slim with OpenSSL's runtime, the CA bundle and a user of its own
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 txn \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin txn
COPY --from=build /usr/local/bin/producer /usr/local/bin/sink /usr/local/bin/
# the users of the batch side's registration files, for the producer
COPY data/users /app/data/users
WORKDIR /app
ENV USERS_CSV_PATH=/app/data/users \
    LOG_FORMAT=json
USER 10001:10001
# the metrics ports the compose file uses: sink 9187, producer 9188 (off unless set)
EXPOSE 9187 9188
ENTRYPOINT []
CMD ["sink"]
