"""The catalog's behaviour, run against every backend.

Each backend's test module subclasses :class:`CatalogCases` and provides two fixtures:
``catalog_url`` (an empty catalog database) and ``catalog`` (a :class:`Catalog` on it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest

from queues.errors import (
    Conflict,
    InfaasError,
    InvalidRequest,
    UnknownApp,
    UnknownModel,
    UnknownVariant,
)
from registry.catalog import Catalog
from registry.types import (
    FAILED,
    GENERATING,
    PROFILING,
    QUEUED,
    READY,
    App,
    InputSignature,
    Model,
    Profile,
    Variant,
)

T0 = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)


def make_app(app_id: str = "digits", **changes: object) -> App:
    fields: dict[str, object] = {
        "id": app_id,
        "task": "image-classification",
        "signature": InputSignature("pixels", "float32", (-1, 8, 8)),
        "output_kind": "probabilities",
        "num_classes": 10,
        "description": "handwritten digits",
        "created_at": T0,
    }
    fields.update(changes)
    return App(**fields)  # type: ignore[arg-type]


def make_model(model_id: str = "digits-mlp", app_id: str = "digits", **changes: object) -> Model:
    fields: dict[str, object] = {
        "id": model_id,
        "app": app_id,
        "format": "onnx",
        "artifact_key": f"models/{model_id}/model.onnx",
        "validation_key": f"models/{model_id}/validation.npz",
        "output_name": "probabilities",
        "status": READY,
        "metadata": {"framework": "sklearn", "layers": [64, 32], "nested": {"a": 1.5}},
        "created_at": T0,
    }
    fields.update(changes)
    return Model(**fields)  # type: ignore[arg-type]


def make_profile(accuracy: float = 0.97) -> Profile:
    return Profile(
        accuracy=accuracy,
        metric="top1",
        latency_ms={1: 0.5, 8: 1.25, 32: 3.0},
        latency_p99_ms={1: 0.9, 8: 2.0, 32: 4.5},
        latency_slope_ms=0.08,
        latency_intercept_ms=0.42,
        memory_mb=12.5,
        load_ms=40.0,
        saturation_qps=9000.0,
        artifact_bytes=123456,
        max_batch=32,
        profiled_on="m5.2xlarge",
        cores=8,
    )


def make_variant(
    model_id: str = "digits-mlp",
    app_id: str = "digits",
    hardware: str = "cpu",
    threads: int = 1,
    **changes: object,
) -> Variant:
    place = hardware + (f"-t{threads}" if threads else "")
    fields: dict[str, object] = {
        "id": f"{model_id}.onnx-fp32.{place}",
        "model": model_id,
        "app": app_id,
        "runtime": "onnx",
        "precision": "fp32",
        "hardware": hardware,
        "threads": threads,
        "artifact_key": f"variants/{model_id}/onnx-fp32.onnx",
        "instance_class": "m5.2xlarge" if hardware == "cpu" else "p3.2xlarge",
        "cost_per_hour": 0.384 if hardware == "cpu" else 3.06,
        "opt": "",
        "status": READY,
        "error": "",
        "profile": make_profile(),
        "created_at": T0,
    }
    fields.update(changes)
    return Variant(**fields)  # type: ignore[arg-type]


def fill(catalog: Catalog) -> None:
    """Two apps, three models, four variants."""
    catalog.create_app(make_app("digits"))
    catalog.create_app(make_app("images", signature=InputSignature("x", "float16", (-1, 3))))
    catalog.add_model(make_model("digits-mlp", "digits"))
    catalog.add_model(make_model("digits-cnn", "digits", status=QUEUED))
    catalog.add_model(make_model("resnet", "images"))
    catalog.upsert_variant(make_variant("digits-mlp", "digits", "cpu", 1))
    catalog.upsert_variant(make_variant("digits-mlp", "digits", "gpu", 0, status=PROFILING))
    catalog.upsert_variant(make_variant("digits-cnn", "digits", "cpu", 4, profile=None))
    catalog.upsert_variant(make_variant("resnet", "images", "gpu", 0))


ERROR_CASES: dict[str, tuple[type[InfaasError], Callable[[Catalog], object]]] = {
    "duplicate app": (Conflict, lambda c: c.create_app(make_app("digits", task="other"))),
    "duplicate model in another app": (
        Conflict,
        lambda c: c.add_model(make_model("digits-mlp", "images")),
    ),
    "model of unknown app": (UnknownApp, lambda c: c.add_model(make_model("x", "nope"))),
    "model with bad status": (
        InvalidRequest,
        lambda c: c.add_model(make_model("new", "digits", status="done")),
    ),
    "get unknown app": (UnknownApp, lambda c: c.get_app("nope")),
    "delete unknown app": (UnknownApp, lambda c: c.delete_app("nope")),
    "delete app with models": (Conflict, lambda c: c.delete_app("digits")),
    "get unknown model": (UnknownModel, lambda c: c.get_model("nope")),
    "status of unknown model": (UnknownModel, lambda c: c.set_model_status("nope", READY)),
    "bad model status": (InvalidRequest, lambda c: c.set_model_status("digits-mlp", "great")),
    "delete unknown model": (UnknownModel, lambda c: c.delete_model("nope")),
    "variant of unknown model": (
        UnknownModel,
        lambda c: c.upsert_variant(make_variant("nope", "digits")),
    ),
    "variant naming the wrong app": (
        InvalidRequest,
        lambda c: c.upsert_variant(make_variant("digits-mlp", "images", "cpu", 2)),
    ),
    "variant with bad status": (
        InvalidRequest,
        lambda c: c.upsert_variant(make_variant(status="Ready")),
    ),
    "get unknown variant": (UnknownVariant, lambda c: c.get_variant("nope.onnx-fp32.cpu-t1")),
    "status of unknown variant": (
        UnknownVariant,
        lambda c: c.set_variant_status("nope.onnx-fp32.cpu-t1", FAILED, "boom"),
    ),
    "bad variant status": (
        InvalidRequest,
        lambda c: c.set_variant_status("digits-mlp.onnx-fp32.cpu-t1", "broken"),
    ),
    "profile of unknown variant": (
        UnknownVariant,
        lambda c: c.set_variant_profile("nope.onnx-fp32.cpu-t1", make_profile()),
    ),
    "list with bad status": (InvalidRequest, lambda c: c.list_variants(status="nope")),
}


class CatalogCases:
    # -- round trips

    def test_starts_empty_at_revision_zero(self, catalog: Catalog) -> None:
        snapshot = catalog.snapshot()
        assert (snapshot.revision, snapshot.apps, snapshot.models, snapshot.variants) == (
            0,
            {},
            {},
            {},
        )
        assert catalog.revision() == 0

    def test_app_round_trip(self, catalog: Catalog) -> None:
        app = make_app()
        assert catalog.create_app(app) == app
        assert catalog.get_app("digits") == app
        assert catalog.list_apps() == [app]
        stored = catalog.get_app("digits")
        assert stored.signature.shape == (-1, 8, 8)
        assert stored.created_at.tzinfo is UTC

    def test_app_without_optional_fields(self, catalog: Catalog) -> None:
        app = App("plain", "regression", InputSignature("x", "int64", (-1,)))
        catalog.create_app(app)
        assert catalog.get_app("plain") == app

    def test_timestamps_come_back_in_utc(self, catalog: Catalog) -> None:
        plus_two = timezone(timedelta(hours=2))
        catalog.create_app(make_app("aware", created_at=T0.astimezone(plus_two)))
        catalog.create_app(make_app("naive", created_at=T0.replace(tzinfo=None)))
        for app_id in ("aware", "naive"):
            created = catalog.get_app(app_id).created_at
            assert created == T0
            assert created.utcoffset() == timedelta(0)

    def test_model_round_trip(self, catalog: Catalog) -> None:
        catalog.create_app(make_app())
        model = make_model()
        assert catalog.add_model(model) == model
        assert catalog.get_model("digits-mlp") == model
        assert catalog.get_model("digits-mlp").metadata["nested"] == {"a": 1.5}
        assert catalog.list_models() == [model]
        assert catalog.list_models("digits") == [model]
        assert catalog.list_models("other") == []

    def test_variant_round_trip_keeps_int_batch_keys(self, catalog: Catalog) -> None:
        catalog.create_app(make_app())
        catalog.add_model(make_model())
        variant = make_variant()
        assert catalog.upsert_variant(variant) == variant
        stored = catalog.get_variant(variant.id)
        assert stored == variant
        assert stored.profile is not None
        assert list(stored.profile.latency_ms) == [1, 8, 32]
        assert list(stored.profile.latency_p99_ms) == [1, 8, 32]
        assert stored.profile.predict_latency_ms(8) == 1.25
        assert stored.ready

    def test_variant_without_profile(self, catalog: Catalog) -> None:
        catalog.create_app(make_app())
        catalog.add_model(make_model())
        variant = make_variant(profile=None, status=QUEUED, opt="compiled")
        catalog.upsert_variant(variant)
        assert catalog.get_variant(variant.id) == variant
        assert not catalog.get_variant(variant.id).ready

    def test_upsert_replaces_but_keeps_creation_time(self, catalog: Catalog) -> None:
        catalog.create_app(make_app())
        catalog.add_model(make_model())
        first = catalog.upsert_variant(make_variant(status=GENERATING, profile=None))
        later = T0 + timedelta(days=1)
        second = make_variant(status=PROFILING, artifact_key="elsewhere", created_at=later)
        stored = catalog.upsert_variant(second)
        assert stored.created_at == first.created_at == T0
        assert stored.artifact_key == "elsewhere"
        assert stored.status == PROFILING
        assert catalog.get_variant(second.id) == stored
        assert len(catalog.list_variants()) == 1

    def test_list_variants_filters(self, catalog: Catalog) -> None:
        fill(catalog)

        def ids(**filters: str) -> list[str]:
            return [v.id for v in catalog.list_variants(**filters)]

        assert ids() == sorted(catalog.snapshot().variants)
        assert ids(app_id="images") == ["resnet.onnx-fp32.gpu"]
        assert ids(model_id="digits-mlp") == [
            "digits-mlp.onnx-fp32.cpu-t1",
            "digits-mlp.onnx-fp32.gpu",
        ]
        assert ids(hardware="gpu") == ["digits-mlp.onnx-fp32.gpu", "resnet.onnx-fp32.gpu"]
        assert ids(status=PROFILING) == ["digits-mlp.onnx-fp32.gpu"]
        assert ids(app_id="digits", hardware="cpu", status=READY) == [
            "digits-cnn.onnx-fp32.cpu-t4",
            "digits-mlp.onnx-fp32.cpu-t1",
        ]
        assert ids(app_id="nope") == []

    def test_set_model_status(self, catalog: Catalog) -> None:
        fill(catalog)
        catalog.set_model_status("digits-cnn", READY)
        assert catalog.get_model("digits-cnn").status == READY

    def test_set_variant_status_and_error(self, catalog: Catalog) -> None:
        fill(catalog)
        variant_id = "digits-mlp.onnx-fp32.gpu"
        catalog.set_variant_status(variant_id, FAILED, "TensorRT build ran out of memory")
        stored = catalog.get_variant(variant_id)
        assert (stored.status, stored.error) == (FAILED, "TensorRT build ran out of memory")
        catalog.set_variant_status(variant_id, QUEUED)
        assert catalog.get_variant(variant_id).error == ""

    def test_set_variant_profile_makes_it_ready(self, catalog: Catalog) -> None:
        fill(catalog)
        variant_id = "digits-cnn.onnx-fp32.cpu-t4"
        catalog.set_variant_status(variant_id, FAILED, "old error")
        profile = make_profile(accuracy=0.5)
        catalog.set_variant_profile(variant_id, profile)
        stored = catalog.get_variant(variant_id)
        assert (stored.status, stored.error, stored.profile) == (READY, "", profile)
        assert (stored.cost_per_hour, stored.instance_class) == (0.384, "m5.2xlarge")
        catalog.set_variant_profile(
            variant_id, profile, cost_per_hour=1.5, instance_class="c5.4xlarge"
        )
        stored = catalog.get_variant(variant_id)
        assert (stored.cost_per_hour, stored.instance_class) == (1.5, "c5.4xlarge")

    # -- snapshot and revision

    def test_snapshot_holds_everything_indexed(self, catalog: Catalog) -> None:
        fill(catalog)
        snapshot = catalog.snapshot()
        assert snapshot.revision == catalog.revision()
        assert list(snapshot.apps) == ["digits", "images"]
        assert snapshot.apps["images"] == catalog.get_app("images")
        assert set(snapshot.models) == {"digits-mlp", "digits-cnn", "resnet"}
        assert snapshot.models["digits-cnn"] == catalog.get_model("digits-cnn")
        assert set(snapshot.variants) == {v.id for v in catalog.list_variants()}
        assert [v.id for v in snapshot.variants_of_app("digits")] == [
            "digits-cnn.onnx-fp32.cpu-t4",
            "digits-mlp.onnx-fp32.cpu-t1",
            "digits-mlp.onnx-fp32.gpu",
        ]
        assert [v.id for v in snapshot.by_app["images"]] == ["resnet.onnx-fp32.gpu"]
        assert [v.id for v in snapshot.by_model["digits-mlp"]] == [
            "digits-mlp.onnx-fp32.cpu-t1",
            "digits-mlp.onnx-fp32.gpu",
        ]
        assert snapshot.variants_of_model("digits-cnn") == (
            catalog.get_variant("digits-cnn.onnx-fp32.cpu-t4"),
        )

    def test_snapshot_is_one_consistent_read(self, catalog: Catalog, catalog_url: str) -> None:
        """While another catalog adds apps one write at a time, every snapshot's
        revision matches exactly the apps it holds."""
        writes = 100
        done = threading.Event()
        failures: list[BaseException] = []

        def writer() -> None:
            other = Catalog(catalog_url)
            try:
                for i in range(writes):
                    other.create_app(make_app(f"app-{i:03d}"))
            except BaseException as error:
                failures.append(error)
            finally:
                other.close()
                done.set()

        thread = threading.Thread(target=writer)
        thread.start()
        seen = 0
        while not done.is_set() or seen == 0:
            snapshot = catalog.snapshot()
            assert snapshot.revision == len(snapshot.apps)
            seen += 1
        thread.join()
        assert not failures
        final = catalog.snapshot()
        assert (final.revision, len(final.apps)) == (writes, writes)

    def test_revision_bumps_on_each_write_and_not_on_reads(self, catalog: Catalog) -> None:
        variant = make_variant()
        writes: list[Callable[[], object]] = [
            lambda: catalog.create_app(make_app()),
            lambda: catalog.create_app(make_app("spare")),
            lambda: catalog.add_model(make_model()),
            lambda: catalog.set_model_status("digits-mlp", PROFILING),
            lambda: catalog.upsert_variant(variant),
            lambda: catalog.upsert_variant(variant),
            lambda: catalog.set_variant_status(variant.id, PROFILING),
            lambda: catalog.set_variant_profile(variant.id, make_profile()),
            lambda: catalog.delete_model("digits-mlp"),
            lambda: catalog.delete_app("spare"),
        ]
        reads: list[Callable[[], object]] = [
            catalog.revision,
            catalog.snapshot,
            catalog.list_apps,
            catalog.list_models,
            catalog.list_variants,
            lambda: catalog.get_app("digits"),
        ]
        previous = catalog.revision()
        for write in writes:
            write()
            current = catalog.revision()
            assert current == previous + 1
            for read in reads:
                read()
            assert catalog.revision() == current
            previous = current

    # -- errors leave the catalog unchanged

    @pytest.mark.parametrize("case", sorted(ERROR_CASES))
    def test_error_leaves_catalog_unchanged(self, catalog: Catalog, case: str) -> None:
        fill(catalog)
        error_type, action = ERROR_CASES[case]
        before = catalog.snapshot()
        with pytest.raises(error_type) as caught:
            action(catalog)
        assert catalog.snapshot() == before
        message = caught.value.message
        assert any(hint in message for hint in ("check", "pick", "delete", "use", "set")), (
            f"the message does not say what to do next: {message}"
        )

    def test_duplicate_app_message(self, catalog: Catalog) -> None:
        catalog.create_app(make_app())
        with pytest.raises(Conflict, match="app 'digits' already exists; pick another id"):
            catalog.create_app(make_app())

    # -- deletes

    def test_delete_model_removes_its_variants(self, catalog: Catalog) -> None:
        fill(catalog)
        deleted = catalog.delete_model("digits-mlp")
        assert [v.id for v in deleted] == [
            "digits-mlp.onnx-fp32.cpu-t1",
            "digits-mlp.onnx-fp32.gpu",
        ]
        assert deleted[0] == make_variant("digits-mlp", "digits", "cpu", 1)
        with pytest.raises(UnknownModel):
            catalog.get_model("digits-mlp")
        for variant in deleted:
            with pytest.raises(UnknownVariant):
                catalog.get_variant(variant.id)
        snapshot = catalog.snapshot()
        assert "digits-mlp" not in snapshot.by_model
        assert [v.id for v in snapshot.by_app["digits"]] == ["digits-cnn.onnx-fp32.cpu-t4"]
        assert len(snapshot.variants) == 2

    def test_delete_app_once_its_models_are_gone(self, catalog: Catalog) -> None:
        fill(catalog)
        assert catalog.delete_model("resnet") == [
            make_variant("resnet", "images", "gpu", 0),
        ]
        catalog.delete_app("images")
        assert [a.id for a in catalog.list_apps()] == ["digits"]
        catalog.create_app(make_app("images"))
        assert catalog.get_app("images") == make_app("images")

    # -- several catalogs on one database

    def test_two_catalogs_see_each_others_writes(self, catalog: Catalog, catalog_url: str) -> None:
        with Catalog(catalog_url) as other:
            catalog.create_app(make_app())
            assert other.get_app("digits") == make_app()
            assert other.revision() == catalog.revision() == 1
            other.add_model(make_model())
            assert catalog.get_model("digits-mlp") == make_model()
            assert catalog.snapshot() == other.snapshot()

    def test_reads_from_many_threads(self, catalog: Catalog) -> None:
        fill(catalog)
        expected = catalog.snapshot()
        results: list[object] = []

        def read() -> None:
            for _ in range(10):
                results.append(catalog.snapshot() == expected)
                results.append(catalog.revision() == expected.revision)

        threads = [threading.Thread(target=read) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == [True] * 80

    def test_concurrent_writers_do_not_collide(self, catalog: Catalog, catalog_url: str) -> None:
        catalog.create_app(make_app())
        failures: list[BaseException] = []

        def add_models(worker: int) -> None:
            with Catalog(catalog_url) as own:
                for i in range(5):
                    try:
                        own.add_model(make_model(f"m-{worker}-{i}"))
                        own.add_model(make_model("contested"))
                    except Conflict:
                        pass
                    except BaseException as error:
                        failures.append(error)

        threads = [threading.Thread(target=add_models, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failures
        models = catalog.list_models("digits")
        assert len(models) == 4 * 5 + 1
        assert catalog.revision() == 1 + len(models)
