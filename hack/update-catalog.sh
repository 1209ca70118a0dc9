#!/usr/bin/env bash
# Regenerates src/cloudprovider/aws/data/ (instance type facts and on-demand prices) from pinned
# sources; see hack/update-catalog.py for what they are. With AWS credentials,
# `hack/update-catalog.sh --pricing-api us-east-1 eu-west-1 ...` takes prices from the AWS Price
# List API instead of the tables published in Go modules.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$HACK_DIR/install-emulator.sh"
moto_dir="$("$MOTO_VENV/bin/python" -c 'import moto, os; print(os.path.dirname(moto.__file__))')"
prices=(--karpenter-module "$KARPENTER_PRICES_VERSION" --instances-info-module "$EC2_INSTANCES_INFO_VERSION")
if [[ ${1:-} == --pricing-api ]]; then
  "$MOTO_VENV/bin/pip" install --quiet --disable-pip-version-check boto3
  prices=("$@")
fi
mkdir -p "$REPO_ROOT/src/cloudprovider/aws/data"
"$MOTO_VENV/bin/python" "$HACK_DIR/update-catalog.py" --moto "$moto_dir" --moto-version "$MOTO_VERSION" "${prices[@]}"
