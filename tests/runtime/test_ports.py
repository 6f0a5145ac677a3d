"""Ports taken by other programs: `flywheel up` refuses at once, naming the setting to change."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from cli import app
from services.runtime.ports import Port, PortInUse, check_free
from services.runtime.stack import Stack, StackError, up

# Nothing listens on port 1: a stack that got as far as PostgreSQL would fail differently.
UNREACHABLE_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:1/postgres"


@pytest.fixture
def taken() -> Iterator[int]:
    """A port another program listens on (as Redis does on 6379 on the development machine)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_port_in_use_is_refused_with_the_setting_that_moves_it(taken):
    with pytest.raises(PortInUse) as refused:
        check_free([Port(taken, "Ray GCS", "FLYWHEEL_RAY_PORT")])
    assert str(refused.value) == (
        f"port {taken} (Ray GCS) is in use: set FLYWHEEL_RAY_PORT to a free port"
    )
    check_free([Port(_free_port(), "Ray GCS", "FLYWHEEL_RAY_PORT")])  # a free one passes


def test_one_port_wanted_twice_is_refused():
    port = _free_port()
    with pytest.raises(PortInUse, match=f"port {port} is wanted by both MLflow server and"):
        check_free(
            [
                Port(port, "MLflow server", "FLYWHEEL_MLFLOW_PORT"),
                Port(port, "Flywheel API", "FLYWHEEL_API_PORT"),
            ]
        )


def test_the_stack_refuses_a_taken_port_before_it_starts_anything(tmp_path, taken):
    ports = {name: _free_port() for name in ("prefect", "mlflow", "api", "ray_dashboard")}
    stack = Stack(home=tmp_path, ports={**ports, "ray": taken}, admin_url=UNREACHABLE_ADMIN)
    with pytest.raises(StackError) as refused:
        up(stack)
    assert str(refused.value) == (
        f"port {taken} (Ray GCS) is in use: set FLYWHEEL_RAY_PORT to a free port"
    )
    assert not stack.run_dir.exists()  # no database created, no process started


def test_flywheel_up_exits_with_one_line_and_no_stack_trace(settings, monkeypatch, taken):
    monkeypatch.setenv("FLYWHEEL_RAY_PORT", str(taken))
    monkeypatch.setenv("FLYWHEEL_MLFLOW_PORT", str(_free_port()))
    for name in ("API", "PREFECT", "RAY_DASHBOARD"):
        monkeypatch.setenv(f"FLYWHEEL_{name}_PORT", str(_free_port()))
    result = CliRunner().invoke(app, ["up", "--admin-url", UNREACHABLE_ADMIN])
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"error: port {taken} (Ray GCS) is in use: set FLYWHEEL_RAY_PORT to a free port"
    )
