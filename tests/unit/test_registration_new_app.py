"""Registering a model into an app made from its input, in one step: a refused upload
leaves no app (nor model, registration or file) behind."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from queues.errors import (
    Conflict,
    InfaasError,
    InvalidModel,
    InvalidRequest,
    InvalidValidationSet,
    UnknownApp,
)
from registry.catalog import Catalog
from registry.intake import NewApp, Upload, accept_upload, app_from_model
from registry.model_info import ModelInfo, OutputInfo
from registry.registrations import RegistrationOptions, RegistrationStore
from registry.store import LocalStore
from registry.types import App, InputSignature
from tests.registration_models import INPUT, Trained, sklearn_onnx

WINE = App("wine", "classification", InputSignature(INPUT, "float32", (-1, 13)), num_classes=3)


@pytest.fixture(scope="module")
def cancer(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return sklearn_onnx(tmp_path_factory.mktemp("bc"), "bc-mlp", "breast_cancer")


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    with Catalog(f"sqlite:///{tmp_path / 'catalog.db'}") as opened:
        opened.create_app(WINE)
        yield opened


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def _upload(trained: Trained, **changes: Any) -> Upload:
    upload = Upload(
        app="bc",
        model_id="bc-mlp",
        model_path=trained.path,
        validation_path=trained.validation,
        options=RegistrationOptions(0.02, (1, 8)),
        new_app=NewApp(description="breast cancer"),
    )
    return dataclasses.replace(upload, **changes)


def _trace(catalog: Catalog, store: LocalStore) -> tuple[Any, ...]:
    snapshot = catalog.snapshot()
    return (
        snapshot.revision,
        snapshot.apps,
        snapshot.models,
        RegistrationStore(catalog).all(),
        store.list(),
    )


def test_the_app_is_made_from_the_model_input_with_the_model(
    cancer: Trained, catalog: Catalog, store: LocalStore
) -> None:
    registration = accept_upload(catalog, store, _upload(cancer))
    app = catalog.get_app("bc")
    assert app.signature == InputSignature(INPUT, "float32", (-1, 30))
    assert (app.task, app.num_classes, app.description) == ("classification", 2, "breast cancer")
    assert catalog.get_model("bc-mlp").app == "bc"
    assert registration.app == "bc"


def test_refused_uploads_leave_no_app_behind(
    cancer: Trained, catalog: Catalog, store: LocalStore, tmp_path: Path
) -> None:
    # model ids are unique across apps: one taken in another app
    taken = _upload(cancer, app="other", model_id="taken")
    accept_upload(catalog, store, taken)
    before = _trace(catalog, store)
    text = tmp_path / "notes.onnx"
    text.write_text("not a model")
    short = tmp_path / "short.npz"
    np.savez(short, inputs=cancer.inputs, labels=cancer.labels[:-1])
    out_of_range = tmp_path / "range.npz"
    np.savez(out_of_range, inputs=cancer.inputs, labels=cancer.labels + 5)
    refusals: list[tuple[str, Upload, type[InfaasError], str]] = [
        ("model id taken", _upload(cancer, model_id="taken"), Conflict, "already exists"),
        ("bad model id", _upload(cancer, model_id="Not An Id"), InvalidRequest, "not valid"),
        ("bad app id", _upload(cancer, app="Not An App"), InvalidRequest, "not valid"),
        ("app exists", _upload(cancer, app="wine"), Conflict, "app 'wine' already exists"),
        ("not a model", _upload(cancer, model_path=text), InvalidModel, "ONNX"),
        ("short labels", _upload(cancer, validation_path=short), InvalidValidationSet, "labels"),
        ("labels", _upload(cancer, validation_path=out_of_range), InvalidValidationSet, "range"),
        ("hardware", _upload(cancer, hardware=("tpu",)), InvalidRequest, "hardware"),
        ("metadata", _upload(cancer, metadata={"x": "y" * 70_000}), InvalidRequest, "bytes"),
        (
            "classes",
            _upload(cancer, new_app=NewApp(num_classes=5)),
            InvalidModel,
            "has 2 classes but app 'bc' has 5",
        ),
        ("one class", _upload(cancer, new_app=NewApp(num_classes=1)), InvalidRequest, "at least"),
        ("no app asked", _upload(cancer, new_app=None), UnknownApp, "bc"),
    ]
    for name, upload, error, words in refusals:
        with pytest.raises(error) as refused:
            accept_upload(catalog, store, upload)
        assert words in refused.value.message, (name, refused.value.message)
        assert _trace(catalog, store) == before, name
        with pytest.raises(UnknownApp):
            catalog.get_app("bc")


def test_an_app_created_meanwhile_refuses_the_step_and_keeps_it_whole(
    cancer: Trained, catalog: Catalog, store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A racing request made the app between the check and the record: the model's
    transaction refuses, and the files just stored are removed."""
    add_model = catalog.add_model

    def race(*args: Any, **kwargs: Any) -> Any:
        catalog.create_app(dataclasses.replace(WINE, id="bc"))
        return add_model(*args, **kwargs)

    monkeypatch.setattr(catalog, "add_model", race)
    with pytest.raises(Conflict, match="created meanwhile"):
        accept_upload(catalog, store, _upload(cancer))
    assert catalog.get_app("bc").signature == WINE.signature  # the racer's, untouched
    assert catalog.list_models() == []
    assert store.list() == []


def _info(shape: tuple[int, ...], dtype: str = "float32") -> ModelInfo:
    return ModelInfo(
        format="onnx",
        input=InputSignature("x", dtype, shape),
        outputs=(OutputInfo("probabilities", "float32", (-1, 4)),),
        output_name="probabilities",
    )


def test_an_app_needs_a_fixed_numeric_input() -> None:
    made = app_from_model("a", _info((-1, 3, 8)), NewApp())
    assert made.signature == InputSignature("x", "float32", (-1, 3, 8))
    assert made.num_classes == 4
    assert app_from_model("a", _info((1, 3)), NewApp(num_classes=9)).num_classes == 9
    with pytest.raises(InvalidModel, match="dynamic dimensions after the batch"):
        app_from_model("a", _info((-1, -1)), NewApp())
    with pytest.raises(InvalidModel, match="takes numbers"):
        app_from_model("a", _info((-1, 3), dtype="bool"), NewApp())
