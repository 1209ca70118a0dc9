"""One resource's tags read directly, as EC2 does; moto filters every tag in the region for them.

moto finds a resource's tags (for every instance in a DescribeInstances reply, and for every
instance a tag filter looks at) by matching the `resource-id` of each tag the region holds. At
~500 instances one DescribeInstances with a tag filter cost the emulator seconds (instances × all
tags), and a race at that size measured the emulator's pace rather than the controllers'. A
lookup by one literal resource ID now reads that resource's tags from moto's own table; the
answer is the same, and every other lookup is still moto's.
"""

from moto.ec2.models.tags import TagBackend
from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix

emulator_describe_tags = TagBackend.describe_tags


def describe_tags(self, filters=None):
    ids = (filters or {}).get("resource-id") or []
    if set(filters or {}) != {"resource-id"} or len(ids) != 1 or any(c in ids[0] for c in "*?["):
        return emulator_describe_tags(self, filters)
    resource_id = ids[0]
    resource_type = EC2_PREFIX_TO_RESOURCE.get(get_prefix(resource_id), "")
    return [
        {"resource_id": resource_id, "key": key, "value": value, "resource_type": resource_type}
        for key, value in dict(self.tags.get(resource_id, {})).items()
    ]


TagBackend.describe_tags = describe_tags
