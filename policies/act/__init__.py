from policies.act.config import ACTConfig
from policies.act.model import ACTPolicy

__all__ = ["ACTConfig", "ACTPolicy"]
