"""The simulator's table and figures (load, variants in use and cost over time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.sim.engine import Simulation


def table(summary: dict[str, Any]) -> str:
    rows = [
        f"workload {summary['workload']}: {summary['duration_s']} s, {summary['queries']} "
        f"queries, mean {summary['mean_qps']:.1f} q/s, peak {summary['peak_qps']:.1f} q/s",
        f"{'policy':16} {'served q/s':>10} {'SLO viol.':>10} {'accuracy':>9} {'cost $':>9} "
        f"{'actions':>8}",
    ]
    for name, r in summary["policies"].items():
        accuracy = f"{r['mean_accuracy']:.4f}" if r["mean_accuracy"] is not None else "-"
        rows.append(
            f"{name:16} {r['throughput_qps']:10.1f} {r['slo_violation_rate']:10.4f} "
            f"{accuracy:>9} {r['cost_usd']:9.3f} {r['scaling_actions']:8d}"
        )
    for name, r in summary.get("ratios_vs_ours", {}).items():
        fewer = r["violations_x_fewer"]
        rows.append(
            f"ours vs {name:14}: cost {r['cost_x_lower']}x lower, violations "
            f"{fewer if fewer is not None else 'n/a'}x fewer "
            f"({r['violations_ours_vs_baseline'][0]:.4f} vs "
            f"{r['violations_ours_vs_baseline'][1]:.4f}), throughput {r['throughput_x']}x"
        )
    return "\n".join(rows)


def plot_run(sim: Simulation, policy: str, out: Path) -> Path:
    """One PNG per policy: load, replicas per variant (stacked), fleet cost per hour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tl = sim.timeline
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    axes[0].plot(tl.t_s, tl.load_qps, lw=0.8)
    axes[0].set_ylabel("queries/s")
    axes[0].set_title(f"{policy}: load, variants in use, cost")
    names = sorted({v for counts in tl.variants for v in counts})
    if names:
        stacks = [[counts.get(v, 0) for counts in tl.variants] for v in names]
        axes[1].stackplot(tl.t_s, stacks, labels=names)
        axes[1].legend(fontsize=6, loc="upper left", ncol=2)
    axes[1].set_ylabel("replicas")
    axes[2].plot(tl.t_s, tl.cost_per_hour, lw=0.8, color="black")
    axes[2].set_ylabel("fleet $/h")
    axes[2].set_xlabel("simulated seconds")
    fig.tight_layout()
    path = out / f"{policy}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
