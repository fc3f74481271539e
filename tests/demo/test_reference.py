"""The brute-force references on tensors whose answer is known."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from collapsewatch_demo import reference as ref


def test_dead_fraction_counts_units_never_positive_on_any_row() -> None:
    rows = torch.tensor([[1.0, -1.0, 0.0, -2.0], [-1.0, -3.0, 0.0, 0.5]], dtype=torch.float64)
    assert ref.dead_fraction(rows) == 0.5  # units 1 and 2 never fire


def test_conv_outputs_count_channels_as_units() -> None:
    out = torch.randn(4, 3, 5, 5)
    out[:, 1] = -1.0
    rows = ref.as_units(out, unit_dim=1)
    assert rows.shape == (100, 3)
    assert ref.dead_fraction(rows) == pytest.approx(1 / 3)


def test_effective_rank_of_isotropic_and_rank_one_data() -> None:
    g = torch.Generator().manual_seed(0)
    iso = torch.randn(20_000, 8, generator=g, dtype=torch.float64)
    assert ref.effective_rank(iso) == pytest.approx(8, rel=0.01)
    line = torch.randn(500, 1, generator=g, dtype=torch.float64) * torch.ones(1, 8)
    assert ref.effective_rank(line) == pytest.approx(1, abs=1e-6)
    assert math.isnan(ref.effective_rank(torch.full((3, 2), math.inf, dtype=torch.float64)))


def test_output_std_is_zero_for_one_direction_and_near_one_for_all() -> None:
    g = torch.Generator().manual_seed(0)
    same = torch.rand(100, 1, generator=g, dtype=torch.float64) * torch.ones(1, 16) + 1
    assert ref.output_std(same) == pytest.approx(0, abs=1e-6)
    spread = torch.randn(10_000, 16, generator=g, dtype=torch.float64)
    assert ref.output_std(spread) == pytest.approx(1, abs=0.01)


def test_room_counts_live_units_input_dim_and_data_rank() -> None:
    layer = nn.Linear(32, 256)
    assert ref.room(layer, 256, data_rank=100.0) == 32
    assert ref.room(layer, 256, data_rank=1.6) == 2  # a generator after a 2-D latent
    prune.ln_structured(layer, "weight", amount=0.95, n=2, dim=0)
    assert ref.room(layer, 256, data_rank=100.0) == 13  # 5% of the units left
    assert ref.room(nn.Conv2d(3, 64, 3), 64, data_rank=1000.0) == 27


def test_reference_sides_and_worst_layer() -> None:
    dead = ref.dead_units("a", "b")
    assert dead.beyond(0.6) and not dead.beyond(0.5) and dead.beyond(math.nan)
    assert dead.worst({"a": 0.1, "b": 0.7}) == 0.7
    rank = ref.dimensional("a", "b")
    assert rank.beyond(0.04) and not rank.beyond(0.05)
    assert rank.worst({"a": 0.3, "b": 0.07}) == 0.07


def test_code_perplexity_ratio_of_scores() -> None:
    eye = torch.eye(8, dtype=torch.float64)
    assert ref.code_perplexity_ratio(eye.repeat(4, 1)) == pytest.approx(1.0)  # every code
    one = torch.zeros(32, 8, dtype=torch.float64)
    one[:, 3] = 1.0
    assert ref.code_perplexity_ratio(one) == pytest.approx(1 / 8)  # one code of 8
    assert ref.codebook("q", logged_as="c").beyond(0.2) and not ref.codebook(
        "q", logged_as="c"
    ).beyond(0.3)


def test_posterior_measures_split_mu_and_logvar() -> None:
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(4000, 4, generator=g, dtype=torch.float64)
    mu[:, :3] = 0.5  # three dims give every input the same code
    rows = torch.cat((mu, torch.zeros_like(mu)), 1)  # unit variance
    assert ref.active_units(rows) == 0.25
    # KL = mu^2 / 2 per dim: 3 x 0.125 plus E[x^2] / 2 = 0.5
    assert ref.total_kl(rows) == pytest.approx(0.375 + 0.5, rel=0.05)
    with pytest.raises(ValueError, match="got an odd 3 units"):
        ref.active_units(torch.zeros(4, 3, dtype=torch.float64))


def test_load_entropy_of_top_k_choices() -> None:
    logits = torch.tensor([[3.0, 2.0, 0.0, 0.0], [0.0, 0.0, 3.0, 2.0]], dtype=torch.float64)
    assert ref.load_entropy(logits, k=2) == pytest.approx(1.0)  # every expert once
    assert ref.load_entropy(logits[:1].repeat(5, 1), k=1) == pytest.approx(0.0)


def test_density_reads_the_masked_weight() -> None:
    layer = nn.Linear(10, 10)
    prune.l1_unstructured(layer, "weight", amount=0.99)
    layer(torch.zeros(1, 10))
    assert ref.density(layer.weight.detach().double()) == 0.01  # 1 weight of 100 left
    sparsity = ref.sparsity("fc")
    assert sparsity.reads == "weight" and sparsity.beyond(0.009) and not sparsity.beyond(0.01)


def test_diversity_ratio_against_real_samples() -> None:
    g = torch.Generator().manual_seed(0)
    real = torch.randn(500, 2, generator=g)
    div = ref.generative("out", "samples", real)
    same = real.double()
    assert div.measure(same, 0) == pytest.approx(1.0)
    assert div.measure(same * 0.1, 0) == pytest.approx(0.1)
    assert div.beyond(0.1)


def test_nc1_is_zero_on_class_means_and_positive_with_spread() -> None:
    g = torch.Generator().manual_seed(0)
    means = torch.randn(4, 6, generator=g, dtype=torch.float64) * 3
    labels = torch.arange(400) % 4
    assert ref.nc1(means[labels], labels) == pytest.approx(0, abs=1e-9)
    noisy = means[labels] + torch.randn(400, 6, generator=g, dtype=torch.float64)
    # within-class covariance ~ I against the means' scatter: NC1 ~ tr(Sigma_B^+) / C
    centred = means - means.mean(0)
    expected = float(torch.trace(torch.linalg.pinv(centred.T @ centred / 4))) / 4
    assert ref.nc1(noisy, labels) == pytest.approx(expected, rel=0.2)


def test_token_cosine_of_identical_and_orthogonal_tokens() -> None:
    same = torch.randn(3, 1, 8).expand(3, 5, 8)
    assert ref.token_cosine(same) == pytest.approx(1.0)
    orthogonal = torch.eye(5).expand(2, 5, 5)
    assert ref.token_cosine(orthogonal) == pytest.approx(0.0)


def test_attention_entropy_of_uniform_and_one_hot_attention() -> None:
    q = torch.zeros(2, 3, 6, 4)
    k = torch.randn(2, 3, 6, 4)
    assert ref.attention_entropy(q, k) == pytest.approx(1.0)  # equal logits: uniform
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    assert ref.attention_entropy(q, k, causal) == pytest.approx(1.0)  # query 0 left out
    sharp = torch.eye(6).expand(2, 3, 6, 6) * 100  # each query matches one key
    assert ref.attention_entropy(sharp, torch.eye(6).expand(2, 3, 6, 6)) < 1e-3


def test_state_norm_ratio_compares_the_long_half_with_the_trained_length() -> None:
    norms = torch.arange(1, 17, dtype=torch.float64)  # ||h_t|| = t + 1 over 16 positions
    states = norms.view(1, 16, 1) * torch.tensor([0.6, 0.8], dtype=torch.float64)
    assert ref.state_norm_ratio(states, train_length=4) == pytest.approx(12.5 / 4)


def test_distinct_2_counts_each_bigram_once() -> None:
    ids = torch.tensor([[1, 2, 1, 2], [3, 3, 3, 3]])
    assert ref.distinct_2(ids) == pytest.approx(3 / 6)  # (1,2), (2,1), (3,3)
