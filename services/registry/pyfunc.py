"""The MLflow pyfunc wrapper of a Flywheel checkpoint, so any MLflow tool can serve a policy.

Input: a DataFrame with a `task` column and an `observation.state` column of float vectors;
for a vision policy also one `observation.images.<name>` column per camera it reads, each cell
the camera's frame as PNG or JPEG bytes (any size: the policy resizes it).
Output: a DataFrame with an `action` column of float vectors.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow.models
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, Schema

from services.features import ACTION, IMAGE_PREFIX, OBSERVATION_STATE

if TYPE_CHECKING:
    from policies.checkpoint import LoadedPolicy

# A state policy's signature; a vision policy's adds its cameras (``signature``).
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "task"), ColSpec(Array("double"), OBSERVATION_STATE)]),
    outputs=Schema([ColSpec(Array("float"), ACTION)]),
)


def signature(policy: LoadedPolicy) -> ModelSignature:
    """The policy's inputs: task, state, and an encoded frame per camera it reads."""
    cameras = policy.cameras
    if not cameras:
        return SIGNATURE
    images = [ColSpec("binary", IMAGE_PREFIX + c.name) for c in cameras]
    return ModelSignature(
        inputs=Schema([*SIGNATURE.inputs.inputs, *images]), outputs=SIGNATURE.outputs
    )


def input_example(policy: LoadedPolicy) -> pd.DataFrame:
    """One zero state for the policy's first task, and a grey PNG frame per camera at the
    policy's input size: shows a server what to send."""
    from PIL import Image

    example: dict = {"task": [policy.config.tasks[0]]}
    example[OBSERVATION_STATE] = [[0.0] * policy.config.state_dim]
    for camera in policy.cameras:
        png = io.BytesIO()
        Image.new("RGB", (camera.width, camera.height), (128, 128, 128)).save(png, format="PNG")
        example[IMAGE_PREFIX + camera.name] = [png.getvalue()]
    return pd.DataFrame(example)


def _frames(column: pd.Series, camera: str) -> np.ndarray:
    """A column of encoded frames as uint8 (B, H, W, 3); every frame of a batch one size."""
    from PIL import Image, UnidentifiedImageError

    frames = []
    for row, data in enumerate(column):
        try:
            with Image.open(io.BytesIO(data)) as image:
                frames.append(np.asarray(image.convert("RGB")))
        except (UnidentifiedImageError, OSError, TypeError) as exc:
            raise ValueError(f"row {row}: camera {camera!r} is not a PNG or JPEG frame") from exc
    sizes = {f.shape for f in frames}
    if len(sizes) > 1:
        raise ValueError(f"camera {camera!r}: frames of one batch differ in size ({sorted(sizes)})")
    return np.stack(frames)


class PolicyModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from policies.checkpoint import load_checkpoint

        self.policy = load_checkpoint(Path(context.artifacts["checkpoint"]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        index = {task: i for i, task in enumerate(self.policy.config.tasks)}
        unknown = set(model_input["task"]) - set(index)
        if unknown:
            raise ValueError(f"tasks {sorted(unknown)} are not among {self.policy.config.tasks}")
        states = np.stack(model_input[OBSERVATION_STATE].to_numpy()).astype(np.float32)
        task_index = model_input["task"].map(index).to_numpy(dtype=np.int64, copy=True)
        images = {}
        for camera in self.policy.cameras:
            column = IMAGE_PREFIX + camera.name
            if column not in model_input:
                reads = camera.describe()
                raise ValueError(f"missing column {column!r}: this policy reads {reads}")
            images[camera.name] = _frames(model_input[column], camera.name)
        actions = self.policy.act_batch(states, task_index, images or None)
        return pd.DataFrame({ACTION: list(actions)})


# Models from code: MLflow loads this file instead of unpickling an object.
mlflow.models.set_model(PolicyModel())
