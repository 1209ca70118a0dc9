"""Runs the AWS emulator (moto's server: EC2, SSM, IAM, SQS on one port) with the public data an EKS
node class resolves that moto does not ship:

* EKS-optimized AMIs (AL2023 standard and NVIDIA, and Bottlerocket, x86_64 and arm64; AL2023
  Neuron, x86_64) for the local cluster's
  Kubernetes minor, added to moto's default images through MOTO_AMIS_PATH;
* the public SSM parameters that name them (`/aws/service/eks/optimized-ami/...`,
  `/aws/service/bottlerocket/...`), loaded the way moto loads its own public parameters;
* On-Demand Capacity Reservations (`emulator_reservations.py`);
* spot capacity errors for named instance types, when asked for (`emulator_capacity.py`);
* one resource's tags read directly instead of filtered from all of them (`emulator_tags.py`);
* the Price List API's GetProducts, answered from recorded real replies
  (`emulator_price_list.py`).

With STOKER_AWS_CALL_LOG set, every request stoker's own clients make (their user agent carries
`app/stoker`) is appended to that file as one JSON line: service, region, action, parameters,
the HTTP status, and what IAM would look at besides the request (the tags of the instances,
launch templates and instance profiles it names, the launch template's content). The IAM test
(tests/iam_policy.rs) evaluates the controller's policy against each one.

Usage: emulator.py STATE_DIR KUBERNETES_MINOR [moto_server arguments...]
"""

import datetime
import gzip
import importlib.util
import json
import io
import os
import re
import sys
import threading
import urllib.parse
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
    amis = [(al2023, name), (bottlerocket, f"bottlerocket-aws-k8s-{minor}-{ec2_arch}-v{BOTTLEROCKET}")]
    # The AL2023 accelerated variants: NVIDIA on both architectures, Neuron on x86_64 only.
    for variant, prefix in [("nvidia", "0a1d1a23"), ("neuron", "0e0e0023")][: 2 - index]:
        variant_ami = f"ami-{prefix}{index:08x}"
        variant_name = f"amazon-eks-node-al2023-{ec2_arch}-{variant}-{minor}-{RELEASE}"
        amis.append((variant_ami, variant_name))
        variant_path = f"/aws/service/eks/optimized-ami/{minor}/amazon-linux-2023/{ec2_arch}/{variant}"
        parameters[f"{variant_path}/recommended/image_id"] = variant_ami
        parameters[f"{variant_path}/{variant_name}/image_id"] = variant_ami
    for ami_id, ami_name in amis:
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

import emulator_reservations  # noqa: E402,F401  (adds capacity reservations to moto's EC2)
import emulator_capacity  # noqa: E402,F401  (refuses spot capacity when asked to; after reservations)
import emulator_tags  # noqa: E402,F401  (a resource's tags in constant time)
import emulator_price_list  # noqa: E402,F401  (GetProducts from recorded replies; before the call log)

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


def tags_of(items):
    """moto keeps tags as a dict or as a list of {Key, Value}."""
    if isinstance(items, dict):
        return dict(items)
    return {item["Key"]: item["Value"] for item in items or []}


def numbered(params, pattern):
    """Values of flattened query parameters whose name matches `pattern` (e.g. InstanceId.N)."""
    return [value for key, value in sorted(params.items()) if re.fullmatch(pattern, key)]


def observed(service, region, action, params):
    """What IAM looks at besides the request itself: the existing resources the call names."""
    from moto.core import DEFAULT_ACCOUNT_ID as account
    from moto.ec2.models import ec2_backends
    from moto.iam.models import iam_backends

    found = {}
    if service == "ec2":
        ec2 = ec2_backends[account][region]
        if action == "TerminateInstances":
            found["instances"] = {i: dict(ec2.tags.get(i, {})) for i in numbered(params, r"InstanceId\.\d+")}
        if action == "CreateTags":
            found["instances"] = {i: dict(ec2.tags.get(i, {})) for i in numbered(params, r"ResourceId\.\d+")}
        if action in ("CreateFleet", "DeleteLaunchTemplate"):
            names = numbered(params, r"LaunchTemplateConfigs\.\d+\.LaunchTemplateSpecification\.LaunchTemplateName")
            names += [params[k] for k in ("LaunchTemplateName",) if k in params]
            found["launch_templates"] = {}
            for name in names:
                try:
                    template = ec2.get_launch_template_by_name(name)
                except Exception:  # a template that is gone: IAM sees no tags
                    found["launch_templates"][name] = {"tags": {}, "data": {}}
                    continue
                data = {k: v for k, v in template.latest_version().data.items() if k != "UserData"}
                profile = (data.get("IamInstanceProfile") or {}).get("Name")
                roles = []
                if profile:
                    try:
                        roles = [role.arn for role in iam_backends[account]["global"].get_instance_profile(profile).roles]
                    except Exception:
                        pass
                found["launch_templates"][name] = {
                    "id": template.id,
                    "tags": tags_of(ec2.tags.get(template.id, {})),
                    "data": data,
                    "roles": roles,
                }
    if service == "iam" and "InstanceProfileName" in params:
        try:
            profile = iam_backends[account]["global"].get_instance_profile(params["InstanceProfileName"])
            found["instance_profile"] = {"tags": tags_of(profile.tags), "roles": [r.arn for r in profile.roles]}
        except Exception:
            found["instance_profile"] = None
        if "RoleName" in params:
            try:
                found["role_arn"] = iam_backends[account]["global"].get_role(params["RoleName"]).arn
            except Exception:
                found["role_arn"] = None
    found["account"] = account
    return found


call_log = os.environ.get("STOKER_AWS_CALL_LOG")
call_log_lock = threading.Lock()


def record_call(app, environ, start_response):
    agent = environ.get("HTTP_X_AMZ_USER_AGENT", "") + " " + environ.get("HTTP_USER_AGENT", "")
    if "app/stoker" not in agent.split():
        return app(environ, start_response)
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(body)
    scope = re.search(r"Credential=[^/]+/\d+/([^/]+)/([^/]+)/", environ.get("HTTP_AUTHORIZATION", ""))
    region, service = scope.groups() if scope else ("", "")
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    path = environ.get("PATH_INFO", "")
    if target:
        action, params = target.rsplit(".", 1)[-1], json.loads(body or b"{}")
    elif service == "eks":
        action, params = "DescribeCluster", {"name": urllib.parse.unquote(path.rstrip("/").rsplit("/", 1)[-1])}
    else:
        params = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode(), keep_blank_values=True).items()}
        action = params.get("Action", "")
    if "LaunchTemplateData.UserData" in params:  # large, and nothing IAM looks at
        params["LaunchTemplateData.UserData"] = f"<{len(params['LaunchTemplateData.UserData'])} characters>"
    entry = {"service": service, "region": region, "action": action, "params": params}
    try:
        entry["observed"] = observed(service, region, action, params)
    except Exception as error:  # recording must never break the emulator
        entry["observed_error"] = repr(error)
    status = []

    def start(code, headers, exc_info=None):
        status.append(int(code.split()[0]))
        return start_response(code, headers, exc_info)

    try:
        return app(environ, start)
    finally:  # recorded even when the emulator has no answer (a service it does not serve)
        entry["status"] = status[0] if status else None
        with call_log_lock, open(call_log, "a") as log:
            log.write(json.dumps(entry, default=str) + "\n")


if call_log:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    dispatch = DomainDispatcherApplication.__call__
    DomainDispatcherApplication.__call__ = lambda self, environ, start_response: record_call(
        lambda e, s: dispatch(self, e, s), environ, start_response
    )
main(server_args)
