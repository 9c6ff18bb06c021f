"""Prefect flows: thin glue over niser/, deployers/ and bench/."""
