"""The dead-ReLU recipe behind ``collapsewatch demo`` does what it promises, in plain torch.

No SDK and no server: if these fail, the demo's collapse run would show nothing to detect (or
its control would raise a false alarm) whatever the SDK and indicators do.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
demo = pytest.importorskip("collapsewatch_demo.scenarios.dead_units")

SEED = 0


def dead_fraction_after_training(lr: float) -> dict[str, float]:
    model, optimizer, criterion = demo.build(lr, SEED)
    demo.fit(model, optimizer, criterion, steps=300, seed=SEED)
    return demo.evaluate(model)["dead_fraction"]


def test_high_learning_rate_kills_second_layer() -> None:
    lr = demo.COLLAPSE_LR
    dead = dead_fraction_after_training(lr)
    assert dead["fc2"] > 0.30, f"expected > 30% dead units in fc2 at lr {lr}, got {dead}"


def test_low_learning_rate_keeps_units_alive() -> None:
    lr = demo.CONTROL_LR
    dead = dead_fraction_after_training(lr)
    assert dead["fc1"] < 0.05, f"expected < 5% dead units in fc1 at lr {lr}, got {dead}"
    assert dead["fc2"] < 0.05, f"expected < 5% dead units in fc2 at lr {lr}, got {dead}"


def test_build_leaves_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    demo.build(demo.COLLAPSE_LR, SEED)
    assert torch.equal(torch.random.get_rng_state(), state), "build() changed the global RNG"
