#!/usr/bin/env bash
# Installs the EC2 emulator (moto server, from PyPI) into a virtualenv in $STOKER_CACHE, once per
# version.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require python3 "install Python 3.9 or newer with the venv module, then run this again"
mkdir -p "$STOKER_CACHE"
if [[ ! -f $MOTO_VENV/.complete ]]; then
  with_heartbeat "installing moto $MOTO_VERSION into a virtualenv" install_venv "$MOTO_VENV" "moto[server,ec2]==$MOTO_VERSION"
fi
log "EC2 emulator ready: $MOTO_VENV"
