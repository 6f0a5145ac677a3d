"""The flywheel benchmark's figures: per night and arm, the headline comparisons, the plots.

Rates are pooled over seeds with Wilson intervals; differences between arms or nights are
paired on the same evaluation episodes (bench seed, task, evaluation seed) and get a
percentile bootstrap interval (scipy). Definitions (docs/benchmark.md):

- success: autonomous closed-loop success of the night's champion on the gate's fixed
  evaluation seeds, per task and averaged over tasks;
- interventions per robot-hour, operator time share: from the fleet's shift (simulated time);
- return on human effort: the fleet's successful episodes per operator-minute, successes /
  (1 + operator minutes), after Fleet-DAgger's ROHE (Hoque et al., CoRL 2022);
- throughput: the fleet's successful episodes per robot-hour;
- forgetting: after the task-mix shift, how far each task the fleet stopped working has
  fallen below its best before the shift (mean over those tasks; 0 when none fell).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.stats import binomtest, bootstrap

TARGETS = {
    "gain": 0.40,  # success points gained from the weak start within 3 nights
    "sirius_over_iwr": 0.05,
    "effort_reduction": 5.0,
    "forgetting_with_replay": 0.05,
}


def wilson(k: int, n: int) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    ci = binomtest(k, n).proportion_ci(method="wilson")
    return float(ci.low), float(ci.high)


def paired_ci(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Mean of a - b on paired outcomes, with a 95% percentile bootstrap interval."""
    diff = a.astype(float) - b.astype(float)
    if len(diff) < 2 or np.all(diff == diff[0]):
        return float(diff.mean()) if len(diff) else 0.0, float(diff.mean()), float(diff.mean())
    result = bootstrap(
        (diff,),
        np.mean,
        confidence_level=0.95,
        method="percentile",
        n_resamples=4999,
        random_state=0,
    )
    return (
        float(diff.mean()),
        float(result.confidence_interval.low),
        float(result.confidence_interval.high),
    )


class Results:
    """The worker records, indexed by (arm, seed, night)."""

    def __init__(self, records: list[dict], tasks: tuple[str, ...]) -> None:
        self.tasks = tasks
        self.by = {(r["arm"], r["seed"], r["night"]): r for r in records}
        self.arms = list(dict.fromkeys(r["arm"] for r in records))
        self.seeds = sorted({r["seed"] for r in records})
        self.nights = sorted({r["night"] for r in records})

    def get(self, arm: str, night: int) -> list[dict]:
        return [self.by[(arm, s, night)] for s in self.seeds if (arm, s, night) in self.by]

    def outcomes(self, arm: str, night: int, tasks: tuple[str, ...] | None = None) -> np.ndarray:
        """Every evaluation outcome of that night's champion, in (seed, task, eval seed) order."""
        tasks = tasks or self.tasks
        rows = [r["eval"][t] for r in self.get(arm, night) if "eval" in r for t in tasks]
        return np.concatenate([np.asarray(x, bool) for x in rows]) if rows else np.zeros(0, bool)

    def success(self, arm: str, night: int, task: str | None = None) -> tuple[float, float, float]:
        o = self.outcomes(arm, night, (task,) if task else None)
        low, high = wilson(int(o.sum()), len(o))
        return (float(o.mean()) if len(o) else float("nan")), low, high

    def shift_sum(self, arm: str, night: int, key: str) -> float:
        return sum(r["shift"][key] for r in self.get(arm, night) if "shift" in r)

    def forgetting(self, arm: str, night: int, *, candidate: bool = False) -> float | None:
        """Mean over seeds of the mean drop of tasks the fleet no longer works: of the night's
        champion, or (``candidate``) of the candidate the gate judged that night, promoted or
        not, against the best champion before the shift."""
        drops = []
        for seed in self.seeds:
            record = self.by.get((arm, seed, night)) or {}
            judged = record.get("candidate", {}) if candidate else record
            if "eval" not in judged:
                continue
            now = judged["eval"]
            dropped = [t for t in self.tasks if t not in record["fleet_tasks"]]
            if not dropped:
                return None
            before = [
                self.by[(arm, seed, n)]
                for n in self.nights
                if n < night
                and (arm, seed, n) in self.by
                and set(self.by[(arm, seed, n)]["fleet_tasks"]) == set(self.tasks)
                and "eval" in self.by[(arm, seed, n)]
            ]
            if not before:
                return None
            per_task = [
                max(0.0, max(np.mean(b["eval"][t]) for b in before) - np.mean(now[t]))
                for t in dropped
            ]
            drops.append(float(np.mean(per_task)))
        return float(np.mean(drops)) if drops else None


def night_rows(res: Results) -> list[dict]:
    rows = []
    for arm in res.arms:
        for night in res.nights:
            recs = res.get(arm, night)
            if not recs:
                continue
            value, low, high = res.success(arm, night)
            row = {
                "arm": arm,
                "night": night,
                "seeds": len(recs),
                "success": value,
                "success_low": low,
                "success_high": high,
            }
            for task in res.tasks:
                v, lo, hi = res.success(arm, night, task)
                row[f"success_{task}"] = v
                row[f"success_{task}_low"] = lo
                row[f"success_{task}_high"] = hi
            episodes = res.shift_sum(arm, night, "episodes")
            if episodes:
                robot_hours = res.shift_sum(arm, night, "robot_hours")
                operator_minutes = res.shift_sum(arm, night, "operator_hours") * 60
                successes = res.shift_sum(arm, night, "successes")
                row.update(
                    fleet_episodes=episodes,
                    fleet_autonomous_success=res.shift_sum(arm, night, "autonomous_successes")
                    / episodes,
                    interventions_per_robot_hour=res.shift_sum(arm, night, "interventions")
                    / robot_hours,
                    operator_time_share=res.shift_sum(arm, night, "operator_steps")
                    / res.shift_sum(arm, night, "steps"),
                    return_on_human_effort=successes
                    / len(recs)
                    / (1 + operator_minutes / len(recs)),
                    successes_per_robot_hour=successes / robot_hours,
                )
            row["forgetting"] = res.forgetting(arm, night)
            row["candidate_forgetting"] = res.forgetting(arm, night, candidate=True)
            cands = [r["candidate"] for r in recs if "candidate" in r]
            if cands:
                row.update(
                    dataset_steps=float(np.mean([c["dataset_steps"] for c in cands])),
                    train_seconds=float(np.mean([c["train_seconds"] or 0 for c in cands])),
                    promoted=f"{sum(c['promoted'] for c in cands)}/{len(cands)}",
                    verdicts=",".join(c["verdict"] or "-" for c in cands),
                )
            rows.append(row)
    return rows


def headline(res: Results) -> list[str]:
    """The literature's targets against what was measured, one line each."""
    lines = []
    last_mixed = [
        n
        for n in res.nights
        if n >= 1 and all(set(r["fleet_tasks"]) == set(res.tasks) for r in res.get(res.arms[0], n))
    ]
    window = [n for n in last_mixed if n <= 3]
    n3 = max(window) if window else None
    if n3 is not None:
        last = res.nights[-1]
        for arm in res.arms:
            gain, lo, hi = paired_ci(res.outcomes(arm, n3), res.outcomes(arm, 0))
            end, end_lo, end_hi = paired_ci(res.outcomes(arm, last), res.outcomes(arm, 0))
            ok = "meets" if lo >= TARGETS["gain"] else "short of"
            lines.append(
                f"- **{arm}**: success {res.success(arm, 0)[0]:.0%} at night 0 -> "
                f"{res.success(arm, n3)[0]:.0%} at night {n3}: gain {gain:+.0%} "
                f"[{lo:+.0%}, {hi:+.0%}] ({ok} the +40-point target); "
                f"{res.success(arm, last)[0]:.0%} at night {last}: {end:+.0%} "
                f"[{end_lo:+.0%}, {end_hi:+.0%}]"
            )
    if {"sirius", "iwr"} <= set(res.arms):
        diffs = []
        for night in res.nights[1:]:
            d, lo, hi = paired_ci(res.outcomes("sirius", night), res.outcomes("iwr", night))
            diffs.append(f"night {night} {d:+.0%} [{lo:+.0%}, {hi:+.0%}]")
        lines.append("- **Sirius - IWR** (paired, 95% CI): " + "; ".join(diffs))
    ref = "none" if "none" in res.arms else None
    for arm in res.arms:
        first = res.get(arm, 1)
        if not first or arm == ref or n3 is None:
            continue
        a = _rate(res, arm, 1, "interventions", "robot_hours")
        b = _rate(res, arm, n3, "interventions", "robot_hours")
        if a and b:
            lines.append(
                f"- **{arm}** interventions per robot-hour: night 1 {a:.0f} -> night {n3} {b:.0f} "
                f"({a / b:.1f}x fewer; target 5x)"
            )
        elif a:
            lines.append(f"- **{arm}** interventions per robot-hour: night 1 {a:.0f} -> 0")
    last = res.nights[-1]
    for arm in ("sirius", "sirius-no-replay"):
        f = res.forgetting(arm, last) if arm in res.arms else None
        if f is None:
            continue
        line = f"- **{arm}** forgetting at night {last}: {f:.3f} (target <= 0.05 with replay)"
        after = [
            c
            for n in res.nights
            if (c := res.forgetting(arm, n, candidate=True)) is not None
            and res.forgetting(arm, n) is not None
        ]
        if after:
            line += (
                f"; its candidates after the shift, promoted or not: {np.mean(after):.3f} "
                f"(mean over {len(after)} nights)"
            )
        lines.append(line)
    worse, total, below = 0, 0, []
    for (arm, seed, night), r in sorted(res.by.items()):
        if "audit" not in r:
            continue
        total += 1
        cand = np.concatenate([np.asarray(r["audit"]["candidate"][t]) for t in res.tasks])
        parent = np.concatenate([np.asarray(r["audit"]["parent"][t]) for t in res.tasks])
        d, lo, hi = paired_ci(cand, parent)
        if hi < 0:
            worse += 1
        if d < 0:
            below.append(f"{arm} s{seed} n{night} {d:+.0%} [{lo:+.0%}, {hi:+.0%}]")
    lines.append(
        f"- **gate**: {total} promotions re-checked on independent seeds; {worse} significantly "
        f"worse than the champion they replaced"
        + (f"; point estimate below it: {'; '.join(below)}" if below else "")
    )
    return lines


def _rate(res: Results, arm: str, night: int, num: str, den: str) -> float | None:
    d = res.shift_sum(arm, night, den)
    return res.shift_sum(arm, night, num) / d if d else None


def _fmt(value, kind: str = "pct") -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    if kind == "pct":
        return f"{value:.0%}"
    if kind == "int":
        return f"{value:,.0f}"
    if kind == "f2":
        return f"{value:.2f}"
    if kind == "f3":
        return f"{value:.3f}"
    return str(value)


def markdown_table(rows: list[dict], tasks: tuple[str, ...]) -> str:
    cols = [
        ("arm", "arm", "str"),
        ("night", "night", "str"),
        ("success [95% CI]", None, "ci"),
        *[(t, f"success_{t}", "pct") for t in tasks],
        ("fleet autonomous", "fleet_autonomous_success", "pct"),
        ("interventions / robot-h", "interventions_per_robot_hour", "int"),
        ("operator share", "operator_time_share", "pct"),
        ("ROHE", "return_on_human_effort", "f2"),
        ("successes / robot-h", "successes_per_robot_hour", "int"),
        ("forgetting", "forgetting", "f3"),
        ("candidate forgetting", "candidate_forgetting", "f3"),
        ("dataset steps", "dataset_steps", "int"),
        ("train s", "train_seconds", "int"),
        ("promoted", "promoted", "str"),
    ]
    out = ["| " + " | ".join(c[0] for c in cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        cells = []
        for _, key, kind in cols:
            if kind == "ci":
                cells.append(
                    f"{row['success']:.0%} [{row['success_low']:.0%}, {row['success_high']:.0%}]"
                )
            else:
                cells.append(_fmt(row.get(key), kind))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def plots(res: Results, rows: list[dict], out: Path, mode: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    by_arm = defaultdict(list)
    for row in rows:
        by_arm[row["arm"]].append(row)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm, arm_rows in by_arm.items():
        x = [r["night"] for r in arm_rows]
        ax.plot(x, [r["success"] for r in arm_rows], marker="o", label=arm)
        ax.fill_between(
            x,
            [r["success_low"] for r in arm_rows],
            [r["success_high"] for r in arm_rows],
            alpha=0.12,
        )
    ax.set(
        xlabel="night",
        ylabel="autonomous success (all tasks)",
        ylim=(0, 1),
        title="Closed-loop success of the night's champion",
    )
    ax.legend(fontsize=8)
    paths.append(_save(fig, out / f"flywheel-{mode}-success.png"))

    fig, axes = plt.subplots(1, len(res.tasks), figsize=(4 * len(res.tasks), 3.8), sharey=True)
    for ax, task in zip(np.atleast_1d(axes), res.tasks, strict=True):
        for arm, arm_rows in by_arm.items():
            ax.plot(
                [r["night"] for r in arm_rows],
                [r[f"success_{task}"] for r in arm_rows],
                marker="o",
                label=arm,
            )
        ax.set(title=task, xlabel="night", ylim=(0, 1))
    np.atleast_1d(axes)[0].set_ylabel("autonomous success")
    np.atleast_1d(axes)[-1].legend(fontsize=7)
    paths.append(_save(fig, out / f"flywheel-{mode}-tasks.png"))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm, arm_rows in by_arm.items():
        pts = [
            (r["night"], r["interventions_per_robot_hour"])
            for r in arm_rows
            if r.get("interventions_per_robot_hour") is not None
        ]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=arm)
    ax.set(
        xlabel="night", ylabel="interventions per robot-hour", title="Operator effort on the fleet"
    )
    ax.legend(fontsize=8)
    paths.append(_save(fig, out / f"flywheel-{mode}-effort.png"))
    return paths


def _save(fig, path: Path) -> Path:
    from matplotlib.ticker import MaxNLocator

    for ax in fig.axes:  # nights are whole numbers
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def write_report(records: list[dict], config, out: Path, mode: str, minutes: float | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    res = Results(records, tuple(config.tasks))
    rows = night_rows(res)
    with (out / f"flywheel-{mode}.csv").open("w", newline="") as f:
        keys = list(dict.fromkeys(k for row in rows for k in row))
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    images = plots(res, rows, out, mode)
    lines = headline(res)
    text = "\n".join(
        [
            f"# Flywheel benchmark ({mode})",
            "",
            f"{len(res.arms)} arms x {len(res.seeds)} seeds x {len(res.nights) - 1} nights "
            f"(night 0: {config.lab_demos} lab demos per task), tasks {', '.join(res.tasks)}; "
            f"{config.robots} robots x {config.episodes_per_robot} episodes per shift; "
            f"{config.eval_episodes} evaluation seeds per task; {config.train_steps} training "
            f"steps per night"
            + (
                f"; from night {config.shift_night} the fleet works {res.tasks[-1]} only"
                if config.shift_night
                else ""
            )
            + (f". Wall time {minutes:.0f} min." if minutes is not None else "."),
            "",
            "## Against the targets",
            "",
            *lines,
            "",
            "## Per night and arm (pooled over seeds)",
            "",
            markdown_table(rows, res.tasks),
            "",
            *[f"![{p.stem}]({p.name})" for p in images],
            "",
        ]
    )
    (out / f"flywheel-{mode}.md").write_text(text)
    print(text)
