#!/usr/bin/env bash
# Installs the EC2 emulator (moto server, from PyPI) into a virtualenv in $STOKER_CACHE, once per
# version, and the recorded Price List replies it serves (hack/emulator_price_list.py): the
# GetProducts items in the test data of github.com/aws/amazon-ec2-instance-selector/v3, fetched
# with go mod download.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require python3 "install Python 3.9 or newer with the venv module, then run this again"
require go "install Go (https://go.dev/dl/), then run this again"
mkdir -p "$STOKER_CACHE"
if [[ ! -f $MOTO_VENV/.complete ]]; then
  with_heartbeat "installing moto $MOTO_VERSION into a virtualenv" install_venv "$MOTO_VENV" "moto[server,ec2]==$MOTO_VERSION"
fi

fetch_price_list_recordings() {
  local module="github.com/aws/amazon-ec2-instance-selector/v3@$PRICE_LIST_RECORDINGS_VERSION" dir
  dir=$(go_module_field "$module" Dir)
  [[ -d $dir/test/static/GetProducts ]] || die "go mod download did not fetch $module"
  rm -rf "$PRICE_LIST_RECORDINGS" && mkdir -p "$PRICE_LIST_RECORDINGS"
  cp "$dir"/test/static/GetProducts/*.json "$PRICE_LIST_RECORDINGS/"
  touch "$PRICE_LIST_RECORDINGS/.complete"
}
if [[ ! -f $PRICE_LIST_RECORDINGS/.complete ]]; then
  with_heartbeat "fetching recorded Price List replies" fetch_price_list_recordings
fi
log "EC2 emulator ready: $MOTO_VENV (recorded Price List replies: $PRICE_LIST_RECORDINGS)"
