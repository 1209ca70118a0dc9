"""Spot capacity the AWS emulator refuses, for races that need capacity errors (the spot scenario
of hack/bench-vs-karpenter.sh); moto launches whatever it is asked to.

With STOKER_REFUSED_SPOT_TYPES naming a file of instance types (whitespace-separated), a spot
CreateFleet launches only from its other overrides and reports each refused override in the
reply's Errors as `InsufficientInstanceCapacity`, as EC2 reports the pools it could not fill;
when no override is left it launches nothing. On-demand launches are untouched. Each refusal is
logged on standard error (`refused spot capacity: ...`), so a race can count them.
"""

import os
import sys

from moto.core.responses import ActionResult
from moto.ec2.responses import EC2Response

from emulator_reservations import fleet_error

refused_path = os.environ.get("STOKER_REFUSED_SPOT_TYPES")
refused = set(open(refused_path).read().split()) if refused_path else set()
emulator_create_fleet = EC2Response.create_fleet


def _insufficient(backend, config, override):
    zone = backend.get_subnet(override["SubnetId"]).availability_zone if override.get("SubnetId") else None
    message = f"There is no Spot capacity available that matches your request ({override.get('InstanceType')}, emulator)."
    return fleet_error(config, override, zone, "spot", "InsufficientInstanceCapacity", message)


def create_fleet(self):
    capacity_type = self._get_param("TargetCapacitySpecification", {}).get("DefaultTargetCapacityType")
    if not refused or capacity_type != "spot":
        return emulator_create_fleet(self)
    kept, errors = [], []
    for config in self._get_param("LaunchTemplateConfigs", []):
        overrides = config.get("Overrides") or []
        errors += [_insufficient(self.ec2_backend, config, o) for o in overrides if o.get("InstanceType") in refused]
        left = [o for o in overrides if o.get("InstanceType") not in refused]
        if left:
            kept.append(dict(config, Overrides=left))
    if not errors:
        return emulator_create_fleet(self)
    types = sorted({e["LaunchTemplateAndOverrides"]["Overrides"].get("InstanceType", "") for e in errors})
    print(f"refused spot capacity: {len(errors)} overrides ({' '.join(types)}); {len(kept)} configs left", file=sys.stderr)
    if not kept:
        return ActionResult({"FleetId": "fleet-nocapacity", "Errors": errors, "Instances": []})
    # The response object lives for this one request: shadow its parameter reader so the
    # emulator's CreateFleet (reservations included) sees only the overrides left.
    read = self._get_param
    self._get_param = lambda name, *args, **kwargs: kept if name == "LaunchTemplateConfigs" else read(name, *args, **kwargs)
    result = emulator_create_fleet(self)
    result.result["Errors"] = list(result.result.get("Errors") or []) + errors
    return result


EC2Response.create_fleet = create_fleet
