"""Backfills: an exact preview, guardrails, one atomic submit through Airflow's backfill API in
chunks (the outbox), live progress from the synced runs, pause, resume and cancel."""
