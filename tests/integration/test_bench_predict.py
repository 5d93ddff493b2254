"""bench/predict_throughput.py --sbert on the real packaged MiniLM and sentence-transformers: it
checks the two sides' inputs, prints its table, and its check fails on a different max length.
No timing is asserted.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench import predict_throughput as bench
from bench.quickstart_model import quickstart_checkpoint
from model.data import read_task_file
from orchestrator.predict.predictor import load_predictor

pytestmark = pytest.mark.integration
pytest.importorskip("sentence_transformers")


def test_sbert_comparison_runs_on_the_same_inputs_and_prints_every_row(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    figures = bench.main(["--sbert", "--data-dir", str(data_dir), "--rows", "6", "--rounds", "1"])
    out = capsys.readouterr().out
    checked = "inputs: both sides feed their encoders the same token ids for every sst and sts row"
    assert f"{checked} (max length 64)" in out
    rates = figures["sbert"]["rows_per_s"]
    assert {bench.OURS_FP32, bench.THEIRS_FP32, bench.OURS_BF16} <= set(rates)
    for name, per_task in rates.items():
        assert set(per_task) == set(bench.SBERT_TASKS)
        assert f"| {name} | {per_task['sst']['best']:.0f} |" in out
    assert "| ratio ours fp32 / theirs fp32 |" in out
    assert "ours adds a tiny head" in out


def test_the_input_check_fails_when_their_max_length_differs(
    data_dir: Path, tmp_path: Path
) -> None:
    ours = load_predictor(quickstart_checkpoint(tmp_path / "fp32"))
    rows = {t: read_task_file(t, data_dir / bench.DEV_FILES[t])[:50] for t in bench.SBERT_TASKS}
    shorter = bench.load_sbert(8, torch.device("cpu"))
    with pytest.raises(SystemExit, match=r"sst: sentence-transformers tokenizes otherwise than "
                                         r"ours at row \d+, sentence 1 \(max length 8 vs 64"):
        bench.check_same_inputs(ours, shorter, rows, torch.device("cpu"))
