"""Wire schemas: what a training process sends to ``POST /api/v1/ingest`` and gets back.

Defined once, here, in the SDK package: the SDK builds :class:`IngestBatch`, the server
validates it and answers :class:`IngestResult`. Only pydantic is imported, so
``import collapsewatch`` stays light. The rest of the HTTP API (runs, rules, alerts, webhooks,
the dashboards' JSON) is described by ``collapsewatch_web.api_schemas``, which the SDK never
imports.

Statistic names inside :class:`StatRecord.stats` are listed per probe kind in
:mod:`collapsewatch.schemas.stats` (re-exported here); the server's indicators read them.
"""

from __future__ import annotations

import base64
import binascii
import math
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Final, Literal

from pydantic import (
    Base64Bytes,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    field_validator,
    model_validator,
)

from collapsewatch.schemas.bounds import NAME_CHARS, Count32, Count64, Label, Step, Text
from collapsewatch.schemas.stats import (  # noqa: F401  (re-exported)
    ActivationStat,
    AttentionStat,
    ClassStat,
    CodeStat,
    EvalStat,
    LossStat,
    ParameterStat,
    PosteriorStat,
    ProbeKind,
    RoutingStat,
    SampleStat,
    StateStat,
    TextStat,
    TokenStat,
)

SCHEMA_VERSION: Final = 1

#: Names of projects and runs: what a user types on the command line or sees in a URL.
Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]
#: Tags of a run: short labels to group and filter runs by ("baseline", "lr-sweep", "v2:ablation").
Tag = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")]
MAX_TAGS = 32
#: Probe names are module paths ("encoder.layers.0.linear1"), parameter names or fixed names.
ProbeName = Annotated[str, Field(min_length=1, max_length=256), NAME_CHARS]
StatName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]
MAX_VECTOR_VALUES = 4_194_304
MAX_RECORDS_PER_BATCH = 20_000
#: Values in all of a batch's scalar columns (:class:`ScalarColumn`).
MAX_COLUMN_VALUES = 2_000_000
#: What a value of a scalar column weighs against a record, in the SDK's batches and in the
#: server's queue: it is stored with no per-record work, at about a hundredth of the cost.
COLUMN_VALUE_LOAD = 0.01


class _Wire(BaseModel):
    """Strict about unknown fields so a typo in a client is an error, not silently dropped data."""

    model_config = ConfigDict(extra="forbid")


class Packed(_Wire):
    """A vector as base64 of little-endian float32: about 5.3 bytes a value on the wire instead
    of ~12 as JSON text, and no float formatting or parsing at either end."""

    f32: Base64Bytes

    @field_validator("f32", mode="before")
    @classmethod
    def _strict_base64(cls, value: object) -> object:
        # lenient decoding skips what is not base64: "!!!" would be an empty vector
        if isinstance(value, str | bytes):
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(
                    "f32 must be standard base64 (A-Z, a-z, 0-9, +, /, '=' padding)"
                ) from None
        return value

    @field_validator("f32")
    @classmethod
    def _whole_floats(cls, value: bytes) -> bytes:
        if len(value) % 4:
            raise ValueError("f32 must decode to a whole number of 4-byte floats")
        if len(value) > 4 * MAX_VECTOR_VALUES:
            raise ValueError(f"f32 holds more than {MAX_VECTOR_VALUES} values")
        return value


#: One statistic: a scalar, or a flat vector (per unit, per eigenvalue, ...) as a JSON list or
#: packed. Matrices travel flattened, row-major; their shape follows from other statistics.
StatValue = float | Annotated[list[float], Field(max_length=MAX_VECTOR_VALUES)] | Packed


class RunStatus(StrEnum):
    """Lifecycle of a run; ``stalled`` is derived by the server from silence, never sent."""

    running = "running"
    finished = "finished"
    crashed = "crashed"
    stalled = "stalled"


# ---------------------------------------------------------------------------------- ingest


class ProbeInfo(_Wire):
    """One observed place in the model, in model order (for heatmaps and the model summary)."""

    name: ProbeName
    kind: ProbeKind
    module: Label = Field(default="", max_length=128, description="module class, e.g. Linear")
    order: Count32 = 0
    width: Count32 | None = None
    params: Count64 = 0


class FamilyCoverage(_Wire):
    """Whether a run is watched for one collapse family: what is watched, or what to add."""

    watched: bool
    detail: Text = Field(default="", max_length=500)


class RunInfo(_Wire):
    """Run metadata; sent with every batch so batches can arrive in any order or be synced later."""

    run_id: uuid.UUID
    project: Name
    name: Name
    config: dict[str, JsonValue] = Field(default_factory=dict)
    host: Label = Field(default="", max_length=256)
    torch_version: Label = Field(default="", max_length=64)
    sdk_version: Label = Field(default="", max_length=64)
    started_at: datetime
    probes: list[ProbeInfo] = Field(default_factory=list, max_length=100_000)
    #: By family of the indicator catalogue, as the SDK found the model on its first sampled
    #: step (empty before it, and from SDKs older than this field).
    coverage: dict[Annotated[str, Field(max_length=64), NAME_CHARS], FamilyCoverage] = Field(
        default_factory=dict, max_length=64
    )
    #: The SDK's sampling interval when the batch was made (one step in ``sampling_every``).
    sampling_every: int | None = Field(default=None, ge=1, le=1 << 30)
    #: ``watch(tags=[...])``; the server sets them on the run it creates. Sent only when set,
    #: so servers older than this field keep taking the SDK's batches.
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)


class StatRecord(_Wire):
    """The statistics of one probe at one training step."""

    probe: ProbeName
    kind: ProbeKind
    step: Step
    stats: dict[StatName, StatValue] = Field(max_length=256)


class ScalarColumn(_Wire):
    """The values of one scalar probe (``log_scalar``) at many steps, in two parallel lists:
    what ``StatRecord``s of kind ``scalar`` with ``{"value": v}`` say, one record per step,
    without repeating the probe's name, kind and statistic's name at every step. The server
    stores a column as it came (a block of points), with no per-record work. A value is a
    number, NaN or inf."""

    probe: ProbeName
    steps: list[Step] = Field(max_length=MAX_COLUMN_VALUES)
    values: list[float] = Field(max_length=MAX_COLUMN_VALUES)

    @model_validator(mode="after")
    def _parallel(self) -> ScalarColumn:
        if len(self.steps) != len(self.values):
            raise ValueError(
                f"steps ({len(self.steps)}) and values ({len(self.values)}) "
                "must have the same length"
            )
        return self


class IngestBatch(_Wire):
    """What ``POST /api/v1/ingest`` takes. ``batch_id`` makes the request idempotent.

    A run's scalars travel as ``records`` of kind ``scalar`` or, cheaper, as ``scalars``
    columns (one per probe); both are stored the same way."""

    schema_version: Literal[1] = SCHEMA_VERSION
    batch_id: uuid.UUID
    run: RunInfo
    records: list[StatRecord] = Field(default_factory=list, max_length=MAX_RECORDS_PER_BATCH)
    scalars: list[ScalarColumn] = Field(default_factory=list, max_length=100_000)
    status: Literal[RunStatus.running, RunStatus.finished, RunStatus.crashed] | None = None
    sent_at: datetime | None = None

    @model_validator(mode="after")
    def _column_values(self) -> IngestBatch:
        values = sum(len(c.steps) for c in self.scalars)
        if values > MAX_COLUMN_VALUES:
            raise ValueError(
                f"scalars hold {values} values in all; a batch takes at most {MAX_COLUMN_VALUES}"
            )
        return self

    @property
    def size(self) -> int:
        """The batch's records, each value of a scalar column counted as one record."""
        return len(self.records) + sum(len(c.steps) for c in self.scalars)

    @property
    def load(self) -> int:
        """What processing the batch costs, in records (a column value weighs
        ``COLUMN_VALUE_LOAD``), rounded up: how the server's queue counts it."""
        values = sum(len(c.steps) for c in self.scalars)
        return len(self.records) + math.ceil(values * COLUMN_VALUE_LOAD)

    def step_range(self) -> tuple[int, int] | None:
        """The first and the last step the batch has statistics of; None when it has none."""
        lows = [min(c.steps) for c in self.scalars if c.steps]
        highs = [max(c.steps) for c in self.scalars if c.steps]
        if self.records:
            steps = [r.step for r in self.records]
            lows.append(min(steps))
            highs.append(max(steps))
        return (min(lows), max(highs)) if lows else None


class RunAlert(BaseModel):
    """An alert firing on a run (a rule's state on one probe), as the ingest answer lists it."""

    rule_id: int
    rule: str
    indicator: str
    probe: str
    severity: str  # "info", "warning" or "critical"
    since: datetime | None = None
    step: int | None = None  # the step of the value that made it fire, or the latest since
    value: float | None = None


class IngestResult(BaseModel):
    """Answer to an ingest: what was stored. A repeated batch id stores nothing.

    ``queued``: the batch is stored and its indicators are still being computed (a server
    under load answers before it has); ``points`` is then 0.

    ``firing``: the alerts firing on the batch's run when the batch was accepted (those this
    batch raises are judged in the background and listed in a later answer), so a training
    process learns of them without polling; ``None`` when the server does not say.
    """

    batch_id: uuid.UUID
    run_id: uuid.UUID
    duplicate: bool
    records: int
    points: int
    queued: bool = False
    firing: list[RunAlert] | None = None
