# syntax=docker/dockerfile:1
# Strom container image: the `strom` binary on distroless/cc (glibc, libgcc; no shell, no
# package manager), running as uid/gid 10001. Used by the Kubernetes manifests in k8s/
# (k8s/README.md shows the build and the push to a DigitalOcean Container Registry):
#
#   docker buildx build --platform linux/amd64 -t registry.digitalocean.com/REGISTRY/strom:TAG --push .
#
# Only the sources are sent to the builder (the COPY lines name them), never target/ or .cache/.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# every workspace member's manifest and sources (cargo reads them all), the vendored crates
COPY Cargo.toml Cargo.lock clippy.toml ./
COPY third_party third_party
COPY protocol protocol
COPY storage storage
COPY raft raft
COPY broker broker
COPY bin bin
COPY benches benches
COPY tests tests
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p strom --bin strom \
    && install -D -m 0755 target/release/strom /out/usr/local/bin/strom \
    && install -d -m 0775 /out/var/lib/strom/data

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/usr/local/bin/strom /usr/local/bin/strom
# the data directory for `docker run`; in Kubernetes a volume is mounted here
COPY --from=build --chown=10001:10001 /out/var/lib/strom /var/lib/strom
ENV STROM_LOG_DIRS=/var/lib/strom/data
USER 10001:10001
WORKDIR /
EXPOSE 9092 9093 9644
# for `docker run` (Kubernetes ignores HEALTHCHECK and uses the probes on /healthz and /readyz):
# the broker answers a metadata request on its Kafka port
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["/usr/local/bin/strom", "cluster", "info", "--bootstrap-server", "127.0.0.1:9092"]
ENTRYPOINT ["/usr/local/bin/strom"]
CMD ["serve"]
