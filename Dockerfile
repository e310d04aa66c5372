# Dockerfile - dm in a container: every dm program, dm-serve by default.
#
#   make image                                  (docker, else podman or buildah)
#   docker run --rm -e DM_SOURCE=... -e DM_DEST=... IMAGE dm-migrate plan
#   docker run -p 8420:8420 -e DM_API_TOKEN=... IMAGE     (dm-serve on :8420)
#
# Two stages: the builder compiles with `make`, runs the unit tests (a failing one
# fails the build, so a broken tree never becomes an image) and installs into /out;
# the runtime stage is bookworm-slim with only the shared libraries the programs link.
# The bats suites are not run here: they need PostgreSQL clusters (`make check`).

ARG DEBIAN_SUITE=bookworm

FROM docker.io/library/debian:${DEBIAN_SUITE} AS builder
# libmicrohttpd and jansson are dm-serve's; the others every program's.
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        build-essential pkg-config make libpq-dev libssl-dev libmsgpack-dev libxxhash-dev \
        libmicrohttpd-dev libjansson-dev >/dev/null \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# DM_NO_INSTALL: scripts/check-deps must report a missing package, not apt-get it.
ENV DM_NO_INSTALL=1
RUN make clean >/dev/null \
 && make -j"$(nproc)" \
 && make unit \
 && make install PREFIX=/usr/local DESTDIR=/out

FROM docker.io/library/debian:${DEBIAN_SUITE}-slim
# Shared libraries only (libpq5 brings libssl3, which libcrypto is part of);
# ca-certificates for sslmode=verify-full against a public CA.
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        libpq5 libssl3 libmsgpackc2 libxxhash0 libmicrohttpd12 libjansson4 ca-certificates \
        >/dev/null \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
 && useradd --system --uid 10001 --user-group --create-home --home-dir /home/dm \
        --shell /usr/sbin/nologin dm \
 && install -d -o dm -g dm -m 0700 /var/lib/dm-serve
COPY --from=builder /out/usr/local/ /usr/local/
COPY docker/dm-entrypoint docker/dm-healthcheck /usr/local/bin/
USER dm
WORKDIR /home/dm
# dm-serve's runs (request, log, exit status): a volume, so that they outlive the container.
ENV DM_STATE_DIR=/var/lib/dm-serve
VOLUME /var/lib/dm-serve
EXPOSE 8420
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["dm-healthcheck", "127.0.0.1", "8420"]
ENTRYPOINT ["dm-entrypoint"]
CMD ["dm-serve", "--listen", "0.0.0.0:8420"]
# The version, revision, creation date and source are given by `make image`
# (scripts/image-build) with --label, not through ARG: podman's layer cache (buildah
# 1.28) reuses a LABEL layer whose build arguments changed, which would keep the
# version of an earlier build.
# The repository states no licence: NOASSERTION (SPDX) until it does.
LABEL org.opencontainers.image.title="dm" \
      org.opencontainers.image.description="Differential migration for PostgreSQL: dm-migrate, the dm-* programs and dm-serve" \
      org.opencontainers.image.licenses="NOASSERTION"
