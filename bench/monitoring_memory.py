"""The monitoring stack's own memory on the deployed sandbox host (goal: under 300 MB RSS for all of it).

Reads, over SSH, each monitoring unit's resident memory (VmRSS of its main process, and its peak VmHWM), the
Prometheus head series and its data folder, then prints one table. Run it against a sandbox that has run a while
(the e2e tier, or `make demo` and a few requests), with the sandbox's own env (SANDBOX_SSH_PORT, ...):

    .venv/bin/python bench/monitoring_memory.py [--samples 6 --every 10]

RSS moves with every scrape: it samples several times and prints the median and the largest.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
UNITS = ("prometheus", "prometheus-alertmanager", "prometheus-node-exporter", "prometheus-blackbox-exporter",
         "prometheus-redis-exporter", "prometheus-nginx-exporter")


def ssh(command: str) -> str:
    return subprocess.run(
        ["ssh", "-q", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-i", str(REPO / ".sandbox" / "id_ed25519"), "-p", os.environ.get("SANDBOX_SSH_PORT", "2222"),
         "root@127.0.0.1", command], capture_output=True, text=True, check=True, timeout=120).stdout


def sample() -> dict[str, tuple[int, int]]:
    """{unit: (VmRSS kB, VmHWM kB)}"""
    script = ("for u in " + " ".join(UNITS) + "; do pid=$(systemctl show -p MainPID --value $u); "
              "echo $u $(awk '/VmRSS|VmHWM/ {print $2}' /proc/$pid/status | tr '\\n' ' '); done")
    out = {}
    for line in ssh(script).splitlines():
        parts = line.split()
        if len(parts) == 3:
            out[parts[0]] = (int(parts[2]), int(parts[1]))   # awk prints VmHWM before VmRSS
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--every", type=float, default=10.0)
    args = ap.parse_args(argv)
    rss: dict[str, list[int]] = {u: [] for u in UNITS}
    peak: dict[str, int] = {u: 0 for u in UNITS}
    for i in range(args.samples):
        for unit, (now, hwm) in sample().items():
            rss[unit].append(now)
            peak[unit] = max(peak[unit], hwm)
        if i + 1 < args.samples:
            time.sleep(args.every)
    query = ("import json, urllib.request; print(json.load(urllib.request.urlopen('http://127.0.0.1:9090/prometheus/api/"
             "v1/query?query=prometheus_tsdb_head_series'))['data']['result'][0]['value'][1])")
    series = ssh(f'python3 -c "{query}"').strip()
    disk = ssh("du -sk /var/lib/prometheus/metrics2 | cut -f1").strip()
    interval = ssh("grep -m1 scrape_interval /etc/prometheus/whisper-platform/prometheus.yml").split()[-1]
    print(f"monitoring stack on the sandbox host ({args.samples} samples, {args.every:g} s apart; "
          f"scrape_interval {interval})\n")
    print("| unit | RSS median (MB) | RSS max (MB) | peak VmHWM (MB) |")
    print("| --- | --- | --- | --- |")
    total_med = total_max = total_hwm = 0.0
    for unit in UNITS:
        med, top, hwm = statistics.median(rss[unit]) / 1024, max(rss[unit]) / 1024, peak[unit] / 1024
        total_med, total_max, total_hwm = total_med + med, total_max + top, total_hwm + hwm
        print(f"| {unit} | {med:.1f} | {top:.1f} | {hwm:.1f} |")
    print(f"| **all** | **{total_med:.1f}** | **{total_max:.1f}** | **{total_hwm:.1f}** |")
    print(f"\nhead series: {series}; data folder: {int(disk) / 1024:.1f} MB; goal: under 300 MB RSS for all of it "
          f"({'met' if total_max < 300 else 'NOT met'}: {total_max:.0f} MB at most)")
    print(json.dumps({"rss_median_mb": round(total_med, 1), "rss_max_mb": round(total_max, 1),
                      "hwm_mb": round(total_hwm, 1), "head_series": int(float(series))}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
