# The hetsched operator image: `hetsched operator run` (Kopf + HTTP API and /metrics on :8080).
#
#   docker build -t hetsched:0.1.0 .
#
# Two stages: `pip install .` into a virtual environment in the first (pip caches and build
# leftovers stay there), which the runtime stage copies. The image runs as an unprivileged user
# with a numeric UID (so that Kubernetes can verify runAsNonRoot), owns none of its files, and
# works with a read-only root filesystem: HOME and matplotlib's config live in /tmp (an emptyDir
# in the Helm chart).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/hetsched
WORKDIR /src
COPY pyproject.toml README.md ./
COPY scheduler/ scheduler/
COPY operator/ operator/
RUN /opt/hetsched/bin/pip install . \
    && /opt/hetsched/bin/hetsched --help >/dev/null

FROM ${PYTHON_IMAGE}
ARG UID=65532
RUN groupadd --system --gid ${UID} hetsched \
    && useradd --system --uid ${UID} --gid ${UID} --home-dir /tmp --no-create-home \
       --shell /usr/sbin/nologin hetsched
COPY --from=build /opt/hetsched /opt/hetsched
ENV PATH=/opt/hetsched/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HOME=/tmp MPLCONFIGDIR=/tmp/matplotlib
USER ${UID}:${UID}
EXPOSE 8080
ENTRYPOINT ["hetsched"]
CMD ["operator", "run"]
