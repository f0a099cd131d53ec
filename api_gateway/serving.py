"""How uvicorn serves the gateway's app, shared by ``infaas gateway`` and the embedded
stack. A module of its own so that a separate gateway process imports nothing of the
worker's side (infaas/embedded.py pulls in the Celery worker) on its way up: a gateway
restarted after a crash answers only once its imports are done."""

from __future__ import annotations

from typing import Any

import uvicorn


def uvicorn_config(app: Any, host: str, port: int, *, log_level: str = "warning") -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        log_level=log_level,
        lifespan="on",
        access_log=False,
    )
