"""A from-scratch BERT encoder whose parameter names match Hugging Face's `BertModel`.

Real checkpoints load with a strict `load_state_dict` after
`model.weights.normalize_state_dict_keys`.
Attention is `F.scaled_dot_product_attention`; the forward takes tensors and returns tensors.
Shapes: B = batch, T = tokens, H = hidden size, nh = heads, hd = H // nh, I = intermediate size,
N = real (non-padding) tokens of a batch: the unpadded encoder runs its layers on (N, H) rows
(model/packing.py); the padded one on (B, T, H).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.dropout import Dropout
from model.packing import PackedTokens, packed_attention

# What attention gets besides q, k, v: a (B, 1, 1, T) key mask or None for a padded (B, T, H)
# batch, or the token layout of an unpadded (N, H) one.
AttentionLayout = Tensor | PackedTokens | None

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": F.gelu,  # exact erf GELU, as in the original BERT
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


# The fields that size parameter tensors: positive integers, and fixed by pretrained weights.
SIZE_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class BertConfig:
    """Architecture of a BERT encoder; defaults are bert-base-uncased's, field names are HF's."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        # Every field is checked here, once: a config.json is user input, and a bad value would
        # otherwise surface as a ZeroDivisionError here or a TypeError deep in the first forward.
        # The message starts with the field name, so loaders can prefix the file.
        for name in SIZE_FIELDS:
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not _is_int(self.pad_token_id) or not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"pad_token_id must be an integer in [0, vocab_size={self.vocab_size}), "
                f"got {self.pad_token_id!r}"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 <= value < 1:
                raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
        for name in ("layer_norm_eps", "initializer_range"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 < value < math.inf:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not isinstance(self.hidden_act, str) or self.hidden_act not in ACTIVATIONS:
            raise ValueError(
                f"hidden_act {self.hidden_act!r} is not supported "
                f"(known: {', '.join(ACTIVATIONS)})"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BertConfig:
        """Read a Hugging Face config.json dict; unrelated keys ignored, missing ones defaulted."""
        if not isinstance(d, Mapping):
            raise ValueError(
                f"expected a JSON object of BERT config fields, got {type(d).__name__}"
            )
        kind = d.get("position_embedding_type", "absolute")
        if kind != "absolute":
            raise ValueError(
                f"position_embedding_type {kind!r} is not supported (only 'absolute')"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names and v is not None})

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (HF config.json key names)."""
        return dataclasses.asdict(self)


# torch.compile: batches are padded to a multiple of this many tokens, so a compiled encoder
# meets at most max_length / 8 sequence lengths (and dynamic shapes cover the batch size).
COMPILE_PAD_MULTIPLE = 8


def compile_encoder(model: BertModel) -> None:
    """Compile the transformer stack in place (fused elementwise kernels, fewer launches).

    Only `model.encoder` is compiled, so parameter names, `embed` and `encode_embeddings` (the
    SMART seam) are unchanged and checkpoints stay loadable without torch.compile. Dynamic shapes
    stop a recompile for every new batch size or length; the first steps pay the compile time.
    A graph the compiler cannot build (no C++ compiler on a CPU machine, an unsupported op) runs
    eagerly instead of failing the run.
    """
    import torch._dynamo

    torch._dynamo.config.suppress_errors = True  # fall back to eager per frame, with a warning
    model.encoder.compile(dynamic=True)


def _compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype the encoder's matmuls produce for x: autocast's where it is on (CPU / CUDA)."""
    device = x.device.type
    if device in ("cpu", "cuda") and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


class BertEmbeddings(nn.Module):
    """Word + position + token-type embeddings, then LayerNorm and dropout."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(cfg.hidden_dropout_prob)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        T = input_ids.shape[1]
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        positions = torch.arange(T, device=input_ids.device)  # (T,), broadcast over the batch
        x = (
            self.word_embeddings(input_ids)  # (B, T, H)
            + self.position_embeddings(positions)  # (T, H)
            + self.token_type_embeddings(token_type_ids)  # (B, T, H)
        )
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    """Multi-head scaled dot-product attention over the sequence (HF: `attention.self`)."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.dropout_p = cfg.attention_probs_dropout_prob

    def forward(self, x: Tensor, layout: AttentionLayout) -> Tensor:
        if isinstance(layout, PackedTokens):  # x: (N, H) real tokens only
            q, k, v = self.query(x), self.key(x), self.value(x)
            return packed_attention(q, k, v, layout, self.num_heads, self._dropout())
        B, T, H = x.shape

        def heads(t: Tensor) -> Tensor:  # (B, T, H) -> (B, nh, T, hd)
            return t.view(B, T, self.num_heads, H // self.num_heads).transpose(1, 2)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        # layout: (B, 1, 1, T) bool, True = real key; None lets SDPA pick a fused kernel.
        context = F.scaled_dot_product_attention(
            q, k, v, attn_mask=layout, dropout_p=self._dropout()
        )  # (B, nh, T, hd)
        return context.transpose(1, 2).reshape(B, T, H)

    def _dropout(self) -> float:
        return self.dropout_p if self.training else 0.0


class BertResidualOutput(nn.Module):
    """Dense projection, dropout, then LayerNorm of (projection + residual); HF's `*.output`."""

    def __init__(self, cfg: BertConfig, in_features: int) -> None:
        super().__init__()
        self.dense = nn.Linear(in_features, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(cfg.hidden_dropout_prob)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)  # (B, T, H)


class BertAttention(nn.Module):
    """Self-attention followed by its output projection and residual LayerNorm."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(cfg)
        self.output = BertResidualOutput(cfg, cfg.hidden_size)

    def forward(self, x: Tensor, layout: AttentionLayout) -> Tensor:
        return self.output(self.self(x, layout), x)


class BertIntermediate(nn.Module):
    """The feed-forward expansion H -> I with the configured activation."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.act = ACTIVATIONS[cfg.hidden_act]

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.dense(x))  # (B, T, H) -> (B, T, I)


class BertLayer(nn.Module):
    """One post-LayerNorm transformer block."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.attention = BertAttention(cfg)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertResidualOutput(cfg, cfg.intermediate_size)

    def forward(self, x: Tensor, layout: AttentionLayout) -> Tensor:
        x = self.attention(x, layout)
        return self.output(self.intermediate(x), x)  # (B, T, I) -> (B, T, H), or (N, .) packed


class BertEncoder(nn.Module):
    """The stack of transformer blocks (HF: `encoder.layer.N`)."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, x: Tensor, layout: AttentionLayout) -> Tensor:
        for block in self.layer:
            x = block(x, layout)
        return x


class BertPooler(nn.Module):
    """tanh(dense(hidden state of the first token)), BERT's next-sentence-prediction pooling."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, sequence_output: Tensor) -> Tensor:
        return torch.tanh(self.dense(sequence_output[:, 0]))  # (B, T, H) -> (B, H)


class BertModel(nn.Module):
    """BERT encoder: `forward(input_ids, attention_mask)` -> (sequence_output, pooled_output)."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = BertEncoder(cfg)
        self.pooler = BertPooler(cfg)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        # BERT's initializer: N(0, initializer_range) for weights, zero biases, identity LayerNorm.
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def embed(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        """Embedding output after LayerNorm and dropout: (B, T) ids -> (B, T, H)."""
        return self.embeddings(input_ids, token_type_ids)

    def encode_embeddings(
        self,
        embedding_output: Tensor,
        attention_mask: Tensor,
        *,
        has_padding: bool | None = None,
        packing: PackedTokens | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Run the encoder and pooler on (B, T, H) embeddings; the seam SMART perturbs through.

        `attention_mask` is (B, T), 1 for real tokens and 0 for padding. `has_padding=False`
        promises the mask is all ones, so no mask is passed and SDPA may use its fused (flash)
        kernel; None decides from the mask when that costs no device sync (see `_attention_mask`).
        With `packing` (the mask's token layout, see model/packing.py) a padded batch runs the
        transformer stack on its real tokens only; the sequence output is zero at padding.
        """
        if packing is not None and has_padding is not False:
            cfg = self.config
            packing = packing.for_device(
                attention_mask,
                _compute_dtype(embedding_output),
                cfg.hidden_size // cfg.num_attention_heads,
            )
            packed = self.encoder(packing.pack(embedding_output), packing)  # (N, H)
            sequence_output = packing.unpack(packed)
        else:
            attn_mask = self._attention_mask(attention_mask, has_padding)
            sequence_output = self.encoder(embedding_output, attn_mask)  # (B, T, H)
        return sequence_output, self.pooler(sequence_output)  # (B, T, H), (B, H)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        token_type_ids: Tensor | None = None,
        *,
        has_padding: bool | None = None,
        packing: PackedTokens | None = None,
    ) -> tuple[Tensor, Tensor]:
        """(B, T) token ids and mask -> (sequence_output (B, T, H), pooled_output (B, H))."""
        embedding_output = self.embed(input_ids, token_type_ids)
        return self.encode_embeddings(
            embedding_output, attention_mask, has_padding=has_padding, packing=packing
        )

    @staticmethod
    def _attention_mask(attention_mask: Tensor, has_padding: bool | None) -> Tensor | None:
        """(B, T) 1/0 mask -> (B, 1, 1, T) bool key mask, or None when nothing is padded.

        Reading `attention_mask.all()` back to Python blocks until the GPU catches up, once per
        forward; so on accelerators with no hint we keep the mask (exact, just a slower kernel)
        and callers that know their batch is unpadded (the batcher does) pass has_padding=False.
        On CPU the check is free.
        """
        if has_padding is None:
            has_padding = attention_mask.device.type != "cpu" or not bool(attention_mask.all())
        if not has_padding:
            return None
        # Only keys are masked: padded query rows still attend to real keys (no NaN rows), and
        # their outputs are ignored downstream.
        return attention_mask[:, None, None, :].to(torch.bool)
