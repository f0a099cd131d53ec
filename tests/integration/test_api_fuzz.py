"""Property-based fuzzing of the REST API against its own OpenAPI schema (schemathesis),
with every check on: no 5xx, statuses, content types and headers as documented, bodies
matching their schemas, bad input refused.

It runs against a stack of its own (the embedded default, seeded from the demo catalog),
since the fuzzer deletes what it finds. Cases are derandomized so CI is repeatable;
``INFAAS_FUZZ_EXAMPLES`` raises the number of cases per operation and
``INFAAS_FUZZ_RANDOM=1`` draws new ones (what to run by hand after an API change).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import Case
from schemathesis.config import SchemathesisConfig
from schemathesis.core.result import Ok

from infaas.services import Services
from tests.e2e_support import Stack, embedded_stack

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("INFAAS_FUZZ_EXAMPLES", "12"))
RANDOM = os.environ.get("INFAAS_FUZZ_RANDOM") == "1"
# Every check on. A request the schema allows may still be refused with 422 for what no
# schema can say: rows that do not fit the app's signature, bytes that are no model, a
# location that does not exist (api_gateway/openapi_doc.py documents it on every route);
# the Open Inference Protocol says 400 for the same.
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "400", "401", "403", "404", "409", "422", "429"]
            }
        }
    }
)


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory, demo_catalog: Services) -> Iterator[Stack]:
    home: Path = tmp_path_factory.mktemp("fuzz")
    with embedded_stack(home, source=demo_catalog) as stack:
        yield stack


def test_the_api_keeps_its_documented_contract(fuzz_stack: Stack) -> None:
    """Every operation of the schema, fuzzed in turn; the failures of all of them are
    reported together (schemathesis's pytest plugin does not run on pytest 9)."""
    api = schemathesis.openapi.from_url(f"{fuzz_stack.gateway.url}/openapi.json", config=CONFIG)
    failures: dict[str, str] = {}
    operations = 0
    for result in api.get_all_operations():
        operations += 1
        if not isinstance(result, Ok):  # a part of the schema schemathesis cannot read
            failures[f"schema #{operations}"] = f"unreadable: {result.err()}"
            continue
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=not RANDOM,
            suppress_health_check=list(HealthCheck),
            database=None,
            phases=[Phase.explicit, Phase.generate],
        )
        def fuzz(case: Case[Any]) -> None:
            case.call_and_validate()

        try:
            fuzz()
        except (Exception, BaseExceptionGroup) as exc:  # all failures, then one assert
            failures[operation.label] = f"{type(exc).__name__}: {exc}"[:3000]
    assert operations > 30, f"only {operations} operations in the schema"
    assert not failures, "\n\n".join(f"{label}\n{text}" for label, text in failures.items())
