# The broker image: `broker serve` on port 8000, `broker migrate`, `broker keys ...`.
# Build from the repository root: docker build -f deploy/broker.Dockerfile -t oidc-broker .

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
# four are copied, but only the broker's dependency tree (with the verifier) is installed.
COPY pyproject.toml uv.lock ./
COPY shared/pyproject.toml shared/
COPY services/broker/pyproject.toml services/broker/
COPY services/sync-worker/pyproject.toml services/sync-worker/
COPY verifier/pyproject.toml verifier/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package oidc-broker

# Then the project itself, built as wheels (--no-editable), so the venv does not point
# back into /src.
COPY shared/src shared/src
COPY verifier/src verifier/src
COPY services/broker/src services/broker/src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package oidc-broker


FROM python:3.11-slim-bookworm

LABEL org.opencontainers.image.title="oidc-broker" \
      org.opencontainers.image.description="OIDC identity broker (broker serve | migrate | keys)"

# A fixed numeric UID, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
RUN groupadd --system --gid 10001 broker \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin broker

WORKDIR /app

# Only the venv leaves the builder: no uv, no sources, no caches. Root owns the code, so the
# process cannot rewrite it. var/ is for the embedded default (SQLite, dev keyring) when the
# image is run without a database URL; production deployments never write there.
COPY --from=builder /app/.venv /app/.venv
# `broker migrate` finds migrations/ in a parent directory of the installed shared package
# (/app/.venv/lib/python3.11/site-packages/shared -> /app/migrations); the readiness check
# reads the same scripts to compare the database's revision with this release's.
COPY migrations /app/migrations
COPY alembic.ini /app/alembic.ini
RUN install -d -o 10001 -g 10001 -m 0750 /app/var

ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BROKER_LOG_FORMAT=json

USER 10001:10001
EXPOSE 8000

# slim has no curl; the venv's Python is here anyway. Kubernetes ignores this and uses its
# own probes (deploy/kubernetes/broker-deployment.yaml).
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]

ENTRYPOINT ["broker"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
