"""Robot credentials: enrolled by an admin, stored as a hash, rotated, revoked."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select

from services.errors import NotFound
from services.registry.ledger import promote
from services.serving.credentials import (
    RobotAlreadyEnrolled,
    RobotForbidden,
    RobotUnauthenticated,
    authenticate_robot,
    enroll_robot,
    enrolled_robots,
    issue_fleet_credentials,
    revoke_credential,
    rotate_credential,
)
from services.store import session_scope
from services.store.models import AuditEvent, Robot


def _enroll(session, robot_id="r0"):
    return enroll_robot(
        session=session, robot_id=robot_id, tasks=["toy-reach"], group="default", actor="ada"
    )


def test_an_enrolled_robot_proves_who_it_is_and_only_the_hash_is_kept(store_settings):
    with session_scope(store_settings.db_url, write=True) as session:
        promote(session=session, expected=None, new="1", candidate_id=None, actor="t", reason="t")
        credential = _enroll(session)
        robot = session.get(Robot, "r0")
        assert credential.startswith("fwr_") and robot.policy_version == "1"  # on the champion
        assert robot.credential_hash == hashlib.sha256(credential.encode()).hexdigest()
        assert credential not in str([getattr(robot, c.key) for c in Robot.__table__.columns])
        assert authenticate_robot(session=session, robot_id="r0", credential=credential) is robot
        with pytest.raises(RobotAlreadyEnrolled, match="flywheel robots rotate r0"):
            _enroll(session)


def test_missing_wrong_and_another_robots_credentials_are_refused(store_settings):
    with session_scope(store_settings.db_url, write=True) as session:
        mine, theirs = _enroll(session, "r0"), _enroll(session, "r1")
        for credential in (None, "", "fwr_guess", mine + "x"):
            with pytest.raises(RobotUnauthenticated):
                authenticate_robot(session=session, robot_id="r0", credential=credential)
        with pytest.raises(RobotForbidden, match="robot 'r1'"):
            authenticate_robot(session=session, robot_id="r0", credential=theirs)
        # a robot that does not exist: the same answers, so ids cannot be probed
        with pytest.raises(RobotUnauthenticated):
            authenticate_robot(session=session, robot_id="r9", credential=None)
        with pytest.raises(RobotForbidden):
            authenticate_robot(session=session, robot_id="r9", credential=mine)


def test_rotation_replaces_the_credential_and_revocation_ends_it(store_settings):
    with session_scope(store_settings.db_url, write=True) as session:
        old = _enroll(session)
        new = rotate_credential(session=session, robot_id="r0", actor="ada")
        assert new != old
        with pytest.raises(RobotUnauthenticated):
            authenticate_robot(session=session, robot_id="r0", credential=old)
        assert authenticate_robot(session=session, robot_id="r0", credential=new).id == "r0"
        revoke_credential(session=session, robot_id="r0", actor="ada")
        with pytest.raises(RobotUnauthenticated):
            authenticate_robot(session=session, robot_id="r0", credential=new)
        [listed] = enrolled_robots(session=session)
        assert (listed.id, listed.enrolled) == ("r0", False)
        again = _enroll(session)  # a revoked robot is enrolled afresh
        assert authenticate_robot(session=session, robot_id="r0", credential=again).id == "r0"
        with pytest.raises(NotFound, match="flywheel robots enroll r9"):
            rotate_credential(session=session, robot_id="r9", actor="ada")
        with pytest.raises(ValueError, match="robot id"):
            _enroll(session, "r 0")
        actions = session.scalars(
            select(AuditEvent.action).where(AuditEvent.subject_id == "r0").order_by(AuditEvent.id)
        ).all()
    assert actions == [
        "register-robot",
        "enroll-robot",
        "rotate-robot-credential",
        "revoke-robot-credential",
        "enroll-robot",
    ]


def test_a_fleet_gets_fresh_credentials_and_the_old_ones_stop_working(store_settings):
    with session_scope(store_settings.db_url, write=True) as session:
        first = issue_fleet_credentials(
            session=session, robot_ids=["r0", "r1"], tasks=["toy-reach"], actor="sim"
        )
        second = issue_fleet_credentials(
            session=session, robot_ids=["r0", "r1"], tasks=["toy-reach"], actor="sim"
        )
        for robot_id in ("r0", "r1"):
            with pytest.raises(RobotUnauthenticated):
                authenticate_robot(session=session, robot_id=robot_id, credential=first[robot_id])
            authenticate_robot(session=session, robot_id=robot_id, credential=second[robot_id])
