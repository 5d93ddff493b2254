"""The BERT WordPiece tokenizer of a model directory, and the check that it fits the encoder.

`tokenizer.json` is loaded as is; a directory with only `vocab.txt` (and optionally
`tokenizer_config.json`) gets BertTokenizerFast's pipeline rebuilt from those files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from model.bert import BertConfig
from model.config import CROSS_ENCODINGS
from model.weights import WeightsError


def check_tokenizer_fits(
    cfg: BertConfig, tokenizer: TextTokenizer, pair_encodings: Iterable[str], config_file: Path
) -> None:
    """Fail before training if the tokenizer's ids, lengths or token types overflow `cfg`'s
    embedding tables (otherwise an IndexError at the first batch that reaches them)."""
    top_id = max(tokenizer.tokenizer.get_vocab(with_added_tokens=True).values())
    if top_id >= cfg.vocab_size:
        raise WeightsError(
            f"{config_file}: vocab_size {cfg.vocab_size} is smaller than the vocabulary of "
            f"tokenizer {tokenizer.reference} (ids up to {top_id})"
        )
    if tokenizer.max_length > cfg.max_position_embeddings:
        raise WeightsError(
            f"{config_file}: max_position_embeddings {cfg.max_position_embeddings} is below "
            f"model.max_length {tokenizer.max_length}; set model.max_length to at most "
            f"{cfg.max_position_embeddings}"
        )
    if set(pair_encodings) & set(CROSS_ENCODINGS) and cfg.type_vocab_size < 2:
        raise WeightsError(
            f"{config_file}: type_vocab_size {cfg.type_vocab_size} has no token type for the "
            "second sentence of a cross-encoded pair; set model.pair_encoding (and any "
            "model.para_pair_encoding / model.sts_pair_encoding) to a bi-encoder "
            "(bi_concat, sbert, cosine or cosine_mix)"
        )


class TextTokenizer:
    """BERT WordPiece tokenizer: ids with [CLS]/[SEP], truncated to `max_length`, never padded."""

    def __init__(self, tokenizer: Tokenizer, max_length: int, reference: str) -> None:
        if max_length < 4:
            raise WeightsError(f"tokenizer max_length must be at least 4, got {max_length}")
        padding = tokenizer.padding
        pad_id = padding["pad_id"] if padding else tokenizer.token_to_id("[PAD]")
        if pad_id is None:
            raise WeightsError(f"tokenizer of {reference} has no [PAD] token")
        # Batches are padded later, per bucket; truncation matches HF's `truncation=True`.
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length, strategy="longest_first")
        self.tokenizer = tokenizer
        self.pad_id: int = pad_id
        self.max_length = max_length
        self.reference = reference

    def encode(self, texts: Sequence[str]) -> tuple[list[list[int]], list[list[int]]]:
        """[CLS] text [SEP] ids and their token type ids (all 0), one list per text."""
        encodings = self.tokenizer.encode_batch(list(texts))
        return [e.ids for e in encodings], [e.type_ids for e in encodings]

    def encode_pairs(
        self, first: Sequence[str], second: Sequence[str]
    ) -> tuple[list[list[int]], list[list[int]]]:
        """[CLS] a [SEP] b [SEP] ids and token type ids (0 for a, 1 for b), one list per pair."""
        if len(first) != len(second):
            raise ValueError(f"encode_pairs: {len(first)} first texts but {len(second)} second")
        encodings = self.tokenizer.encode_batch(list(zip(first, second, strict=True)))
        return [e.ids for e in encodings], [e.type_ids for e in encodings]


def load_tokenizer(
    model_dir: Path, max_length: int, reference: str | None = None
) -> TextTokenizer:
    """The tokenizer of `model_dir`: tokenizer.json if present, else WordPiece from vocab.txt."""
    model_dir = Path(model_dir)
    reference = str(model_dir) if reference is None else reference
    if (model_dir / "tokenizer.json").is_file():
        try:
            tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        except Exception as err:  # tokenizers raises a bare Exception on malformed files
            raise WeightsError(f"{model_dir / 'tokenizer.json'}: {err}") from err
    elif (model_dir / "vocab.txt").is_file():
        tokenizer = wordpiece_from_vocab(model_dir)
    else:
        raise WeightsError(f"{model_dir} has neither tokenizer.json nor vocab.txt")
    return TextTokenizer(tokenizer, max_length, reference)


def wordpiece_from_vocab(model_dir: Path) -> Tokenizer:
    """Rebuild BertTokenizerFast's pipeline from vocab.txt and tokenizer_config.json options."""
    options: dict[str, Any] = {}
    config_file = model_dir / "tokenizer_config.json"
    if config_file.is_file():
        try:
            options = json.loads(config_file.read_text())
        except (OSError, ValueError) as err:  # ValueError: bad JSON or not UTF-8
            raise WeightsError(f"{config_file}: {err}") from err
        _check_tokenizer_options(options, config_file)
    special = {
        name: _token_text(options.get(f"{name}_token")) or f"[{name.upper()}]"
        for name in ("pad", "unk", "cls", "sep", "mask")
    }
    vocab_file = model_dir / "vocab.txt"
    try:
        wordpiece = models.WordPiece.from_file(str(vocab_file), unk_token=special["unk"])
    except Exception as err:  # tokenizers raises a bare Exception (e.g. a file not in UTF-8)
        raise WeightsError(f"{vocab_file}: {err}") from err
    tokenizer = Tokenizer(wordpiece)
    missing = [tok for tok in special.values() if tokenizer.token_to_id(tok) is None]
    if missing:
        raise WeightsError(f"{vocab_file}: special tokens {missing} are not in the vocabulary")
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=options.get("tokenize_chinese_chars", True),
        strip_accents=options.get("strip_accents"),
        lowercase=options.get("do_lower_case", True),
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = special["cls"], special["sep"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, tokenizer.token_to_id(cls)), (sep, tokenizer.token_to_id(sep))],
    )
    tokenizer.decoder = decoders.WordPiece()
    # As in HF: special tokens written in the text map to their ids instead of being split.
    tokenizer.add_special_tokens(list(special.values()))
    return tokenizer


def _check_tokenizer_options(options: Any, config_file: Path) -> None:
    """The tokenizer_config.json options we read have the types BertTokenizerFast gives them."""
    if not isinstance(options, dict):
        raise WeightsError(f"{config_file}: expected a JSON object, got {type(options).__name__}")
    for key in ("do_lower_case", "tokenize_chinese_chars", "strip_accents"):
        value = options.get(key, True)
        # strip_accents may be null: accents are then stripped when lowercasing, as in HF.
        if not isinstance(value, bool) and not (key == "strip_accents" and value is None):
            raise WeightsError(f"{config_file}: {key} must be true or false, got {value!r}")
    for name in ("pad", "unk", "cls", "sep", "mask"):
        value = options.get(f"{name}_token")
        if value is not None and _token_text(value) is None:
            raise WeightsError(f"{config_file}: {name}_token must be a string, got {value!r}")


def _token_text(value: Any) -> str | None:
    """A special token as written in tokenizer_config.json: a string, or a serialised
    AddedToken object with its text under "content"."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None
