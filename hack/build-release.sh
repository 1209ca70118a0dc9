#!/usr/bin/env bash
# Builds stoker's release binaries: static Linux executables for x86_64 and arm64 (musl, with
# jemalloc), cross-compiled with zig as the C compiler and linker through cargo-zigbuild, in the
# `dist` profile (Cargo.toml; STOKER_RELEASE_PROFILE chooses another: hack/test.sh builds the
# arm64 binary in `dev`, which takes a fraction of the time). Checks each with `file`: statically
# linked, for its architecture.
#
# Output: dist/stoker-linux-amd64, dist/stoker-linux-arm64 and dist/SHA256SUMS, the files the
# Dockerfile copies into the multi-arch image (docs/release.md).
#
# Usage: hack/build-release.sh [amd64|arm64 ...]   (both when none is named)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require cargo "install Rust with rustup (https://rustup.rs), then run this again"
require rustup "install Rust with rustup (https://rustup.rs), then run this again"
require python3 "install Python 3 with the venv module, then run this again"
require file "install the file utility (Debian: apt-get install file), then run this again"

ZIG_VENV="$STOKER_CACHE/zig-$ZIG_VERSION"
ZIGBUILD_ROOT="$STOKER_CACHE/cargo-zigbuild-$CARGO_ZIGBUILD_VERSION"
install_zigbuild() {
  cargo install --quiet --locked --root "$ZIGBUILD_ROOT" --version "$CARGO_ZIGBUILD_VERSION" cargo-zigbuild
}
mkdir -p "$STOKER_CACHE"
[[ -f $ZIG_VENV/.complete ]] || with_heartbeat "installing zig $ZIG_VERSION" install_venv "$ZIG_VENV" "ziglang==$ZIG_VERSION"
[[ -x $ZIGBUILD_ROOT/bin/cargo-zigbuild ]] || with_heartbeat "installing cargo-zigbuild $CARGO_ZIGBUILD_VERSION" install_zigbuild
# cargo-zigbuild finds zig as `python3 -m ziglang` when the venv's python comes first.
export PATH="$ZIG_VENV/bin:$ZIGBUILD_ROOT/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$STOKER_CACHE/target}"
profile="${STOKER_RELEASE_PROFILE:-dist}"

arches=("$@")
[[ ${#arches[@]} -gt 0 ]] || arches=(amd64 arm64)
mkdir -p "$REPO_ROOT/dist"
for arch in "${arches[@]}"; do
  case $arch in
    amd64) target=x86_64-unknown-linux-musl machine="x86-64" ;;
    arm64) target=aarch64-unknown-linux-musl machine="ARM aarch64" ;;
    *) die "unknown architecture $arch (amd64 or arm64)" ;;
  esac
  rustup target add "$target" >/dev/null
  with_heartbeat "building stoker for linux/$arch ($target)" \
    bash -c "cd '$REPO_ROOT' && cargo zigbuild --quiet --locked --profile $profile --target $target --bin stoker"
  out="$REPO_ROOT/dist/stoker-linux-$arch"
  # Cargo names the dev profile's directory `debug`.
  cp "$CARGO_TARGET_DIR/$target/${profile/#dev/debug}/stoker" "$out"
  description=$(file -b "$out")
  [[ $description == *"$machine"* ]] || die "$out is not built for $machine: $description"
  [[ $description == *"statically linked"* || $description == *"static-pie linked"* ]] ||
    die "$out is not statically linked: $description"
  log "dist/stoker-linux-$arch: $(du -h "$out" | cut -f1), $description"
done
(cd "$REPO_ROOT/dist" && sha256sum stoker-linux-* >SHA256SUMS)
