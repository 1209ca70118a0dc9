"""Prints the identical-input comparison table (hack/bench-scheduling-vs-karpenter.sh).

Arguments: the run's directory (stoker.log and karpenter-*.log in it) and criterion's output
directory. stoker's pods/s is criterion's median; its nodes and $/h come from the benchmark's own
line. Karpenter's figures come from the helper's `H2H {json}` lines.
"""

import json
import re
import sys
from pathlib import Path

run, criterion = Path(sys.argv[1]), Path(sys.argv[2])
TYPE_SETS = {"types-karpenter.json": "identical-karpenter-types", "types-real-catalog.json": "identical-real-catalog"}

stoker = {}
for line in (run / "stoker.log").read_text().splitlines():
    match = re.match(r"(identical-\S+) pods=(\d+) .*nodes=(\d+) unschedulable=(\d+) .*cost_per_hour=([\d.]+)", line)
    if match:
        group, pods = match[1], int(match[2])
        estimates = json.loads((criterion / group / str(pods) / "new" / "estimates.json").read_text())
        seconds = estimates["median"]["point_estimate"] / 1e9
        stoker[group, pods] = {"pods_per_second": pods / seconds, "nodes": int(match[3]),
                               "unschedulable": int(match[4]), "cost_per_hour": float(match[5])}

print("| types | pods | Karpenter pods/s | stoker pods/s | × | Karpenter nodes | stoker nodes "
      "| Karpenter $/h | stoker $/h | stoker vs Karpenter $/h |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for log in sorted(run.glob("karpenter-*.log")):
    for line in log.read_text().splitlines():
        if not line.startswith("H2H "):
            continue
        k = json.loads(line[4:])
        group = TYPE_SETS[k["types"]]
        s = stoker.get((group, k["pods"]))
        if s is None:
            sys.exit(f"stoker has no result for {group} at {k['pods']} pods")
        for tool, figures in (("Karpenter", k), ("stoker", s)):
            if figures["unschedulable"]:
                print(f"warning: {tool} left {figures['unschedulable']} pods unschedulable "
                      f"({group}, {k['pods']} pods)", file=sys.stderr)
        print(f"| {group.removeprefix('identical-')} | {k['pods']:,} | {k['pods_per_second']:,.0f} "
              f"| {s['pods_per_second']:,.0f} | {s['pods_per_second'] / k['pods_per_second']:,.0f} "
              f"| {k['nodes']:,} | {s['nodes']:,} | {k['cost_per_hour']:,.2f} | {s['cost_per_hour']:,.2f} "
              f"| {100 * (s['cost_per_hour'] / k['cost_per_hour'] - 1):+.1f}% |")
