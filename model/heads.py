"""Task heads on one shared encoder: SST-5 sentiment, Quora paraphrase, STS similarity.

`MultitaskBert.forward(batch)` returns, by `batch.task`:
  sst  -> logits [B, 5]
  para -> one logit per pair [B]
  sts  -> a similarity score [B] on the 0-5 scale
Pairs are encoded as configured by `model.pair_encoding`: `cross` runs one pass over
[CLS] a [SEP] b [SEP]; the bi-encoders embed each sentence separately (u, v) and combine them.

`embed_inputs` / `head_outputs` split the forward at the encoder's embedding output, so SMART can
perturb the embeddings (one sequence for cross-encoding, both for bi-encoding) without subclassing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.batching import Batch
from model.bert import BertModel
from model.config import ModelConfig
from model.dropout import Dropout

NUM_SENTIMENT_CLASSES = 5
STS_MAX_SCORE = 5.0

_ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU}


def make_head(in_features: int, out_features: int, cfg: ModelConfig) -> nn.Sequential:
    """A linear layer (head_layers=1) or an MLP with head_layers-1 hidden layers."""
    layers: list[nn.Module] = [Dropout(cfg.head_dropout)]
    width = in_features
    for _ in range(cfg.head_layers - 1):
        layers.append(nn.Linear(width, cfg.head_hidden))
        if cfg.head_norm == "batch":
            layers.append(nn.BatchNorm1d(cfg.head_hidden))
        elif cfg.head_norm == "layer":
            layers.append(nn.LayerNorm(cfg.head_hidden))
        layers.append(_ACTIVATIONS[cfg.head_activation]())
        layers.append(Dropout(cfg.head_dropout))
        width = cfg.head_hidden
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


class PairHead(nn.Module):
    """Scores a sentence pair from (u, v) or from one cross-encoded vector; one output per pair."""

    def __init__(self, hidden: int, cfg: ModelConfig, *, cosine_scale: float, cosine_bias: float):
        super().__init__()
        self.encoding = cfg.pair_encoding
        features = {"cross": hidden, "bi_concat": 2 * hidden, "sbert": 3 * hidden}
        if self.encoding in features:
            self.mlp: nn.Module | None = make_head(features[self.encoding], 1, cfg)
        elif self.encoding == "cosine_mix":
            self.mlp = make_head(3 * hidden, 1, cfg)
        else:
            self.mlp = None
        # Cosine heads map cos(u, v) in [-1, 1] to the task's scale: learned for Quora's logit,
        # fixed x5 for STS (the SBERT convention of regressing cos on similarity / 5).
        learn = cosine_scale != STS_MAX_SCORE
        scale = torch.tensor(float(cosine_scale))
        bias = torch.tensor(float(cosine_bias))
        self.cosine_scale = nn.Parameter(scale) if learn else nn.Buffer(scale)
        self.cosine_bias = nn.Parameter(bias) if learn else nn.Buffer(bias)

    def forward(self, u: Tensor, v: Tensor | None = None) -> Tensor:
        if self.encoding == "cross":
            assert self.mlp is not None
            return self.mlp(u).squeeze(-1)
        assert v is not None
        if self.encoding == "bi_concat":
            assert self.mlp is not None
            return self.mlp(torch.cat([u, v], dim=-1)).squeeze(-1)
        sbert = torch.cat([u, v, (u - v).abs()], dim=-1)  # [B, 3H]
        if self.encoding == "sbert":
            assert self.mlp is not None
            return self.mlp(sbert).squeeze(-1)
        cosine = F.cosine_similarity(u.float(), v.float(), dim=-1).to(u.dtype)
        out = self.cosine_scale * cosine + self.cosine_bias
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
        self.sst_head = make_head(hidden, NUM_SENTIMENT_CLASSES, cfg)
        self.para_head = PairHead(hidden, cfg, cosine_scale=10.0, cosine_bias=-5.0)
        self.sts_head = PairHead(hidden, cfg, cosine_scale=STS_MAX_SCORE, cosine_bias=0.0)
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
