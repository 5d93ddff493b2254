"""Task heads on one shared encoder: SST-5 sentiment, Quora paraphrase, STS similarity.

`MultitaskBert.forward(batch)` returns, by `batch.task`:
  sst  -> logits [B, 5]
  para -> one logit per pair [B]
  sts  -> a similarity score [B] on the 0-5 scale
Pairs are encoded as configured by `model.pair_encoding` (or the task's own
`model.<task>_pair_encoding`): `cross` runs one pass over [CLS] a [SEP] b [SEP]; the bi-encoders
embed each sentence separately (u, v) and combine them. Each head's shape is `model.head_shape`.

`embed_inputs` / `head_outputs` split the forward at the encoder's embedding output, so SMART can
perturb the embeddings (one sequence for cross-encoding, both for bi-encoding) without subclassing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.batching import Batch
from model.bert import BertModel
from model.config import HeadShape, ModelConfig
from model.dropout import Dropout

NUM_SENTIMENT_CLASSES = 5
STS_MAX_SCORE = 5.0

_ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU}


def make_head(in_features: int, out_features: int, shape: HeadShape) -> nn.Sequential:
    """A linear layer (shape.layers == 1) or an MLP with layers-1 hidden layers."""
    layers: list[nn.Module] = [Dropout(shape.dropout)]
    width = in_features
    for _ in range(shape.layers - 1):
        layers.append(nn.Linear(width, shape.hidden))
        if shape.norm == "batch":
            layers.append(nn.BatchNorm1d(shape.hidden))
        elif shape.norm == "layer":
            layers.append(nn.LayerNorm(shape.hidden))
        layers.append(_ACTIVATIONS[shape.activation]())
        layers.append(Dropout(shape.dropout))
        width = shape.hidden
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def pool(
    sequence_output: Tensor, pooled_output: Tensor, attention_mask: Tensor, how: str
) -> Tensor:
    """Sentence vector [B, H]: the [CLS] token, BERT's pooler or the masked mean."""
    if how == "cls":
        return sequence_output[:, 0]
    if how == "pooler":
        return pooled_output
    mask = attention_mask.unsqueeze(-1).to(sequence_output.dtype)  # [B, T, 1]
    return (sequence_output * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def segment_means(sequence_output: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
    """Mean token vectors [B, H] of the first and second sentence inside a cross-encoded pair:
    token type 0 after [CLS] (its [SEP] included) and token type 1, real tokens only."""
    real = batch.attention_mask.bool()
    second = real & batch.token_type_ids.bool()
    first = real & ~second
    first[:, 0] = False  # [CLS] belongs to the pair, not to sentence a
    vectors = []
    for mask in (first, second):
        weights = mask.unsqueeze(-1).to(sequence_output.dtype)  # [B, T, 1]
        vectors.append((sequence_output * weights).sum(1) / weights.sum(1).clamp_min(1.0))
    return vectors[0], vectors[1]


class PairHead(nn.Module):
    """Scores a sentence pair from (u, v) or from one cross-encoded vector; one output per pair.

    `cross_cosine_mix` gets (pair vector, u, v) with u, v the sentences' mean token vectors of
    the same cross-encoded pass: out = w · (scale · cos(u, v) + bias) + (1 − w) · MLP(pair),
    w = sigmoid(a) learned from a = 0, the even split report 001 started from.
    """

    def __init__(
        self, hidden: int, cfg: ModelConfig, task: str, *, cosine_scale: float, cosine_bias: float
    ):
        super().__init__()
        self.encoding = cfg.encoding_for(task)
        shape = cfg.head_shape(task)
        features = {"cross": hidden, "bi_concat": 2 * hidden, "sbert": 3 * hidden,
                    "cosine_mix": 3 * hidden, "cross_cosine_mix": hidden}  # fmt: skip
        in_features = features.get(self.encoding)
        self.mlp = None if in_features is None else make_head(in_features, 1, shape)
        # Cosine heads map cos(u, v) in [-1, 1] to the task's scale: learned for Quora's logit,
        # fixed x5 for STS (the SBERT convention of regressing cos on similarity / 5).
        learn = cosine_scale != STS_MAX_SCORE
        scale = torch.tensor(float(cosine_scale))
        bias = torch.tensor(float(cosine_bias))
        self.cosine_scale = nn.Parameter(scale) if learn else nn.Buffer(scale)
        self.cosine_bias = nn.Parameter(bias) if learn else nn.Buffer(bias)
        if self.encoding == "cross_cosine_mix":
            self.mix_logit = nn.Parameter(torch.zeros(()))

    def _scaled_cosine(self, u: Tensor, v: Tensor) -> Tensor:
        cosine = F.cosine_similarity(u.float(), v.float(), dim=-1).to(u.dtype)
        return self.cosine_scale * cosine + self.cosine_bias

    def forward(self, u: Tensor, v: Tensor | None = None, w: Tensor | None = None) -> Tensor:
        if self.encoding == "cross":
            assert self.mlp is not None
            return self.mlp(u).squeeze(-1)
        assert v is not None
        if self.encoding == "cross_cosine_mix":
            assert self.mlp is not None and w is not None
            mix = torch.sigmoid(self.mix_logit)
            return mix * self._scaled_cosine(v, w) + (1 - mix) * self.mlp(u).squeeze(-1)
        if self.encoding == "bi_concat":
            assert self.mlp is not None
            return self.mlp(torch.cat([u, v], dim=-1)).squeeze(-1)
        sbert = torch.cat([u, v, (u - v).abs()], dim=-1)  # [B, 3H]
        if self.encoding == "sbert":
            assert self.mlp is not None
            return self.mlp(sbert).squeeze(-1)
        out = self._scaled_cosine(u, v)
        if self.encoding == "cosine_mix":
            assert self.mlp is not None
            out = out + self.mlp(sbert).squeeze(-1)
        return out


class MultitaskBert(nn.Module):
    """One BERT encoder, three task heads; `forward(batch)` dispatches on `batch.task`."""

    def __init__(self, encoder: BertModel, cfg: ModelConfig):
        super().__init__()
        self.encoder = encoder
        self.cfg = cfg
        hidden = encoder.config.hidden_size
        self.sst_head = make_head(hidden, NUM_SENTIMENT_CLASSES, cfg.head_shape("sst"))
        self.para_head = PairHead(hidden, cfg, "para", cosine_scale=10.0, cosine_bias=-5.0)
        self.sts_head = PairHead(hidden, cfg, "sts", cosine_scale=STS_MAX_SCORE, cosine_bias=0.0)
        if cfg.mode == "frozen":
            self.encoder.requires_grad_(False)

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters outside the shared encoder (each belongs to exactly one task)."""
        return [p for name, p in self.named_parameters() if not name.startswith("encoder.")]

    def task_head(self, task: str) -> nn.Module:
        return {"sst": self.sst_head, "para": self.para_head, "sts": self.sts_head}[task]

    def is_cross_encoded(self, batch: Batch) -> bool:
        return batch.input_ids_b is None

    def embed_inputs(self, batch: Batch) -> tuple[Tensor, ...]:
        """Embedding outputs [B, T, H]: one for sentences / cross pairs, two for bi-encoders."""
        first = self.encoder.embed(batch.input_ids, batch.token_type_ids)
        if batch.input_ids_b is None:
            return (first,)
        return first, self.encoder.embed(batch.input_ids_b, batch.token_type_ids_b)

    def sentence_vectors(self, batch: Batch, embeddings: tuple[Tensor, ...]) -> list[Tensor]:
        """Pooled sentence (or pair) vectors [B, H] from embedding outputs."""
        masks = [batch.attention_mask]
        packings = [batch.packing]
        if batch.attention_mask_b is not None:
            masks.append(batch.attention_mask_b)
            packings.append(batch.packing_b)
        # The batcher knows when nothing is padded; then attention runs without a mask (fused
        # flash kernel on GPU) and no device sync is needed to find that out. Otherwise the
        # unpadded encoder skips the padding using the layout the batcher computed.
        has_padding = False if batch.has_padding is False else None
        vectors = []
        for embedding, mask, packing in zip(embeddings, masks, packings, strict=True):
            sequence, pooled = self.encoder.encode_embeddings(
                embedding,
                mask,
                has_padding=has_padding,
                packing=packing if self.cfg.unpadded else None,
            )
            vectors.append(pool(sequence, pooled, mask, self.cfg.pooling))
        if batch.task != "sst" and self.cfg.encoding_for(batch.task) == "cross_cosine_mix":
            vectors.extend(segment_means(sequence, batch))
        return vectors

    def head_outputs(self, batch: Batch, embeddings: tuple[Tensor, ...]) -> Tensor:
        """Task outputs from (possibly perturbed) embedding outputs; see the module docstring."""
        vectors = self.sentence_vectors(batch, embeddings)
        if batch.task == "sst":
            return self.sst_head(vectors[0])
        head = self.para_head if batch.task == "para" else self.sts_head
        return head(*vectors)

    def forward(self, batch: Batch) -> Tensor:
        return self.head_outputs(batch, self.embed_inputs(batch))
