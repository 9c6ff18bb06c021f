"""Measure, price and recommend deployments.

Layout: ``load_settings`` (levels, windows, the sweep budget), ``clock`` (the time seam),
``level`` / ``closed_loop`` / ``open_loop`` / ``sweep`` / ``cold_start`` (load generation),
``stats``, ``payloads``, ``calibrate`` + ``stub_server`` (the load generator's honesty check),
``prices`` / ``price_list`` / ``cost`` / ``breakeven`` / ``recommend`` (pricing and the verdict),
``provenance`` (where a figure comes from), ``targets`` (deploy, measure, tear down), ``hooks`` /
``report*`` (MLflow), ``cli`` (the ``niser-mlops`` benchmark commands).
"""
