"""A refused registration leaves nothing, and a delete removes what was declared on the
broker: on the embedded stack (memory transport) and on the real services (RabbitMQ,
checked with ``rabbitmqctl``, not through the clients under test)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from kombu import Queue as KombuQueue

from infaas.cli import main as cli_main
from infaas.demo import DEMO_APP
from queues import topology
from queues.broker_admin import broker_connection
from queues.celery_app import create_celery_app
from queues.depth import QueueProbe
from registry.jobs.messages import batch_kombu_queue, batch_queue_options
from registry.registrations import RegistrationStore
from registry.types import READY, Model
from tests.e2e_support import Stack
from tests.rabbitmq_admin import exchange_names, queue_names
from tests.registration_models import Trained, sklearn_onnx
from tests.services import unique_name

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def wine(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return sklearn_onnx(tmp_path_factory.mktemp("wine"), "wine-mlp", "wine")


def _app_id(kind: str) -> str:
    return unique_name(kind)[-24:].strip("-")


def _trace(stack: Stack) -> tuple[Any, ...]:
    snapshot = stack.services.catalog.snapshot()
    return (
        snapshot.revision,
        snapshot.apps,
        snapshot.models,
        snapshot.variants,
        RegistrationStore(stack.services.catalog).all(),
        stack.services.store.list(),
    )


# -- item: a refused registration into a new app leaves no app -----------------------------


def test_refused_registrations_that_would_create_the_app_leave_nothing(
    stack: Stack,
    wine: Trained,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = _app_id("new")
    notes = tmp_path / "notes.onnx"
    notes.write_text("these are notes, not a model\n" * 20)
    short = tmp_path / "short.npz"
    np.savez(short, inputs=wine.inputs, labels=wine.labels[:-3])
    common = ["--url", stack.url, "--no-wait"]
    cases = [
        ("model id taken", [str(wine.path), "--id", "digits-logreg"], "conflict"),
        ("invalid model", [str(notes), "--id", "wine-notes"], "invalid_model"),
        ("invalid validation", [str(wine.path), "--id", "wine-short"], "invalid_validation_set"),
        ("unknown hardware", [str(wine.path), "--hardware", "tpu"], "invalid_request"),
    ]
    before = _trace(stack)
    for name, args, code in cases:
        validation = short if name == "invalid validation" else wine.validation
        exit_code = cli_main(["register", app, *args, "--validation", str(validation), *common])
        err = capsys.readouterr().err
        assert exit_code == 1, (name, err)
        assert code in err, (name, err)
        assert _trace(stack) == before, name
        assert app not in {a["app"] for a in stack.client.apps()}, name

    settings = stack.gateway.app.state.infaas.settings
    monkeypatch.setattr(settings, "max_upload_mb", 0.005)
    exit_code = cli_main(
        ["register", app, str(wine.path), "--validation", str(wine.validation), *common]
    )
    assert exit_code == 1
    assert "upload_too_large" in capsys.readouterr().err
    assert _trace(stack) == before
    monkeypatch.undo()

    url = f"{stack.url}/v1/apps/{app}/models"
    files = {"model": wine.path.read_bytes(), "validation": wine.validation.read_bytes()}
    for params, fields, status, words in [
        ({}, {"num_classes": "3"}, 404, "add ?create_app=true"),  # refused before the body
        ({"create_app": "true"}, {"num_classes": "three"}, 422, "num_classes must be an integer"),
    ]:
        response = httpx.post(url, params=params, data=fields, files=files, timeout=60)
        assert response.status_code == status, response.text
        assert words in response.json()["error"]["message"]
        assert _trace(stack) == before
    response = httpx.post(
        f"{stack.url}/v1/apps/Not%20An%20App/models",
        params={"create_app": "true"},
        files=files,
        timeout=60,
    )
    assert response.status_code == 422, response.text
    assert _trace(stack) == before

    # accepted: the app is made from the model's input, in the same step (hardware no
    # worker has, so the registration waits queued and can be deleted at once)
    args = ["register", app, str(wine.path), "--validation", str(wine.validation)]
    assert cli_main([*args, "--hardware", "gpu", "--description", "wines", *common]) == 0
    out = capsys.readouterr().out
    assert f"created app {app}: input 'input' float32 [-1, 13], 3 classes" in out
    view = stack.client.app(app)
    assert (view["num_classes"], view["description"]) == (3, "wines")
    stack.client.delete_model(app, "wine-mlp")
    stack.client.delete_app(app)
    assert _trace(stack)[1:] == before[1:]


# -- item: deletes remove what the variants and the app declared on the broker ----------


def _clone_demo_model(stack: Stack, app: str, model_id: str) -> list[str]:
    """A copy of the demo's logistic regression in an app of its own, with its own files
    (deleting it must not touch the demo's); returns its variants."""
    catalog, store = stack.services.catalog, stack.services.store
    catalog.create_app(dataclasses.replace(catalog.get_app(DEMO_APP), id=app))
    source = catalog.get_model("digits-logreg")
    prefix = f"models/{model_id}/"
    model_key = f"{prefix}source.onnx"
    store.put_bytes(model_key, store.get_bytes(source.artifact_key))
    store.put_bytes(f"{prefix}validation.npz", store.get_bytes(source.validation_key))
    catalog.add_model(
        Model(
            id=model_id,
            app=app,
            format=source.format,
            artifact_key=model_key,
            validation_key=f"{prefix}validation.npz",
            output_name=source.output_name,
        )
    )
    variants = []
    for variant in catalog.list_variants(model_id=source.id, status=READY):
        if not variant.id.endswith(("onnx-fp32.cpu-t1", "onnx-fp32.cpu-t2")):
            continue
        clone_id = model_id + variant.id[len(source.id) :]
        key = f"{prefix}artifacts/{clone_id}.onnx"
        store.put_bytes(key, store.get_bytes(variant.artifact_key))
        catalog.upsert_variant(
            dataclasses.replace(variant, id=clone_id, model=model_id, app=app, artifact_key=key)
        )
        variants.append(clone_id)
    assert len(variants) == 2
    return sorted(variants)


def _existing(stack: Stack, names: list[str]) -> set[str]:
    """Which of ``names`` exist as queues, as the broker itself tells."""
    if stack.kind == "services":
        return queue_names(stack.services.broker.amqp().vhost) & set(names)
    probe = QueueProbe(lambda: broker_connection(stack.services.broker))
    try:
        return set(probe.depths(names))
    finally:
        probe.close()


def _wait_for_placement(
    stack: Stack, variant: str, *, present: bool, timeout_s: float = 60
) -> None:
    deadline = time.monotonic() + timeout_s
    while bool(stack.services.live.snapshot().placements(variant)) != present:
        assert time.monotonic() < deadline, f"{variant} placement never became {present}"
        time.sleep(0.2)
    time.sleep(1.0)  # the gateway refreshes its snapshots every 0.5 s


def test_deleting_a_model_and_its_app_removes_their_queues(stack: Stack) -> None:
    broker = stack.services.broker
    prefix = broker.queue_prefix
    app = _app_id("gone")
    model = f"{app}-lr"
    loaded, idle = _clone_demo_model(stack, app, model)
    queues = list(topology.declared_for_variants(prefix, app, [loaded, idle]).queues)
    control = create_celery_app(broker)
    replies = control.control.broadcast(
        "infaas_load", arguments={"variant": loaded, "replicas": 1}, reply=True, timeout=10, limit=1
    )
    assert replies, "no worker answered the load request"
    _wait_for_placement(stack, loaded, present=True)
    # the other variant's queue is left from an earlier load: declared, nobody consuming
    with broker_connection(broker) as conn:
        name = topology.variant_queue(prefix, app, idle)
        arguments = topology.variant_queue_arguments(prefix, broker.queue_max_length)
        KombuQueue(name, routing_key=name, durable=True, queue_arguments=arguments)(
            conn.channel()
        ).declare()
        batch_kombu_queue(prefix, app)(conn.channel()).declare()
    batch = topology.batch_queue(prefix, app)
    assert _existing(stack, [*queues, batch]) == {*queues, batch}

    # refused deletes change nothing, on the broker either
    before = _trace(stack)
    for method, path, status in [
        ("DELETE", f"/v1/apps/{app}", 409),
        ("DELETE", f"/v1/apps/{app}/models/no-such-model", 404),
        ("DELETE", f"/v1/apps/{app}/models/digits-logreg", 404),
    ]:
        response = httpx.request(method, f"{stack.url}{path}", timeout=60)
        assert response.status_code == status, (path, response.text)
    assert _trace(stack) == before
    assert _existing(stack, [*queues, batch]) == {*queues, batch}

    deleted = stack.client.delete_model(app, model)
    assert deleted["unloaded"] == [loaded]
    assert deleted["broker"] == {"deleted_queues": queues, "deleted_exchanges": [], "kept": {}}
    assert _existing(stack, queues) == set()
    _wait_for_placement(stack, loaded, present=False)

    # the app's batch queue, consumed by the worker as a job would have it, goes with it
    options = batch_queue_options(prefix, app)
    replies = control.control.add_consumer(
        batch,
        exchange=options.pop("exchange"),
        exchange_type=options.pop("exchange_type"),
        routing_key=options.pop("routing_key"),
        options=options,
        reply=True,
        timeout=10,
        limit=1,  # the stack's worker; without a limit it waits out the whole time-out
    )
    assert replies, "no worker answered add_consumer"
    deleted_app = stack.client.delete_app(app)
    assert deleted_app["broker"] == {
        "deleted_queues": [batch],
        "deleted_exchanges": [topology.batch_exchange(prefix, app)],
        "kept": {},
    }
    assert _existing(stack, [batch]) == set()
    if stack.kind == "services":
        assert batch not in exchange_names(broker.amqp().vhost)
    # the worker still serves (its Celery consumer survived losing one queue)
    assert stack.client.infer(DEMO_APP, np.zeros((1, 64), dtype=np.float32).tolist())["variant"]
