"""Prints the race's table (hack/bench-vs-karpenter.sh) from its results.jsonl."""

import json
import sys

runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]


def planned(run):
    """`stoker plan` for the scaled-in pods from scratch, where the run has it (stoker's)."""
    plan = run.get("plan_from_scratch")
    return "" if plan is None else f" (plan: {plan:.2f})"


def settled(run):
    """The settling time of consolidation: from when $/h stayed within 1% of where it ended, above or
    below. One-sided, a tool whose $/h dipped early and then rose for minutes would count as done at
    the dip, though its end was elsewhere. Read from the $/h traced at every NodeClaim change."""
    trace = run.get("cost_trace")
    if trace is None:
        return "–"
    final, at_band = run["in"]["cost_per_hour"], 0.0
    for at, cost in reversed(trace):
        if abs(cost - final) > final * 0.01:
            break
        at_band = max(0.0, at)
    return f"{at_band:.0f} s"


print("| scenario | tool | scale-out | nodes | $/h | CPU / memory reserved | after scale-in: last disruption "
      "| final $/h (±1%) from "
      "| nodes | $/h | CPU / memory reserved | controller CPU s (over) | peak RSS | launch calls meeting refused capacity |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for run in runs:
    out, after = run["out"], run["in"]
    print(f"| {run['scenario']} | {run['tool']} | {run['scale_out_seconds']:.1f} s | {out['nodes']} "
          f"| {out['cost_per_hour']:.2f} | {out['cpu_utilization']:.0%} / {out['memory_utilization']:.0%} "
          f"| {run['last_disruption_seconds']:.0f} s | {settled(run)} | {after['nodes']} | {after['cost_per_hour']:.2f}{planned(run)} "
          f"| {after['cpu_utilization']:.0%} / {after['memory_utilization']:.0%} "
          f"| {run['cpu_seconds']:.1f} ({run.get('seconds', 0):.0f} s) "
          f"| {run['peak_rss_mib']:.0f} MiB | {run.get('refused_launches', 0) if run['scenario'] == 'spot' else '–'} |")
