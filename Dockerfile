# syntax=docker/dockerfile:1
# The `switchyard` binary in a slim Debian image. Built by deploy/compose.yaml; by hand:
#
#   docker build -t switchyard .
#
# Not built in CI (no Docker engine runs on our CI machines): see deploy/README.md.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# The cache mounts keep the registry and the target dir between builds (BuildKit); the binary is
# copied out of the target dir because a cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin switchyard \
    && cp target/release/switchyard /usr/local/bin/switchyard

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/switchyard --create-home switchyard
COPY --from=builder /usr/local/bin/switchyard /usr/local/bin/switchyard
USER switchyard
WORKDIR /var/lib/switchyard
# The data dir holds the generated admin token and key secret (and the SQLite log when no
# SWITCHYARD_DATABASE_URL is set): mount a volume there.
ENV SWITCHYARD_LISTEN=0.0.0.0:8080 \
    SWITCHYARD_DATA_DIR=/var/lib/switchyard
EXPOSE 8080
ENTRYPOINT ["switchyard"]
CMD ["serve"]
