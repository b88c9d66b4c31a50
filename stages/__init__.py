"""Deploy stages: small idempotent @deploy functions that deploy.py calls in order.

Each stage takes the host's settings (`stages.settings.Platform`, built once from group_data by
deploy.py) and loops over `platform.services` where it concerns the services; it restarts or
reloads something only when what it depends on changed (`stages.signals`).
"""
