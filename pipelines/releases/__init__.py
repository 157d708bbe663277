"""Releases: promotions into environments that require approval, the readiness checklist,
rollback."""
