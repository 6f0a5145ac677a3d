"""`flywheel robots`: an admin at the machine enrolls robots and manages their credentials."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from cli import app
from services.serving.credentials import RobotUnauthenticated, authenticate_robot
from services.store import session_scope

runner = CliRunner()


def _credential(output: str) -> str:
    return re.search(r"fwr_\S+", output).group(0)


def test_enroll_rotate_revoke_and_list_robots(settings):
    enrolled = runner.invoke(app, ["robots", "enroll", "robot-07", "--task", "push"])
    assert enrolled.exit_code == 0 and "credential (shown once): fwr_" in enrolled.output
    again = runner.invoke(app, ["robots", "enroll", "robot-07"])
    assert again.exit_code == 1 and "flywheel robots rotate robot-07" in again.output
    bad = runner.invoke(app, ["robots", "enroll", "robot 7"])
    assert bad.exit_code == 1 and "robot id" in bad.output

    rotated = runner.invoke(app, ["robots", "rotate", "robot-07"])
    assert rotated.exit_code == 0
    old, new = _credential(enrolled.output), _credential(rotated.output)
    with session_scope(settings.db_url) as session:
        with pytest.raises(RobotUnauthenticated):
            authenticate_robot(session=session, robot_id="robot-07", credential=old)
        assert authenticate_robot(session=session, robot_id="robot-07", credential=new)

    [listed] = json.loads(runner.invoke(app, ["robots", "list", "--json"]).output)
    assert (listed["id"], listed["tasks"], listed["enrolled"]) == ("robot-07", ["push"], True)
    assert runner.invoke(app, ["robots", "revoke", "robot-07"]).exit_code == 0
    [listed] = json.loads(runner.invoke(app, ["robots", "list", "--json"]).output)
    assert listed["enrolled"] is False
    assert "none (revoked" in runner.invoke(app, ["robots", "list"]).output
    unknown = runner.invoke(app, ["robots", "rotate", "robot-99"])
    assert unknown.exit_code == 1 and "flywheel robots enroll robot-99" in unknown.output
