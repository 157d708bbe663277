"""Drive a local Apache Airflow as subprocesses (no Django, no Airflow imports)."""
