"""Reads of deployments: what changes between two versions of a pipeline in one environment."""

from __future__ import annotations

import difflib
import json
from typing import Any

from pipelines.authoring.models import PipelineVersion
from pipelines.deployments.models import Environment
from pipelines.deployments.services import render_for

# Fields of the spec that are bookkeeping, not a choice anybody made.
NOT_COMPARED = frozenset({"format"})


def shown_value(value: Any) -> str:
    """A spec value as a diff shows it (JSON, strings as they are)."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def version_diff(
    *, before: PipelineVersion, after: PipelineVersion, environment: Environment
) -> dict[str, Any]:
    """The spec field by field and the generated DAG as a unified diff, for `environment`.

    The code is rendered for the environment (its connection, schema and DAG-id prefix), so
    the diff is what would change in that environment's DAGs folder.
    """
    a, b = before.spec_json, after.spec_json
    spec = [
        {"field": key, "before": shown_value(a.get(key)), "after": shown_value(b.get(key))}
        for key in sorted((a.keys() | b.keys()) - NOT_COMPARED)
        if a.get(key) != b.get(key)
    ]
    old = render_for(before, environment).source.splitlines()
    new = render_for(after, environment).source.splitlines()
    names = (f"v{before.number}/{environment.slug}", f"v{after.number}/{environment.slug}")
    code = "\n".join(difflib.unified_diff(old, new, *names, lineterm=""))
    side_by_side = difflib.HtmlDiff(wrapcolumn=90).make_table(
        old, new, *names, context=True, numlines=3
    )
    return {"spec": spec, "code": code, "code_html": side_by_side}
