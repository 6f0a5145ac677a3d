from policies.mlp.config import MLPConfig
from policies.mlp.model import MLPPolicy

__all__ = ["MLPConfig", "MLPPolicy"]
