# syntax=docker/dockerfile:1
# Multi-stage build: compile with the full toolchain, ship only the binary on a slim base.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo.toml declares the benches, so the manifest needs them to load.
COPY benches ./benches
# Compiled into the binary (include_str!): the Demo Praxis and its demo patients, and the
# agent's prompt and tools that `ignis agent sync` installs (tests/dockerfile.rs checks the list).
COPY practice.toml ./
COPY practice ./practice
COPY agent ./agent
RUN cargo build --release --locked --bin ignis

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/ignis --create-home ignis
COPY --from=build /src/target/release/ignis /usr/local/bin/ignis
USER ignis
WORKDIR /var/lib/ignis
ENV PORT=8080 \
    BIND=0.0.0.0
EXPOSE 8080
# `ignis healthcheck` probes GET /health on $PORT; the slim image has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/ignis", "healthcheck"]
# SIGTERM starts the graceful drain (DRAIN_SECONDS, default 600 s): give the container at
# least that long to stop (`docker stop -t 610`, compose `stop_grace_period: 610s`).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/ignis"]
CMD ["serve"]
