# gpuid container image. Two stages: a virtualenv with gpuid and every backend
# extra is built in the first, then copied alone into a clean slim Python, so
# the final image has no pip cache, no build tools and no source tree.
# Multi-platform (linux/amd64, linux/arm64): `make image`, and the release
# workflow (.github/workflows/release.yml) that publishes it; VERSION is
# pyproject.toml's, passed by both.
# Runs as 65532:65532 and writes nothing outside mounted volumes, so it works
# with readOnlyRootFilesystem (see deployment/base/deployment.yaml).

FROM python:3.12-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/gpuid
COPY pyproject.toml constraints.txt README.md LICENSE ./
COPY gpuid ./gpuid
# A regular (not editable) install with every backend, pinned by constraints.txt;
# pip compiles the bytecode here, since nothing can be written at run time.
RUN /opt/gpuid/bin/pip install --no-cache-dir -c constraints.txt ".[s3,postgres]" \
    && /opt/gpuid/bin/gpuid --version

FROM python:3.12-slim
# pyproject.toml's version, passed by make image and the release workflow (written in one place).
ARG VERSION
ARG REVISION=unknown
LABEL org.opencontainers.image.title="gpuid" \
      org.opencontainers.image.description="Tracks the physical identity of every NVIDIA GPU in a Kubernetes fleet" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.12-slim"
ENV PATH=/opt/gpuid/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LOG_FORMAT=json
COPY --from=build /opt/gpuid /opt/gpuid
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["gpuid"]
