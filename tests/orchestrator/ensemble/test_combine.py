"""Ensembles: vote / median / mean on hand-made predictions, tie-breaking, greedy selection beating
plain top-K, member ranking (a study's confirm runs only, on the selection split when logged), and
the CLI's one-line errors (exit 2) on bad requests."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from model.evaluate import OVERALL, SELECTION_OVERALL, TaskPredictions, read_predictions
from orchestrator.cli import main
from orchestrator.contract import (
    ARM_PARAM,
    PHASE_PARAM,
    TUNE_PHASE,
    SweepLayout,
    best_key,
)
from orchestrator.ensemble.combine import combine, ensemble_dev_metrics, vote_labels
from orchestrator.ensemble.request import (
    Candidate,
    EnsembleError,
    EnsembleRequest,
    default_metric,
    greedy_metric,
)
from orchestrator.ensemble.select import (
    check_top,
    checkpoint_places,
    greedy_forward_selection,
    rank_candidates,
)
from orchestrator.tracking.store import StoredRun
from tests.orchestrator.sweep_store import (
    FakeStudyRun,
    FakeTrial,
    fake_study,
    fake_sweep,
    make_tiny_data_dir,
    save_untrained_checkpoint,
    tiny_config,
)

IDS3 = ["a", "b", "c"]


def sst(labels: list[int], probabilities: list[list[float]], ids: list[str] = IDS3):
    return TaskPredictions("sst", ids, np.array(labels), np.array(probabilities, dtype=np.float32))


def para(labels: list[int], p: list[float], ids: list[str] = IDS3):
    return TaskPredictions("para", ids, np.array(labels), np.array(p, dtype=np.float32))


def sts(scores: list[float], ids: list[str] = IDS3):
    return TaskPredictions("sts", ids, np.array(scores, dtype=np.float32), None)


UNIFORM = [0.2] * 5


# ---------------------------------------------------------------------------------------------
# Combining


def test_vote_takes_the_mode_of_labels() -> None:
    labels = np.array([[0, 1, 2], [0, 2, 2], [1, 1, 0]])
    probabilities = np.full((3, 3, 5), 0.2)
    assert vote_labels(labels, probabilities).tolist() == [0, 1, 2]


def test_vote_breaks_ties_by_mean_probability_of_the_tied_classes() -> None:
    # Two members disagree (3 vs 1): class 1 has the higher mean probability (0.5 vs 0.45).
    # Class 4 has the highest mean probability of all (0.5 + 0.05...) but no top vote count.
    m0 = [0.0, 0.10, 0.0, 0.40, 0.50]
    m1 = [0.0, 0.90, 0.0, 0.05, 0.05]
    labels = np.array([[3], [1]])
    assert vote_labels(labels, np.array([[m0], [m1]])).tolist() == [1]
    # Four members, a 2-2 tie between 0 and 1, while class 2 leads on mean probability:
    # only tied classes may win.
    labels = np.array([[0], [0], [1], [1]])
    probs = np.array([[[0.3, 0.2, 0.5, 0, 0]], [[0.3, 0.2, 0.5, 0, 0]]] * 2)
    assert vote_labels(labels, probs).tolist() == [0]


def test_vote_tie_with_equal_probabilities_goes_to_the_lowest_class() -> None:
    labels = np.array([[4, 2], [3, 0]])
    assert vote_labels(labels, np.full((2, 2, 5), 0.2)).tolist() == [3, 0]


def test_combine_sst_vote_and_mean() -> None:
    members = [
        sst([0, 1, 4], [[0.6, 0.1, 0.1, 0.1, 0.1], [0.3, 0.4, 0.3, 0, 0], [0, 0, 0, 0.45, 0.55]]),
        sst([0, 2, 3], [[0.7, 0.1, 0.1, 0.1, 0.0], [0.1, 0.4, 0.5, 0, 0], [0, 0, 0, 0.9, 0.1]]),
        sst([1, 2, 4], [[0.4, 0.5, 0.1, 0.0, 0.0], [0.1, 0.1, 0.8, 0, 0], [0, 0, 0, 0.4, 0.6]]),
    ]
    voted = combine(members, "vote")
    assert voted.values.tolist() == [0, 2, 4]  # plain majorities
    np.testing.assert_allclose(voted.probabilities[2], [0, 0, 0, 1.75 / 3, 1.25 / 3], rtol=1e-6)
    # mean: example 2's mean probability favours class 3 although two members voted 4
    assert combine(members, "mean").values.tolist() == [0, 2, 3]


def test_combine_para_vote_ties_follow_mean_probability() -> None:
    a = para([1, 1, 0], [0.60, 0.90, 0.10])
    b = para([0, 0, 0], [0.30, 0.20, 0.40])
    assert combine([a, b], "vote").values.tolist() == [0, 1, 0]  # mean p: .45, .55, .25
    np.testing.assert_allclose(combine([a, b], "vote").probabilities, [0.45, 0.55, 0.25])
    c = para([1, 1, 1], [0.51, 0.51, 0.51])
    assert combine([a, b, c], "vote").values.tolist() == [1, 1, 0]  # majorities
    # mean p: .47, .537, .337 -- example 0 flips against its majority
    assert combine([a, b, c], "mean").values.tolist() == [0, 1, 0]


def test_combine_sts_median_and_mean() -> None:
    members = [sts([1.0, 0.0, 5.0]), sts([2.0, 4.0, 5.0]), sts([10.0, 1.0, 2.0])]
    np.testing.assert_allclose(combine(members, "vote").values, [2.0, 1.0, 5.0])
    np.testing.assert_allclose(combine(members, "mean").values, [13 / 3, 5 / 3, 4.0], rtol=1e-6)
    even = [*members, sts([3.0, 3.0, 3.0])]
    np.testing.assert_allclose(combine(even, "vote").values, [2.5, 2.0, 4.0])


def test_combine_rejects_members_that_predicted_different_examples() -> None:
    with pytest.raises(ValueError, match="different examples"):
        combine([sts([1.0, 2.0, 3.0]), sts([1.0, 2.0, 3.0], ids=["a", "b", "x"])], "vote")
    with pytest.raises(ValueError, match="unknown ensemble method"):
        combine([sts([1.0, 2.0, 3.0])], "max")


# ---------------------------------------------------------------------------------------------
# Greedy selection


def _sst_member(correct: np.ndarray, gold: np.ndarray) -> TaskPredictions:
    """Confident (0.9) where right, unsure (0.4 on a wrong class, 0.3 on the gold) where wrong."""
    n = len(gold)
    wrong = (gold + 1) % 5
    labels = np.where(correct, gold, wrong)
    probabilities = np.full((n, 5), 0.025)
    for i in range(n):
        if correct[i]:
            probabilities[i, gold[i]] = 0.9
        else:
            probabilities[i] = 0.15
            probabilities[i, wrong[i]], probabilities[i, gold[i]] = 0.4, 0.3
    ids = [f"s{i}" for i in range(n)]
    return TaskPredictions("sst", ids, labels, probabilities.astype(np.float32))


def test_greedy_selection_beats_plain_top_k_on_a_constructed_library() -> None:
    gold = np.arange(10) % 5
    first_six = np.arange(10) < 6
    same = {  # identical para / sts predictions: only SST separates the members
        "para": para([1, 0, 1], [0.9, 0.1, 0.8]),
        "sts": sts([1.0, 2.0, 3.0]),
    }
    # Models 0-2 are copies (right on examples 0-5); model 3 is weaker alone (right on 6-9) but
    # confident exactly where the copies are wrong.
    library = [{"sst": _sst_member(first_six, gold), **same} for _ in range(3)]
    library.append({"sst": _sst_member(~first_six, gold), **same})
    labels = {"sst": gold, "para": np.array([1.0, 0.0, 1.0]), "sts": np.array([1.0, 2.0, 3.0])}
    single = [ensemble_dev_metrics([m], labels, "vote")["dev/sst_acc"] for m in library]
    assert single == [0.6, 0.6, 0.6, 0.4]

    top3 = ensemble_dev_metrics(library[:3], labels, "vote")
    assert top3["dev/sst_acc"] == pytest.approx(0.6)

    def score(indices: list[int]) -> float:
        return ensemble_dev_metrics([library[i] for i in indices], labels, "vote")["dev/overall"]

    chosen, best = greedy_forward_selection(len(library), score, steps=3)
    assert chosen == [0, 3]
    assert ensemble_dev_metrics([library[i] for i in chosen], labels, "vote")["dev/sst_acc"] == 1.0
    assert best > top3["dev/overall"] + 0.1


def test_greedy_selection_adds_with_replacement_and_keeps_the_best_prefix() -> None:
    # Score = how close the mean of chosen values is to 2.0; values 1 and 4 need 1,1,4 (mean 2).
    values = [1.0, 4.0, 10.0]

    def score(indices: list[int]) -> float:
        return -abs(np.mean([values[i] for i in indices]) - 2.0)

    chosen, best = greedy_forward_selection(3, score, steps=3)
    assert chosen == [0, 1, 0] and best == 0.0
    chosen, _ = greedy_forward_selection(3, lambda idx: -len(idx), steps=4)
    assert chosen == [0]  # later additions only hurt: the one-model prefix is kept


# ---------------------------------------------------------------------------------------------
# Ranking and K


def test_rank_candidates_best_first_with_stable_ties() -> None:
    def c(run: str, value: float) -> Candidate:
        return Candidate(run, run, run, "completed", value, None)

    ranked = rank_candidates([c("a", 0.5), c("b", 0.7), c("c", 0.5), c("d", 0.9)])
    assert [x.run_id for x in ranked] == ["d", "b", "a", "c"]
    assert [x.run_id for x in rank_candidates([c("a", 2.0), c("b", 1.0)], "min")] == ["b", "a"]


def test_check_top_says_how_many_trials_finished() -> None:
    check_top(3, 3, 5, "s")
    with pytest.raises(EnsembleError, match="at least 1, got 0"):
        check_top(0, 3, 5, "s")
    with pytest.raises(EnsembleError, match=r"'s' has 3 finished trials \(of 5\); --top 4"):
        check_top(4, 3, 5, "s")
    with pytest.raises(EnsembleError, match=r"'s' has no finished trial yet \(of 2\); nothing"):
        check_top(2, 0, 2, "s")
    with pytest.raises(EnsembleError, match=r"^study 's' has 1 completed confirm run \(of 4\);"):
        check_top(2, 1, 4, "s", runs="completed confirm run", kind="study")


def test_default_metric_is_the_selection_split_when_every_trial_logged_it() -> None:
    selection = {best_key(OVERALL): 0.5, best_key(SELECTION_OVERALL): 0.6}
    assert default_metric([selection, selection]) == SELECTION_OVERALL
    assert default_metric([selection, {best_key(OVERALL): 0.5}]) == OVERALL
    assert default_metric([]) == OVERALL


def test_greedy_scores_by_the_dev_namesake_and_rejects_a_metric_without_one() -> None:
    assert greedy_metric(OVERALL) == OVERALL
    assert greedy_metric(SELECTION_OVERALL) == OVERALL
    assert greedy_metric("selection/sts_corr") == "dev/sts_corr"
    assert greedy_metric("train/loss") is None
    EnsembleRequest(top=2, select="greedy", metric=SELECTION_OVERALL)
    EnsembleRequest(top=2, metric="train/loss")  # top-K may rank on the loss
    with pytest.raises(EnsembleError, match="train/loss has no dev counterpart"):
        EnsembleRequest(top=2, select="greedy", metric="train/loss")


def test_checkpoint_places_look_in_a_study_trials_phase_directory(tmp_path: Path) -> None:
    tagged = tmp_path / "elsewhere" / "best"
    run = StoredRun(
        "r1", "smart seed=0", "FINISHED", {ARM_PARAM: "smart", PHASE_PARAM: TUNE_PHASE}, {},
        {"trial_id": "t7", "best_checkpoint": str(tagged)}, None, None,
    )  # fmt: skip
    places = checkpoint_places(run, [tmp_path / "a", tmp_path / "b"])
    assert places[0] == tagged
    assert places[1] == SweepLayout(tmp_path / "a" / "tune-smart").trial("t7").best_checkpoint
    assert places[1:] == [
        SweepLayout(root / sub).trial("t7").best_checkpoint
        for root in (tmp_path / "a", tmp_path / "b")
        for sub in ("tune-smart", "")
    ]


# ---------------------------------------------------------------------------------------------
# The command on a small store (untrained tiny checkpoints, 12 examples per file)


@pytest.fixture(scope="module")
def sweep_store(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """results/ with an MLflow store of sweep `fake`: 3 completed trials with checkpoints,
    1 failed; and a tiny data directory beside it."""
    root = tmp_path_factory.mktemp("ensemble")
    make_tiny_data_dir(data_dir, root / "data", rows=12)
    results = root / "results"
    trials = []
    for i, value in enumerate([0.50, 0.70, 0.60]):
        cfg = tiny_config(seed=i)
        checkpoint = save_untrained_checkpoint(results / "fake" / f"t{i}" / "best", cfg)
        trials.append(FakeTrial(f"t{i}", value, checkpoint=checkpoint, params={"seed": i}))
    trials.append(FakeTrial("t3", 0.9, state="failed"))
    fake_sweep(f"sqlite:///{results}/mlflow.db", "fake", trials, searched=("seed",))
    return root


def invoke(*args: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output.strip().splitlines()


def test_ensemble_writes_predictions_and_metrics(
    sweep_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    results, data = sweep_store / "results", sweep_store / "data"
    code, lines = invoke(
        "ensemble", "--top", "2", "--results-dir", str(results), "--data-dir", str(data)
    )
    assert code == 0, lines
    out = results / "fake" / "ensemble"
    summary = json.loads((out / "metrics.json").read_text())
    # Members are the two best finished trials by the sweep's value (t1: 0.7, t2: 0.6); the
    # failed t3 (0.9) is not a candidate.
    assert [m["trial_id"] for m in summary["members"]] == ["t1", "t2"]
    assert len(list(out.glob("*-output.csv"))) == 6
    task, ids, values = read_predictions(out / "sts-test-output.csv")
    assert task == "sts" and len(ids) == 12 and np.isfinite(values).all()
    best = max(m["dev"]["dev/overall"] for m in summary["members"])
    gained = summary["ensemble"]["dev"]["dev/overall"] - best
    assert summary["gain_over_best_member"]["dev/overall"] == pytest.approx(gained)
    # No trial logged the selection split: ranked on dev, and the output says so.
    assert summary["metric"] == "dev/overall"
    assert "ranked on dev/overall: 3 finished trials of sweep 'fake' (of 4)" in lines


def test_ensemble_unknown_sweep_is_a_one_line_error(sweep_store: Path) -> None:
    code, lines = invoke("ensemble", "--top", "1", "--sweep", "nope", "--results-dir",
                         str(sweep_store / "results"))  # fmt: skip
    assert code == 2
    assert lines[-1].startswith("Error: no sweep named 'nope' in sqlite:///")
    assert "(sweeps there: fake)" in lines[-1]
    code, lines = invoke("ensemble", "--top", "1", "--results-dir", str(sweep_store / "empty"))
    assert code == 2 and "no MLflow store at" in lines[-1] and len(lines) == 1


@pytest.mark.parametrize(
    ("top", "message"),
    [
        ("0", "Error: --top must be at least 1, got 0"),
        ("4", "Error: sweep 'fake' has 3 finished trials (of 4); --top 4 asks for more: "
              "use --top 3 or fewer"),
    ],
)  # fmt: skip
def test_ensemble_bad_top_is_a_one_line_error(sweep_store: Path, top: str, message: str) -> None:
    code, lines = invoke("ensemble", "--top", top, "--results-dir", str(sweep_store / "results"))
    assert code == 2
    assert lines == [message]


@contextmanager
def best_trial_checkpoint_changed(sweep_store: Path, tmp_path: Path) -> Iterator[Path]:
    """The fixture's t1 checkpoint, to break for one test and restored afterwards.

    The store's tags point at the fixture's checkpoints, so a test changes t1's there (with a
    copy of the results layout for its own outputs) and this puts the original back.
    """
    original = sweep_store / "results" / "fake" / "t1" / "best"
    backup = tmp_path / "t1-best"
    shutil.copytree(original, backup)
    try:
        yield original
    finally:
        shutil.rmtree(original, ignore_errors=True)
        shutil.move(backup, original)


def copied_results(sweep_store: Path, tmp_path: Path) -> Path:
    results = tmp_path / "results"
    shutil.copytree(sweep_store / "results", results)
    return results


def test_ensemble_deleted_checkpoint(
    sweep_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    results = copied_results(sweep_store, tmp_path)
    with best_trial_checkpoint_changed(sweep_store, tmp_path) as original:
        shutil.rmtree(original)
        args = ["--results-dir", str(results), "--data-dir", str(sweep_store / "data")]
        code, lines = invoke("ensemble", "--top", "3", *args)
        assert code == 2
        error = [line for line in lines if line.startswith("Error:")]
        assert error == [lines[-1]]
        assert (
            "only 2 of the 3 finished trials of sweep 'fake' have a loadable checkpoint"
            in (lines[-1])
        )
        assert f"{original}: not a checkpoint" in lines[-1] and "use --top 2 or fewer" in lines[-1]
        # With K below the loadable count the missing member is skipped, with a note.
        code, lines = invoke("ensemble", "--top", "2", *args)
        assert code == 0, lines
        summary = json.loads((results / "fake" / "ensemble" / "metrics.json").read_text())
        assert [m["trial_id"] for m in summary["members"]] == ["t2", "t0"]
        assert any("skipped trial t1" in note for note in summary["notes"])


def _zero_heads(best: Path) -> None:
    raw = json.loads((best / "config.json").read_text())
    raw["bert"]["num_attention_heads"] = 0
    (best / "config.json").write_text(json.dumps(raw))


def _config_not_utf8(best: Path) -> None:
    (best / "config.json").write_bytes(b"\xff{}")


def _vocab_not_utf8(best: Path) -> None:
    (best / "tokenizer.json").unlink()  # so vocab.txt is read
    (best / "vocab.txt").write_bytes(b"[PAD]\n\xff\n")


@pytest.mark.parametrize(
    ("corrupt", "needle"),
    [
        (_zero_heads, "config.json: unreadable checkpoint config (num_attention_heads must be"),
        (_config_not_utf8, "config.json: unreadable checkpoint config ('utf-8' codec can't"),
        (_vocab_not_utf8, "vocab.txt: Error while reading WordPiece file"),
    ],
)
def test_ensemble_skips_a_malformed_checkpoint_with_a_note(
    sweep_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, corrupt, needle: str
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    results = copied_results(sweep_store, tmp_path)
    with best_trial_checkpoint_changed(sweep_store, tmp_path) as original:
        corrupt(original)
        args = ["--results-dir", str(results), "--data-dir", str(sweep_store / "data")]
        code, lines = invoke("ensemble", "--top", "2", *args)
        assert code == 0, lines
        summary = json.loads((results / "fake" / "ensemble" / "metrics.json").read_text())
        assert [m["trial_id"] for m in summary["members"]] == ["t2", "t0"]
        skipped = [note for note in summary["notes"] if note.startswith("skipped trial t1: ")]
        assert len(skipped) == 1 and str(original) in skipped[0] and needle in skipped[0]


def test_dev_subset_uses_the_trials_fixed_subset(sweep_store: Path) -> None:
    from orchestrator.ensemble.member_predictions import SplitInputs

    cfg = tiny_config(data={"dev_max_examples": {"sst": 5, "para": 4, "sts": 3}})
    data = sweep_store / "data"
    full = SplitInputs(cfg, data, ("dev",), [], dev_subset=False)
    subset = SplitInputs(cfg, data, ("dev",), [], dev_subset=True)
    assert {t: len(rows) for t, rows in full.examples["dev"].items()} == {
        "sst": 12,
        "para": 12,
        "sts": 12,
    }
    assert {t: len(rows) for t, rows in subset.examples["dev"].items()} == {
        "sst": 5,
        "para": 4,
        "sts": 3,
    }
    assert len(subset.labels["sst"]) == 5
    again = SplitInputs(cfg, data, ("dev",), [], dev_subset=True)
    assert [r.id for r in again.examples["dev"]["sst"]] == [
        r.id for r in subset.examples["dev"]["sst"]
    ]


# ---------------------------------------------------------------------------------------------
# An ablation study's store: only its completed confirm runs are candidates

STUDY = "abl"
# (phase, arm, seed, dev scores, selection/overall); the tune runs score best of all, and the
# selection split ranks the confirm runs otherwise than dev does.
STUDY_RUNS = [
    ("tune", "base", 0, (0.9, 0.9, 0.9), 0.95),
    ("tune", "smart", 0, (0.9, 0.9, 0.9), 0.95),
    ("confirm", "base", 0, (0.5, 0.5, 0.5), 0.60),
    ("confirm", "base", 1, (0.6, 0.6, 0.6), 0.80),
    ("confirm", "smart", 0, (0.7, 0.7, 0.7), 0.70),
    ("confirm", "smart", 1, (0.8, 0.8, 0.8), 0.90),  # failed
]


@pytest.fixture(scope="module")
def study_store(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """results/ with a 2-arm x 2-seed study that tuned each arm once: 2 tune runs, 3 completed
    confirm runs and a failed one, all with best/selection/overall. Checkpoints are in the phase
    directories and no run is tagged with its own, so they are found there."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("ensemble_study")
    make_tiny_data_dir(data_dir, root / "data", rows=12)
    results = root / "results"
    runs = [
        FakeStudyRun(arm, seed, scores, phase=phase, state="failed" if i == 5 else "completed")
        for i, (phase, arm, seed, scores, _) in enumerate(STUDY_RUNS)
    ]
    uri = f"sqlite:///{results}/mlflow.db"
    ids = fake_study(uri, STUDY, runs, arms=["base", "smart"], seeds=[0, 1])
    client = MlflowClient(tracking_uri=uri)
    for i, (phase, arm, seed, _, selection) in enumerate(STUDY_RUNS):
        phase_dir = f"tune-{arm}" if phase == "tune" else "confirm"
        trial = SweepLayout(results / STUDY / phase_dir).trial(f"{phase}-{arm}-{seed}-{i}")
        save_untrained_checkpoint(trial.best_checkpoint, tiny_config(seed=i))
        client.log_metric(ids[(phase, arm, seed)], best_key(SELECTION_OVERALL), selection)
    return root


def ensemble_study(study_store: Path, *args: str) -> tuple[int, list[str], dict]:
    results = study_store / "results"
    code, lines = invoke(
        "ensemble", *args, "--results-dir", str(results), "--data-dir", str(study_store / "data")
    )
    path = results / STUDY / "ensemble" / "metrics.json"
    return code, lines, json.loads(path.read_text()) if code == 0 else {}


def test_study_ensemble_ranks_confirm_runs_on_the_selection_split(
    study_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code, lines, summary = ensemble_study(study_store, "--top", "3")
    assert code == 0, lines
    # The tune runs (0.95) and the failed confirm run (0.90) are not candidates.
    assert [m["trial_id"] for m in summary["members"]] == [
        "confirm-base-1-3", "confirm-smart-0-4", "confirm-base-0-2",
    ]  # fmt: skip
    considered = "3 completed confirm runs of study 'abl' (of 4; its 2 tune runs left out)"
    assert summary["metric"] == SELECTION_OVERALL and summary["candidates"] == considered
    assert f"ranked on selection/overall: {considered}" in lines
    # Found in their phase directory, `confirm/<trial_id>/`, though no tag names them.
    confirm = study_store / "results" / STUDY / "confirm"
    assert all(Path(m["checkpoint"]).is_relative_to(confirm) for m in summary["members"])
    # --metric still overrides the default: on dev the smart seed-0 run is the best.
    code, lines, summary = ensemble_study(study_store, "--top", "1", "--metric", "dev/overall")
    assert code == 0, lines
    assert [m["trial_id"] for m in summary["members"]] == ["confirm-smart-0-4"]
    assert any(line.startswith("ranked on dev/overall: 3 completed confirm") for line in lines)


def test_study_ensemble_top_counts_completed_confirm_runs(study_store: Path) -> None:
    code, lines, _ = ensemble_study(study_store, "--top", "4")
    assert code == 2
    assert lines == [
        "Error: study 'abl' has 3 completed confirm runs (of 4); --top 4 asks for more: "
        "use --top 3 or fewer"
    ]


def test_greedy_on_a_selection_metric_scores_its_steps_on_dev_and_says_so(
    study_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for metric in ((), ("--metric", SELECTION_OVERALL)):
        code, lines, summary = ensemble_study(study_store, "--top", "2", "--select", "greedy",
                                              *metric)  # fmt: skip
        assert code == 0, lines
        assert summary["metric"] == SELECTION_OVERALL and len(summary["library"]) == 3
        note = (
            "greedy selection scored its steps by dev/overall: the ensemble predicts dev, not "
            "the selection split whose selection/overall ranked the trials"
        )
        assert note in summary["notes"] and f"note: {note}" in lines
    # A dev metric is scored as it is, without the note.
    code, lines, summary = ensemble_study(
        study_store, "--top", "2", "--select", "greedy", "--metric", "dev/sst_acc"
    )
    assert code == 0, lines
    assert not any("scored its steps" in note for note in summary["notes"])


def test_greedy_on_the_training_loss_is_a_one_line_error(study_store: Path) -> None:
    code, lines, _ = ensemble_study(
        study_store, "--top", "2", "--select", "greedy", "--metric", "train/loss"
    )
    assert code == 2
    assert lines == [
        "Error: --select greedy scores ensembles on dev predictions, and train/loss has no dev "
        "counterpart: use --metric dev/overall (or another dev or selection metric)"
    ]


def test_the_cli_and_the_request_combine_by_the_same_default_method() -> None:
    from orchestrator.cli.ensemble import ensemble as ensemble_command

    method = next(p for p in ensemble_command.params if p.name == "method")
    assert method.default == EnsembleRequest(top=1).method == "mean"
