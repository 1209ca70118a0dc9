"""Seeds the EC2 emulator like a small EKS VPC: a VPC, three subnets in three zones and a security
group, all tagged for discovery by the cluster (karpenter.sh/discovery=<cluster>), and the IAM node
role the example EC2NodeClass names.

Idempotent: an already-seeded emulator is left as it is. Prints the IDs it created or found.
"""

import os
import sys

import boto3

cluster = sys.argv[1]
endpoint = sys.argv[2]
region = os.environ.get("AWS_REGION", "us-east-1")
ec2 = boto3.client("ec2", endpoint_url=endpoint, region_name=region)
discovery = [{"Key": "karpenter.sh/discovery", "Value": cluster}]


def tagged(resource, extra=()):
    return [{"ResourceType": resource, "Tags": discovery + list(extra)}]


existing = ec2.describe_vpcs(Filters=[{"Name": "tag:karpenter.sh/discovery", "Values": [cluster]}])["Vpcs"]
if existing:
    vpc_id = existing[0]["VpcId"]
else:
    vpc_id = ec2.create_vpc(
        CidrBlock="10.0.0.0/16", TagSpecifications=tagged("vpc", [{"Key": "Name", "Value": cluster}])
    )["Vpc"]["VpcId"]
print(f"vpc {vpc_id}")

subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]
have_zones = {s["AvailabilityZone"] for s in subnets}
for index, zone in enumerate(f"{region}{letter}" for letter in "abc"):
    if zone not in have_zones:
        ec2.create_subnet(
            VpcId=vpc_id,
            CidrBlock=f"10.0.{index * 64}.0/18",
            AvailabilityZone=zone,
            TagSpecifications=tagged("subnet", [{"Key": "Name", "Value": f"{cluster}-private-{zone}"}]),
        )
for subnet in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]:
    print(f"subnet {subnet['SubnetId']} {subnet['AvailabilityZone']}")

groups = ec2.describe_security_groups(
    Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "tag:karpenter.sh/discovery", "Values": [cluster]}]
)["SecurityGroups"]
if groups:
    group_id = groups[0]["GroupId"]
else:
    group_id = ec2.create_security_group(
        GroupName=f"{cluster}-node",
        Description=f"nodes of {cluster}",
        VpcId=vpc_id,
        TagSpecifications=tagged("security-group"),
    )["GroupId"]
print(f"security-group {group_id}")

# The node role the example EC2NodeClass names; stoker puts it in an instance profile it manages.
iam = boto3.client("iam", endpoint_url=endpoint, region_name=region)
role = f"KarpenterNodeRole-{cluster}"
try:
    iam.get_role(RoleName=role)
except iam.exceptions.NoSuchEntityException:
    iam.create_role(
        RoleName=role,
        AssumeRolePolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}',
    )
print(f"node-role {role}")
