"""Feature and column names shared by the log readers, the episode store, curation and training.

The first group follows the LeRobot v3.0 dataset layout so that LeRobot users can load the
episode store; the second group are Flywheel's extra columns.
"""

OBSERVATION_STATE = "observation.state"
# A camera <name>'s frames are the feature observation.images.<name>.
IMAGE_PREFIX = "observation.images."
ACTION = "action"
TIMESTAMP = "timestamp"
FRAME_INDEX = "frame_index"
EPISODE_INDEX = "episode_index"
INDEX = "index"
TASK_INDEX = "task_index"

EPISODE_ID = "episode_id"
CONTROL_SOURCE = "control_source"
INTERVENTION = "intervention"
POLICY_VERSION = "policy_version"
ROBOT_ID = "robot_id"

CONTROL_POLICY = "policy"
CONTROL_OPERATOR = "operator"
CONTROL_SOURCES = (CONTROL_POLICY, CONTROL_OPERATOR)

OUTCOMES = ("success", "failure", "aborted", "unknown")
EPISODE_KINDS = ("demo", "deployment")
