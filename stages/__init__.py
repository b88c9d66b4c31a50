"""Deploy stages: small idempotent @deploy functions that deploy.py calls in order.

Each stage loops over the service list (stages.config.services) where it concerns the
services, and restarts or reloads something only when what it depends on changed.
"""
