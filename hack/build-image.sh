#!/usr/bin/env bash
# Builds stoker's multi-arch image (linux/amd64 and linux/arm64) from the Dockerfile without a
# Docker engine: BuildKit's daemon, started here for the build and stopped after it, with runc for
# its worker (both built from their Go modules into the cache, versions in hack/versions.env).
# The Dockerfile copies dist/stoker-linux-{amd64,arm64} (hack/build-release.sh) and has no RUN
# step, so nothing executes for the foreign architecture. Needs root (BuildKit's daemon).
#
# The image is then checked (hack/check_image.py: both platforms, user, labels, static binary of
# the right machine) and this machine's platform run with runc.
#
# Output: an OCI image archive (index with both platforms), dist/stoker-image.oci.tar unless
# STOKER_IMAGE_ARCHIVE names another path. Push it with any OCI tool, e.g.
#   skopeo copy --all oci-archive:dist/stoker-image.oci.tar docker://REGISTRY/stoker:VERSION
#
# Environment:
#   STOKER_IMAGE_VERSION   the version label (default: the crate's version)
#   STOKER_IMAGE_BASE      `stand-in` builds the base from this machine's Debian files instead of
#                          pulling the Dockerfile's distroless one: for machines that cannot reach
#                          its registry (the tests), never for an image people run
#
# Usage: hack/build-image.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require go "install Go (https://go.dev/dl), then run this again"
((EUID == 0)) || die "BuildKit's daemon needs root here; elsewhere use docker buildx (docs/release.md)"

BUILDKIT="$STOKER_CACHE/buildkit-$BUILDKIT_VERSION"
RUNC="$STOKER_CACHE/runc-$RUNC_VERSION"
mkdir -p "$STOKER_CACHE"
[[ -f $BUILDKIT/.complete ]] || with_heartbeat "building BuildKit $BUILDKIT_VERSION from its Go module" \
  build_go_programs github.com/moby/buildkit "$BUILDKIT_VERSION" "$BUILDKIT" ./cmd/buildkitd ./cmd/buildctl
[[ -f $RUNC/.complete ]] || with_heartbeat "building runc $RUNC_VERSION from its Go module" \
  build_go_programs github.com/opencontainers/runc "$RUNC_VERSION" "$RUNC" .
export PATH="$BUILDKIT/bin:$RUNC/bin:$PATH"

for arch in amd64 arm64; do
  [[ -x $REPO_ROOT/dist/stoker-linux-$arch ]] || die "dist/stoker-linux-$arch is missing: run hack/build-release.sh"
done
version="${STOKER_IMAGE_VERSION:-$(cd "$REPO_ROOT" && cargo pkgid --quiet | sed 's/.*[#@]//')}"
revision="$(git -C "$REPO_ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
archive="${STOKER_IMAGE_ARCHIVE:-$REPO_ROOT/dist/stoker-image.oci.tar}"
base="$(sed -n 's/^FROM \([^ ]*\).*/\1/p' "$REPO_ROOT/Dockerfile")"

# The daemon's state is this build's alone, and goes with it. The daemon, stopped, exits non-zero:
# that must not end the cleanup (errexit holds in traps) nor become the script's status.
work="$(mktemp -d "${TMPDIR:-/tmp}/stoker-image.XXXXXX")"
socket="unix://$work/buildkitd.sock"
mkdir -p "$LOGS"
buildkitd --root "$work/state" --addr "$socket" --oci-worker-snapshotter=native \
  --containerd-worker=false >"$LOGS/buildkitd.log" 2>&1 &
daemon=$!
stop_daemon() {
  local status=$?
  kill "$daemon" 2>/dev/null || true
  wait "$daemon" 2>/dev/null || true
  rm -rf "$work"
  exit "$status"
}
trap stop_daemon EXIT
wait_for "BuildKit's daemon" 30 buildctl --addr "$socket" debug workers

platforms=linux/amd64,linux/arm64
build=(buildctl --addr "$socket" build --frontend dockerfile.v0 --opt "platform=$platforms" --progress plain)
base_options=()
if [[ ${STOKER_IMAGE_BASE:-} == stand-in ]]; then
  # What the image needs of distroless static: its users (nonroot is 65532), the CA bundle the
  # AWS and Kubernetes clients trust, a writable /tmp. Debian 12's, as distroless's are.
  rootfs="$work/base/rootfs"
  mkdir -p "$rootfs/etc/ssl/certs" "$rootfs/tmp" "$rootfs/home/nonroot"
  printf '%s\n' root:x:0:0:root:/root:/sbin/nologin nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin \
    nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin >"$rootfs/etc/passwd"
  printf '%s\n' root:x:0: nobody:x:65534: nonroot:x:65532: >"$rootfs/etc/group"
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
  chmod 1777 "$rootfs/tmp"
  printf 'FROM scratch\nCOPY rootfs/ /\n' >"$work/base/Dockerfile"
  log "building a stand-in for $base from this machine's Debian files"
  "${build[@]}" --local context="$work/base" --local dockerfile="$work/base" \
    --output "type=oci,dest=$work/base-layout,tar=false" 2>"$work/base.log" || {
    cat "$work/base.log" >&2
    die "building the stand-in base failed"
  }
  digest="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' \
    "$work/base-layout/index.json")"
  base_options=(--oci-layout "base=$work/base-layout" --opt "context:$base=oci-layout://base@$digest")
fi

log "building the image for $platforms (version $version, revision $revision) into $archive"
"${build[@]}" --local context="$REPO_ROOT" --local dockerfile="$REPO_ROOT" \
  --opt "build-arg:VERSION=$version" --opt "build-arg:REVISION=$revision" "${base_options[@]}" \
  --output "type=oci,dest=$archive.partial" 2>"$work/image.log" || {
  cat "$work/image.log" >&2
  die "building the image failed"
}
mv "$archive.partial" "$archive"
log "$archive: $(du -h "$archive" | cut -f1); checking it and running it with runc"
python3 "$HACK_DIR/check_image.py" "$archive" "$version" "$RUNC/bin/runc"
