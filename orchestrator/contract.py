"""What the sweep driver, the trainable, MLflow, `ensemble` and `report` agree on, spelled once.

- Result keys: what a trial reports to Ray Tune each epoch besides the metrics (whose names live in
  `model.evaluate`), and the prefixes the driver and the store read back.
- MLflow tags: how runs say what they are (sweep parent, trial child, ensemble) and how they ended.
- Layout: where a sweep's and a trial's files live under `<results>/<sweep>/`.

Nothing here imports a framework: every module may import this one.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.checkpoint import RunLayout
from model.evaluate import EPOCH, REPORTED_METRICS

# ----------------------------------------------------------------------------------- result keys
METRICS = REPORTED_METRICS  # reported every epoch under these names (dev/overall, ..., train/loss)
EPOCH_KEY = EPOCH
# 0 on the last epoch, so a trial that ends with epochs left was stopped early (pruned).
EPOCHS_LEFT = "epochs_left"
BEST_PREFIX = "best/"  # the best epoch so far: best/dev/overall, best/epoch, ...
BEST_CHECKPOINT = "best_checkpoint"  # where a trial's best checkpoint lives (result key and tag)
NONFINITE_LOSS = "nonfinite_loss"  # why a trial diverged (in its last result): FAILED
# What `precision: auto` resolved to on the trial's machine ("bf16" / "fp32"): a result key
# every epoch, and the trial run's tag of the same name.
PRECISION_KEY = "precision_used"
# A trial's result as Tune sees it: the keys its scheduler and searcher need as numbers, the
# rest of the epoch's metrics as one JSON text under this key. Tune keeps running statistics of
# every numeric key of every trial and rewrites them all into its experiment state (~80 KB a
# trial for our ~100 metrics, 83 MB at 1,000 trials); the driver's adapter unpacks the text.
RESULT_DETAILS_KEY = "details_json"


def tune_keys(metric: str) -> tuple[str, ...]:
    """The keys a trial reports to Tune as they are: what ASHA (on `metric`), Ray's own checks
    and the live table read."""
    return (metric, best_key(metric), EPOCH_KEY, EPOCHS_LEFT, NONFINITE_LOSS)


def pack_result(metrics: Mapping[str, Any], scheduled: Collection[str]) -> dict[str, Any]:
    """`metrics` for `tune.report`: the `scheduled` keys as they are, the rest packed."""
    packed = {key: value for key, value in metrics.items() if key in scheduled}
    details = {key: value for key, value in metrics.items() if key not in scheduled}
    packed[RESULT_DETAILS_KEY] = json.dumps(details)
    return packed


def unpack_result(result: Mapping[str, Any]) -> dict[str, Any]:
    """A result Tune holds, with its packed metrics back at the top (as it is, if none)."""
    text = result.get(RESULT_DETAILS_KEY)
    unpacked = {key: value for key, value in result.items() if key != RESULT_DETAILS_KEY}
    if isinstance(text, str):
        unpacked.update(json.loads(text))
    return unpacked

# -------------------------------------------------------------------------------- trial states
# A trial is completed, pruned (stopped early by ASHA), failed or killed (its sweep stopped).
# Its best checkpoint is a fair ensemble member: it ran to the end or ASHA stopped it (its
# checkpoint is still its best epoch).
FINISHED_STATES: tuple[str, ...] = ("completed", "pruned")
# It reached an end of its own; a killed trial runs on when its sweep is resumed, so a sweep with
# one did not finish.
FINAL_STATES: tuple[str, ...] = (*FINISHED_STATES, "failed")
# It is no longer running (the report's "ended" trials).
ENDED_STATES: tuple[str, ...] = (*FINAL_STATES, "killed")


def best_key(metric: str) -> str:
    """The result key / MLflow metric of a metric's best-epoch value: `best/dev/overall`."""
    return f"{BEST_PREFIX}{metric}"


# An ablation study's labels of a trial (not config keys): which arm it runs and in which phase
# (`tune`: phase 1, tuning inside the arm; `confirm`: phase 2, the runs the table is made of).
ARM_PARAM = "arm"
PHASE_PARAM = "phase"
SEED_PARAM = "seed"  # a config key; in a study every arm runs the same seeds
# A config key: the Quora training file a run read (`data.para_train: auto` resolved).
PARA_TRAIN_PARAM = "data.para_train"
TUNE_PHASE = "tune"
CONFIRM_PHASE = "confirm"
# A racing study's confirm runs also carry their round (1, 2, ...): the look that added them.
ROUND_PARAM = "round"
LABEL_KEYS = (ARM_PARAM, PHASE_PARAM, ROUND_PARAM)


def trial_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """The dotted config keys of a trial config: without Ray's own keys (they start with `_`)
    and without a study's labels (`arm`, `phase`)."""
    return {k: v for k, v in config.items() if not k.startswith("_") and k not in LABEL_KEYS}


def trial_labels(config: Mapping[str, Any]) -> dict[str, str]:
    """A study trial's labels (`arm`, `phase`) from its trial config; {} in a plain sweep."""
    return {k: str(config[k]) for k in LABEL_KEYS if k in config}


# ------------------------------------------------------------------------------------ MLflow tags
ROLE_TAG = "role"  # what a run is: one of the roles below
SWEEP_ROLE = "sweep"  # the parent run of one sweep invocation
TRIAL_ROLE = "trial"  # a child run: one trial
ENSEMBLE_ROLE = "ensemble"  # the run `orchestrator ensemble` logs
MODEL_ROLE = "model"  # the run `orchestrator register` logs one checkpoint's model on
SWEEP_TAG = "sweep"  # the sweep's name, on every run of it
TRIAL_ID_TAG = "trial_id"  # Ray's trial id, on a trial's run
STATE_TAG = "trial_state"  # how a trial ended: one of TRIAL_STATES
MEMBERS_TAG = "ensemble.members"  # comma-separated member run ids of an ensemble run
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own nesting tag
TRIAL_STATES = ("running", "completed", "pruned", "failed", "killed", "orphaned")
# The parameter of a sweep's parent run that names the metric it optimised.
SWEEP_METRIC_PARAM = "sweep.metric"
# More parameters of the parent run, read back by `report` and `ui`:
SWEEP_MODE_PARAM = "sweep.mode"  # max or min: whether the optimised metric is better high
SWEEP_SEARCHED_PARAM = "sweep.searched"  # the searched dotted keys, space-separated
SWEEP_REPEATS_PARAM = "sweep.repeats"  # seeds per sampled config
SWEEP_GPU_PARAM = "sweep.resources.gpu"  # GPUs per trial
# Every objective of the sweep as JSON [[metric, mode], ...] (the first is sweep.metric), and its
# constraints as JSON {metric: {ge: x, le: y}} (orchestrator/objectives.py writes and reads them).
SWEEP_OBJECTIVES_PARAM = "sweep.objectives"
SWEEP_CONSTRAINTS_PARAM = "sweep.constraints"
FEASIBLE_TAG = "feasible"  # on a trial run of a constrained sweep: true / false
BASE_PARAM_PREFIX = "base."  # the base config's dotted keys: base.optim.lr, ...
RESULTS_DIR_TAG = "results_dir"  # on the parent run: the sweep's directory when it ran
SWEEP_RUN_TAG = "sweep_run_id"  # on an ensemble run: the parent run of the sweep it combined
# A study's parent run: its arms in file order (JSON list), the baseline arm, the seeds (JSON).
STUDY_ARMS_PARAM = "study.arms"
STUDY_BASELINE_PARAM = "study.baseline"
STUDY_SEEDS_PARAM = "study.seeds"
# ... its correction across arms (holm / bh) and, when set, its equivalence margin on its metric.
STUDY_CORRECTION_PARAM = "study.correction"
STUDY_EQUIVALENCE_PARAM = "study.equivalence"
# ... a race's seeds (JSON {"min", "max", "step"}); each arm's race decision is a tag of the
# parent run (`arm_race_tag`), and `--extend N` rounds added later the tag RACE_EXTRA_ROUNDS_TAG.
STUDY_RACE_PARAM = "study.race"
RACE_EXTRA_ROUNDS_TAG = "race/extra_rounds"
# `sweep --extend N`: each extension is a parent run of its own, tagged with the first parent run
# (the sweep's) it extends and its number; its trial runs carry the extension's directory.
EXTENDS_RUN_TAG = "extends_run_id"
EXTENSION_TAG = "extension"  # on an extension's parent run and its trials: `extend-1`, ...
WARM_START_TAG = "warm_start"  # on a warm-started sweep's parent run: the sweep it started from
# On a multi-objective sweep's parent run, instead of best_trial_id: its Pareto front's trial ids
# (comma-separated, in trial order).
PARETO_TRIALS_TAG = "pareto_trial_ids"
# On a trial run whose weights a sweep's retention setting deleted: "dropped". On the parent
# run: the setting and how many trials' weights it dropped (sweep/retention.py).
WEIGHTS_TAG = "weights"
WEIGHTS_DROPPED = "dropped"
RETENTION_TAG = "retention"
# The registered model (`ensemble --register NAME`): the pyfunc model's artifact path on the
# ensemble's run, and the tags of each version besides `sweep` and `ensemble.members` (run ids).
MODEL_ARTIFACT_PATH = "model"
MODEL_KIND_TAG = "model.kind"  # "ensemble" or "checkpoint" (one trial, `orchestrator register`)
METHOD_TAG = "ensemble.method"  # vote (mode / median) or mean
SELECT_TAG = "ensemble.select"  # top or greedy
RANKED_BY_TAG = "ensemble.metric"  # the metric the members were ranked on
# ... and one tag per dev metric the ensemble was chosen on, named as the metric (dev/overall).


def arm_metric(arm: str, metric: str) -> str:
    """The parent run's metric holding an arm's mean over seeds: `arm/smart/dev/overall`."""
    return f"arm/{arm}/{metric}"


def arm_verdict_tag(arm: str) -> str:
    """The parent run's tag holding an arm's verdict on the study's metric: `arm/smart/verdict`
    (beside `arm_metric`s such as `arm/smart/dev/overall/p_adj`)."""
    return f"arm/{arm}/verdict"


def arm_race_tag(arm: str) -> str:
    """The parent run's tag holding how an arm's race ended so far, as JSON: its decision
    (`stop-worse`, `continue`, ...), the look that made it, and the paired seeds it had."""
    return f"arm/{arm}/race"


def race_round_dir(number: int) -> str:
    """A racing study's confirm round directory: `confirm` (round 1), `confirm-r2`, ..."""
    return CONFIRM_PHASE if number == 1 else f"{CONFIRM_PHASE}-r{number}"


def extension_dir(number: int) -> str:
    """An extension's Ray experiment directory under `<results>/<sweep>/`: `extend-1`, ..."""
    return f"extend-{number}"


def study_phase_dir(phase: str, arm: str) -> str:
    """A study phase's directory under `<results>/<study>/`: `tune-<arm>`, or `confirm`."""
    return f"{TUNE_PHASE}-{arm}" if phase == TUNE_PHASE else phase


# ----------------------------------------------------------------------------------------- layout
SWEEP_STATE_FILE = "sweep.json"  # which MLflow parent run and Optuna study a sweep writes to
SWEEP_STATE_LOCK = "sweep.json.lock"  # held while a driver changes sweep.json
# Keys of sweep.json besides its run ids: what `--extend` checks an edited space against
# (`history.sweep_record`), and one entry per extension, oldest first.
SEARCH_RECORD_KEY = "search"
EXTENSIONS_KEY = "extensions"
TRIAL_STDERR = "stderr.log"  # in each trial's directory: its warnings and line per epoch
OPTUNA_DB = "optuna.db"
ENSEMBLE_DIR = "ensemble"
ENSEMBLE_METRICS_FILE = "metrics.json"  # in ensemble/: members, the ensemble's dev metrics, ...
K_CURVE_KEY = "k_curve"  # its entry: the best k members' ensemble for k = 1..K (ensemble_curve)
K_CURVE_PLOT = "k_curve.png"  # in ensemble/, and the report's plots/ensemble_k_curve.png
# In ensemble/: members (checkpoint paths, weights, sha256 of their files), method, selection.
ENSEMBLE_MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class TrialLayout:
    """A trial's files: `<results>/<sweep>/<trial_id>/`, the trainer's output in `train/`.

    Derived from the trial id rather than Ray's working directory, which is per Ray session and
    so would change when a sweep is resumed.
    """

    root: Path

    @property
    def train(self) -> RunLayout:
        return RunLayout(self.root / "train")

    @property
    def best_checkpoint(self) -> Path:
        return self.train.best

    @property
    def stderr(self) -> Path:
        """The trial's stderr: one line per epoch (steps, loss, scores, elapsed, ETA)."""
        return self.root / TRIAL_STDERR


@dataclass(frozen=True)
class SweepLayout:
    """A sweep's files: `<results>/<sweep>/` holding Ray's state, one directory per trial,
    `optuna.db`, `sweep.json` and what `ensemble` and `report` write."""

    root: Path

    @classmethod
    def of(cls, results_dir: Path | str, name: str) -> SweepLayout:
        return cls((Path(results_dir) / name).resolve())

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def state_file(self) -> Path:
        return self.root / SWEEP_STATE_FILE

    @property
    def state_lock(self) -> Path:
        return self.root / SWEEP_STATE_LOCK

    @property
    def optuna_db(self) -> Path:
        return self.root / OPTUNA_DB

    @property
    def optuna_url(self) -> str:
        return f"sqlite:///{self.optuna_db}"

    @property
    def ensemble_dir(self) -> Path:
        return self.root / ENSEMBLE_DIR

    def trial(self, trial_id: str) -> TrialLayout:
        return TrialLayout(self.root / trial_id)
