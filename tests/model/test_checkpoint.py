"""Reading a checkpoint back: every malformed file is a one-line CheckpointError naming it."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from model.checkpoint import (
    WEIGHTS_DIGEST_KEY,
    CheckpointError,
    ResumeState,
    TrainerState,
    load_checkpoint_model,
    load_resume_state,
    save_checkpoint,
)
from model.train import build_model, seed_everything
from tests.model.damaged_weights import HEAD_WEIGHT, flip_exponent_bit
from tests.model.tiny_training import synthetic_batches
from tests.tiny_model import tiny_config


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny checkpoint (MiniLM's tokenizer files copied in), written once."""
    cfg = tiny_config()
    seed_everything(cfg.seed)
    model, model_dir = build_model(cfg)
    target = tmp_path_factory.mktemp("checkpoint") / "best"
    return save_checkpoint(target, model, cfg, model_dir, {"dev/overall": 0.0})


def edit_config(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def apply(checkpoint: Path) -> None:
        raw = json.loads((checkpoint / "config.json").read_text())
        change(raw)
        (checkpoint / "config.json").write_text(json.dumps(raw))

    return apply


def without_tokenizer_json(then: Callable[[Path], object]) -> Callable[[Path], None]:
    """Drop tokenizer.json, so vocab.txt and tokenizer_config.json are read instead."""

    def apply(checkpoint: Path) -> None:
        (checkpoint / "tokenizer.json").unlink()
        then(checkpoint)

    return apply


def no_tokenizer_files(checkpoint: Path) -> None:
    for name in ("tokenizer.json", "vocab.txt"):
        (checkpoint / name).unlink()


CORRUPTIONS = {
    "bert is a list": (
        edit_config(lambda raw: raw.update(bert=[])),
        "config.json",
        "expected a JSON object of BERT config fields, got list",
    ),
    "zero heads": (
        edit_config(lambda raw: raw["bert"].update(num_attention_heads=0)),
        "config.json",
        "num_attention_heads must be a positive integer, got 0",
    ),
    "hidden not divisible by heads": (
        edit_config(lambda raw: raw["bert"].update(num_attention_heads=3)),
        "config.json",
        "hidden_size 32 is not a multiple of num_attention_heads 3",
    ),
    "unknown activation": (
        edit_config(lambda raw: raw["bert"].update(hidden_act="swish")),
        "config.json",
        "hidden_act 'swish' is not supported",
    ),
    "no bert entry": (
        edit_config(lambda raw: raw.pop("bert")),
        "config.json",
        "no 'bert' entry",
    ),
    "config not UTF-8": (
        lambda c: (c / "config.json").write_bytes(b"\xff\xfe{}"),
        "config.json",
        "can't decode byte 0xff",
    ),
    "config is a list": (
        lambda c: (c / "config.json").write_text("[]"),
        "config.json",
        "expected a JSON object, got list",
    ),
    "no tokenizer and no reference": (
        lambda c: (no_tokenizer_files(c), edit_config(lambda raw: raw.pop("tokenizer"))(c)),
        "config.json",
        "no tokenizer files in",
    ),
    "vocab not UTF-8": (
        without_tokenizer_json(lambda c: (c / "vocab.txt").write_bytes(b"[PAD]\n\xff\n")),
        "vocab.txt",
        "UTF-8",
    ),
    "tokenizer_config is a list": (
        without_tokenizer_json(lambda c: (c / "tokenizer_config.json").write_text("[]")),
        "tokenizer_config.json",
        "expected a JSON object, got list",
    ),
    "flipped exponent bit in a head weight": (
        flip_exponent_bit,
        "model.safetensors",
        "differs from the",
    ),
    "digest is no sha256": (
        edit_config(lambda raw: raw.update({WEIGHTS_DIGEST_KEY: "abc"})),
        "config.json",
        "'weights_sha256' is not a sha256 ('abc')",
    ),
    "shapes differ from config": (
        edit_config(lambda raw: raw["bert"].update(hidden_size=64)),
        "model.safetensors",
        "encoder.embeddings.word_embeddings.weight has shape (30522, 32) in the weights but "
        "(30522, 64) in the model",
    ),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_malformed_checkpoint_is_a_checkpoint_error_naming_the_file(
    saved: Path, tmp_path: Path, case: str
) -> None:
    corrupt, file, needle = CORRUPTIONS[case]
    checkpoint = tmp_path / "best"
    shutil.copytree(saved, checkpoint)
    corrupt(checkpoint)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint_model(checkpoint)
    message = str(caught.value)
    assert message.startswith(f"{checkpoint / file}: ") and needle in message
    assert len(message.splitlines()) == 1


def test_intact_checkpoint_loads(saved: Path) -> None:
    model, tokenizer, cfg = load_checkpoint_model(saved)
    assert model.encoder.config.hidden_size == 32 and tokenizer.max_length == cfg.model.max_length


def test_the_weights_digest_is_the_files_sha256_and_old_checkpoints_without_it_load(
    saved: Path, tmp_path: Path
) -> None:
    recorded = json.loads((saved / "config.json").read_text())[WEIGHTS_DIGEST_KEY]
    assert recorded == hashlib.sha256((saved / "model.safetensors").read_bytes()).hexdigest()
    # A checkpoint written before the digest existed: no entry, loaded unchecked (so even the
    # flipped bit loads, as it did before the digest; only the digest can catch it).
    old = shutil.copytree(saved, tmp_path / "old")
    edit_config(lambda raw: raw.pop(WEIGHTS_DIGEST_KEY))(old)
    flip_exponent_bit(old)
    model, _, _ = load_checkpoint_model(old)
    assert model.sst_head[1].weight.abs().max().item() > 1e30


def test_a_non_finite_weight_is_a_checkpoint_error_naming_file_and_key(tmp_path: Path) -> None:
    cfg = tiny_config()
    model, model_dir = build_model(cfg)
    with torch.no_grad():
        model.sst_head[1].weight[0, 0] = float("nan")
        model.sst_head[1].weight[1, 2] = float("inf")
    checkpoint = save_checkpoint(tmp_path / "best", model, cfg, model_dir, {})
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint_model(checkpoint)  # the digest matches: the values themselves are bad
    assert str(caught.value) == (
        f"{checkpoint / 'model.safetensors'}: {HEAD_WEIGHT} holds 2 non-finite values (NaN or inf)"
    )


def test_resume_state_round_trips_and_a_checkpoint_without_it_cannot_resume(
    saved: Path, tmp_path: Path
) -> None:
    cfg = tiny_config()
    model, model_dir = build_model(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(synthetic_batches("sst", n_batches=1)[0]).sum().backward()
    optimizer.step()
    progress = TrainerState(epoch=1, global_step=4, best_score=0.5, best_metrics={}, history=[])
    resume = ResumeState(
        progress=progress,
        optimizer=optimizer.state_dict(),
        scheduler={"last_epoch": 4},
        torch_rng=torch.get_rng_state(),
        stream_passes={"sst": 2},
    )
    last = save_checkpoint(tmp_path / "last", model, cfg, model_dir, {}, resume=resume)
    loaded = load_resume_state(last)
    assert loaded.progress == progress and loaded.stream_passes == {"sst": 2}
    assert loaded.bregman_ema is None and torch.equal(loaded.torch_rng, resume.torch_rng)
    assert loaded.optimizer["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]
    with pytest.raises(CheckpointError, match=r"best: cannot resume from it"):
        load_resume_state(saved)  # a best checkpoint holds weights only
