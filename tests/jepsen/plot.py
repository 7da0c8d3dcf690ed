#!/usr/bin/env python3
"""Renders a strom-jepsen history as a timeline PNG.

    plot.py history.jsonl timeline.png

Three panels over the run's seconds: acknowledged and failed sends per second, the latency of
acknowledged sends (p50, p99 and max per second of completion, log scale), and the fault
windows, one row per fault kind. Fault windows are also shaded behind the first two panels,
one colour per kind. Only `send` and `nemesis` lines are parsed, so long histories stay quick.
"""

import json
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

COLOURS = {
    "kill": "#d62728",
    "pause": "#9467bd",
    "partition": "#1f77b4",
    "clock": "#bcbd22",
    "disk": "#8c564b",
    "disk-full": "#e377c2",
    "wipe": "#ff7f0e",
    "crash-all": "#000000",
    "churn": "#17becf",
}


def percentile(sorted_values, q):
    if not sorted_values:
        return 0
    i = min(len(sorted_values) - 1, int(round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


def load(path):
    ok = defaultdict(int)
    failed = defaultdict(int)
    latencies = defaultdict(list)
    open_windows = {}
    windows = []  # (fault, target, start_s, end_s, detail)
    healed = None  # when the schedule ended and everything was healed
    last_t = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if '"type":"send"' in line:
                e = json.loads(line)
                t = e["t_ms"]
                last_t = max(last_t, t)
                sec = t // 1000
                if e["outcome"] == "ok":
                    ok[sec] += 1
                    latencies[sec].append(max(0, t - e["invoked_ms"]))
                else:
                    failed[sec] += 1
            elif '"type":"nemesis"' in line:
                e = json.loads(line)
                t = e["t_ms"]
                last_t = max(last_t, t)
                key = (e["fault"], e["target"])
                if e["phase"] == "start":
                    open_windows.setdefault(key, []).append((t, e.get("detail", "")))
                elif open_windows.get(key):
                    start, detail = open_windows[key].pop(0)
                    windows.append((e["fault"], e["target"], start / 1000, t / 1000, detail))
            elif '"nemesis: everything healed"' in line:
                healed = json.loads(line)["t_ms"] / 1000
                last_t = max(last_t, healed * 1000)
            elif '"t_ms"' in line:
                # Other events only stretch the time axis.
                try:
                    last_t = max(last_t, json.loads(line)["t_ms"])
                except (ValueError, KeyError):
                    pass
    for (fault, target), starts in open_windows.items():
        for start, detail in starts:
            windows.append((fault, target, start / 1000, last_t / 1000, detail + " (never closed)"))
    return ok, failed, latencies, windows, healed, last_t / 1000


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    ok, failed, latencies, windows, healed, end = load(sys.argv[1])
    seconds = list(range(int(end) + 1))
    kinds = sorted({w[0] for w in windows}, key=lambda k: list(COLOURS).index(k) if k in COLOURS else 99)

    fig, (ax1, ax2, ax3) = plt.subplots(
        3, 1, figsize=(16, 9), sharex=True, gridspec_kw={"height_ratios": [3, 3, max(1, len(kinds)) * 0.45 + 0.6]}
    )
    for ax in (ax1, ax2):
        for fault, _target, start, stop, _detail in windows:
            ax.axvspan(start, max(stop, start + 0.2), color=COLOURS.get(fault, "grey"), alpha=0.12, lw=0)

    ax1.plot(seconds, [ok.get(s, 0) for s in seconds], color="#2ca02c", lw=1.2, label="acknowledged")
    ax1.plot(seconds, [failed.get(s, 0) for s in seconds], color="#d62728", lw=1.2, label="failed / unknown")
    ax1.set_ylabel("sends per second")
    ax1.legend(loc="upper left", fontsize=8)
    ax1.grid(alpha=0.3)

    # Seconds without an acknowledgement are gaps in the lines, not interpolated.
    nan = float("nan")
    ordered = {s: sorted(v) for s, v in latencies.items()}
    p50 = [percentile(ordered[s], 0.50) if s in ordered else nan for s in seconds]
    p99 = [percentile(ordered[s], 0.99) if s in ordered else nan for s in seconds]
    mx = [ordered[s][-1] if s in ordered else nan for s in seconds]
    ax2.plot(seconds, p50, lw=1, label="p50")
    ax2.plot(seconds, p99, lw=1, label="p99")
    ax2.plot(seconds, mx, lw=0.8, ls=":", label="max")
    ax2.set_yscale("log")
    ax2.set_ylabel("ack latency (ms)")
    ax2.legend(loc="upper left", fontsize=8)
    ax2.grid(alpha=0.3, which="both")

    for row, kind in enumerate(kinds):
        # Overlapping windows of one kind share the row in lanes.
        mine = sorted((s, e, t) for f, t, s, e, _d in windows if f == kind)
        lane_ends = []
        placed = []
        for s, e, t in mine:
            lane = next((i for i, end_ in enumerate(lane_ends) if end_ <= s), len(lane_ends))
            if lane == len(lane_ends):
                lane_ends.append(e)
            else:
                lane_ends[lane] = e
            placed.append((s, e, t, lane))
        lanes = max(1, len(lane_ends))
        height = 0.8 / lanes
        for s, e, t, lane in placed:
            y = row - 0.4 + lane * height
            ax3.broken_barh([(s, max(e - s, 0.2))], (y, height * 0.95), facecolors=COLOURS.get(kind, "grey"))
            ax3.text(s, y + height / 2, t, fontsize=6, va="center", ha="left",
                     color="white" if kind == "crash-all" else "black")
    ax3.set_yticks(range(len(kinds)))
    ax3.set_yticklabels(kinds, fontsize=8)
    ax3.set_ylim(-0.6, max(len(kinds), 1) - 0.4)
    ax3.set_xlabel("seconds since the start of the run")
    ax3.grid(alpha=0.3, axis="x")
    ax3.set_xlim(0, max(end, 1))
    if healed is not None:
        for ax in (ax1, ax2, ax3):
            ax.axvline(healed, color="grey", ls="--", lw=1)
        ax1.annotate("schedule over, all healed", (healed, 1), xycoords=("data", "axes fraction"),
                     xytext=(3, -12), textcoords="offset points", fontsize=8, color="grey")

    handles = [Patch(color=COLOURS.get(k, "grey"), alpha=0.5, label=k) for k in kinds]
    if handles:
        fig.legend(handles=handles, loc="upper right", ncol=len(handles), fontsize=8, title="fault windows")
    total_ok, total_failed = sum(ok.values()), sum(failed.values())
    fig.suptitle(
        f"strom-jepsen: {total_ok} acknowledged, {total_failed} failed or unknown sends, {len(windows)} fault windows",
        x=0.01,
        ha="left",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
