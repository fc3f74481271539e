"""The held-out validation suite: collapse/control pairs of every family, each in the "tune"
or the "heldout" half, trained through the SDK's public API into a real server and judged
through its public HTTP API. ``python -m collapsewatch_demo.validation --help``."""
