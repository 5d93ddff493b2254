"""The tokenized-id cache: same examples as the uncached path, one entry per file and tokenizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.config import TrainConfig, build_config
from model.data import PairExample, SentenceExample, encode_task
from model.task_data import load_task_data
from model.token_cache import TokenCache, concat_encoded, encode_subsample, select_encoded
from model.tokenizer import TextTokenizer, load_tokenizer
from model.weights import resolve_model_dir

SENTENCES = [
    SentenceExample(f"s{i}", f"sentence number {i} is {'very ' * i}good", i % 5) for i in range(12)
]
PAIRS = [
    PairExample(f"p{i}", f"how do I learn {i} things", f"what is {i}?", float(i % 2))
    for i in range(9)
]


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    return load_tokenizer(resolve_model_dir("minilm"), 32)


def assert_same_encoding(a, b) -> None:
    assert a.task == b.task and a.ids == b.ids
    if a.labels is None:
        assert b.labels is None
    else:
        assert a.labels.dtype == b.labels.dtype
        np.testing.assert_array_equal(a.labels, b.labels)
    for name in ("input_ids", "token_type_ids", "input_ids_b", "token_type_ids_b"):
        left, right = getattr(a, name), getattr(b, name)
        assert (left is None) == (right is None), name
        if left is not None:
            assert len(left) == len(right)
            for x, y in zip(left, right, strict=True):
                np.testing.assert_array_equal(x, y)
                assert y.dtype == np.int32


@pytest.mark.parametrize("encoding", ["cross", "sbert"])
def test_second_encode_reads_back_exactly_what_the_tokenizer_gave(tmp_path, tokenizer, encoding):
    cache = TokenCache(tmp_path, tokenizer)
    first = cache.encode("sts", Path("sts-train.csv"), PAIRS, encoding)
    again = TokenCache(tmp_path, tokenizer).encode("sts", Path("sts-train.csv"), PAIRS, encoding)
    assert_same_encoding(first, encode_task("sts", PAIRS, tokenizer, encoding))
    assert_same_encoding(again, first)
    assert (cache.misses, cache.hits) == (1, 0)
    assert [p.name.startswith("sts-sts-train-") for p in tmp_path.glob("*.parquet")] == [True]


def test_key_changes_with_tokenizer_max_length_encoding_and_contents(tmp_path, tokenizer):
    cache = TokenCache(tmp_path, tokenizer)
    src = Path("quora.csv")
    base = cache.path_for("para", src, PAIRS, "cross")
    short = TokenCache(tmp_path, load_tokenizer(resolve_model_dir("minilm"), 16))
    assert short.path_for("para", src, PAIRS, "cross") != base
    assert cache.path_for("para", src, PAIRS, "sbert") != base
    # Every bi-encoder tokenizes the same way, so they share one entry.
    assert cache.path_for("para", src, PAIRS, "sbert") == cache.path_for(
        "para", src, PAIRS, "cosine"
    )
    edited = [*PAIRS[:-1], PairExample("p8", "how do I learn 8 things", "what is 9?", 0.0)]
    assert cache.path_for("para", src, edited, "cross") != base
    assert cache.path_for("para", src, PAIRS[:-1], "cross") != base
    assert cache.path_for("sts", src, PAIRS, "cross") != base


def test_unreadable_entry_is_rewritten(tmp_path, tokenizer):
    cache = TokenCache(tmp_path, tokenizer)
    path = cache.path_for("sst", Path("sst.csv"), SENTENCES, "cross")
    path.write_bytes(b"not parquet")
    encoded = cache.encode("sst", Path("sst.csv"), SENTENCES, "cross")
    assert cache.misses == 1
    assert_same_encoding(encoded, encode_task("sst", SENTENCES, tokenizer, "cross"))
    assert_same_encoding(
        TokenCache(tmp_path, tokenizer).encode("sst", Path("sst.csv"), SENTENCES, "cross"), encoded
    )


def test_select_and_concat_keep_rows_and_labels_together(tokenizer):
    whole = encode_task("sst", SENTENCES, tokenizer, "cross")
    head, tail = select_encoded(whole, range(5)), select_encoded(whole, range(5, 12))
    assert_same_encoding(concat_encoded([head, tail]), whole)
    picked = select_encoded(whole, [7, 2])
    assert picked.ids == ["s7", "s2"] and picked.labels.tolist() == [2, 2]
    np.testing.assert_array_equal(picked.input_ids[0], whole.input_ids[7])


@pytest.mark.parametrize("encoding", ["cross", "bi_concat"])
def test_cached_subsample_selects_the_same_examples_as_the_uncached_path(
    tmp_path, tokenizer, encoding
):
    files = [(Path("a.csv"), PAIRS[:5]), (Path("b.csv"), PAIRS[5:])]
    kwargs = {"max_examples": 4, "ratio": 0.8, "seed": 3}
    plain = encode_subsample("para", files, tokenizer, encoding, **kwargs)
    cache = TokenCache(tmp_path, tokenizer)
    cached = encode_subsample("para", files, tokenizer, encoding, cache=cache, **kwargs)
    assert len(plain) == 4
    assert_same_encoding(cached, plain)
    assert cache.misses == 2  # one entry per file


def test_load_task_data_with_a_cache_equals_without_and_skips_the_tokenizer(
    tmp_path, data_dir, tiny_config_dict, monkeypatch
):
    cfg = build_config(TrainConfig, tiny_config_dict)
    cached_cfg = build_config(
        TrainConfig,
        {**tiny_config_dict, "data": {**tiny_config_dict["data"], "cache_dir": str(tmp_path)}},
    )
    model_dir = resolve_model_dir(cfg.model.name)
    plain = load_task_data(cfg, data_dir, model_dir)
    load_task_data(cached_cfg, data_dir, model_dir)  # fills the cache
    assert len(list(tmp_path.glob("*.parquet"))) >= 6

    def refuse(*args, **kwargs):
        raise AssertionError("tokenizer called although every file is cached")

    monkeypatch.setattr(TextTokenizer, "encode", refuse)
    monkeypatch.setattr(TextTokenizer, "encode_pairs", refuse)
    cached = load_task_data(cached_cfg, data_dir, model_dir)
    for split in ("train", "dev", "test"):
        assert getattr(cached, split).keys() == getattr(plain, split).keys()
        for task, encoded in getattr(plain, split).items():
            assert_same_encoding(getattr(cached, split)[task], encoded)
