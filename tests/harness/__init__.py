"""Tests of the local Airflow deployment harness (tools/local_airflow.py)."""
