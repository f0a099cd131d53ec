"""Further ``infaas`` subcommands, one module per area.

Each module defines ``add_commands(sub)`` taking the argparse subparsers object and adding
its commands, each with ``set_defaults(handler=...)`` (a function of the parsed args that
returns the exit code). List new modules in :data:`MODULES`.
"""

from __future__ import annotations

MODULES: tuple[str, ...] = (
    "infaas.commands.models",
    "infaas.commands.scaler",
    "infaas.commands.jobs",
    "infaas.commands.keys",
)
