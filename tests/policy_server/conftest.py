"""One real policy server for the package's tests: a home with three registered versions (an
MLP, version 1 and champion; an ACT policy with chunks of 4, version 2; an MLP that also
reads a camera, version 3), five enrolled robots (r4 on version 3, the others on the
champion), and the server on a free port of 127.0.0.1, refreshing the fleet every 0.1 s."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import uvicorn

from policies import make_policy
from policies.act import ACTConfig
from policies.checkpoint import save_checkpoint
from policies.images import CameraInput, ImageStats
from policies.mlp import MLPConfig
from policies.normalization import NormalizationStats
from services.config import Settings, configure_runtime
from services.policy_server.app import create_policy_app
from services.registry import mlflow_registry
from services.registry.ledger import promote
from services.serving.assignments import assign
from services.serving.credentials import enroll_robot
from services.store import migrate, session_scope

TASKS = ("toy-reach", "toy-push")
ROBOTS = ("r0", "r1", "r2", "r3", "r4")
# The robot on the vision policy (version 3: an MLP that reads CAMERA).
VISION_ROBOT = "r4"
CAMERA = CameraInput("front", 24, 32, "h264")


@dataclass
class Served:
    settings: Settings
    app: object
    port: int
    # Each robot's credential.
    keys: dict[str, str]

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _checkpoint(folder: Path, config) -> Path:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (4, 24, 32, 3), dtype=np.uint8)
    stats = NormalizationStats.from_arrays(
        rng.normal(size=(20, 4)).astype(np.float32),
        np.zeros((20, 2), np.float32),
        {c.name: ImageStats.from_frames(frames) for c in config.cameras},
    )
    return save_checkpoint(folder, make_policy(config), config, stats, {"step": 1})


def _register(settings: Settings, checkpoint: Path, candidate_id: str) -> str:
    return mlflow_registry.register_candidate(
        settings,
        checkpoint_dir=checkpoint,
        candidate_id=candidate_id,
        dataset_id="d1",
        parent_version=None,
        flow_run_id=None,
        code_version="test",
        params={},
        losses=[],
        manifest_path=None,
    ).version


@pytest.fixture(scope="package")
def served(tmp_path_factory) -> Served:
    root = tmp_path_factory.mktemp("policy-server")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FLYWHEEL_HOME", str(root / "home"))
        env.setenv("FLYWHEEL_TASKS", '["toy-reach", "toy-push"]')
        env.setenv("FLYWHEEL_POLICY_SERVER_POLL_S", "0.1")
        env.setenv("FLYWHEEL_POLICY_SERVER_WARMUP_CALLS", "1")
        for key in ("FLYWHEEL_DATABASE_URL", "FLYWHEEL_MLFLOW_TRACKING_URI", "FLYWHEEL_MODE"):
            env.delenv(key, raising=False)
        settings = Settings()
        configure_runtime(settings)
        migrate(settings.db_url)
        mlp = MLPConfig(state_dim=4, action_dim=2, tasks=TASKS, hidden=(8,))
        act = ACTConfig(
            state_dim=4,
            action_dim=2,
            tasks=TASKS,
            hidden=(16,),
            d_model=8,
            heads=2,
            layers=1,
            chunk_size=4,
        )
        vision = MLPConfig(
            state_dim=4,
            action_dim=2,
            tasks=TASKS,
            hidden=(8,),
            cameras=(CAMERA,),
            image_channels=(4, 8),
            image_keypoints=2,
            image_features=4,
        )
        v1 = _register(settings, _checkpoint(root / "mlp", mlp), "c-mlp")
        v2 = _register(settings, _checkpoint(root / "act", act), "c-act")
        v3 = _register(settings, _checkpoint(root / "vision", vision), "c-vision")
        assert (v1, v2, v3) == ("1", "2", "3")
        with session_scope(settings.db_url, write=True) as session:
            promote(
                session=session,
                expected=None,
                new=v1,
                candidate_id=None,
                actor="t",
                reason="test champion",
            )
            keys = {
                r: enroll_robot(
                    session=session, robot_id=r, tasks=TASKS, group="default", actor="t"
                )
                for r in ROBOTS
            }
            assign(session=session, robot_ids=[VISION_ROBOT], version=v3, actor="t", reason="t")
        app = create_policy_app(settings)
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            ws="websockets-sansio",
            ws_per_message_deflate=False,
            log_level="warning",
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:  # start-up, not a timing: the thread says when it is up
            if not thread.is_alive():
                raise RuntimeError("the policy server did not start")
            thread.join(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield Served(settings=settings, app=app, port=port, keys=keys)
        server.should_exit = True
        thread.join(10)
