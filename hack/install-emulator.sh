#!/usr/bin/env bash
# Installs the EC2 emulator (moto server, from PyPI) into a virtualenv in $STOKER_CACHE, once per
# version.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require python3 "install Python 3.9 or newer with the venv module, then run this again"
# A virtualenv cannot be moved (its scripts name its path), so it is built in place and marked
# complete at the end; an interrupted install is thrown away and redone.
install_moto() {
  rm -rf "$MOTO_VENV"
  python3 -m venv "$MOTO_VENV"
  "$MOTO_VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server,ec2]==$MOTO_VERSION"
  touch "$MOTO_VENV/.complete"
}
mkdir -p "$STOKER_CACHE"
if [[ ! -f $MOTO_VENV/.complete ]]; then
  with_heartbeat "installing moto $MOTO_VERSION into a virtualenv" install_moto
fi
log "EC2 emulator ready: $MOTO_VENV"
