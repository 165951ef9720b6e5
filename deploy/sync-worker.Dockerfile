# The sync-worker image: the arq worker, with /healthz, /readyz and /metrics on port 8001.
# Build from the repository root: docker build -f deploy/sync-worker.Dockerfile -t oidc-broker-sync-worker .

# Both stages use the same base: the virtual environment's interpreter is a symlink to the
# base image's /usr/local/bin/python3.11, and its console scripts name /app/.venv in their
# shebang lines, so the venv is built where and on what it will run.
FROM python:3.11-slim-bookworm AS builder

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv

RUN pip install --no-cache-dir uv==0.13.9

WORKDIR /src

# The locked dependencies first, from the manifests alone: this layer is reused until
# uv.lock or a pyproject.toml changes. uv reads every workspace member's manifest, so all
# four are copied, but only the worker's dependency tree is installed (no uvicorn[standard]
# extras, no python-multipart: those are the broker's).
COPY pyproject.toml uv.lock ./
COPY shared/pyproject.toml shared/
COPY services/broker/pyproject.toml services/broker/
COPY services/sync-worker/pyproject.toml services/sync-worker/
COPY verifier/pyproject.toml verifier/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package oidc-broker-sync-worker

COPY shared/src shared/src
COPY services/sync-worker/src services/sync-worker/src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package oidc-broker-sync-worker


FROM python:3.11-slim-bookworm

LABEL org.opencontainers.image.title="oidc-broker-sync-worker" \
      org.opencontainers.image.description="OIDC broker sync worker: upstream refresh, profile sync, audit relay"

# The same fixed UID as the broker image: one runAsUser for both in the manifests.
RUN groupadd --system --gid 10001 broker \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin broker

WORKDIR /app

# Only the venv leaves the builder: no uv, no sources, no caches; root owns the code.
COPY --from=builder /app/.venv /app/.venv
# The migration scripts, read (never run) by the readiness check to compare the database's
# revision with this release's; shared finds them beside the venv, as in the broker image.
COPY migrations /app/migrations

ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BROKER_LOG_FORMAT=json

USER 10001:10001
EXPOSE 8001

HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8001/healthz', timeout=2)"]

ENTRYPOINT ["sync-worker"]
CMD ["--http-host", "0.0.0.0", "--http-port", "8001"]
