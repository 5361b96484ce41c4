#!/usr/bin/python3
"""hack/plot-soak.py SOAK.csv OUT.png -- draw the soak's samples (tests/soak.rs writes them):
the provisioner's resident memory, open file descriptors and threads over time, with the claims
created and deleted so far, so a reader sees at a glance whether anything grows.

Needs matplotlib (Debian: apt-get install python3-matplotlib); run it with /usr/bin/python3.
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, out = sys.argv[1], sys.argv[2]
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit(f"{src}: no samples")
    minutes = [float(r["seconds"]) / 60 for r in rows]
    rss = [float(r["rss_kib"]) / 1024 for r in rows]
    fds = [int(r["open_fds"]) for r in rows]
    threads = [int(r["threads"]) for r in rows]
    claims = [int(r["claims"]) for r in rows]

    fig, axes = plt.subplots(3, 1, figsize=(8, 6.5), sharex=True)
    axes[0].plot(minutes, rss, color="tab:blue")
    axes[0].set_ylabel("resident memory (MiB)")
    axes[0].set_ylim(0, max(rss) * 1.25)
    twin = axes[0].twinx()
    twin.plot(minutes, claims, color="tab:gray", linestyle=":", linewidth=1)
    twin.set_ylabel("claims created and deleted", color="tab:gray")
    axes[1].plot(minutes, fds, color="tab:orange")
    axes[1].set_ylabel("open fds")
    axes[1].set_ylim(0, max(fds) * 1.5)
    axes[2].plot(minutes, threads, color="tab:green")
    axes[2].set_ylabel("threads")
    axes[2].set_ylim(0, max(threads) * 1.5)
    axes[2].set_xlabel("minutes")
    for ax in axes:
        ax.grid(True, alpha=0.3)
    fig.suptitle(
        f"rbd-provisioner soak: {claims[-1]} claims created and deleted in "
        f"{minutes[-1]:.0f} min, sampled every {60 * (minutes[1] - minutes[0]):.0f} s"
        if len(minutes) > 1
        else "rbd-provisioner soak"
    )
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
