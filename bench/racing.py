"""Racing studies against the fixed max-seed design, simulated (issue 24): numpy, no training.

Replays thousands of synthetic studies. Per seed, each arm's score is its true mean + a seed
effect shared by every arm (it cancels in the pairs) + its own noise of SD paired_sd / √2, so each
arm's paired difference to the baseline has SD `paired_sd` and two arms' differences correlate 0.5
(they share the baseline's run). Each study is judged twice on the same draws:
- raced by `orchestrator.ablation.racing` (`--min`..`--max` seeds in rounds of `--step`; the
  baseline runs every seed any arm runs);
- as the fixed design, every arm on `--max` seeds, judged as `ablation.md` judges a table
  (`orchestrator.ablation.verdicts`: paired t-tests Holm-adjusted across arms at α, and TOST
  within the margin, Holm-adjusted too).

Scenarios, each arm's true Δ on dev/overall against a baseline:
- `null`: 8 arms (the seed study's nine variants), none differs: the family-wise false-positive
  rate (goal <= 5%);
- `mixed`: 8 arms at 0, ±0.005 (small), -0.02 (large) and +0.01, +0.02, +0.03, +0.05;
- `claims`: 5 arms at the seed reports' own gains, best system against their row closest to our
  baseline (docs/seed_reports.yaml): +0.006, +0.037, +0.063, +0.088, +0.107.

A false verdict: better / worse on an arm with Δ = 0 or of the wrong sign, or equivalent on an arm
with |Δ| >= the margin. Runs: every (arm or baseline) × seed a study trains.

    python bench/racing.py --quick
    python bench/racing.py --studies 4000 --paired-sd 0.0044 0.01 --margins 0 0.01 --seed 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestrator.ablation.racing import (  # noqa: E402
    CONTINUE,
    STOP_VERDICTS,
    RacingDesign,
    judge_look,
)
from orchestrator.ablation.verdicts import (  # noqa: E402
    BETTER,
    EQUIVALENT,
    UNRESOLVED,
    VERDICTS,
    WORSE,
    classify_differences,
)
from orchestrator.stats import adjust_pvalues, paired_t_tests, tost_pvalues  # noqa: E402

# Paired SDs of dev/overall measured on this project's runs (CPU quickstart size): 0.0044 over
# 10 seeds (unpadded vs padded encoder, bench/RESULTS.md); 0.0025 and 0.0033 over 3 seeds (the
# smart and pcgrad arms of docs/studies.md, from their 95% intervals). 0.01: a conservative guess
# for the GPU studies, whose paired SD is not measured yet.
PAIRED_SDS = (0.0044, 0.01)
SMALL, LARGE = 0.005, 0.02
# The five seed reports' best system against their row closest to our baseline, on dev overall
# (docs/seed_reports.yaml, overall = (SST acc + Quora acc + (STS r + 1) / 2) / 3): 000 +0.006,
# 001 +0.037, 004 +0.063, 003 +0.088, 002 +0.107.
CLAIMED = (0.006, 0.037, 0.063, 0.088, 0.107)
SCENARIOS = {
    "null": (0.0,) * 8,
    "mixed": (0.0, SMALL, -SMALL, -LARGE, 0.01, 0.02, 0.03, 0.05),
    "claims": CLAIMED,
}


def draw_differences(
    rng: np.random.Generator, deltas: tuple[float, ...], paired_sd: float, studies: int, seeds: int
) -> np.ndarray:
    """[studies, arms, seeds] paired differences arm - baseline, from per-run scores."""
    noise = rng.normal(0.0, paired_sd / np.sqrt(2), size=(studies, len(deltas) + 1, seeds))
    shared = rng.normal(0.0, 0.02, size=(studies, 1, seeds))  # the seed's effect on every arm
    scores = np.concatenate([[0.0], deltas])[None, :, None] + shared + noise
    return scores[:, 1:] - scores[:, :1]


def race(diffs: np.ndarray, design: RacingDesign) -> tuple[np.ndarray, np.ndarray]:
    """Each arm's verdict and the seeds it ran, raced look by look."""
    state = np.full(diffs.shape[:2], CONTINUE, dtype=object)
    seeds = np.zeros(diffs.shape[:2], dtype=int)
    for look, n in enumerate(design.looks, start=1):
        seeds = np.where(state == CONTINUE, n, seeds)
        state = judge_look(diffs[..., :n], state, look, design)
    verdicts = np.vectorize(lambda s: STOP_VERDICTS.get(s, UNRESOLVED), otypes=[object])(state)
    return verdicts, seeds


def fixed(diffs: np.ndarray, design: RacingDesign) -> np.ndarray:
    """Each arm's verdict on all max seeds at once, as the study table judges it."""
    mean, _, p = paired_t_tests(diffs)
    adjusted = adjust_pvalues(p, design.correction)
    equivalent = np.full(adjusted.shape, np.nan)
    if design.equivalence is not None:
        equivalent = adjust_pvalues(tost_pvalues(diffs, design.equivalence), design.correction)
    return classify_differences(mean, adjusted, equivalent, design.alpha)


def false_verdicts(verdicts: np.ndarray, deltas: np.ndarray, margin: float | None) -> np.ndarray:
    """Per study: whether any arm got a wrong verdict."""
    wrong = ((verdicts == BETTER) & (deltas <= 0)) | ((verdicts == WORSE) & (deltas >= 0))
    if margin is not None:
        wrong |= (verdicts == EQUIVALENT) & (np.abs(deltas) >= margin - 1e-12)
    return wrong.any(axis=-1)


def shares(verdicts: np.ndarray) -> str:
    """better / worse / equivalent / unresolved, in % of studies."""
    return " / ".join(f"{100 * np.mean(verdicts == v):.0f}" for v in VERDICTS)


def simulate(args: argparse.Namespace) -> tuple[list[str], dict[tuple[float, float], list[str]]]:
    """The summary rows of every paired SD × margin × scenario, and the `mixed` scenario's cells
    per arm, keyed by (paired SD, true Δ), one group of cells per margin."""
    rng = np.random.default_rng(args.seed)
    summary: list[str] = []
    per_arm: dict[tuple[float, float], list[str]] = {}
    for paired_sd in args.paired_sd:
        for margin in [m or None for m in args.margins]:
            design = RacingDesign(
                args.min, args.max, args.step, args.alpha, "holm", margin, futility=args.futility
            )
            shown = "–" if margin is None else f"{margin:g}"
            for name, deltas in SCENARIOS.items():
                diffs = draw_differences(rng, deltas, paired_sd, args.studies, args.max)
                raced, seeds = race(diffs, design)
                fixed_verdicts = fixed(diffs, design)
                truth = np.asarray(deltas)[None, :]
                runs = (seeds.sum(axis=1) + seeds.max(axis=1)).mean()  # arms + baseline
                fixed_runs = (len(deltas) + 1) * args.max
                summary.append(
                    f"| {paired_sd:g} | {shown} | {name} "
                    f"| {100 * false_verdicts(raced, truth, margin).mean():.1f}% "
                    f"| {100 * false_verdicts(fixed_verdicts, truth, margin).mean():.1f}% "
                    f"| {runs:.1f} | {fixed_runs} | {100 * (1 - runs / fixed_runs):.0f}% "
                    f"| {100 * np.mean(raced == fixed_verdicts):.0f}% |"
                )
                if name != "mixed":
                    continue
                for i, delta in enumerate(deltas):
                    per_arm.setdefault((paired_sd, delta), []).append(
                        f"{shares(raced[:, i])} | {shares(fixed_verdicts[:, i])} "
                        f"| {seeds[:, i].mean():.1f}"
                    )
    return summary, per_arm


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=2000, help="synthetic studies per case")
    parser.add_argument("--quick", action="store_true", help="300 studies per case")
    parser.add_argument("--paired-sd", type=float, nargs="+", default=list(PAIRED_SDS))
    parser.add_argument(
        "--margins", type=float, nargs="+", default=[0.0, 0.005, 0.01],
        help="equivalence margins on dev/overall to try (0: none)",
    )  # fmt: skip
    parser.add_argument("--min", type=int, default=3, help="seeds per arm at the first look")
    parser.add_argument("--max", type=int, default=12, help="seeds per arm at most (fixed design)")
    parser.add_argument("--step", type=int, default=3, help="seeds added per round")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument(
        "--futility", type=float, default=RacingDesign().futility,
        help="stop an unresolved arm below this conditional power (0: never)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.studies = 300
    start = time.process_time()
    summary, per_arm = simulate(args)
    design = RacingDesign(args.min, args.max, args.step, args.alpha)
    levels = ", ".join(f"{design.look_alpha(k):.4g}" for k in range(1, len(design.looks) + 1))
    print(
        f"# {args.studies} studies per case, numpy seed {args.seed}; racing "
        f"{args.min}..{args.max} seeds in rounds of {args.step}: looks at "
        f"{list(design.looks)} seeds, levels {levels} "
        f"(Holm across arms at each), fixed design: {args.max} seeds, Holm at {args.alpha:g}\n"
    )
    print("| paired SD | margin | scenario | false verdicts, racing | fixed | runs, racing "
          "| fixed | fewer runs | same verdict |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(summary))
    margins = ["no margin" if not m else f"margin {m:g}" for m in args.margins]
    print(
        "\n`mixed`, per arm: verdicts better / worse / equivalent / unresolved (% of studies), "
        "racing then fixed, and the seeds racing gave the arm (mean)\n"
    )
    head = [f"{m}: {what}" for m in margins for what in ("racing", "fixed", "seeds")]
    print("| paired SD | true Δ | " + " | ".join(head) + " |")
    print("|---|---|" + "---|" * len(head))
    for (paired_sd, delta), cells in per_arm.items():
        print(f"| {paired_sd:g} | {delta:+g} | " + " | ".join(cells) + " |")
    print(f"\n# {time.process_time() - start:.1f} s CPU")


if __name__ == "__main__":
    main()
