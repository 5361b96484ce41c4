# Multi-stage build. The runtime image carries librbd and librados only (no ceph-common, no rbd CLI).
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends librbd-dev librados-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
# Declared in Cargo.toml, so cargo wants the files even when it builds only the binary.
COPY benches ./benches
RUN cargo build --release --locked --bin rbd-provisioner \
 && strip target/release/rbd-provisioner

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends librbd1 librados2 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/rbd-provisioner /usr/local/bin/rbd-provisioner
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/rbd-provisioner"]
