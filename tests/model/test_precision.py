"""`precision: auto`: bf16 autocast on a CPU that computes bf16 natively, fp32 on one that does
not (the capability check forced both ways), and a run that says which it chose first."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model import device as device_module
from model.device import autocast_dtype, cpu_bf16_features, precision_line, resolved_precision
from model.train import fit
from tests.orchestrator.sweep_store import make_tiny_data_dir
from tests.tiny_model import tiny_config

CPU = torch.device("cpu")


def force_cpu_bf16(monkeypatch: pytest.MonkeyPatch, features: list[str]) -> None:
    monkeypatch.setattr(device_module, "cpu_bf16_features", lambda: features)


def test_auto_is_bf16_on_a_cpu_with_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    force_cpu_bf16(monkeypatch, ["avx512_bf16"])
    cfg = tiny_config(precision="auto")
    assert autocast_dtype(cfg, CPU) is torch.bfloat16
    assert precision_line(cfg, CPU) == (
        "device cpu, precision bf16 (auto: this CPU computes bf16 natively (avx512_bf16))"
    )


def test_auto_keeps_fp32_on_a_cpu_without_native_bf16_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    force_cpu_bf16(monkeypatch, [])
    cfg = tiny_config(precision="auto")
    assert autocast_dtype(cfg, CPU) is None
    assert resolved_precision(cfg, CPU) == (
        "fp32", "auto: this CPU has no native bf16 (no avx512_bf16 or AMX), so fp32"
    )  # fmt: skip


@pytest.mark.parametrize("features", [[], ["amx"]])
def test_a_precision_set_in_the_config_is_kept(monkeypatch: pytest.MonkeyPatch, features) -> None:
    force_cpu_bf16(monkeypatch, features)
    assert autocast_dtype(tiny_config(precision="fp32"), CPU) is None
    assert autocast_dtype(tiny_config(precision="bf16"), CPU) is torch.bfloat16
    assert resolved_precision(tiny_config(precision="bf16"), CPU)[1] == "set in the config"


def test_the_feature_probe_reads_torch() -> None:
    expected = []
    if torch.cpu._is_avx512_bf16_supported():
        expected.append("avx512_bf16")
    if torch.cpu._is_amx_tile_supported():
        expected.append("amx")
    assert cpu_bf16_features() == expected


@pytest.mark.parametrize(("features", "used"), [([], "fp32"), (["avx512_bf16"], "bf16")])
def test_a_run_says_its_precision_first_and_trains_in_it(
    tmp_path: Path,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    features: list[str],
    used: str,
) -> None:
    force_cpu_bf16(monkeypatch, features)
    data = make_tiny_data_dir(data_dir, tmp_path / "data", rows=16)
    cfg = tiny_config(precision="auto", optim={"epochs": 1}, data={"batch_size": 8})
    result = fit(cfg, data_dir=data, out_dir=tmp_path / "run", prediction_splits=())
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith(f"device cpu, precision {used} (auto: ")
    assert result.precision == used
