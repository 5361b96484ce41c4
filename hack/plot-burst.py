#!/usr/bin/python3
"""hack/plot-burst.py OURS.csv PEER.csv OUT.png -- draw the 100-claim burst of
`cargo bench --bench provisioning` (it writes target/bench/burst-ours.csv and burst-peer.csv):
for each provisioner, how many claims had been handed over (annotated by
kube-controller-manager), had their PV, and were Bound, over the seconds after the first
create. The gaps between the curves show where each one waits.

Needs matplotlib (Debian: apt-get install python3-matplotlib); run it with /usr/bin/python3.
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SERIES = [
    ("annotated_ms", "handed over (annotated)", ":"),
    ("pv_ms", "PV exists", "-"),
    ("bound_ms", "Bound", "--"),
]


def cumulative(rows, column):
    times = sorted(float(r[column]) / 1000 for r in rows if r[column])
    return [0.0] + times, list(range(len(times) + 1))


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    ours, peer, out = sys.argv[1:]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    end = 0.0
    for ax, (path, title) in zip(
        axes, [(ours, "rbd-provisioner"), (peer, "in-tree kubernetes.io/rbd")]
    ):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        for column, label, style in SERIES:
            x, y = cumulative(rows, column)
            if len(x) > 1:
                ax.step(x, y, where="post", linestyle=style, label=label)
                end = max(end, x[-1])
        ax.set_title(f"{title}: {len(rows)} claims created at t=0")
        ax.set_xlabel("seconds after the first create")
        ax.grid(alpha=0.3)
    for ax in axes:
        ax.set_xlim(0, end * 1.02)
    axes[0].set_ylabel("claims")
    axes[0].legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main()
