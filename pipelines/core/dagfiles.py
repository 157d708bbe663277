"""Where DAG files go: the DAGs folder and DAG-id prefix rules, and the one way to build a path.

A DAG id names a file in the folder, so a prefix such as "../" would write outside it. The rules
are checked when an Environment is saved and again just before a file is written.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from django.core.exceptions import ValidationError

# Airflow allows letters, digits, "_", "-" and "." in a DAG id; the portal also leaves out "."
# so that no prefix can form a hidden file name or a path segment.
# Reference: https://airflow.apache.org/docs/apache-airflow/stable/core-concepts/dags.html
DAG_ID_PREFIX = re.compile(r"[A-Za-z0-9_-]*")
DAG_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")


class DagPathError(ValueError):
    """A DAG file would land outside its folder; str() is the user-facing message."""


def dags_folder_problem(folder: str) -> str | None:
    """Return why `folder` may not be a DAGs folder, or None."""
    if not folder or not os.path.isabs(folder):
        return f"“{folder}” is not an absolute path."
    if ".." in Path(folder).parts:
        return f"“{folder}” may not contain “..”."
    if os.path.normpath(folder) != folder or (folder != "/" and folder.endswith("/")):
        return f"“{folder}” is not normalised: write it as “{os.path.normpath(folder)}”."
    return None


def validate_dags_folder(folder: str) -> None:
    if problem := dags_folder_problem(folder):
        raise ValidationError(problem, code="dags_folder")


def validate_dag_id_prefix(prefix: str) -> None:
    if not DAG_ID_PREFIX.fullmatch(prefix):
        raise ValidationError(
            f"“{prefix}” may hold only letters, digits, “_” and “-”.", code="dag_id_prefix"
        )


def dag_file_path(folder: str, dag_id: str) -> Path:
    """Return folder/<dag_id>.py, refusing anything that would resolve outside the folder."""
    if problem := dags_folder_problem(folder):
        raise DagPathError(problem)
    if not DAG_ID.fullmatch(dag_id):
        raise DagPathError(f"“{dag_id}” is not a DAG id the portal writes (letters, digits, _, -).")
    root = Path(folder).resolve()
    path = (root / f"{dag_id}.py").resolve()
    if path.parent != root:
        raise DagPathError(f"{dag_id}.py would resolve to {path}, outside {root}.")
    return path
