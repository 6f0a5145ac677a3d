"""The MLflow pyfunc wrapper of a Flywheel checkpoint, so any MLflow tool can serve a policy.

Input: a DataFrame with a `task` column and an `observation.state` column of float vectors.
Output: a DataFrame with an `action` column of float vectors.
"""

from __future__ import annotations

from pathlib import Path

import mlflow.models
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, Schema

from services.features import ACTION, OBSERVATION_STATE

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "task"), ColSpec(Array("double"), OBSERVATION_STATE)]),
    outputs=Schema([ColSpec(Array("float"), ACTION)]),
)


def input_example(checkpoint: Path) -> pd.DataFrame:
    """One zero state for the checkpoint's first task: shows a server what to send."""
    from policies.checkpoint import load_checkpoint

    config = load_checkpoint(checkpoint).config
    return pd.DataFrame({"task": [config.tasks[0]], OBSERVATION_STATE: [[0.0] * config.state_dim]})


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
        actions = self.policy.act_batch(states, task_index)
        return pd.DataFrame({ACTION: list(actions)})


# Models from code: MLflow loads this file instead of unpickling an object.
mlflow.models.set_model(PolicyModel())
