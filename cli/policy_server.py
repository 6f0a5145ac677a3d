"""`flywheel policy-server`: serve each robot the model version its rollout assigns it, over
openpi's websocket protocol and HTTP (services/policy_server)."""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn

from cli.base import app, console, fail, load_settings
from services.runtime.dependencies import DependencyUnavailable, check_database, wait_for


@app.command("policy-server")
def policy_server(
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 in a container).")] = (
        "127.0.0.1"
    ),
    port: Annotated[
        int | None, typer.Option(help="Default: FLYWHEEL_POLICY_SERVER_PORT (8475).")
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(help="Serve only this robot group. Default: FLYWHEEL_ROBOT_GROUP, or all."),
    ] = None,
    version: Annotated[
        str | None,
        typer.Option(
            help="Load this version before reporting ready. Default: "
            "FLYWHEEL_MODEL_VERSION, or what the robots are assigned."
        ),
    ] = None,
    wait_attempts: Annotated[
        int, typer.Option(min=1, help="Tries to reach the database before giving up.")
    ] = 10,
) -> None:
    """Serve the fleet's policies to robots (openpi's websocket protocol, and HTTP)."""
    import torch  # imported here, as the API's command does: `flywheel --help` stays quick

    from services.policy_server.app import create_policy_app

    settings = load_settings()
    ps = settings.policy_server
    changes = {k: v for k, v in {"robot_group": group, "model_version": version}.items() if v}
    settings = settings.updated(policy_server=changes) if changes else settings
    ps = settings.policy_server
    expected_uri = f"models:/{settings.registry.model_name}/{ps.model_version}"
    if ps.model_uri is not None and ps.model_uri != expected_uri:
        fail(
            f"FLYWHEEL_MODEL_URI {ps.model_uri} is not version {ps.model_version} of "
            f"{settings.registry.model_name} ({expected_uri}): set both from the same assignment"
        )
    try:  # a database that is still starting gets a bounded wait
        wait_for(lambda: check_database(settings), attempts=wait_attempts)
    except DependencyUnavailable as exc:
        fail(f"{exc}; gave up after {wait_attempts} attempts")
    # Batch-1 inference on small models: one torch thread per call, calls side by side in the
    # server's inference threads (FLYWHEEL_POLICY_SERVER_THREADS), rather than each call
    # spread over every core.
    torch.set_num_threads(1)
    port = port or ps.policy_server_port
    console.print(f"policy server on ws://{host}:{port}/ and http://{host}:{port}/infer")
    uvicorn.run(
        create_policy_app(settings),
        host=host,
        port=port,
        ws="websockets-sansio",
        ws_max_size=ps.policy_server_max_message_bytes,
        # openpi's client asks for no compression: observations are mostly arrays.
        ws_per_message_deflate=False,
        log_level="warning",
    )
