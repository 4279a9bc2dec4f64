# syntax=docker/dockerfile:1
# The sidegate sidecar image: `sidegate serve --plan /etc/sidegate/plan.json` as a non-root user.
#   docker build -t sidegate:0.1.0 .
#   sidegate compile spec.yaml -o plan.json
#   docker run --rm -p 4000:4000 -v "$PWD/plan.json:/etc/sidegate/plan.json:ro" -e OPENAI_API_KEY sidegate:0.1.0
# Inside the image sidegate listens on 0.0.0.0:4000 (SIDEGATE_LISTEN), so `-p` reaches it; the rendered
# Kubernetes sidecar sets SIDEGATE_LISTEN back to the spec's address (loopback: the pod's own apps only).
# `sidegate render kubernetes|compose` writes the manifests that run it (see README, "Deploying").

ARG PYTHON_VERSION=3.11

# Build stage: install the wheel and its dependencies into a virtualenv; nothing else is kept.
FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE NOTICE ./
COPY schema/ schema/
COPY compiler/ compiler/
COPY runtime/ runtime/
# sidegate/ holds the library and the links sidegate/runtime, sidegate/compiler the wheel follows
COPY sidegate/ sidegate/
RUN python -m venv /opt/sidegate \
    && /opt/sidegate/bin/pip install --no-cache-dir -c compiler/deploy/constraints.txt . \
    && /opt/sidegate/bin/sidegate --version

# Final stage: the same slim base, the virtualenv, a fixed non-root user (uid/gid 10001, which the
# rendered Kubernetes securityContext names), and a writable working directory for the sqlite store.
FROM python:${PYTHON_VERSION}-slim
ENV PATH=/opt/sidegate/bin:$PATH \
    SIDEGATE_LISTEN=0.0.0.0:4000 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 sidegate \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/sidegate \
       --shell /usr/sbin/nologin sidegate \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/sidegate \
    && install -d -m 0755 /etc/sidegate
COPY --from=build /opt/sidegate /opt/sidegate
WORKDIR /var/lib/sidegate
USER 10001:10001
EXPOSE 4000
# Probes from inside the container, so a plan that listens on 127.0.0.1 is checked too.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('SIDEGATE_HEALTH_URL', 'http://127.0.0.1:4000/health/ready'), timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["sidegate"]
CMD ["serve", "--plan", "/etc/sidegate/plan.json"]
