"""Regenerates the committed instance catalog snapshot in src/cloudprovider/aws/data/:

  instance-types.csv   facts of every instance type offered in us-east-1, with its zones
  on-demand-prices.csv on-demand Linux prices per instance type (rows) and region (columns), in
                       dollars per hour; an empty cell: no price for that type in that region

Run it through hack/update-catalog.sh, which pins the sources. Sources:

* Instance type facts come from the DescribeInstanceTypes and DescribeInstanceTypeOfferings
  responses that moto (the EC2 emulator, PyPI `moto`) ships, recorded from AWS by its maintainers.
  `--moto DIR` is the installed `moto` package.
* On-demand prices come from one of:
  - `--pricing-api`: the AWS Price List API (`pricing:GetProducts`, needs AWS credentials): Linux,
    shared tenancy, no pre-installed software, capacity status `Used`, per region asked for.
  - the offline default, two Go modules downloaded with `go mod download` (only figures taken):
    `--karpenter-module VERSION`, the tables Karpenter's AWS provider generates from that API
    (github.com/aws/karpenter-provider-aws, pkg/providers/pricing/zz_generated.pricing_aws*.go),
    for the regions they hold (us-east-1 and the two GovCloud regions), the newest source; and
    `--instances-info-module VERSION`, the ec2instances.info data that the Go library
    github.com/cristim/ec2-instances-info embeds (data/instances.json, `pricing.<region>.linux.
    ondemand`), for every other region. Local and Wavelength zones and China (priced in yuan) are
    left out.

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


def go_module_zip(module):
    """The zip of a Go module, downloaded with `go mod download` (which honours GOPROXY and checks
    the module against the checksum database; a module asking for a newer Go still downloads)."""
    print(f"go mod download {module}", file=sys.stderr)
    downloaded = subprocess.run(["go", "mod", "download", "-json", module], capture_output=True, text=True, timeout=600)
    path = json.loads(downloaded.stdout or "{}").get("Zip", "")
    if not os.path.isfile(path):
        sys.exit(f"go mod download {module} failed: {downloaded.stdout}{downloaded.stderr}")
    return zipfile.ZipFile(path)


def prices_from_karpenter_module(version):
    module = f"github.com/aws/karpenter-provider-aws@{version}"
    archive = go_module_zip(module)
    prices, generated = [], []
    for table in ["zz_generated.pricing_aws.go", "zz_generated.pricing_aws_us_gov.go"]:
        source = archive.read(f"{module}/pkg/providers/pricing/{table}").decode()
        generated_at = re.search(r"generated at (\S+)", source).group(1)
        region = None
        for line in source.splitlines():
            opened = re.match(r'\s*"([a-z]{2}(-[a-z]+)+-\d)": \{', line)
            if opened:
                region = opened.group(1)
                generated.append(f"{region} at {generated_at}")
                continue
            if region:
                prices += [(region, name, float(price)) for name, price in re.findall(r'"([\w.-]+)": ([0-9.]+)', line)]
    return prices, f"Karpenter AWS provider {version} (Go module), from the AWS Price List API: {', '.join(generated)}"


def prices_from_instances_info(version, skip_regions):
    module = f"github.com/cristim/ec2-instances-info@{version}"
    archive = go_module_zip(module)
    instances = json.loads(archive.read(f"{module}/data/instances.json"))
    prices, regions = [], set()
    for instance in instances:
        for region, by_os in instance.get("pricing", {}).items():
            if not re.fullmatch(r"[a-z]{2}(-gov)?-[a-z]+-\d", region) or region in skip_regions:
                continue
            try:
                price = float(by_os.get("linux", {}).get("ondemand"))
            except (TypeError, ValueError):
                continue
            prices.append((region, instance["instance_type"], price))
            regions.add(region)
    return prices, f"ec2instances.info data in {module} (Go module), for {len(regions)} regions: {', '.join(sorted(regions))}"


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
    parser.add_argument("--instances-info-module", metavar="VERSION", help="with --karpenter-module")
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
    sources = [source]
    if args.karpenter_module and args.instances_info_module:
        more, source = prices_from_instances_info(args.instances_info_module, {region for region, _, _ in rows})
        rows += more
        sources.append(source)
    # One price per (region, type): the lowest listed, as several SKUs can match.
    cheapest = {}
    for region, name, price in rows:
        key = (region, name)
        cheapest[key] = min(price, cheapest.get(key, price))
    regions = sorted({region for region, _ in cheapest})
    names = sorted({name for _, name in cheapest})
    write(
        os.path.join(DATA, "on-demand-prices.csv"),
        ["On-demand Linux prices in USD per hour, shared tenancy; a type per row, a region per column."]
        + [f"Source: {source}." for source in sources]
        + ["Regenerate with hack/update-catalog.sh."],
        ["instance_type"] + regions,
        [[name] + [number(cheapest.get((region, name))) for region in regions] for name in names],
    )


def number(price):
    """A price as few digits as it needs (the files are compared by eye in review), or empty."""
    return "" if price is None else f"{price:.6f}".rstrip("0").rstrip(".")


if __name__ == "__main__":
    main()
