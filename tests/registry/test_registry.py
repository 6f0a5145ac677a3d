"""A real local MLflow store: registration with lineage, idempotency, the champion alias."""

from __future__ import annotations

import numpy as np
import pytest

from policies.checkpoint import load_checkpoint
from services.registry import mlflow_registry as registry

pytestmark = pytest.mark.slow


def test_registered_candidate_carries_lineage_and_is_not_registered_twice(settings, register):
    first = register(settings)
    assert register(settings) == first
    tags = registry.model_version_tags(settings, first.version)
    assert tags["candidate_id"] == "c1" and tags["dataset_id"] == "d1"
    assert tags["flow_run_id"] == "flow-1" and tags["code_version"] == "abc"
    second = register(settings, candidate_id="c2", parent=first.version)
    assert int(second.version) == int(first.version) + 1
    assert registry.model_version_tags(settings, second.version)["parent_version"] == first.version


def test_champion_alias_and_loading_a_version(settings, register, toy_checkpoint):
    assert registry.champion_version(settings) is None
    version = register(settings).version
    registry.set_champion(settings, version)
    assert registry.champion_version(settings) == version
    loaded = registry.load_policy(settings, version)
    original = load_checkpoint(toy_checkpoint)
    state = np.array([0.1, -0.2, 0.3, 0.4], np.float32)
    assert np.array_equal(loaded.act(state, "toy-reach"), original.act(state, "toy-reach"))


def test_a_registered_policy_serves_through_mlflow_pyfunc(settings, register, toy_checkpoint):
    import mlflow.pyfunc
    import pandas as pd

    version = register(settings).version
    model = mlflow.pyfunc.load_model(f"models:/{settings.registry.model_name}/{version}")
    state = np.array([0.1, -0.2, 0.3, 0.4])
    out = model.predict(pd.DataFrame({"task": ["toy-reach"], "observation.state": [state]}))
    expected = load_checkpoint(toy_checkpoint).act(state.astype(np.float32), "toy-reach")
    np.testing.assert_allclose(out["action"][0], expected, rtol=1e-6)


def test_a_registered_vision_policy_serves_through_mlflow_pyfunc_with_encoded_frames(
    settings, tmp_path
):
    import io

    import mlflow.pyfunc
    import pandas as pd
    from PIL import Image

    from tests.conftest import vision_checkpoint

    checkpoint = vision_checkpoint(tmp_path / "vision")
    version = registry.register_candidate(
        settings,
        checkpoint_dir=checkpoint,
        candidate_id="v1",
        dataset_id="d1",
        parent_version=None,
        flow_run_id="flow-1",
        code_version="abc",
        params={},
        losses=[(1, 0.5)],
        manifest_path=None,
    ).version
    model = mlflow.pyfunc.load_model(f"models:/{settings.registry.model_name}/{version}")
    columns = {c.name for c in model.metadata.get_input_schema().inputs}
    assert columns == {"task", "observation.state", "observation.images.front"}
    policy = load_checkpoint(checkpoint)
    state = np.linspace(-1, 1, policy.config.state_dim)
    frame = np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    png = io.BytesIO()
    Image.fromarray(frame).save(png, format="PNG")
    row = {"task": ["pick-place"], "observation.state": [state]}
    out = model.predict(pd.DataFrame(row | {"observation.images.front": [png.getvalue()]}))
    expected = policy.act(state.astype(np.float32), "pick-place", {"front": frame})
    np.testing.assert_allclose(out["action"][0], expected, rtol=1e-5)
    # MLflow's schema check refuses a missing camera before the model sees the request.
    with pytest.raises(Exception, match=r"missing inputs \['observation.images.front'\]"):
        model.predict(pd.DataFrame(row))
    with pytest.raises(Exception, match="not a PNG or JPEG frame"):
        model.predict(pd.DataFrame(row | {"observation.images.front": [b"not an image"]}))
