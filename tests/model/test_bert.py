"""minBERT against transformers' BertModel on the same weights, plus its own invariants."""

from __future__ import annotations

import pytest
import torch
import transformers

from model.bert import BertConfig, BertModel
from model.weights import load_encoder, normalize_state_dict_keys, resolve_model_dir

TOL = 1e-5
TINY = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
    type_vocab_size=2,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    # Large weights make activations O(1), so e.g. exact vs tanh GELU differ far beyond TOL.
    initializer_range=0.3,
)


def padded_batch(
    lengths: list[int], vocab_size: int, seed: int = 0, pairs: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random ids (B, T) right-padded with 0, their 1/0 mask and token types (1 on 2nd half)."""
    gen = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.randint(1, vocab_size, (len(lengths), T), generator=gen)
    mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()
    types = torch.zeros_like(ids)
    if pairs:
        for row, n in enumerate(lengths):
            types[row, n // 2 : n] = 1
    return ids * mask, mask, types


def tiny_pair(act: str = "gelu") -> tuple[transformers.BertModel, BertModel]:
    """An HF BertModel with random weights and our BertModel holding the same weights (eval)."""
    torch.manual_seed(0)
    hf_cfg = transformers.BertConfig(**TINY, hidden_act=act)
    hf_cfg._attn_implementation = "eager"
    hf = transformers.BertModel(hf_cfg).eval()
    ours = BertModel(BertConfig.from_dict(hf_cfg.to_dict())).eval()
    ours.load_state_dict(normalize_state_dict_keys(hf.state_dict()), strict=True)
    return hf, ours


def assert_same_outputs(
    hf: transformers.BertModel, ours: BertModel, ids, mask, types, **kwargs
) -> None:
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
        seq, pooled = ours(ids, mask, types, **kwargs)
    real = mask.bool()  # padded positions are ignored downstream and differ by design
    assert seq.shape == ref.last_hidden_state.shape
    assert (seq[real] - ref.last_hidden_state[real]).abs().max().item() <= TOL
    assert (pooled - ref.pooler_output).abs().max().item() <= TOL


@pytest.fixture(scope="module")
def minilm_pair() -> tuple[transformers.BertModel, BertModel]:
    model_dir = resolve_model_dir("minilm")
    hf = transformers.BertModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    ours, _ = load_encoder(model_dir)
    return hf, ours.eval()


def test_matches_transformers_on_minilm_weights_with_padding(minilm_pair) -> None:
    hf, ours = minilm_pair
    ids, mask, types = padded_batch([23, 7, 15, 2], vocab_size=30522, seed=1, pairs=True)
    ids[:, 0] = 101  # [CLS], as in real input
    assert_same_outputs(hf, ours, ids, mask, types)


def test_matches_transformers_on_minilm_without_token_types(minilm_pair) -> None:
    hf, ours = minilm_pair
    ids, mask, _ = padded_batch([9, 12], vocab_size=30522, seed=2)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask)
        seq, pooled = ours(ids, mask)
    assert (seq[mask.bool()] - ref.last_hidden_state[mask.bool()]).abs().max().item() <= TOL
    assert (pooled - ref.pooler_output).abs().max().item() <= TOL


@pytest.mark.parametrize("act", ["gelu", "gelu_new", "gelu_pytorch_tanh", "relu"])
def test_matches_transformers_on_tiny_random_config(act: str) -> None:
    hf, ours = tiny_pair(act)
    ids, mask, types = padded_batch([11, 3, 17, 17, 1], vocab_size=99, seed=3, pairs=True)
    assert_same_outputs(hf, ours, ids, mask, types)


def test_unpadded_batch_fast_path_matches_masked_path_and_reference() -> None:
    hf, ours = tiny_pair()
    ids, mask, types = padded_batch([13, 13, 13], vocab_size=99, seed=4, pairs=True)
    assert BertModel._attention_mask(mask, None) is None  # CPU: no padding detected, no mask
    assert BertModel._attention_mask(mask, True) is not None
    assert_same_outputs(hf, ours, ids, mask, types, has_padding=False)
    assert_same_outputs(hf, ours, ids, mask, types, has_padding=True)


def test_extra_padding_does_not_change_real_positions() -> None:
    _, ours = tiny_pair()
    ids, mask, types = padded_batch([9, 5], vocab_size=99, seed=5)
    pad = torch.zeros(2, 6, dtype=torch.long)
    with torch.no_grad():
        seq, pooled = ours(ids, mask, types)
        seq_more, pooled_more = ours(
            torch.cat([ids, pad + 7], 1), torch.cat([mask, pad], 1), torch.cat([types, pad], 1)
        )
    real = mask.bool()
    assert (seq[real] - seq_more[:, :9][real]).abs().max().item() <= TOL
    assert (pooled - pooled_more).abs().max().item() <= TOL
    # Ignoring the mask would let the (non-pad) ids in the padded columns leak in.
    with torch.no_grad():
        leaked, _ = ours(torch.cat([ids, pad + 7], 1), torch.ones(2, 15, dtype=torch.long))
    assert (leaked[:, :9][real] - seq[real]).abs().max().item() > 1e-3


def test_forward_is_encode_embeddings_of_embed() -> None:
    _, ours = tiny_pair()
    ids, mask, types = padded_batch([8, 4], vocab_size=99, seed=6, pairs=True)
    with torch.no_grad():
        emb = ours.embed(ids, types)
        assert emb.shape == (2, 8, 32)
        via_seam = ours.encode_embeddings(emb, mask)
        direct = ours(ids, mask, types)
        perturbed = ours.encode_embeddings(emb + 0.1, mask)
    torch.testing.assert_close(via_seam, direct, rtol=0, atol=0)
    assert (perturbed[0] - direct[0]).abs().max().item() > 1e-3


def test_dropout_only_in_training() -> None:
    _, ours = tiny_pair()
    ids, mask, types = padded_batch([8, 6], vocab_size=99, seed=7)
    with torch.no_grad():
        first = ours(ids, mask, types)[0]
        assert torch.equal(first, ours(ids, mask, types)[0])  # eval: deterministic
        ours.train()
        a, b = ours(ids, mask, types)[0], ours(ids, mask, types)[0]
    assert (a - b).abs().max().item() > 1e-3


def test_attention_dropout_goes_through_sdpa_dropout_p(monkeypatch) -> None:
    seen: list[float] = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kwargs):
        seen.append(kwargs["dropout_p"])
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    model = BertModel(BertConfig(**{**TINY, "attention_probs_dropout_prob": 0.25}))
    ids, mask, _ = padded_batch([4, 3], vocab_size=99)
    model.train()(ids, mask)
    model.eval()(ids, mask)
    assert seen == [0.25, 0.25, 0.0, 0.0]


def test_random_init_follows_bert_initializer() -> None:
    torch.manual_seed(0)
    model = BertModel(BertConfig(**{**TINY, "hidden_size": 64, "initializer_range": 0.05}))
    query = model.encoder.layer[0].attention.self.query
    assert query.weight.std().item() == pytest.approx(0.05, rel=0.1)
    assert torch.all(query.bias == 0)
    assert model.embeddings.word_embeddings.weight.std().item() == pytest.approx(0.05, rel=0.1)
    assert torch.all(model.embeddings.word_embeddings.weight[0] == 0)  # pad_token_id row
    assert torch.all(model.encoder.layer[1].output.LayerNorm.weight == 1)
    assert torch.all(model.embeddings.LayerNorm.bias == 0)


def test_parameter_names_match_transformers() -> None:
    hf, ours = tiny_pair()
    assert list(ours.state_dict()) == list(hf.state_dict())


def test_config_from_dict_ignores_unrelated_keys_and_round_trips() -> None:
    raw = {**TINY, "model_type": "bert", "architectures": ["BertModel"], "use_cache": True}
    del raw["initializer_range"]
    cfg = BertConfig.from_dict(raw)
    assert cfg.hidden_size == 32 and cfg.intermediate_size == 37
    assert cfg.layer_norm_eps == 1e-12 and cfg.initializer_range == 0.02  # defaults kept
    assert BertConfig.from_dict(cfg.to_dict()) == cfg
    assert set(cfg.to_dict()) <= set(transformers.BertConfig().to_dict())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hidden_act": "swish"}, "hidden_act"),
        ({"num_attention_heads": 5}, "num_attention_heads"),
        ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
        ({"num_attention_heads": 0}, "^num_attention_heads must be a positive integer, got 0$"),
        ({"num_hidden_layers": -1}, "^num_hidden_layers must be a positive integer"),
        ({"hidden_size": "32"}, "^hidden_size must be a positive integer, got '32'$"),
        ({"vocab_size": 32.0}, "^vocab_size must be a positive integer"),
        ({"type_vocab_size": True}, "^type_vocab_size must be a positive integer"),
        ({"pad_token_id": 99}, r"^pad_token_id must be an integer in \[0, vocab_size=99\)"),
        ({"layer_norm_eps": "tiny"}, "^layer_norm_eps must be a positive number, got 'tiny'$"),
        ({"layer_norm_eps": 0.0}, "^layer_norm_eps must be a positive number"),
        ({"initializer_range": float("nan")}, "^initializer_range must be a positive number"),
        ({"attention_probs_dropout_prob": 1}, r"^attention_probs_dropout_prob .* \[0, 1\)"),
        ({"hidden_dropout_prob": -0.1}, r"^hidden_dropout_prob must be a number in \[0, 1\)"),
        ({"hidden_act": ["gelu"]}, "^hidden_act"),
    ],
)
def test_config_rejects_unsupported_values(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BertConfig.from_dict({**TINY, **change})


def test_config_from_dict_needs_a_mapping() -> None:
    with pytest.raises(ValueError, match="expected a JSON object of BERT config fields, got list"):
        BertConfig.from_dict([])  # type: ignore[arg-type]
    # Integers are accepted where HF writes floats (a dropout of 0, an eps of 1).
    assert BertConfig.from_dict({**TINY, "hidden_dropout_prob": 0, "layer_norm_eps": 1})
