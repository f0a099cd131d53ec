"""Queue topology, message schemas, the Celery app factory and the broker clients.

This package imports nothing else of the project: gateway, registry and workers all
build on it.
"""
