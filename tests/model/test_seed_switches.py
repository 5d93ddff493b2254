"""The switches the seed reports' best systems need (issue: the five seed systems as arms).

Each test fails if its switch does nothing: per-task pair encodings and head shapes, the cross-
encoded cosine mix of report 001, the head penalty on chosen tasks (002), a constant learning
rate (000-004 ran one), dropping a task whose data is exhausted (000) and an epoch step cap (003).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from model.batching import Batch
from model.config import ConfigError, ScheduleConfig, TrainConfig, build_config
from model.heads import MultitaskBert, PairHead, segment_means
from model.optim import build_optimizer, warmup_then
from model.schedule import sample_task_order
from model.step import compute_task_losses
from tests.model.tiny_training import make_context, synthetic_batches
from tests.tiny_model import tiny_config


def _linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def _dropouts(module: nn.Module) -> list[float]:
    return [m.p for m in module.modules() if hasattr(m, "p")]


def test_per_task_head_shapes_override_the_global_head() -> None:
    cfg = tiny_config(
        model={
            "head_dropout": 0.3,
            "sst_head": {"dropout": 0.5},
            "sts_head": {"layers": 2, "hidden": 7, "activation": "relu", "dropout": 0.5},
        }
    )
    model = make_context(cfg, 1).model
    assert [m.out_features for m in _linears(model.sst_head)] == [5]
    assert set(_dropouts(model.sst_head)) == {0.5}
    assert [m.out_features for m in _linears(model.para_head)] == [1]  # global: one layer
    assert set(_dropouts(model.para_head)) == {0.3}
    assert [m.out_features for m in _linears(model.sts_head)] == [7, 1]
    assert any(isinstance(m, nn.ReLU) for m in model.sts_head.modules())
    assert set(_dropouts(model.sts_head)) == {0.5}


def test_task_head_ranges_name_the_task_key() -> None:
    with pytest.raises(ConfigError, match=r"'model\.sts_head\.dropout' must be in \[0, 1\)"):
        build_config(TrainConfig, {"model": {"sts_head": {"dropout": 1.5}}})


def test_per_task_pair_encoding_builds_each_task_its_own_head_and_inputs(tmp_path) -> None:
    cfg = tiny_config(model={"pair_encoding": "cross", "sts_pair_encoding": "cosine"})
    assert (cfg.model.encoding_for("para"), cfg.model.encoding_for("sts")) == ("cross", "cosine")
    model = make_context(cfg, 1).model
    assert isinstance(model.para_head, PairHead) and model.para_head.mlp is not None
    assert model.sts_head.mlp is None  # a plain cosine head: no layers at all

    from model.data import PairExample, encode_task
    from model.tokenizer import load_tokenizer
    from model.weights import resolve_model_dir

    tokenizer = load_tokenizer(resolve_model_dir("minilm"), 32)
    pairs = [PairExample("a", "one two", "two three", 1.0)]
    cross = encode_task("para", pairs, tokenizer, cfg.model.encoding_for("para"))
    separate = encode_task("sts", pairs, tokenizer, cfg.model.encoding_for("sts"))
    assert cross.input_ids_b is None and separate.input_ids_b is not None


def _cross_pair_batch() -> Batch:
    # [CLS] a1 a2 [SEP] b1 [SEP] pad: sentence a = tokens 1-3 (its [SEP] included), b = 4-5.
    ids = torch.tensor([[101, 7, 8, 102, 9, 102, 0]])
    types = torch.tensor([[0, 0, 0, 0, 1, 1, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0]])
    return Batch("sts", ids, mask, types, labels=torch.tensor([3.0]))


def test_segment_means_average_each_sentence_of_a_cross_pair() -> None:
    sequence = torch.arange(7.0).view(1, 7, 1).expand(1, 7, 2)
    first, second = segment_means(sequence, _cross_pair_batch())
    assert first.tolist() == [[2.0, 2.0]]  # tokens 1, 2, 3
    assert second.tolist() == [[4.5, 4.5]]  # tokens 4, 5 (padding at 6 left out)


def test_cross_cosine_mix_starts_as_an_even_split_and_learns_the_weight() -> None:
    cfg = tiny_config(model={"pair_encoding": "cross_cosine_mix", "head_dropout": 0.0})
    head = PairHead(4, cfg.model, "sts", cosine_scale=5.0, cosine_bias=0.0)
    pair, u, v = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)
    expected = 0.5 * 5 * torch.cosine_similarity(u, v, dim=-1) + 0.5 * head.mlp(pair).squeeze(-1)
    out = head(pair, u, v)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    assert head.mix_logit.grad is not None and head.mix_logit.grad.abs() > 0


def test_cross_cosine_mix_forward_reads_the_cross_pass_segments() -> None:
    cfg = tiny_config(model={"pair_encoding": "cross_cosine_mix", "head_dropout": 0.0})
    model: MultitaskBert = make_context(cfg, 1).model.eval()
    batch = _cross_pair_batch()
    with torch.no_grad():
        vectors = model.sentence_vectors(batch, model.embed_inputs(batch))
        assert len(vectors) == 3  # pair vector, then sentence a and sentence b
        mix = torch.sigmoid(model.sts_head.mix_logit)
        cosine = torch.cosine_similarity(vectors[1], vectors[2], dim=-1)
        expected = mix * 5 * cosine + (1 - mix) * model.sts_head.mlp(vectors[0]).squeeze(-1)
        torch.testing.assert_close(model(batch), expected)


def test_head_penalty_applies_to_the_listed_tasks_only() -> None:
    loss = {"head_penalty": "linf", "head_penalty_coef": 0.05}
    data = {t: synthetic_batches(t, n_batches=1)[0] for t in ("sst", "sts")}
    plain = compute_task_losses(make_context(tiny_config(), 1), data)
    sts_only = make_context(tiny_config(loss={**loss, "head_penalty_tasks": ["sts"]}), 1)
    penalised = compute_task_losses(sts_only, data)
    torch.testing.assert_close(penalised["sst"], plain["sst"])
    weights = [p for n, p in sts_only.model.sts_head.named_parameters() if n.endswith("weight")]
    expected = plain["sts"] + 0.05 * sum(w.abs().max() for w in weights if w.ndim >= 2)
    torch.testing.assert_close(penalised["sts"], expected)


@pytest.mark.parametrize(
    ("after", "warmup", "expected"),
    [
        ("linear", 0.0, [1.0, 0.75, 0.5, 0.25]),
        ("constant", 0.0, [1.0, 1.0, 1.0, 1.0]),
        ("constant", 0.5, [0.5, 1.0, 1.0, 1.0]),
    ],
)
def test_learning_rate_after_warmup_decays_or_stays(after, warmup, expected) -> None:
    cfg = tiny_config(optim={"lr": 1e-3, "lr_schedule": after, "warmup_ratio": warmup})
    model = make_context(cfg, 1).model
    optimizer = build_optimizer(model, cfg, torch.device("cpu"))
    scheduler = warmup_then(optimizer, 4, warmup, after)
    seen = []
    for _ in range(4):
        seen.append(optimizer.param_groups[0]["lr"] / 1e-3)
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx(expected)


def test_exhausted_tasks_drop_out_of_a_simultaneous_epoch() -> None:
    counts = {"sst": 3, "para": 5, "sts": 2}
    recycle = sample_task_order(ScheduleConfig(), counts, 1, 1)
    assert recycle == [("sst", "para", "sts")] * 5
    drop = sample_task_order(ScheduleConfig(exhausted="drop"), counts, 1, 1)
    assert drop == [
        ("sst", "para", "sts"),
        ("sst", "para", "sts"),
        ("sst", "para"),
        ("para",),
        ("para",),
    ]
    # Each task trains exactly one pass over its data: its batch stream stays aligned by epoch.
    assert {t: sum(t in step for step in drop) for t in counts} == counts


def test_max_steps_per_epoch_caps_every_kind_of_epoch() -> None:
    counts = {"sst": 300, "para": 500, "sts": 200}
    order = ("sst", "para", "sts")
    for kind in ("simultaneous", "round_robin", "sequential", "epoch_round_robin"):
        schedule = ScheduleConfig(kind=kind, max_steps_per_epoch=200, order=order)
        plans = [sample_task_order(schedule, counts, e, 3) for e in (1, 2, 3)]
        assert [len(p) for p in plans] == [200, 200, 200], kind
    epoch_rr = ScheduleConfig(kind="epoch_round_robin", max_steps_per_epoch=200)
    assert sample_task_order(epoch_rr, counts, 2, 3) == [("para",)] * 200
    with pytest.raises(ConfigError, match=r"'schedule\.max_steps_per_epoch' must be >= 1"):
        ScheduleConfig(max_steps_per_epoch=0)
