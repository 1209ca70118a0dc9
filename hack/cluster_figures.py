"""Nodes, $/h and reserved utilization of one NodePool's nodes right now (benchmark scripts).

    python3 hack/cluster_figures.py SELECTOR PRICES LABEL

SELECTOR picks the pool's nodes (`stoker.dev/nodepool=perf`). PRICES is either the on-demand
snapshot CSV (`…/on-demand-prices.csv`, its us-east-1 column; every node priced on-demand) or a kwok
instance-types JSON (`stoker kwok-instance-types`; each node priced by its type, zone and capacity
type). Reserved utilization is what the pods running there request over the nodes' allocatable.
Prints one line for people, then the same figures as JSON.
"""

import csv
import json
import subprocess
import sys

UNITS = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}


def quantity(text):
    for suffix, factor in sorted(UNITS.items(), key=lambda unit: -len(unit[0])):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def price_lookup(path):
    """A function from a node's labels to its price per hour."""
    if path.endswith(".csv"):
        rows = csv.DictReader(line for line in open(path) if not line.startswith("#"))
        on_demand = {row["instance_type"]: float(row["us-east-1"]) for row in rows if row["us-east-1"]}
        return lambda labels: on_demand.get(labels.get("node.kubernetes.io/instance-type", ""), 0.0)
    offers = {}
    for entry in json.load(open(path)):
        for offering in entry["offerings"]:
            keys = {r["key"]: r["values"][0] for r in offering["Requirements"]}
            offers[entry["name"], keys["topology.kubernetes.io/zone"], keys["karpenter.sh/capacity-type"]] = offering["Price"]
    return lambda labels: offers.get((labels.get("node.kubernetes.io/instance-type"),
                                      labels.get("topology.kubernetes.io/zone"),
                                      labels.get("karpenter.sh/capacity-type")), 0.0)


def kubectl_items(*args):
    return json.loads(subprocess.run(["kubectl", "get", *args, "-o", "json"], check=True,
                                     capture_output=True, text=True).stdout)["items"]


def main():
    selector, prices, label = sys.argv[1:4]
    price = price_lookup(prices)
    nodes = kubectl_items("nodes", "-l", selector)
    names = {node["metadata"]["name"] for node in nodes}
    allocatable_cpu = sum(quantity(n["status"]["allocatable"]["cpu"]) for n in nodes)
    allocatable_memory = sum(quantity(n["status"]["allocatable"]["memory"]) for n in nodes)
    requested_cpu = requested_memory = 0.0
    for pod in kubectl_items("pods", "-A", "--field-selector", "status.phase=Running"):
        if pod["spec"].get("nodeName") in names:
            for container in pod["spec"]["containers"]:
                requests = container.get("resources", {}).get("requests", {})
                requested_cpu += quantity(requests.get("cpu", "0"))
                requested_memory += quantity(requests.get("memory", "0"))
    types = {}
    for node in nodes:
        name = node["metadata"]["labels"].get("node.kubernetes.io/instance-type", "?")
        types[name] = types.get(name, 0) + 1
    figures = {
        "nodes": len(nodes),
        "cost_per_hour": sum(price(node["metadata"]["labels"]) for node in nodes),
        "cpu_utilization": requested_cpu / max(allocatable_cpu, 1e-9),
        "memory_utilization": requested_memory / max(allocatable_memory, 1e-9),
        "types": types,
    }
    print(f"{label:<28} nodes {figures['nodes']:>3}  ${figures['cost_per_hour']:8.3f}/h  "
          f"CPU {figures['cpu_utilization']:.3f}  memory {figures['memory_utilization']:.3f}  "
          f"({', '.join(f'{count}x {name}' for name, count in sorted(types.items()))})")
    print(json.dumps(figures))


main()
