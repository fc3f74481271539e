"""Neural-collapse indicators from the SDK's class statistics against brute force in numpy on the
raw features (full d x d Sigma_W and Sigma_B, pseudo-inverses, pairwise cosines).

Tolerances, measured and stated: with the identity basis (d <= 128) every indicator agrees to
1e-4 relative (float32 sums), also for several forward calls, several steps and two ranks
merged by adding records. With the lagged basis (d > 128) NC1 and VCI carry the drift of the
class means between two sampled steps (test_lagged_basis_under_drift states the error); the
cosine R^2 of a width above 256 comes from JL-projected unit sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from collapsewatch.pipeline.packing import StepPack
from collapsewatch.probes.neural_collapse import FULL_BASIS_MAX, ClassAccumulator
from collapsewatch.schemas import ProbeKind
from collapsewatch_server.codec import as_arrays
from collapsewatch_server.indicators import CATALOGUE, compute_indicators

NEURAL = sorted(name for name, ind in CATALOGUE.items() if ind.family == "neural_collapse")
#: Keys that add up across forward calls and ranks (every ClassStat except width and classes).
SUMMED = [
    *("n", "sqnorm", "sum", "unit_sum", "unit_basis_sum", "basis_sum", "basis_outer"),
    *("ncc_miss", "ncc_n", "w_gram", "w_sum", "bias", "snapshots"),
]


@dataclass
class Batch:
    h: np.ndarray  # [m, d] float32 features
    y: np.ndarray  # [m] int labels


@dataclass
class Task:
    """Gaussian classes around a common offset (as after a ReLU), anisotropic within-class
    noise, imbalanced counts; a classifier near the class means plus noise."""

    means: np.ndarray  # [C, d]
    noise: np.ndarray  # [d, d] noise map
    weight: np.ndarray  # [C, d]
    bias: np.ndarray  # [C]
    probs: np.ndarray  # [C]

    def batch(self, m: int, g: np.random.Generator, drift: np.ndarray | None = None) -> Batch:
        y = g.choice(self.probs.size, size=m, p=self.probs)
        means = self.means if drift is None else self.means + drift
        h = means[y] + g.normal(size=(m, self.noise.shape[0])) @ self.noise
        return Batch(h.astype(np.float32), y)


def make_task(c: int, d: int, spread: float, seed: int, imbalance: float = 3.0) -> Task:
    g = np.random.default_rng(seed)
    means = 2.0 * g.normal(size=(c, d)) / math.sqrt(d) * math.sqrt(d / 8)
    means += 3.0 * g.normal(size=d) / math.sqrt(d) * math.sqrt(d / 8)  # the common offset
    noise = spread * (np.eye(d) + 0.3 * g.normal(size=(d, d)) / math.sqrt(d))
    weight = (means - means.mean(0)) + 0.6 * g.normal(size=(c, d))
    probs = np.exp(-np.linspace(0, math.log(imbalance), c))
    return Task(means, noise, weight, 0.1 * g.normal(size=c), probs / probs.sum())


def reduce(
    acc: ClassAccumulator, task: Task, chunks: list[Batch], step: int = 0
) -> dict[str, object]:
    """One sampled step of ``acc`` over ``chunks`` (forward calls): the record's statistics."""
    w, b = torch.from_numpy(task.weight).float(), torch.from_numpy(task.bias).float()
    with torch.no_grad():
        for chunk in chunks:
            h = torch.from_numpy(chunk.h)
            acc.add(h, h @ w.T + b, torch.from_numpy(chunk.y), w, b, step)
        pack = StepPack()
        acc.pack(pack.record("head", "classes", step), pack)
    (record,) = pack.records()
    return as_arrays(record["stats"])


def add_records(*records: dict[str, object]) -> dict[str, object]:
    """What merging records on the server means: add every summed statistic."""
    out = dict(records[0])
    for key in SUMMED:
        if key in out:
            out[key] = sum(np.asarray(r[key]) for r in records)
    return out


def indicators(stats: dict[str, object]) -> dict[str, float]:
    return compute_indicators(ProbeKind.classes, stats)  # type: ignore[arg-type]


def brute(
    h: np.ndarray, y: np.ndarray, task: Task, lagged: np.ndarray | None = None
) -> dict[str, float]:
    """Every indicator from the raw features, in float64, with the full matrices."""
    h = h.astype(np.float64)
    present = np.unique(y)
    c, (big_n, d) = present.size, h.shape
    mu = np.stack([h[y == k].mean(0) for k in present])
    mt = mu - mu.mean(0)
    dev = h - mu[np.searchsorted(present, y)]
    sigma_w = dev.T @ dev / big_n
    sigma_b = mt.T @ mt / c
    var = np.array([np.mean(np.sum(dev[y == k] ** 2, 1)) for k in present])
    out: dict[str, float] = {
        "nc1": float(np.trace(sigma_w @ np.linalg.pinv(sigma_b, rcond=1e-10, hermitian=True))) / c,
        "nc1_quotient": float(np.trace(sigma_w) / np.trace(sigma_b)),
    }
    pairs = [(i, j) for i in range(c) for j in range(c) if i != j]
    out["cdnv"] = float(
        np.mean([(var[i] + var[j]) / (2 * np.sum((mu[i] - mu[j]) ** 2)) for i, j in pairs])
    )
    norms = np.linalg.norm(mt, axis=1)
    cos = (mt @ mt.T) / np.outer(norms, norms)
    upper = cos[np.triu_indices(c, 1)]
    out["nc2_equinorm"] = float(norms.std() / norms.mean())
    w_norms = np.linalg.norm(task.weight, axis=1)
    out["nc2_equinorm_w"] = float(w_norms.std() / w_norms.mean())
    out["nc2_equiangularity"] = float(upper.std())
    out["nc2_max_angle"] = float(np.mean(np.abs(upper + 1 / (c - 1))))
    gram = mt @ mt.T
    etf = (np.eye(c) - np.ones((c, c)) / c) / math.sqrt(c - 1)
    out["nc2_etf_error"] = float(np.linalg.norm(gram / np.linalg.norm(gram) - etf))
    w = task.weight[present]
    out["nc3"] = float(np.sum((w / np.linalg.norm(w) - mt / np.linalg.norm(mt)) ** 2))
    # VCI in the span of the centred class means (see indicators.neural_collapse.vci)
    u = np.linalg.svd(mt.T, full_matrices=False)[0][:, : c - 1]
    total = u.T @ (sigma_w + sigma_b) @ u
    explained = np.trace(np.linalg.pinv(total) @ (u.T @ sigma_b @ u))
    out["vci"] = float(1 - explained / min(d, c - 1))
    units = h / np.linalg.norm(h, axis=1, keepdims=True)
    cosd = 1 - units @ units.T
    groups = [np.flatnonzero(y == k) for k in present]
    within = np.mean([cosd[np.ix_(g, g)].mean() for g in groups])
    overall = np.mean([cosd[np.ix_(a, b)].mean() for a in groups for b in groups])
    out["class_separation"] = float(1 - within / overall)
    counts = np.array([np.sum(y == k) for k in range(task.weight.shape[0])])
    order = np.argsort(counts, kind="stable")
    rare, common = order[: math.ceil(counts.size / 2)], order[math.ceil(counts.size / 2) :]
    # a minority: the rarer half a third as frequent or less, and counts a balanced draw gives
    # with p < 0.001 (chi-square quantile by Monte Carlo, not the indicator's approximation)
    g = np.random.default_rng(0)
    draws = g.multinomial(int(counts.sum()), np.full(counts.size, 1 / counts.size), 20000)
    expected = counts.sum() / counts.size
    chi2 = lambda n: ((n - expected) ** 2).sum(-1) / expected  # noqa: E731
    if counts[rare].mean() <= counts[common].mean() / 3 and chi2(counts) > np.quantile(
        chi2(draws), 0.999
    ):
        wr = task.weight[rare] / np.linalg.norm(task.weight[rare], axis=1, keepdims=True)
        out["minority_collapse"] = float((wr @ wr.T)[np.triu_indices(rare.size, 1)].max())
    if lagged is not None:
        logits = h @ task.weight.T + task.bias
        ncc = np.argmin(((h[:, None, :] - lagged[None]) ** 2).sum(2), axis=1)
        out["nc4"] = float(np.mean(np.argmax(logits, 1) != ncc))
    return out


def class_means(batch: Batch, c: int) -> np.ndarray:
    return np.stack([batch.h[batch.y == k].astype(np.float64).mean(0) for k in range(c)])


def assert_close(got: dict[str, float], want: dict[str, float], rel: float, **per: float) -> None:
    for name, value in want.items():
        tol = per.get(name, rel)
        assert got[name] == pytest.approx(value, rel=tol, abs=tol * 1e-3), (name, got[name], value)


def test_every_neural_indicator_has_a_brute_force_twin() -> None:
    task = make_task(c=6, d=16, spread=0.5, seed=0)
    g = np.random.default_rng(0)
    assert set(brute(task.batch(120, g).h, task.batch(120, g).y, task, np.zeros((6, 16)))) == set(
        NEURAL
    ) - {"minority_collapse"}  # balanced enough: no minority
    skewed = make_task(c=6, d=16, spread=0.5, seed=0, imbalance=30.0)
    batch = skewed.batch(600, g)
    assert "minority_collapse" in brute(batch.h, batch.y, skewed, np.zeros((6, 16)))


#: (within-class spread, relative tolerance): early training (NC1 ~0.7, VCI ~0.44, NC4 ~0.25)
#: and deep collapse (NC1 ~1.4e-4, below the recipe's terminal 0.009), where the within-class
#: variance is a difference of float32 sums dominated by the common offset: measured 4e-4.
REGIMES = {"early": (1.5, 1e-5), "collapsed": (0.02, 1e-3)}


@pytest.mark.parametrize("forwards", [1, 3], ids=["one-forward", "three-forwards"])
@pytest.mark.parametrize("regime", sorted(REGIMES))
def test_identity_basis_matches_brute_force(regime: str, forwards: int) -> None:
    """d <= 128: every indicator exact up to float32 after a first step gave the lagged means."""
    c, d = 7, 48
    spread, rel = REGIMES[regime]
    task = make_task(c, d, spread=spread, seed=1)
    g = np.random.default_rng(1)
    acc = ClassAccumulator(c)
    first = task.batch(300, g)
    assert "nc4" not in indicators(reduce(acc, task, [first], step=0))  # nothing lagged yet
    batch = task.batch(600, g)
    parts = zip(np.array_split(batch.h, forwards), np.array_split(batch.y, forwards), strict=True)
    got = indicators(reduce(acc, task, [Batch(h, y) for h, y in parts], step=1))
    assert_close(got, brute(batch.h, batch.y, task, class_means(first, c)), rel=rel)


def test_steps_and_ranks_merge_by_adding_records() -> None:
    """Three steps on one rank and two ranks: the summed records give the indicators of the
    union (identity basis: the same on every step and rank); NC4 counts add up per step."""
    c, d = 5, 32
    task = make_task(c, d, spread=0.8, seed=2)
    g = np.random.default_rng(2)
    rank_a, rank_b = ClassAccumulator(c), ClassAccumulator(c)
    previous = task.batch(200, g)
    reduce(rank_a, task, [previous])
    reduce(rank_b, task, [previous])  # ranks that saw the same (all-reduced) previous step
    steps, records = [], []
    for step in range(1, 4):
        a, b = task.batch(150, g), task.batch(90, g)
        records += [reduce(rank_a, task, [a], step), reduce(rank_b, task, [b], step)]
        steps.append(Batch(np.concatenate([a.h, b.h]), np.concatenate([a.y, b.y])))
    union = Batch(np.concatenate([s.h for s in steps]), np.concatenate([s.y for s in steps]))
    merged = add_records(*records)
    got = indicators(merged)
    want = brute(union.h, union.y, task)
    assert_close(got, want, rel=1e-4)
    assert merged["snapshots"] == 6 and merged["n"].sum() == union.y.size
    # NC4 of the first step: both ranks compared with the same previous means (later, each
    # rank keeps its own, as without an all-reduce)
    two_ranks = indicators(add_records(records[0], records[1]))
    assert two_ranks["nc4"] == pytest.approx(
        brute(steps[0].h, steps[0].y, task, class_means(previous, c))["nc4"], abs=1e-9
    )
    assert two_ranks["nc1"] == pytest.approx(brute(steps[0].h, steps[0].y, task)["nc1"], rel=1e-4)


def drifting_steps(
    task: Task, steps: int, rate: float, g: np.random.Generator, m: int = 400
) -> list[Batch]:
    """Steps whose class means move by ``rate`` times the typical distance between two class
    means per step, in random directions."""
    c, d = task.means.shape
    scale = np.linalg.norm(task.means - task.means.mean(0), axis=1).mean()
    drift = np.zeros((c, d))
    out = []
    for _ in range(steps):
        out.append(task.batch(m, g, drift))
        step = g.normal(size=(c, d))
        drift = drift + rate * scale * step / np.linalg.norm(step, axis=1, keepdims=True)
    return out


#: (rows per step, drift per step, tolerance) for NC1 and VCI in the lagged basis (d = 300,
#: C = 6, NC1 ~0.05, VCI ~0.06). Measured over seeds 0-9, 3 steps each, relative error of the
#: lagged value against brute force on the step's own rows: 333 rows a class, still means:
#: +2.2% mean, 3.3% max (VCI 3.1%); drifting 5% of the mean spacing per step: +2.5%, 3.8% max
#: (VCI 3.6%); 10%: 4.7% max. 67 rows a class: +11%, 15% max (+12%, 16% at 10% drift). The
#: error is mostly sampling noise, not drift: the step's own sample means carry noise along
#: which its Sigma_W is smaller, so brute force on them reads ~5% below the population NC1
#: and the lagged basis ~5% above it (67 rows a class, see test_lagged_basis_brackets...).
DRIFT_CASES = [(2000, 0.0, 0.04), (2000, 0.05, 0.05), (400, 0.02, 0.17)]


@pytest.mark.parametrize(("rows", "rate", "tol"), DRIFT_CASES)
def test_lagged_basis_under_drift(rows: int, rate: float, tol: float) -> None:
    """d = 300 > 128: NC1 and VCI in the previous step's class-mean basis."""
    c, d = 6, 300
    assert d > FULL_BASIS_MAX
    task = make_task(c, d, spread=1.2, seed=3)
    g = np.random.default_rng(3)
    acc = ClassAccumulator(c)
    batches = drifting_steps(task, 4, rate, g, m=rows)
    assert "nc1" not in indicators(reduce(acc, task, batches[:1]))  # no basis on a first step
    for step, batch in enumerate(batches[1:], start=1):
        got = indicators(reduce(acc, task, [batch], step))
        want = brute(batch.h, batch.y, task, class_means(batches[step - 1], c))
        # everything else is exact (full-width class sums) but the cosine R^2, whose unit
        # sums are JL-projected (d > 256)
        assert_close(got, want, rel=1e-4, nc1=tol, vci=tol, class_separation=0.03)


def test_lagged_basis_is_exact_when_the_means_stay() -> None:
    """The same rows twice: the basis holds the step's class means and NC1, VCI are exact."""
    c, d = 6, 300
    task = make_task(c, d, spread=1.2, seed=3)
    batch = task.batch(400, np.random.default_rng(3))
    acc = ClassAccumulator(c)
    reduce(acc, task, [batch])
    got = indicators(reduce(acc, task, [batch], 1))
    want = brute(batch.h, batch.y, task)
    assert got["nc1"] == pytest.approx(want["nc1"], rel=1e-4)
    assert got["vci"] == pytest.approx(want["vci"], rel=1e-4)


def test_lagged_basis_brackets_the_population_value() -> None:
    """67 rows a class in 300-D: brute force on the batch reads NC1 below the population value
    (its sample means absorb noise), the lagged basis above it; both within 10%."""
    c, d = 6, 300
    task = make_task(c, d, spread=1.2, seed=0)
    centred = task.means - task.means.mean(0)
    sigma_b = centred.T @ centred / c
    pinv = np.linalg.pinv(sigma_b, rcond=1e-10, hermitian=True)
    population = float(np.trace(task.noise.T @ task.noise @ pinv)) / c
    g = np.random.default_rng(0)
    acc = ClassAccumulator(c)
    reduce(acc, task, [task.batch(400, g)])
    lagged, own = [], []
    for step in range(1, 6):
        batch = task.batch(400, g)
        lagged.append(indicators(reduce(acc, task, [batch], step))["nc1"])
        own.append(brute(batch.h, batch.y, task)["nc1"])
    assert np.mean(own) < population < np.mean(lagged)
    assert np.mean(lagged) == pytest.approx(population, rel=0.1)
    assert np.mean(own) == pytest.approx(population, rel=0.1)


def test_lagged_basis_records_of_ranks_sharing_the_basis_add_up() -> None:
    """Two ranks whose previous step was the same (all-reduced sums) share the lagged basis:
    their summed records equal one accumulator on both ranks' rows."""
    c, d = 5, 200
    task = make_task(c, d, spread=1.0, seed=4)
    g = np.random.default_rng(4)
    previous, a, b = task.batch(300, g), task.batch(200, g), task.batch(150, g)
    accs = [ClassAccumulator(c) for _ in range(3)]
    for acc in accs:
        reduce(acc, task, [previous])
    merged = indicators(add_records(reduce(accs[0], task, [a], 1), reduce(accs[1], task, [b], 1)))
    single = indicators(reduce(accs[2], task, [a, b], 1))
    assert merged == pytest.approx(single, rel=1e-5, abs=1e-9)


def labelled(task: Task, counts: np.ndarray, g: np.random.Generator) -> Batch:
    """A batch with exactly ``counts[k]`` rows of class k, shuffled."""
    y = g.permutation(np.repeat(np.arange(counts.size), counts))
    h = task.means[y] + g.normal(size=(y.size, task.noise.shape[0])) @ task.noise
    return Batch(h.astype(np.float32), y)


def test_many_classes_track_the_most_frequent_and_project() -> None:
    """20 classes, 6 tracked (a vocabulary's top-K, scaled down), sums projected (6 x 300 values
    > 1000). Step 1 changes the tracked set ({0..5} -> {0,1,2,3,6,7}): lagged means move to
    their new slots, classes new to the set have none. Step 2 repeats step 1's rows, so the
    lagged basis holds the class means and the indicators are exact against brute force on the
    tracked classes' rows (the cosine R^2 within its JL residual)."""
    c_all, d, top = 20, 300, 6
    task = make_task(c_all, d, spread=1.0, seed=5)
    g = np.random.default_rng(5)
    counts0 = np.array([100 - 4 * k if k < 6 else 40 - k for k in range(c_all)])
    counts1 = counts0.copy()
    counts1[6], counts1[7] = 300, 290
    acc = ClassAccumulator(c_all, top=top, max_sum_values=1000)
    steps = [labelled(task, counts0, g), labelled(task, counts1, g)]
    steps.append(steps[1])
    tracked = [np.arange(6), np.array([0, 1, 2, 3, 6, 7]), np.array([0, 1, 2, 3, 6, 7])]
    lagged: dict[int, np.ndarray] = {}
    for step, (batch, ids) in enumerate(zip(steps, tracked, strict=True)):
        stats = reduce(acc, task, [batch], step)
        assert np.asarray(stats["sum"]).size == top * 256
        keep = np.isin(batch.y, ids)
        sub = Task(task.means, task.noise, task.weight[ids], task.bias[ids], task.probs)
        y = np.searchsorted(ids, batch.y[keep])
        got = indicators(stats)
        np.testing.assert_array_equal(stats["n"], np.bincount(y, minlength=top))
        if lagged:  # NC4 over the tracked classes that have a lagged mean
            known = [k for k in ids if k in lagged]
            h = batch.h[keep].astype(np.float64)
            logits = h @ task.weight[ids].T + task.bias[ids]
            dist = np.stack([((h - lagged[k]) ** 2).sum(1) for k in known], 1)
            ncc = np.searchsorted(ids, np.array(known)[dist.argmin(1)])
            assert got["nc4"] == pytest.approx(np.mean(logits.argmax(1) != ncc), abs=1e-9)
        lagged = {k: batch.h[batch.y == k].astype(np.float64).mean(0) for k in ids}
    assert_close(got, brute(batch.h[keep], y, sub), rel=1e-4, class_separation=0.02)


def test_minority_collapse_sees_rare_rows_merging() -> None:
    """Rows of the rarer half pulled onto one direction: the max cosine passes 0.9."""
    c, d = 8, 40
    task = make_task(c, d, spread=1.0, seed=6, imbalance=20.0)
    g = np.random.default_rng(6)
    direction = g.normal(size=d)
    rare = np.argsort(task.probs)[: c // 2]
    task.weight[rare] = direction + 0.1 * g.normal(size=(rare.size, d))
    batch = task.batch(2000, g)
    got = indicators(reduce(ClassAccumulator(c), task, [batch]))
    want = brute(batch.h, batch.y, task)
    assert got["minority_collapse"] == pytest.approx(want["minority_collapse"], rel=1e-5)
    assert got["minority_collapse"] > CATALOGUE["minority_collapse"].warn  # type: ignore[operator]


def test_degenerate_records_give_no_point_rather_than_an_error() -> None:
    c, d = 4, 8
    task = make_task(c, d, spread=1.0, seed=7)
    one_class = Batch(np.ones((10, d), np.float32), np.zeros(10, dtype=np.int64))
    got = indicators(reduce(ClassAccumulator(c), task, [one_class]))
    assert "nc1" not in got and "cdnv" not in got and "class_separation" not in got
    assert got["nc2_equinorm_w"] >= 0  # the classifier rows exist whatever the batch holds


def test_default_rules_inform_about_neural_collapse_and_warn_about_minority_collapse() -> None:
    """Neural collapse is often the wanted terminal phase: its default rules say "info"."""
    from collapsewatch_server.alerts.default_rules import default_rule

    rules = {name: default_rule(CATALOGUE[name]) for name in NEURAL}
    with_rules = {name: rule for name, rule in rules.items() if rule is not None}
    assert set(with_rules) == {"nc1", "vci", "minority_collapse"}
    got = {n: (r.condition, r.threshold, r.severity, r.recovery) for n, r in with_rules.items()}
    assert got == {
        "nc1": ("below", 0.05, "info", 0.1),
        "vci": ("below", 0.05, "info", 0.1),
        "minority_collapse": ("above", 0.9, "warning", None),
    }


def test_minority_collapse_needs_a_minority() -> None:
    """Balanced classes: the "rarer half" is sampling noise, so two similar class rows give no
    minority-collapse point; the same rows with long-tailed counts do."""
    c, d = 8, 40
    g = np.random.default_rng(8)
    balanced = make_task(c, d, spread=1.0, seed=8)
    direction = g.normal(size=d)
    balanced.weight[:] = direction + 0.1 * g.normal(size=(c, d))  # every row alike
    got = indicators(reduce(ClassAccumulator(c), balanced, [balanced.batch(64, g)]))
    assert "minority_collapse" not in got
    skewed = make_task(c, d, spread=1.0, seed=8, imbalance=20.0)
    skewed.weight[:] = balanced.weight
    got = indicators(reduce(ClassAccumulator(c), skewed, [skewed.batch(2000, g)]))
    assert got["minority_collapse"] > CATALOGUE["minority_collapse"].warn  # type: ignore[operator]
