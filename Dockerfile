# The vecsync image: one binary, `vecsync`, with a subcommand per job.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
        pkg-config libssl-dev zlib1g-dev make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p vecsync-cli

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 vecsync
COPY --from=build /src/target/release/vecsync /usr/local/bin/vecsync
USER vecsync
ENTRYPOINT ["vecsync"]
