# The driver's image. Build from the repository's root:
#   docker build -t nfs-csi-driver:0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" .
# Both stages use the same exact base tag (never latest); tests/deploy/test_dockerfile.py checks this file.

# Build: the driver and its dependencies, from wheels, into a virtualenv that the runtime stage copies whole.
FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/nfs-csi-driver
WORKDIR /src
COPY pyproject.toml README.md ./
COPY domain ./domain
COPY ports ./ports
COPY adapters ./adapters
COPY app ./app
RUN /opt/nfs-csi-driver/bin/pip install --only-binary=:all: ".[userspace]" \
 && /opt/nfs-csi-driver/bin/nfs-csi-driver --version

# Runtime: the virtualenv, plus mount.nfs (nfs-common) and umount (package mount; util-linux beside it);
# no compiler, no build files.
FROM python:3.11.14-slim-bookworm AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="nfs-csi-driver" \
      org.opencontainers.image.description="CSI driver for NFS: volumes as subdirectories of an NFS share" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.14-slim-bookworm"
RUN apt-get update \
 && apt-get install -y --no-install-recommends nfs-common util-linux mount \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/nfs-csi-driver /opt/nfs-csi-driver
ENV PATH=/opt/nfs-csi-driver/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Root on purpose: the driver mounts and unmounts (the pods run it privileged).
USER root
ENTRYPOINT ["nfs-csi-driver"]
