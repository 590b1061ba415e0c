# syntax=docker/dockerfile:1
#
# One Dockerfile, one stage per thing docker-compose.yml runs:
#   --target hubd      hubd, hubctl, demo and btcd (so `hubd` with no flags
#                      also works alone: it finds btcd next to itself)
#   --target btcd      btcd and btcctl, for the external regtest node
#   --target loadtest  the load generator
# The last stage is hubd, so a plain `docker build .` gives the hub.

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-bookworm AS build
# The toolchain is the image's: never download another one in the build.
ENV GOTOOLCHAIN=local CGO_ENABLED=0
WORKDIR /src
# Modules first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    mkdir -p /out \
 && go build -trimpath -o /out/ ./cmd/hubd ./cmd/hubctl ./cmd/demo \
 && go build -trimpath -o /out/btcd github.com/btcsuite/btcd \
 && go build -trimpath -o /out/btcctl github.com/btcsuite/btcd/cmd/btcctl
# LOADTEST_PKG is the load generator's main package. It is a build argument
# because the load generator is built by its own issue: point it elsewhere
# if it moves.
ARG LOADTEST_PKG=./cmd/loadtest
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -o /out/loadtest "${LOADTEST_PKG}"

# runtime is what every service image shares: a small Debian with CA
# certificates, curl for health checks, and a non-root user whose home,
# /data, is where named volumes are mounted (an empty volume takes the
# directory's owner, so the user can write to it).
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /data --create-home --shell /usr/sbin/nologin m2mhub \
 && chmod 0700 /data
USER m2mhub
WORKDIR /data

FROM runtime AS btcd
COPY --from=build /out/btcd /out/btcctl /usr/local/bin/
# regtest P2P and RPC
EXPOSE 18444 18334
ENTRYPOINT ["btcd"]

FROM runtime AS loadtest
COPY --from=build /out/loadtest /usr/local/bin/
ENTRYPOINT ["loadtest"]

FROM runtime AS hubd
COPY --from=build /out/hubd /out/hubctl /out/demo /out/btcd /usr/local/bin/
ENV M2MHUB_DATADIR=/data
# BOLT 8 for devices, admin API
EXPOSE 9736 9737
ENTRYPOINT ["hubd"]
