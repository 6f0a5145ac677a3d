"""The staged rollout's error rates, by simulation of the rule production runs.

For each simulated fleet (the demo's: 4 robots, shares 0.5 and 1.0; the default plan's
shares 0.25, 0.5, 1.0 on 4 and 8 robots) and each true effect, it simulates rollouts whose
heartbeats come from candidate and champion rates, judged window by window by
``services/rollout/rule.py`` with the plan ``FLYWHEEL_ROLLOUT_*`` builds (the environment's
settings, so a changed alpha or cap shows here), and prints, per row: the share promoted,
rolled back and paused at a cap, and the mean candidate episodes until the rollout ended.
For "as good" the rolled-back share is the false-rollback rate; for a worse candidate the
promoted share is the missed-regression rate.

    .venv/bin/python bench/rollout_rule.py [--runs 4000] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import tempfile

from services.config import Settings
from services.rollout.plan import RolloutPlan
from services.rollout.simulate import EFFECTS, Effect, SimulatedFleet, simulate

FLEETS = (
    ("demo: 4 robots, shares 0.5, 1.0", (0.5, 1.0), SimulatedFleet(robots=4)),
    ("default plan, 4 robots", (0.25, 0.5, 1.0), SimulatedFleet(robots=4)),
    ("default plan, 8 robots", (0.25, 0.5, 1.0), SimulatedFleet(robots=8)),
)
# A fleet whose operators seldom take over: the intervention test has few events to go on.
RARE = (
    "default plan, 8 robots, 0.1 takeovers/episode",
    (0.25, 0.5, 1.0),
    SimulatedFleet(robots=8, interventions_per_episode=0.1),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("FLYWHEEL_HOME", tempfile.mkdtemp(prefix="rollout-rule-"))
    settings = Settings()
    r = settings.rollout
    print(
        f"alpha {r.alpha} (rollout), beta {r.beta}, built to catch +{r.failure_increase} failures "
        f"or {r.worse_ratio}x takeovers; min {r.min_episodes}, max {r.max_episodes} candidate "
        f"episodes or {r.max_hours} h per stage; {args.runs} rollouts per row, seed {args.seed}; "
        "each robot works 4 episodes of 3 min per window; champion fails 50%, 1 takeover/episode"
    )
    print()
    print("| fleet | candidate | promoted | rolled back | paused | candidate episodes |")
    print("| --- | --- | --- | --- | --- | --- |")
    rows = [(f, e) for f in FLEETS for e in EFFECTS] + [
        (RARE, Effect("as good")),
        (RARE, EFFECTS[3]),
    ]
    for (label, shares, fleet), effect in rows:
        plan = RolloutPlan.from_settings(settings.updated(rollout={"stages": shares}))
        rates = simulate(plan, fleet, effect, runs=args.runs, seed=args.seed)
        print(
            f"| {label} | {effect.name} | {rates['promoted']:.1%} | {rates['rolled back']:.1%} "
            f"| {rates['paused']:.1%} | {rates['candidate episodes']:.0f} |"
        )


if __name__ == "__main__":
    main()
