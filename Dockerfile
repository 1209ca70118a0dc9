# stoker's container image for linux/amd64 and linux/arm64: the static release binaries on
# distroless static (no shell, no libc), run as a non-root user. Build the binaries first, then
# the image for both platforms (docs/release.md):
#   hack/build-release.sh
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" \
#     -t ghcr.io/stoker-dev/stoker:0.1.0 --push .
FROM gcr.io/distroless/static-debian12:nonroot
ARG TARGETARCH
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="stoker" \
      org.opencontainers.image.description="Karpenter-style node provisioner and cron-scheduled warm-pool manager for Kubernetes on AWS" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY dist/stoker-linux-${TARGETARCH} /usr/local/bin/stoker
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/stoker"]
CMD ["controller"]
