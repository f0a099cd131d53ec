"""Build what the test run's stacks are seeded from before pytest needs it.

``make test`` starts ``python -m tests.prebuild`` in the background, then runs lint and
the type check. On a machine whose test cache lacks this code's demo models, demo catalog
or the KServe SDK's venv (a fresh CI machine, or a change to the code that registers),
building them (100 s here) overlaps the type check (65 s from a cold cache) instead of
holding every xdist worker whose first group needs a stack; with all three in the cache
it returns at once. The fixtures take the same locks, so a test that comes first waits
for this build rather than starting another; a killed build is removed and made again.
"""

from __future__ import annotations

import sys
import time

from tests.cached_venv import kserve_python
from tests.demo_build import ensure_demo_models
from tests.e2e_support import demo_catalog_home


def main() -> int:
    started = time.perf_counter()
    ensure_demo_models()
    home = demo_catalog_home()
    kserve = kserve_python()
    print(
        f"demo models, catalog and KServe SDK venv ready in "
        f"{time.perf_counter() - started:.1f} s: {home}, {kserve}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
