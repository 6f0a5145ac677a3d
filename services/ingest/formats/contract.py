"""The MCAP topic contract between a robot and Flywheel.

A robot uploads one MCAP file per episode. Messages are JSON (``message_encoding="json"``,
schema encoding ``jsonschema``) on four topics:

``/flywheel/episode``  once, first: who ran what.
    {"episode_uuid", "robot_id", "task", "policy_version" (null for a demo), "kind"
     ("demo" | "deployment"), "operator_id", "started_at" (ISO 8601, UTC),
     "control_hz", "state_dim", "action_dim"}
``/flywheel/step``     once per control step, in order.
    {"step", "t" (seconds since start), "state" [float * state_dim],
     "action" [float * action_dim], "control_source" ("policy" | "operator"),
     "reason" (why the operator took over; set on the first step of a takeover, else null)}
``/flywheel/intervention``  once per intervention, when it ends (informational; the
    authoritative spans are the runs of ``control_source == "operator"`` in deployments).
    {"start_step", "end_step" (exclusive), "kind" ("takeover" | "correction" | "e-stop"),
     "operator_id", "reason"}
``/flywheel/outcome``  once, last.
    {"outcome" ("success" | "failure" | "aborted" | "unknown"), "steps"}

``/flywheel/camera/<name>``  camera ``<name>``'s frames, one message per frame, in protobuf
    (``message_encoding="protobuf"``, schema ``foxglove.CompressedVideo`` from
    ``foxglove-schemas-protobuf``): ``timestamp`` = the frame's time, ``frame_id`` = ``<name>``,
    ``format`` = ``"h264"``, ``data`` = one H.264 Annex B access unit (no B-frames; the first
    message a keyframe with its SPS/PPS). Each becomes the feature ``observation.images.<name>``:
    one frame per step, the latest at or before it (staleness limits are ``CameraSpec``'s
    defaults unless the fleet's mapping names the camera). Other image messages on these topics
    (``foxglove.CompressedImage``, in protobuf or JSON) read too; ``mcap_writer.py`` writes
    the contract's.

A metadata record named ``flywheel.episode`` repeats the episode's facts as strings
(``episode_uuid``, ``robot_id``, ``task``, ``policy_version``, ``kind``, ``operator_id``,
``outcome``, ``start_ns``, ``end_ns``). The messages win where both say something; a robot
that cannot log an outcome message may write the outcome there instead.

Each message's ``log_time`` is the episode start plus ``t``, in nanoseconds. The simulated
fleet writes exactly this. ROS logs (ROS 2 MCAP, ROS 1/2 bags) have a topic contract of their
own, and a fleet's mapping file maps its own topics: ``ros.py`` and ``docs/ingest.md``.
"""

from __future__ import annotations

from services.episodes.model import INTERVENTION_KINDS

EPISODE_TOPIC = "/flywheel/episode"
STEP_TOPIC = "/flywheel/step"
INTERVENTION_TOPIC = "/flywheel/intervention"
OUTCOME_TOPIC = "/flywheel/outcome"
# Camera <name> logs on CAMERA_PREFIX + <name>, in protobuf foxglove.CompressedVideo.
CAMERA_PREFIX = "/flywheel/camera/"
CAMERA_SCHEMA = "foxglove.CompressedVideo"
CAMERA_ENCODING = "protobuf"

# The metadata record with the episode's facts (``mapping.Metadata``'s default name).
METADATA_NAME = "flywheel.episode"

MESSAGE_ENCODING = "json"
SCHEMA_ENCODING = "jsonschema"

_NUMBER_ARRAY = {"type": "array", "items": {"type": "number"}}

SCHEMAS: dict[str, tuple[str, dict]] = {
    EPISODE_TOPIC: (
        "flywheel.Episode",
        {
            "type": "object",
            "properties": {
                "episode_uuid": {"type": "string"},
                "robot_id": {"type": "string"},
                "task": {"type": "string"},
                "policy_version": {"type": ["string", "null"]},
                "kind": {"enum": ["demo", "deployment"]},
                "operator_id": {"type": ["string", "null"]},
                "started_at": {"type": "string"},
                "control_hz": {"type": "number"},
                "state_dim": {"type": "integer"},
                "action_dim": {"type": "integer"},
            },
        },
    ),
    STEP_TOPIC: (
        "flywheel.Step",
        {
            "type": "object",
            "properties": {
                "step": {"type": "integer"},
                "t": {"type": "number"},
                "state": _NUMBER_ARRAY,
                "action": _NUMBER_ARRAY,
                "control_source": {"enum": ["policy", "operator"]},
                "reason": {"type": ["string", "null"]},
            },
        },
    ),
    INTERVENTION_TOPIC: (
        "flywheel.Intervention",
        {
            "type": "object",
            "properties": {
                "start_step": {"type": "integer"},
                "end_step": {"type": "integer"},
                "kind": {"enum": list(INTERVENTION_KINDS)},
                "operator_id": {"type": ["string", "null"]},
                "reason": {"type": ["string", "null"]},
            },
        },
    ),
    OUTCOME_TOPIC: (
        "flywheel.Outcome",
        {
            "type": "object",
            "properties": {
                "outcome": {"enum": ["success", "failure", "aborted", "unknown"]},
                "steps": {"type": "integer"},
            },
        },
    ),
}
