"""Prints the race's table (hack/bench-vs-karpenter.sh) from its results.jsonl."""

import json
import sys

runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]


def planned(run):
    """`stoker plan` for the scaled-in pods from scratch, where the run has it (stoker's)."""
    plan = run.get("plan_from_scratch")
    return "" if plan is None else f" (plan: {plan:.2f})"


def final_cost(run):
    """When $/h came within 1% of where it ended, where the run traced it."""
    at = run.get("final_cost_seconds")
    return "–" if at is None else f"{at:.0f} s"


print("| scenario | tool | scale-out | nodes | $/h | CPU / memory reserved | after scale-in: last disruption "
      "| final $/h (±1%) from "
      "| nodes | $/h | CPU / memory reserved | controller CPU s (over) | peak RSS | launch calls meeting refused capacity |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for run in runs:
    out, after = run["out"], run["in"]
    print(f"| {run['scenario']} | {run['tool']} | {run['scale_out_seconds']:.1f} s | {out['nodes']} "
          f"| {out['cost_per_hour']:.2f} | {out['cpu_utilization']:.0%} / {out['memory_utilization']:.0%} "
          f"| {run['last_disruption_seconds']:.0f} s | {final_cost(run)} | {after['nodes']} | {after['cost_per_hour']:.2f}{planned(run)} "
          f"| {after['cpu_utilization']:.0%} / {after['memory_utilization']:.0%} "
          f"| {run['cpu_seconds']:.1f} ({run.get('seconds', 0):.0f} s) "
          f"| {run['peak_rss_mib']:.0f} MiB | {run.get('refused_launches', 0) if run['scenario'] == 'spot' else '–'} |")
