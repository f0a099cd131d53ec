"""A separate gateway imports nothing of the worker's side: no model runtimes (torch,
onnxruntime), no training libraries, no ``workers`` package. Its start-up after a crash
is its imports, and answers wait for it (docs/faults.md, gateway-kill)."""

from __future__ import annotations

import subprocess
import sys

# cmd_gateway's own imports, run up to the point where it would open the services
PROBE = """
import argparse, sys
import infaas.cli as cli

class Stop(Exception):
    pass

def stop(*_args, **_kwargs):
    raise Stop

cli._require_services = stop
try:
    cli.cmd_gateway(argparse.Namespace())
except Stop:
    pass
print("\\n".join(sorted(sys.modules)))
"""
WORKER_SIDE = ("torch", "onnxruntime", "onnx", "sklearn", "skl2onnx", "scipy", "workers")


def test_the_gateway_command_imports_nothing_of_the_worker_side() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    modules = done.stdout.split()
    assert "api_gateway.app" in modules  # the probe reached the gateway's imports
    found = sorted(m for m in modules if m.split(".")[0] in WORKER_SIDE)
    assert not found, found
