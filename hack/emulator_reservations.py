"""On-Demand Capacity Reservations for the AWS emulator, which moto does not serve.

Adds CreateCapacityReservation, DescribeCapacityReservations (IDs and the filters stoker and the
tests use: state, owner-id, instance-type, availability-zone, tag:K, tag-key) and
CancelCapacityReservation to moto's EC2, and makes CreateFleet honour launch templates that
target a reservation the way EC2 does: an instance launches into the reservation only when the
override's type and zone match it and it has room (each takes one place, a terminated one gives
it back); what finds no room is reported per override as `ReservationCapacityExceeded`.
Instances launched into a reservation report its ID in DescribeInstances.

Open reservations are not consumed by launches that do not target them (stoker's templates
opt out with preference `none` whenever a node class selects reservations).

Capacity Blocks for ML: DescribeCapacityBlockOfferings offers a block of the asked type, count
and length in each zone, and PurchaseCapacityBlock makes it a `capacity-block` reservation
(targeted, with its end date), `scheduled` before its start, `active` until its end and
`expired` after. A block launches only what asks for its market type (`capacity-block` in the
fleet and in the launch template), and an ordinary reservation nothing that does, as in EC2.
Unlike EC2 the offerings may start in the past (`StartDateRange`), so a test can buy a block
that is about to end; EC2's reclaiming of a block's instances in its last 30 minutes is not
emulated.
"""

import datetime
import itertools
import threading

from moto.core.responses import ActionResult
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models.instances import InstanceBackend
from moto.ec2.responses import EC2Response

reservations = {}  # (account, region) -> {id: reservation dict}
lock = threading.Lock()
numbers = itertools.count(1)


def _store(response):
    return reservations.setdefault((response.current_account, response.region), {})


def _tags(response):
    tags = response._parse_tag_specification().get("capacity-reservation", {})
    return [{"Key": key, "Value": value} for key, value in tags.items()]


def create_capacity_reservation(self):
    token = self._get_param("ClientToken")
    # One lock for the look-up and the insert: a retry that arrives while the first request is
    # still in flight (the SDK retries on a slow or dropped reply) must get the same
    # reservation, as in EC2, not a second one.
    with lock:
        for reservation in _store(self).values():
            if token and reservation.get("ClientToken") == token:
                return ActionResult({"CapacityReservation": _public(reservation)})
        zone = self._get_param("AvailabilityZone")
        count = int(self._get_param("InstanceCount"))
        if count < 1:
            raise EC2ClientError("InvalidParameterValue", "InstanceCount must be at least 1")
        now = datetime.datetime.now(datetime.timezone.utc)
        number = next(numbers)
        reservation_id = f"cr-{number:017x}"
        reservation = {
            "CapacityReservationId": reservation_id,
            "OwnerId": self.current_account,
            "CapacityReservationArn": f"arn:aws:ec2:{self.region}:{self.current_account}:capacity-reservation/{reservation_id}",
            "InstanceType": self._get_param("InstanceType"),
            "InstancePlatform": self._get_param("InstancePlatform", "Linux/UNIX"),
            "AvailabilityZone": zone,
            "Tenancy": self._get_param("Tenancy", "default"),
            "TotalInstanceCount": count,
            "AvailableInstanceCount": count,
            "EbsOptimized": False,
            "EphemeralStorage": False,
            "State": "active",
            "StartDate": now,
            "EndDateType": self._get_param("EndDateType", "unlimited"),
            "InstanceMatchCriteria": self._get_param("InstanceMatchCriteria", "open"),
            "CreateDate": now,
            "Tags": _tags(self),
            "ReservationType": "default",
        }
        if self._get_param("EndDate"):
            reservation["EndDate"] = self._get_param("EndDate")
        _store(self)[reservation_id] = dict(reservation, ClientToken=token)
    return ActionResult({"CapacityReservation": reservation})


offerings = {}  # offering id -> the block it sells


def _parse_time(value):
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)
    return datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _current(reservation):
    """A Capacity Block's state as time moved on (a cancelled one stays so)."""
    if reservation.get("ReservationType") == "capacity-block" and reservation["State"] in ("scheduled", "active"):
        now = datetime.datetime.now(datetime.timezone.utc)
        if now >= reservation["EndDate"]:
            reservation["State"] = "expired"
            reservation["AvailableInstanceCount"] = 0
        elif now >= reservation["StartDate"]:
            reservation["State"] = "active"
    return reservation


def describe_capacity_block_offerings(self):
    hours = int(self._get_param("CapacityDurationHours"))
    count = int(self._get_param("InstanceCount", 1))
    if hours < 1 or count < 1:
        raise EC2ClientError("InvalidParameterValue", "CapacityDurationHours and InstanceCount must be at least 1")
    start = self._get_param("StartDateRange")
    start = _parse_time(start) if start else datetime.datetime.now(datetime.timezone.utc)
    found = []
    with lock:
        for zone in self.ec2_backend.describe_availability_zones():
            offering_id = f"cbr-{next(numbers):017x}"
            offering = {
                "CapacityBlockOfferingId": offering_id,
                "InstanceType": self._get_param("InstanceType"),
                "AvailabilityZone": zone.name,
                "InstanceCount": count,
                "StartDate": start,
                "EndDate": start + datetime.timedelta(hours=hours),
                "CapacityBlockDurationHours": hours,
                "UpfrontFee": f"{hours * count * 31.464:.2f}",
                "CurrencyCode": "USD",
                "Tenancy": "default",
            }
            offerings[offering_id] = offering
            found.append(offering)
    return ActionResult({"CapacityBlockOfferings": found})


def purchase_capacity_block(self):
    offering_id = self._get_param("CapacityBlockOfferingId")
    with lock:
        offering = offerings.pop(offering_id, None)
        if offering is None:
            raise EC2ClientError("InvalidCapacityBlockOfferingId.NotFound", f"The offering '{offering_id}' does not exist")
        reservation_id = f"cr-{next(numbers):017x}"
        reservation = {
            "CapacityReservationId": reservation_id,
            "OwnerId": self.current_account,
            "CapacityReservationArn": f"arn:aws:ec2:{self.region}:{self.current_account}:capacity-reservation/{reservation_id}",
            "InstanceType": offering["InstanceType"],
            "InstancePlatform": self._get_param("InstancePlatform", "Linux/UNIX"),
            "AvailabilityZone": offering["AvailabilityZone"],
            "Tenancy": "default",
            "TotalInstanceCount": offering["InstanceCount"],
            "AvailableInstanceCount": offering["InstanceCount"],
            "EbsOptimized": True,
            "EphemeralStorage": False,
            "State": "scheduled",
            "StartDate": offering["StartDate"],
            "EndDate": offering["EndDate"],
            "EndDateType": "limited",
            "InstanceMatchCriteria": "targeted",
            "CreateDate": datetime.datetime.now(datetime.timezone.utc),
            "Tags": _tags(self),
            "ReservationType": "capacity-block",
        }
        _store(self)[reservation_id] = _current(reservation)
    return ActionResult({"CapacityReservation": _public(reservation)})


def _public(reservation):
    return {key: value for key, value in reservation.items() if key != "ClientToken"}


def _matches(reservation, filters):
    tags = {tag["Key"]: tag["Value"] for tag in reservation["Tags"]}
    fields = {
        "state": reservation["State"],
        "owner-id": reservation["OwnerId"],
        "instance-type": reservation["InstanceType"],
        "availability-zone": reservation["AvailabilityZone"],
        "instance-match-criteria": reservation["InstanceMatchCriteria"],
    }
    for name, values in filters.items():
        if name.startswith("tag:"):
            if tags.get(name[4:]) not in values:
                return False
        elif name == "tag-key":
            if not any(value in tags for value in values):
                return False
        elif name in fields:
            if fields[name] not in values:
                return False
        else:
            raise EC2ClientError("InvalidParameterValue", f"The filter '{name}' is invalid")
    return True


def describe_capacity_reservations(self):
    ids = self._get_param("CapacityReservationIds", [])
    filters = self._filters_from_querystring()
    with lock:
        store = _store(self)
        missing = [reservation_id for reservation_id in ids if reservation_id not in store]
        if missing:
            raise EC2ClientError(
                "InvalidCapacityReservationId.NotFound",
                f"The capacity reservation ID '{missing[0]}' does not exist",
            )
        chosen = [_current(store[i]) for i in ids] if ids else [_current(r) for r in store.values()]
        found = [_public(reservation) for reservation in chosen if _matches(reservation, filters)]
    return ActionResult({"CapacityReservations": found})


def cancel_capacity_reservation(self):
    reservation_id = self._get_param("CapacityReservationId")
    with lock:
        reservation = _store(self).get(reservation_id)
        if reservation is None:
            raise EC2ClientError(
                "InvalidCapacityReservationId.NotFound",
                f"The capacity reservation ID '{reservation_id}' does not exist",
            )
        reservation["State"] = "cancelled"
        reservation["AvailableInstanceCount"] = 0
    return ActionResult({"Return": True})


def _template_data(backend, config):
    spec = config.get("LaunchTemplateSpecification", {})
    if "LaunchTemplateId" in spec:
        template = backend.get_launch_template(template_id=spec["LaunchTemplateId"])
    else:
        template = backend.get_launch_template_by_name(name=spec["LaunchTemplateName"])
    return template.latest_version().data


def _targeted_reservation(backend, config):
    data = _template_data(backend, config)
    target = (data.get("CapacityReservationSpecification") or {}).get("CapacityReservationTarget") or {}
    return target.get("CapacityReservationId")


def _block_market(backend, config, fleet_market):
    """Whether a fleet's template launches as a Capacity Block: when both say so."""
    template_market = (_template_data(backend, config).get("InstanceMarketOptions") or {}).get("MarketType")
    return fleet_market == template_market == "capacity-block"


moto_create_fleet = EC2Response.create_fleet


def fleet_error(config, override, zone, lifecycle, code, message):
    """One item of a CreateFleet reply's Errors: the override EC2 could not fill, and why."""
    return {
        "LaunchTemplateAndOverrides": {
            "LaunchTemplateSpecification": config["LaunchTemplateSpecification"],
            "Overrides": dict(override, AvailabilityZone=zone) if zone else override,
        },
        "Lifecycle": lifecycle,
        "ErrorCode": code,
        "ErrorMessage": message,
    }


def _exceeded(config, override, zone, target):
    message = f"Insufficient capacity in the Capacity Reservation {target}."
    return fleet_error(config, override, zone, "on-demand", "ReservationCapacityExceeded", message)


def create_fleet(self):
    """A fleet whose templates target reservations: each override (by priority) launches what its
    reservation has room for, as a fleet of its own, and the replies are merged."""
    configs = self._get_param("LaunchTemplateConfigs", [])
    backend = self.ec2_backend
    targets = [_targeted_reservation(backend, config) for config in configs]
    if not any(targets):
        return moto_create_fleet(self)
    wanted = int(self._get_param("TargetCapacitySpecification", {}).get("TotalTargetCapacity", 1))
    slots = [
        (float(override.get("Priority", 0)), index, config, override, target)
        for index, (config, target) in enumerate(zip(configs, targets))
        for override in config.get("Overrides") or [{}]
    ]
    slots.sort(key=lambda slot: (slot[0], slot[1]))
    launched, errors, fleet_id = [], [], None
    fleet_market = self._get_param("TargetCapacitySpecification", {}).get("DefaultTargetCapacityType")
    for _, _, config, override, target in slots:
        if wanted <= 0:
            break
        zone = backend.get_subnet(override["SubnetId"]).availability_zone if override.get("SubnetId") else None
        block_market = _block_market(backend, config, fleet_market)
        with lock:
            reservation = _store(self).get(target)
            if reservation is not None and (reservation.get("ReservationType") == "capacity-block") != block_market:
                message = (
                    "A Capacity Block takes launches of the capacity-block market type only, and an "
                    f"ordinary reservation none: {target}."
                )
                errors.append(fleet_error(config, override, zone, "on-demand", "InvalidParameterCombination", message))
                continue
            room = 0
            if (
                reservation is not None
                and _current(reservation)["State"] == "active"
                and reservation["InstanceType"] == override.get("InstanceType")
                and zone in (None, reservation["AvailabilityZone"])
            ):
                room = min(reservation["AvailableInstanceCount"], wanted)
                reservation["AvailableInstanceCount"] -= room
        if room == 0:
            errors.append(_exceeded(config, override, zone, target))
            continue
        fleet = backend.create_fleet(
            on_demand_options=self._get_param("OnDemandOptions", {}),
            spot_options={},
            target_capacity_specification={"TotalTargetCapacity": room, "DefaultTargetCapacityType": "on-demand"},
            launch_template_configs=[dict(config, Overrides=[override])],
            excess_capacity_termination_policy=None,
            replace_unhealthy_instances=False,
            terminate_instances_with_expiration=True,
            fleet_type="instant",
            valid_from=None,
            valid_until=None,
            tag_specifications=self._get_param("TagSpecifications", []),
        )
        fleet_id = fleet_id or fleet.id
        for item in fleet.on_demand_instances:
            item["instance"].capacity_reservation_id = target
            item["instance"].capacity_reservation_specification = {
                "CapacityReservationTarget": {"CapacityReservationId": target}
            }
        launched.extend(fleet.instances or [])
        wanted -= room
        if wanted > 0:  # this reservation filled up before the fleet did
            errors.append(_exceeded(config, override, zone, target))
    return ActionResult({"FleetId": fleet_id or "fleet-reservationsfull", "Errors": errors, "Instances": launched})


moto_terminate_instances = InstanceBackend.terminate_instances


def terminate_instances(self, instance_ids):
    """Gives each terminated instance's place back to its reservation."""
    for instance_id in instance_ids:
        try:
            instance = self.get_instance(instance_id)
        except Exception:  # moto raises the right error below
            continue
        target = getattr(instance, "capacity_reservation_id", None)
        if target and instance._state.name not in ("terminated", "shutting-down"):
            with lock:
                for (account, _), store in reservations.items():
                    reservation = store.get(target)
                    if reservation and reservation["State"] == "active" and account == self.account_id:
                        reservation["AvailableInstanceCount"] = min(
                            reservation["TotalInstanceCount"], reservation["AvailableInstanceCount"] + 1
                        )
    return moto_terminate_instances(self, instance_ids)


EC2Response.create_capacity_reservation = create_capacity_reservation
EC2Response.describe_capacity_reservations = describe_capacity_reservations
EC2Response.cancel_capacity_reservation = cancel_capacity_reservation
EC2Response.describe_capacity_block_offerings = describe_capacity_block_offerings
EC2Response.purchase_capacity_block = purchase_capacity_block
EC2Response.create_fleet = create_fleet
InstanceBackend.terminate_instances = terminate_instances
