"""Unpadded ("packed") token layout: run the encoder on real tokens only.

A padded batch (B, T) with N real tokens becomes one (N, H) matrix: every per-token layer (the
linear projections, feed-forward, LayerNorm, dropout; ~95% of BERT's FLOPs) then works on real
tokens only, whatever the batch's length spread. Only attention needs the sequence boundaries;
three kernels give the same result:

* `varlen`: FlashAttention's variable-length kernel on the packed (N, nh, hd) tensors with the
  cumulative sequence lengths, no padding and no mask (CUDA, bf16 / fp16, head dim a multiple of 8
  up to 256). `torch.ops.aten._flash_attention_forward` is the op torch's own nested-tensor SDPA
  calls, differentiable, with attention dropout (the public `varlen_attn` has no dropout).
* `jagged`: the same through torch's public jagged nested tensors and
  `F.scaled_dot_product_attention` (it picks flash / memory-efficient / cuDNN on CUDA; on CPU one
  math call per sequence). Correct everywhere, but each nested-tensor op costs Python time.
* `padded`: q, k and v are scattered into a zero-padded (B, T) buffer for one masked SDPA call and
  gathered back. `auto` picks it off CUDA and for fp32 or unusual head sizes.

The indices are built on the host by the batcher (`from_lengths`), so nothing here reads a device
value back (no host-device sync per step); `from_mask` covers hand-built batches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

AttentionKernel = Literal["auto", "varlen", "jagged", "padded"]
_HALF = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class PackedTokens:
    """Where the real tokens of a right-padded (B, T) batch are, and the sequence boundaries."""

    token_index: Tensor  # (N,) long: flat positions b * T + t of the real tokens, in order
    cu_seqlens: Tensor  # (B + 1,) int32 (what flash takes): cumulative lengths, [-1] = N
    batch_size: int  # B
    width: int  # T, the padded length
    max_seqlen: int
    min_seqlen: int
    attention: AttentionKernel = "auto"
    # (B, 1, 1, T) bool key mask for the `padded` kernel; the encoder fills it once per forward.
    key_mask: Tensor | None = None

    @classmethod
    def from_lengths(cls, lengths: np.ndarray, width: int) -> PackedTokens:
        """Host-side construction from per-row real lengths (each row is a prefix of width)."""
        lengths = np.asarray(lengths, dtype=np.int64)
        if len(lengths) and (lengths.min() < 1 or lengths.max() > width):
            raise ValueError(f"sequence lengths must be in [1, {width}], got {lengths.tolist()}")
        starts = np.arange(len(lengths), dtype=np.int64) * width
        token_index = np.repeat(starts, lengths) + _positions_within(lengths)
        cu = np.zeros(len(lengths) + 1, dtype=np.int32)
        np.cumsum(lengths, out=cu[1:])
        return cls(
            token_index=torch.from_numpy(token_index),
            cu_seqlens=torch.from_numpy(cu),
            batch_size=len(lengths),
            width=int(width),
            max_seqlen=int(lengths.max()) if len(lengths) else 0,
            min_seqlen=int(lengths.min()) if len(lengths) else 0,
        )

    @classmethod
    def from_mask(cls, attention_mask: Tensor) -> PackedTokens:
        """From a (B, T) 1/0 mask whose real tokens are a prefix of each row (reads it on host)."""
        mask = attention_mask.detach().to("cpu", torch.bool)
        lengths = mask.sum(1).numpy()
        prefix = torch.arange(mask.shape[1])[None, :] < torch.from_numpy(lengths)[:, None]
        if not torch.equal(mask, prefix):
            raise ValueError("attention_mask rows must be right-padded (real tokens first)")
        return cls.from_lengths(lengths, mask.shape[1]).to(attention_mask.device)

    @property
    def num_tokens(self) -> int:
        return int(self.token_index.shape[0])

    def with_attention(self, attention: AttentionKernel) -> PackedTokens:
        return dataclasses.replace(self, attention=attention)

    def for_device(
        self, attention_mask: Tensor, compute_dtype: torch.dtype, head_dim: int
    ) -> PackedTokens:
        """Resolve `auto` for the device and dtype; the padded kernel gets its key mask once."""
        kernel = self.attention
        if kernel == "auto":
            varlen_ok = compute_dtype in _HALF and head_dim % 8 == 0 and head_dim <= 256
            kernel = "varlen" if attention_mask.is_cuda and varlen_ok else "padded"
        key_mask = None
        if kernel == "padded":
            key_mask = attention_mask[:, None, None, :].to(torch.bool)
        return dataclasses.replace(self, attention=kernel, key_mask=key_mask)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PackedTokens:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> PackedTokens:
        return self._map(lambda t: t.pin_memory())

    def _map(self, fn: Callable[[Tensor], Tensor]) -> PackedTokens:
        key_mask = None if self.key_mask is None else fn(self.key_mask)
        return dataclasses.replace(
            self, token_index=fn(self.token_index), cu_seqlens=fn(self.cu_seqlens),
            key_mask=key_mask,
        )

    def pack(self, padded: Tensor) -> Tensor:
        """(B, T, ...) -> (N, ...): the real tokens, in order."""
        return padded.flatten(0, 1).index_select(0, self.token_index)

    def unpack(self, packed: Tensor) -> Tensor:
        """(N, ...) -> (B, T, ...), zeros at the padding positions."""
        out = packed.new_zeros((self.batch_size * self.width, *packed.shape[1:]))
        return out.index_copy(0, self.token_index, packed).unflatten(
            0, (self.batch_size, self.width)
        )


def _positions_within(lengths: np.ndarray) -> np.ndarray:
    """[0, 1, .., l0-1, 0, 1, .., l1-1, ...] for the given lengths."""
    total = int(lengths.sum())
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.arange(total, dtype=np.int64) - starts


def packed_attention(
    q: Tensor, k: Tensor, v: Tensor, packing: PackedTokens, num_heads: int, dropout_p: float
) -> Tensor:
    """Multi-head attention within each sequence of packed (N, H) projections -> (N, H).

    `packing` comes from `for_device`, so its kernel is resolved.
    """
    if packing.attention == "varlen":
        return _varlen_attention(q, k, v, packing, num_heads, dropout_p)
    if packing.attention == "jagged":
        return _jagged_attention(q, k, v, packing, num_heads, dropout_p)
    return _padded_attention(q, k, v, packing, num_heads, dropout_p)


def _varlen_attention(
    q: Tensor, k: Tensor, v: Tensor, packing: PackedTokens, num_heads: int, dropout_p: float
) -> Tensor:
    N, H = q.shape
    q, k, v = (t.view(N, num_heads, H // num_heads) for t in (q, k, v))
    longest = packing.max_seqlen
    context = torch.ops.aten._flash_attention_forward(
        q, k, v, packing.cu_seqlens, packing.cu_seqlens, longest, longest, dropout_p,
        False,  # is_causal
        False,  # return_debug_mask
    )[0]  # (N, nh, hd)
    return context.reshape(N, H)


def _jagged_attention(
    q: Tensor, k: Tensor, v: Tensor, packing: PackedTokens, num_heads: int, dropout_p: float
) -> Tensor:
    N, H = q.shape
    offsets = packing.cu_seqlens.long()  # one tensor for q, k and v: the same ragged dimension

    def heads(t: Tensor) -> Tensor:  # (N, H) -> jagged (B, nh, j, hd)
        nested = torch.nested.nested_tensor_from_jagged(
            t.view(N, num_heads, H // num_heads),
            offsets=offsets,
            # Known on the host: NJT would otherwise compute them from the offsets (a sync).
            min_seqlen=packing.min_seqlen,
            max_seqlen=packing.max_seqlen,
        )
        return nested.transpose(1, 2)

    context = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), dropout_p=dropout_p)
    return context.transpose(1, 2).values().reshape(N, H)  # (B, j, nh, hd) -> (N, H)


def _padded_attention(
    q: Tensor, k: Tensor, v: Tensor, packing: PackedTokens, num_heads: int, dropout_p: float
) -> Tensor:
    H = q.shape[1]
    B, T = packing.batch_size, packing.width
    qkv = packing.unpack(torch.stack((q, k, v), dim=1))  # (N, 3, H) -> (B, T, 3, H), one scatter
    qkv = qkv.view(B, T, 3, num_heads, H // num_heads).permute(2, 0, 3, 1, 4)  # (3, B, nh, T, hd)
    context = F.scaled_dot_product_attention(
        qkv[0], qkv[1], qkv[2], attn_mask=packing.key_mask, dropout_p=dropout_p
    )  # (B, nh, T, hd)
    return packing.pack(context.transpose(1, 2).reshape(B, T, H))  # (N, H)
