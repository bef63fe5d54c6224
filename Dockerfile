# syntax=docker/dockerfile:1
# batch-autoscaler's image: a statically linked (musl) binary on distroless/static,
# running as a non-root user, compatible with a read-only root filesystem.
#
#   docker build --build-arg GIT_COMMIT=$(git rev-parse HEAD) -t batch-autoscaler .
#   docker run --rm batch-autoscaler --version
#
# CI has no Docker engine: scripts/check-shipping.sh static runs the very same cargo
# command (it checks this file for it) and checks the result is statically linked.

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
ARG GIT_COMMIT=unknown
# musl-tools: a musl C compiler for ring's C and assembly.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
# `batch-autoscaler --version` prints this commit (read with option_env! at compile time).
ENV BATCH_AUTOSCALER_GIT_COMMIT=${GIT_COMMIT}
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target x86_64-unknown-linux-musl -p batch-autoscaler --features cloud \
 && cp target/x86_64-unknown-linux-musl/release/batch-autoscaler /batch-autoscaler
# Refuse a dynamically linked binary (no program interpreter, no NEEDED libraries).
RUN if readelf -lW /batch-autoscaler | grep -q INTERP || readelf -dW /batch-autoscaler | grep -q NEEDED; then \
      echo "batch-autoscaler is not statically linked" >&2; exit 1; \
    fi \
 && /batch-autoscaler --version

# distroless/static: CA certificates, /etc/passwd with `nonroot` (65532), no shell.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /batch-autoscaler /usr/local/bin/batch-autoscaler
USER 65532:65532
# /metrics, /healthz, /readyz
EXPOSE 8085
ENTRYPOINT ["/usr/local/bin/batch-autoscaler"]
CMD ["run"]
