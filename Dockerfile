# Multi-stage build: compile in the Rust image, run in a slim Debian image as a non-root user.
# (Docker cannot run on the machine this project is developed on: this file is kept simple and
# conventional, and is checked only through `docker-compose config`.)
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --workspace --locked \
    && cp target/release/data-api target/release/loadtests /usr/local/bin/

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --create-home data-api
COPY --from=build /usr/local/bin/data-api /usr/local/bin/loadtests /usr/local/bin/
USER data-api
WORKDIR /data
ENV DATA_API_BIND=0.0.0.0:8000 \
    DATABASE_URL=sqlite:///data/data-api.db?mode=rwc \
    DATA_API_LOG_FORMAT=json
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8000/health/ready || exit 1
ENTRYPOINT ["data-api"]
