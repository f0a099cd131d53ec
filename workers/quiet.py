"""Keep onnxruntime's chatter off the user's terminal while variants are built.

Quantising a graph makes onnxruntime talk through three channels at once: its C++
logger (``CleanUnusedInitializersAndNodeArgs`` from the sessions the quantiser opens),
Python ``logging`` (``failed to infer the type of tensor``, sent to the *root* logger by
``logging.warning``, and to ``onnxruntime.*`` loggers), and ``warnings``. None of it is
actionable for someone serving a model: a variant that does not quantise fails with its
own reason. :func:`quiet_onnxruntime` silences the three around the calls that produce
them; ``verbose`` (``infaas demo --verbose``, ``BuildContext.verbose``) lets them
through for whoever debugs a quantisation.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# onnxruntime's C++ logger severities: 0 verbose, 1 info, 2 warning (its default), 3 error
ORT_WARNING = 2
ORT_ERROR = 3
_LIBRARIES = ("onnxruntime", "onnx")


class _FromLibraries(logging.Filter):
    """Drops records logged by code inside the given package folders."""

    def __init__(self, folders: tuple[str, ...]) -> None:
        super().__init__()
        self.folders = folders

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.pathname.startswith(self.folders)


@contextmanager
def quiet_onnxruntime(*, verbose: bool = False) -> Iterator[None]:
    """Silence onnxruntime's warnings (not its errors) inside the block, unless ``verbose``.

    The C++ logger's default severity is process-wide: it is raised for the block and put
    back to onnxruntime's default after. Sessions the project opens itself set their own
    severity (:mod:`workers.runtimes.onnx_backend`)."""
    if verbose:
        yield
        return
    import onnx
    import onnxruntime as ort

    folders = tuple(str(Path(m.__file__ or "").parent) + "/" for m in (ort, onnx))
    drop = _FromLibraries(folders)
    root = logging.getLogger()
    loggers = [logging.getLogger(name) for name in _LIBRARIES]
    levels = [logger.level for logger in loggers]
    root.addFilter(drop)  # the quantiser's logging.warning(...) goes to the root logger
    for logger in loggers:
        logger.setLevel(max(logger.level, logging.ERROR))
    ort.set_default_logger_severity(ORT_ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"(onnxruntime|onnx)(\.|$)")
            yield
    finally:
        ort.set_default_logger_severity(ORT_WARNING)
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        root.removeFilter(drop)
