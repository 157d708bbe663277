"""The releases fixtures (tests/releases/conftest.py) for the releases API tests: dev, stage
and prod, the `pipeline` whose version 1 is `ready` to promote, carol, the team's alert routes."""

from __future__ import annotations

from tests.releases.conftest import carol, envs, pipeline, ready, team  # noqa: F401
