"""Runs the AWS emulator (moto's server: EC2, SSM, IAM, SQS on one port) with the public data an EKS
node class resolves that moto does not ship:

* EKS-optimized AMIs (AL2023 and Bottlerocket, x86_64 and arm64) for the local cluster's
  Kubernetes minor, added to moto's default images through MOTO_AMIS_PATH;
* the public SSM parameters that name them (`/aws/service/eks/optimized-ami/...`,
  `/aws/service/bottlerocket/...`), loaded the way moto loads its own public parameters.

Usage: emulator.py STATE_DIR KUBERNETES_MINOR [moto_server arguments...]
"""

import datetime
import gzip
import importlib.util
import json
import os
import sys
from collections import defaultdict

state_dir, minor, server_args = sys.argv[1], sys.argv[2], sys.argv[3:]
RELEASE = "v20261101"
BOTTLEROCKET = "1.50.0"

images = []
parameters = {}
for index, (arch, ec2_arch) in enumerate([("amd64", "x86_64"), ("arm64", "arm64")]):
    al2023 = f"ami-0e0a2023{index:08x}"
    bottlerocket = f"ami-0b0770c7{index:08x}"
    name = f"amazon-eks-node-al2023-{ec2_arch}-standard-{minor}-{RELEASE}"
    for ami_id, ami_name in [(al2023, name), (bottlerocket, f"bottlerocket-aws-k8s-{minor}-{ec2_arch}-v{BOTTLEROCKET}")]:
        images.append(
            {
                "ami_id": ami_id,
                "state": "available",
                "public": True,
                "owner_id": "602401143452",
                "image_location": f"amazon/{ami_name}",
                "sriov": "simple",
                "root_device_type": "ebs",
                "root_device_name": "/dev/xvda",
                "description": f"EKS-optimized node image for Kubernetes {minor} (local emulator)",
                "image_type": "machine",
                "platform": "Linux/UNIX",
                "architecture": ec2_arch,
                "name": ami_name,
                "virtualization_type": "hvm",
                "hypervisor": "xen",
                "creation_date": "2026-11-01T00:00:00.000Z",
            }
        )
    eks = f"/aws/service/eks/optimized-ami/{minor}/amazon-linux-2023/{ec2_arch}/standard"
    parameters[f"{eks}/recommended/image_id"] = al2023
    parameters[f"{eks}/{name}/image_id"] = al2023
    parameters[f"/aws/service/bottlerocket/aws-k8s-{minor}/{ec2_arch}/latest/image_id"] = bottlerocket
    parameters[f"/aws/service/bottlerocket/aws-k8s-{minor}/{ec2_arch}/{BOTTLEROCKET}/image_id"] = bottlerocket

# moto reads MOTO_AMIS_PATH when its EC2 models are imported, so the file is written first.
moto_dir = importlib.util.find_spec("moto").submodule_search_locations[0]
with gzip.open(os.path.join(moto_dir, "ec2", "resources", "amis.json.gz")) as f:
    defaults = json.load(f)
amis_path = os.path.join(state_dir, "emulator-amis.json")
with open(amis_path, "w") as f:
    json.dump(defaults + images, f)
os.environ["MOTO_AMIS_PATH"] = amis_path

from moto.server import main  # noqa: E402
from moto.ssm import models as ssm  # noqa: E402

moto_check_loading_status = ssm.ParameterDict._check_loading_status


def check_loading_status(self, key):
    moto_check_loading_status(self, key)
    if str(key or "").startswith(("/aws/service/eks/", "/aws/service/bottlerocket/")) and not getattr(
        self, "eks_public_parameters_loaded", False
    ):
        self.eks_public_parameters_loaded = True
        now = datetime.datetime.now(datetime.timezone.utc)
        for name, value in parameters.items():
            defaultdict.__getitem__(self, name).append(
                ssm.Parameter(
                    account_id=self.account_id,
                    name=name,
                    value=value,
                    parameter_type="String",
                    description=None,
                    allowed_pattern=None,
                    keyid=None,
                    last_modified_date=now,
                    version=1,
                    data_type="aws:ec2:image",
                )
            )


ssm.ParameterDict._check_loading_status = check_loading_status
main(server_args)
