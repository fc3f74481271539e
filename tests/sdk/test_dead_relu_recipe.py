"""The dead-ReLU recipe behind ``collapsewatch demo`` does what it promises, in plain torch.

No SDK and no server (the harness trains it with ``watch(..., enabled=False)``): if these
fail, the demo's collapse run would show nothing to detect (or its control would raise a false
alarm) whatever the SDK and indicators do.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
harness = pytest.importorskip("collapsewatch_demo.harness")
demo = pytest.importorskip("collapsewatch_demo.scenarios.dead_units")


def dead_fraction_after_training(lr: float) -> dict[str, float]:
    result = harness.train(demo.RawInputsReLU(lr=lr), log=lambda _: None)
    return {layer: values[-1] for layer, values in result.values.items()}


def test_high_learning_rate_kills_second_layer() -> None:
    lr = demo.COLLAPSE_LR
    dead = dead_fraction_after_training(lr)
    assert dead["fc2"] > 0.30, f"expected > 30% dead units in fc2 at lr {lr}, got {dead}"


def test_low_learning_rate_keeps_units_alive() -> None:
    lr = demo.CONTROL_LR
    dead = dead_fraction_after_training(lr)
    assert dead["fc1"] < 0.05, f"expected < 5% dead units in fc1 at lr {lr}, got {dead}"
    assert dead["fc2"] < 0.05, f"expected < 5% dead units in fc2 at lr {lr}, got {dead}"


def test_training_leaves_global_rng_and_threads_alone() -> None:
    state, threads = torch.random.get_rng_state(), torch.get_num_threads()
    harness.run_watched(demo.RawInputsReLU(lr=demo.COLLAPSE_LR, steps=3))
    assert torch.equal(torch.random.get_rng_state(), state), "training changed the global RNG"
    assert torch.get_num_threads() == threads
