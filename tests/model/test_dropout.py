"""The CPU dropout: the mask distribution of `nn.Dropout` (keep 1 - p, scale 1 / (1 - p)),
drawn from fewer random numbers; identity in eval mode; reproducible under a seed."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from model.dropout import Dropout, dropout, keep_mask


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_the_mask_keeps_each_element_with_probability_one_minus_p(p: float) -> None:
    torch.manual_seed(0)
    n = 1_000_003  # not a multiple of 4: the last draw is cut
    kept = int(keep_mask(torch.Size([n]), p, torch.device("cpu")).sum())
    # A two-sided binomial test: a biased mask (e.g. an off-by-one bound) fails at this n.
    assert stats.binomtest(kept, n, 1 - p).pvalue > 1e-4


def test_neighbouring_mask_elements_are_independent() -> None:
    """Four elements come from one 64-bit draw: they must not be correlated."""
    torch.manual_seed(1)
    mask = keep_mask(torch.Size([400_000]), 0.5, torch.device("cpu")).view(-1, 4).double()
    corr = torch.corrcoef(mask.T)
    off_diagonal = corr[~torch.eye(4, dtype=torch.bool)]
    assert off_diagonal.abs().max() < 0.01


def test_dropout_scales_kept_values_and_backpropagates_through_the_mask() -> None:
    torch.manual_seed(2)
    x = torch.randn(64, 128, requires_grad=True)
    y = dropout(x, 0.25, training=True)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / 0.75)
    y.sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, kept.float() / 0.75)


def test_eval_mode_p_zero_and_p_one() -> None:
    x = torch.randn(8, 16)
    module = Dropout(0.4).eval()
    assert module(x) is x
    assert dropout(x, 0.0, training=True) is x
    assert torch.count_nonzero(dropout(x, 1.0, training=True)) == 0
    with pytest.raises(ValueError, match="between 0 and 1"):
        Dropout(1.5)


def test_the_same_seed_draws_the_same_mask_in_bf16_and_fp32() -> None:
    x = torch.randn(32, 40, 24)
    torch.manual_seed(3)
    a = dropout(x, 0.1, training=True)
    torch.manual_seed(3)
    b = dropout(x.bfloat16(), 0.1, training=True)
    assert torch.equal(a != 0, b != 0)


@pytest.mark.parametrize("p", [1e-7, 1e-6, 0.99999, 0.9999999])
def test_tiny_and_huge_p_keep_the_expectation(p: float) -> None:
    """p so small the rounded keep probability is 1 keeps x; so large it is 0 drops all; in
    between the scale is that of the mask's real keep probability."""
    torch.manual_seed(4)
    x = torch.ones(2_000_000)
    y = dropout(x, p, training=True)
    kept = round((1 - p) * 65536)
    if kept >= 65536:
        assert torch.equal(y, x)
    elif kept == 0:
        assert torch.count_nonzero(y) == 0
    else:
        assert torch.count_nonzero(y) > 0  # ~30 of 2,000,000 kept at 1/65536
        assert float(y[y != 0][0]) == pytest.approx(65536 / kept)
