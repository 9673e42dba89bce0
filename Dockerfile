# One image for dbt-server and for its jobs: the Cloud Run service runs `dbt-server` (serve),
# each Cloud Run Job execution runs `dbt-server run-job` (job id in DBT_REMOTE_JOB_ID).
# docs/deploy-gcp.md has the gcloud steps. Build:
#   docker build -t REGION-docker.pkg.dev/PROJECT/dbt-remote/dbt-server:TAG .
#   docker build --build-arg DBT_ADAPTER=dbt-postgres ...     # another adapter

# --- build the server (with the Google Cloud backends) ---
FROM rust:1-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends pkg-config gcc \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --features gcp --bin dbt-server \
    && install -m 0755 target/release/dbt-server /usr/local/bin/dbt-server

# --- runtime: Python with dbt-core and an adapter, non-root ---
FROM python:3.11-slim-bookworm
ARG DBT_CORE="dbt-core>=1.10,<1.12"
ARG DBT_ADAPTER="dbt-bigquery>=1.10,<1.12"
# Elementary reports (docs/elementary.md): --build-arg ELEMENTARY="elementary-data[bigquery]==0.25.1"
# puts `edr` beside dbt, where dbt-server finds it. Empty (the default): no edr.
ARG ELEMENTARY=""
RUN python -m venv /opt/dbt \
    && /opt/dbt/bin/pip install --no-cache-dir "${DBT_CORE}" "${DBT_ADAPTER}" msgpack \
    && if [ -n "${ELEMENTARY}" ]; then /opt/dbt/bin/pip install --no-cache-dir "${ELEMENTARY}"; fi \
    && useradd --create-home --uid 10001 dbt-remote
COPY --from=build /usr/local/bin/dbt-server /usr/local/bin/dbt-server

USER dbt-remote
WORKDIR /home/dbt-remote
ENV PATH="/opt/dbt/bin:${PATH}" \
    DBT_REMOTE_DBT_PATH=/opt/dbt/bin/dbt \
    DBT_REMOTE_PYTHON=/opt/dbt/bin/python \
    DBT_REMOTE_HOST=0.0.0.0 \
    DBT_REMOTE_STATE_DIR=/tmp/dbt-remote/state \
    DBT_REMOTE_WORK_DIR=/tmp/dbt-remote/work \
    DBT_PROFILES_DIR=/home/dbt-remote/profiles
# Cloud Run sets PORT; dbt-server listens on it.
EXPOSE 8080
ENTRYPOINT ["dbt-server"]
CMD ["serve"]
