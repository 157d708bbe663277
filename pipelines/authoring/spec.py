"""PipelineSpec: the frozen, validated description of a pipeline that everything else reads."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

SPEC_FORMAT = 1


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # a SourceColumn.Kind value


@dataclass(frozen=True)
class PipelineSpec:
    """What the user asked for, plus a snapshot of the source columns it was validated against.

    A version's rendering must not change when the catalog is edited later, so the columns (and
    the source's connection and dialect) are copied in.
    """

    name: str
    team: str
    team_domain: str
    owner: str
    source_database: str
    source_dialect: str
    source_conn_id: str
    source_schema: str
    source_table: str
    columns: tuple[Column, ...]
    target_table: str
    schedule: str
    timezone: str
    primary_key: tuple[str, ...]
    partition_column: str
    partition_grain: str  # "day" | "hour"
    sla_minutes: int | None
    retries: int
    retry_delay_minutes: int
    execution_timeout_minutes: int
    tags: tuple[str, ...] = ()
    runbook_url: str = ""
    description: str = ""
    allow_empty: bool = False
    # The guarded swap refuses a load that would leave a partition with fewer than this
    # percentage of the rows it held before (0 turns the guard off).
    shrink_guard_percent: int = 50
    # The target table may already exist without having been created by the portal: only then
    # does the load take it over (and replace its partitions).
    adopt_existing_table: bool = False
    format: int = field(default=SPEC_FORMAT)

    @property
    def partition_kind(self) -> str:
        return next(c.kind for c in self.columns if c.name == self.partition_column)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["columns"] = [asdict(c) for c in self.columns]
        data["primary_key"] = list(self.primary_key)
        data["tags"] = list(self.tags)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PipelineSpec:
        values = dict(data)
        values["columns"] = tuple(Column(**c) for c in values["columns"])
        values["primary_key"] = tuple(values["primary_key"])
        values["tags"] = tuple(values.get("tags", ()))
        return cls(**values)

    def sha256(self) -> str:
        canonical = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()
