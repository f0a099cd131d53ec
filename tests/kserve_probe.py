"""The KServe Python SDK's v2 REST client against a gateway, run by
tests/integration/test_oip_kserve.py in a virtual environment of its own (the SDK's pins
conflict with ours, docs/decisions.md). It imports nothing of this project.

    python kserve_probe.py REQUEST.json   # prints what the client got, as JSON

REQUEST: {"url", "input_name", "rows": [[...]], "targets": [{"name", "parameters",
"binary"}]}; each target is queried as a model name (an app, a model or a variant).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig


async def probe(request: dict[str, Any]) -> dict[str, Any]:
    url = request["url"]
    rows = np.asarray(request["rows"], dtype=np.float32)
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=60))
    got: dict[str, Any] = {
        "live": await client.is_server_live(url),
        "ready": await client.is_server_ready(url),
        "targets": [],
    }
    try:
        for target in request["targets"]:
            name = target["name"]
            tensor = InferInput(request["input_name"], list(rows.shape), "FP32")
            tensor.set_data_from_numpy(rows, binary_data=target["binary"])
            infer = InferRequest(name, [tensor], parameters=target.get("parameters"))
            headers: dict[str, str] = {}  # the SDK's InferResponse drops model_version
            answer = await client.infer(url, infer, model_name=name, response_headers=headers)
            [output] = answer.outputs
            got["targets"].append(
                {
                    "name": name,
                    "ready": await client.is_model_ready(url, name),
                    "model_name": answer.model_name,
                    "variant": headers.get("x-infaas-variant"),
                    "output_name": output.name,
                    "output": output.as_numpy().tolist(),
                }
            )
    finally:
        await client.close()
    return got


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as handle:
        request = json.load(handle)
    print(json.dumps(asyncio.run(probe(request))))


if __name__ == "__main__":
    main()
