"""Regenerates the committed instance catalog snapshot in src/cloudprovider/aws/data/:

  instance-types.csv   facts of every instance type offered in us-east-1, with its zones
  on-demand-prices.csv on-demand Linux prices per region and instance type (dollars per hour)

Run it through hack/update-catalog.sh, which pins the sources. Sources:

* Instance type facts come from the DescribeInstanceTypes and DescribeInstanceTypeOfferings
  responses that moto (the EC2 emulator, PyPI `moto`) ships, recorded from AWS by its maintainers.
  `--moto DIR` is the installed `moto` package.
* On-demand prices come from one of:
  - `--pricing-api`: the AWS Price List API (`pricing:GetProducts`, needs AWS credentials): Linux,
    shared tenancy, no pre-installed software, capacity status `Used`, per region asked for.
  - `--karpenter-module VERSION` (the offline default): the price table that Karpenter's AWS
    provider generates from the same API and publishes in its Go module
    (github.com/aws/karpenter-provider-aws, pkg/providers/pricing/zz_generated.pricing_aws.go),
    downloaded from the Go module proxy. Only the figures are taken.

The header comment of each file records the source and the time it was produced.
"""

import argparse
import csv
import datetime
import gzip
import json
import os
import re
import subprocess
import sys
import zipfile

DATA = os.path.join(os.path.dirname(__file__), "..", "src", "cloudprovider", "aws", "data")
REGION = "us-east-1"
ARCHES = {"x86_64": "amd64", "arm64": "arm64"}


def instance_types(moto_dir):
    resources = os.path.join(moto_dir, "ec2", "resources")
    with gzip.open(os.path.join(resources, "instance_types.json.gz")) as f:
        facts = json.load(f)
    with gzip.open(os.path.join(resources, "instance_type_offerings", "availability-zone", f"{REGION}.json.gz")) as f:
        offerings = json.load(f)
    zones = {}
    for offering in offerings:
        zones.setdefault(offering["InstanceType"], set()).add(offering["Location"])
    rows = []
    for name in sorted(zones):
        fact = facts.get(name)
        if fact is None:
            continue
        arches = [ARCHES[a] for a in fact["ProcessorInfo"]["SupportedArchitectures"] if a in ARCHES]
        if not arches:
            continue
        network = fact["NetworkInfo"]
        gpu_list = fact.get("GpuInfo", {}).get("Gpus", [])
        gpus = sum(g.get("Count", 0) for g in gpu_list)
        gpu = gpu_list[0] if gpu_list else {}
        neuron = (fact.get("NeuronInfo", {}).get("NeuronDevices") or [{}])[0]
        processor = fact["ProcessorInfo"]
        storage = fact.get("InstanceStorageInfo", {})
        nvme = storage.get("TotalSizeInGB", 0) if storage.get("NvmeSupport", "unsupported") != "unsupported" else 0
        cards = network.get("NetworkCards") or [{}]
        rows.append(
            [
                name,
                fact["VCpuInfo"]["DefaultVCpus"],
                fact["MemoryInfo"]["SizeInMiB"],
                arches[0],
                gpus,
                network["MaximumNetworkInterfaces"],
                network["Ipv4AddressesPerInterface"],
                " ".join(sorted(zones[name])),
                processor.get("Manufacturer", ""),
                round(processor.get("SustainedClockSpeedInGhz", 0) * 1000),
                fact.get("Hypervisor", ""),
                str(network.get("EncryptionInTransitSupported", False)).lower(),
                nvme,
                fact.get("EbsInfo", {}).get("EbsOptimizedInfo", {}).get("MaximumBandwidthInMbps", 0),
                round(cards[0].get("BaselineBandwidthInGbps", 0) * 1000),
                gpu.get("Name", ""),
                gpu.get("Manufacturer", ""),
                gpu.get("MemoryInfo", {}).get("SizeInMiB", 0),
                neuron.get("Name", ""),
                neuron.get("Count", 0),
                network.get("EfaInfo", {}).get("MaximumEfaInterfaces", 0),
                fact.get("EbsInfo", {}).get("MaximumEbsAttachments", 0),
            ]
        )
    return rows


def prices_from_karpenter_module(version):
    module = f"github.com/aws/karpenter-provider-aws@{version}"
    print(f"go mod download {module}", file=sys.stderr)
    # go mod download honours GOPROXY and checks the module against the checksum database.
    # A module asking for a newer Go than the local one still downloads; only a missing zip fails.
    downloaded = subprocess.run(["go", "mod", "download", "-json", module], capture_output=True, text=True, timeout=600)
    path = json.loads(downloaded.stdout or "{}").get("Zip", "")
    if not os.path.isfile(path):
        sys.exit(f"go mod download {module} failed: {downloaded.stdout}{downloaded.stderr}")
    archive = zipfile.ZipFile(path)
    source = archive.read(
        f"github.com/aws/karpenter-provider-aws@{version}/pkg/providers/pricing/zz_generated.pricing_aws.go"
    ).decode()
    generated = re.search(r"generated at (\S+)", source).group(1)
    prices = []
    region = None
    for line in source.splitlines():
        opened = re.match(r'\s*"([a-z]{2}(-[a-z]+)+-\d)": \{', line)
        if opened:
            region = opened.group(1)
            continue
        if region:
            prices += [(region, name, float(price)) for name, price in re.findall(r'"([\w.-]+)": ([0-9.]+)', line)]
    return prices, f"Karpenter AWS provider {version} (Go module proxy), generated from the AWS Price List API at {generated}"


def prices_from_pricing_api(regions):
    import boto3  # only this path needs it

    client = boto3.client("pricing", region_name="us-east-1")
    prices = []
    for region in regions:
        filters = [
            {"Type": "TERM_MATCH", "Field": field, "Value": value}
            for field, value in [
                ("regionCode", region),
                ("operatingSystem", "Linux"),
                ("tenancy", "Shared"),
                ("preInstalledSw", "NA"),
                ("capacitystatus", "Used"),
            ]
        ]
        for page in client.get_paginator("get_products").paginate(ServiceCode="AmazonEC2", Filters=filters):
            for item in page["PriceList"]:
                product = json.loads(item)
                name = product["product"]["attributes"]["instanceType"]
                for term in product["terms"].get("OnDemand", {}).values():
                    for dimension in term["priceDimensions"].values():
                        usd = float(dimension["pricePerUnit"]["USD"])
                        if usd > 0:
                            prices.append((region, name, usd))
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return prices, f"AWS Price List API (pricing:GetProducts) at {now}"


def write(path, header, columns, rows):
    with open(path, "w", newline="") as f:
        for line in header:
            f.write(f"# {line}\n")
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows to {os.path.normpath(path)}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moto", required=True, help="the installed moto package directory")
    parser.add_argument("--moto-version", required=True)
    prices = parser.add_mutually_exclusive_group(required=True)
    prices.add_argument("--karpenter-module", metavar="VERSION")
    prices.add_argument("--pricing-api", metavar="REGION", nargs="+")
    args = parser.parse_args()

    write(
        os.path.join(DATA, "instance-types.csv"),
        [
            f"EC2 instance types offered in {REGION}: DescribeInstanceTypes and DescribeInstanceTypeOfferings",
            f"as recorded by moto {args.moto_version}. Regenerate with hack/update-catalog.sh.",
        ],
        [
            "name",
            "vcpus",
            "memory_mib",
            "arch",
            "gpus",
            "max_network_interfaces",
            "ipv4_per_interface",
            "zones",
            "cpu_manufacturer",
            "cpu_clock_mhz",
            "hypervisor",
            "encryption_in_transit",
            "local_nvme_gib",
            "ebs_bandwidth_mbps",
            "network_bandwidth_mbps",
            "gpu_name",
            "gpu_manufacturer",
            "gpu_memory_mib",
            "accelerator_name",
            "accelerators",
            "efa_interfaces",
            "max_ebs_attachments",
        ],
        instance_types(args.moto),
    )
    if args.karpenter_module:
        rows, source = prices_from_karpenter_module(args.karpenter_module)
    else:
        rows, source = prices_from_pricing_api(args.pricing_api)
    # One price per (region, type): the lowest listed, as several SKUs can match.
    cheapest = {}
    for region, name, price in rows:
        key = (region, name)
        cheapest[key] = min(price, cheapest.get(key, price))
    write(
        os.path.join(DATA, "on-demand-prices.csv"),
        [
            "On-demand Linux prices in USD per hour, shared tenancy.",
            f"Source: {source}. Regenerate with hack/update-catalog.sh.",
        ],
        ["region", "instance_type", "price"],
        [[region, name, f"{price:.6f}"] for (region, name), price in sorted(cheapest.items())],
    )


if __name__ == "__main__":
    main()
