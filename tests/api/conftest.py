"""The releases fixtures (tests/releases/conftest.py) for the releases API tests: dev, stage
and prod, the `pipeline` whose version 1 is `ready` to promote, carol, the team's alert routes;
and the backfills ones (tests/backfills/conftest.py): the pipeline `deployed` to dev and prod at
the `frozen` clock."""

from __future__ import annotations

from tests.backfills.conftest import deployed, frozen  # noqa: F401
from tests.releases.conftest import carol, envs, pipeline, ready, team  # noqa: F401
