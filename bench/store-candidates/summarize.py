"""Medians of the runs in results.tsv (and of the fsync probes), as a Markdown table."""
import statistics
import sys
from collections import defaultdict

rows = defaultdict(list)
with open(sys.argv[1]) as f:
    header = f.readline().rstrip("\n").split("\t")
    for line in f:
        r = dict(zip(header, line.rstrip("\n").split("\t")))
        rows[(r["body"], r["engine"])].append(r)


def med(runs, key, fmt):
    vals = [float(r[key]) for r in runs if r.get(key, "-") != "-"]
    return fmt(statistics.median(vals)) if vals else "-"


print("| body | engine | runs | msgs/s median (min-max) | commits/msg | commit p50 / p99 | CPU/msg | written/msg | disk at end | disk after close | peak RSS |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
order = {"journal": 0, "journal-prealloc": 1, "redb": 2, "fjall": 3}
for (body, engine), runs in sorted(rows.items(), key=lambda kv: (int(kv[0][0]), order.get(kv[0][1], 9))):
    rates = [float(r["msgs_per_s"]) for r in runs]
    print(
        f"| {body} B | {engine} | {len(runs)} "
        f"| {statistics.median(rates):.0f} ({min(rates):.0f}-{max(rates):.0f}) "
        f"| {med(runs, 'commits_per_msg', lambda v: f'{v:.3f}')} "
        f"| {med(runs, 'commit_p50_ms', lambda v: f'{v:.2f}')} / {med(runs, 'commit_p99_ms', lambda v: f'{v:.2f} ms')} "
        f"| {med(runs, 'cpu_us_per_msg', lambda v: f'{v:.0f} µs')} "
        f"| {med(runs, 'write_bytes_per_msg', lambda v: f'{v / 1024:.1f} KiB')} "
        f"| {med(runs, 'disk_bytes_open', lambda v: f'{v / 2**20:.1f} MiB')} "
        f"| {med(runs, 'disk_bytes_closed', lambda v: f'{v / 2**20:.1f} MiB')} "
        f"| {med(runs, 'peak_rss_kib', lambda v: f'{v / 1024:.1f} MiB')} |"
    )

if len(sys.argv) > 2:
    probes = defaultdict(list)
    with open(sys.argv[2]) as f:
        for line in f:
            for field in line.split("\t")[1:]:
                k, v = field.strip().split("=")
                probes[k].append(float(v))
    print()
    print("4 KiB append + fdatasync, median of the probes: " + ", ".join(
        f"{k.removesuffix('_ms')} {statistics.median(v):.2f} ms" for k, v in probes.items() if k != "count"))
