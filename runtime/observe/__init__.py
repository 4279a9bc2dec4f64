"""Observability: the JSON request and event log (`logs`, written off the loop) and the Prometheus
metrics registry owned by the app (`metrics`).

May import: the plan.
"""
