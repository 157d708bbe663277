"""The locks (requirements/*.lock.txt) pin every package of both virtualenvs: each dependency
pyproject.toml (or AIRFLOW_REQUIREMENTS) names is in its lock at a version it allows, so an
install tomorrow is today's. A lock that fell behind says to run `make lock`."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from orchestrator.local import AIRFLOW_LOCK, AIRFLOW_REQUIREMENTS, REPO

PORTAL_LOCK = REPO / "requirements" / "portal.lock.txt"
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;#]+)$")


def pins(lock: Path) -> dict[str, Version]:
    """{canonical name: version} of a lock; any line that is not a plain `name==version` pin
    (a URL, a path, an editable) fails: it would not install the same thing tomorrow."""
    found = {}
    for number, line in enumerate(lock.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = PIN.match(line.strip())
        assert match, f"{lock.name} line {number} is not a name==version pin: {line!r}"
        found[canonicalize_name(match["name"])] = Version(match["version"])
    return found


def pyproject_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    return [Requirement(r) for r in [*project["dependencies"], *extras.get("dev", [])]]


def extra_requirements(requirement: Requirement) -> list[Requirement]:
    """What the requirement's extras add (`celery[redis]` → redis), from the installed
    package's metadata."""
    try:
        declared = requires(requirement.name) or []
    except PackageNotFoundError:
        return []  # not installed yet: the top-level check names it
    added = []
    for line in declared:
        dependency = Requirement(line)
        if dependency.marker and any(
            dependency.marker.evaluate({"extra": extra}) for extra in requirement.extras
        ):
            added.append(dependency)
    return added


def out_of_date(requirements: list[Requirement], locked: dict[str, Version]) -> list[str]:
    problems = []
    for requirement in requirements:
        if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
            continue
        version = locked.get(canonicalize_name(requirement.name))
        if version is None:
            problems.append(f"{requirement} is not in the lock")
        elif not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{requirement} does not allow the locked {version}")
    return problems


def test_portal_lock_covers_every_dependency_of_pyproject():
    locked = pins(PORTAL_LOCK)
    direct = pyproject_requirements()
    problems = out_of_date(direct, locked)
    problems += out_of_date([e for r in direct if r.extras for e in extra_requirements(r)], locked)
    assert not problems, (
        f"{PORTAL_LOCK.relative_to(REPO)} is out of date with pyproject.toml "
        f"({'; '.join(problems)}): run make lock."
    )
    assert "pipeline-portal" not in locked  # the project itself is installed editable


def test_airflow_lock_pins_airflow_and_its_providers():
    locked = pins(AIRFLOW_LOCK)
    problems = out_of_date([Requirement(r) for r in AIRFLOW_REQUIREMENTS], locked)
    assert not problems, (
        f"{AIRFLOW_LOCK.relative_to(REPO)} is out of date with AIRFLOW_REQUIREMENTS "
        f"({'; '.join(problems)}): run make lock."
    )
    assert locked["apache-airflow"] == Version("3.3.2")
    # The whole tree, not only what is named: Airflow's core, task SDK and their libraries.
    assert {"apache-airflow-core", "apache-airflow-task-sdk", "sqlalchemy"} <= set(locked)


def test_a_dependency_missing_from_the_lock_is_found_and_a_url_pin_refused(tmp_path):
    lock = tmp_path / "portal.lock.txt"
    lock.write_text("# made by hand\nDjango==5.2.1\n")
    problems = out_of_date(
        [Requirement("Django>=5.2,<5.3"), Requirement("django-axes>=8")], pins(lock)
    )
    assert problems == ["django-axes>=8 is not in the lock"]
    lock.write_text("django-axes @ https://example.com/axes.whl\n")
    with pytest.raises(AssertionError, match="line 1 is not a name==version pin"):
        pins(lock)
