#!/usr/bin/env python3
"""The cheapest set of at most MAX_NODES on-demand nodes whose summed allocatable CPU and memory
hold the given pods: a lower bound on any plan with that many nodes (it ignores how pods pack
onto each node). An exhaustive search, for small MAX_NODES (under a second at 5, far longer at
20). Reads the instance-types file the race exports for Karpenter
($STOKER_STATE/race/instance-types.json, written by `stoker kwok-instance-types`).

    hack/fewest-nodes-bound.py INSTANCE_TYPES_JSON MAX_NODES COUNTxCPUxMEMORY...

e.g. the race's basic scenario after scale-out, at most 5 nodes:

    hack/fewest-nodes-bound.py .local/bench/race/instance-types.json 5 500x900mx3100Mi 500x3500mx28Gi
"""

import itertools
import json
import re
import sys

UNITS = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(text):
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(text))
    if not match or match.group(2) not in UNITS:
        sys.exit(f"not a quantity: {text}")
    return float(match.group(1)) * UNITS[match.group(2)]


def on_demand_types(path):
    """(name, vCPU, GiB, cheapest on-demand $/h) of every amd64 type with an on-demand offering."""
    types = []
    for entry in json.load(open(path)):
        if entry.get("architecture") != "amd64":
            continue
        prices = [
            offering["Price"]
            for offering in entry["offerings"]
            if any(r["key"] == "karpenter.sh/capacity-type" and "on-demand" in r["values"] for r in offering["Requirements"])
        ]
        if prices:
            resources = entry["resources"]
            types.append((entry["name"], quantity(resources["cpu"]), quantity(resources["memory"]) / 2**30, min(prices)))
    return types


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    path, most = sys.argv[1], int(sys.argv[2])
    cpu = memory = 0.0
    for group in sys.argv[3:]:
        count, pod_cpu, pod_memory = group.split("x")
        cpu += int(count) * quantity(pod_cpu)
        memory += int(count) * quantity(pod_memory) / 2**30
    # A type another beats on CPU, memory and price at once can be swapped for it in any set, so
    # only the others are searched: cheapest first, depth first, a branch dropped once it costs as
    # much as the best set found or its free slots cannot make up what is missing.
    types = on_demand_types(path)
    useful = sorted(
        (t for t in types if not any(o[1] >= t[1] and o[2] >= t[2] and o[3] <= t[3] and o[1:] != t[1:] for o in types)),
        key=lambda t: t[3],
    )
    most_cpu, most_memory = max(t[1] for t in useful), max(t[2] for t in useful)
    best = [float("inf"), []]

    def search(start, slots, cpu_left, memory_left, price, chosen):
        if cpu_left <= 0 and memory_left <= 0:
            if price < best[0]:
                best[:] = [price, list(chosen)]
            return
        if slots == 0 or slots * most_cpu < cpu_left or slots * most_memory < memory_left:
            return
        for index in range(start, len(useful)):
            name, type_cpu, type_memory, type_price = useful[index]
            if price + type_price >= best[0]:
                break
            chosen.append(name)
            search(index, slots - 1, cpu_left - type_cpu, memory_left - type_memory, price + type_price, chosen)
            chosen.pop()

    search(0, most, cpu, memory, 0.0, [])
    print(f"pods need {cpu:.1f} vCPU and {memory:.0f} GiB; {len(useful)} types considered")
    if not best[1]:
        print(f"no set of at most {most} nodes holds them")
    else:
        print(f"cheapest set of at most {most} nodes: ${best[0]:.4f}/h: {', '.join(best[1])}")


main()
