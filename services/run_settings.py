"""The settings a run starts with: read from the environment and checked against the registries.

services/config.py is the bottom layer and knows no weighting scheme or policy; the names it
holds are checked here, above both registries, when a run (a CLI command, a nightly run)
loads its settings: an unknown FLYWHEEL_SCHEME or FLYWHEEL_POLICY fails at start with the
closest known name, not when a night reaches the stage that uses it.
"""

from __future__ import annotations

from policies.registry import config_class
from services.config import Settings, get_settings
from services.curation.weights import get_scheme


def check_registered(settings: Settings) -> Settings:
    """``settings`` if its weighting scheme and policy are registered; ValueError if not."""
    try:
        get_scheme(settings.curation.scheme)
    except ValueError as exc:
        raise ValueError(f"FLYWHEEL_SCHEME: {exc}") from None
    try:
        config_class(settings.training.policy)
    except ValueError as exc:
        raise ValueError(f"FLYWHEEL_POLICY: {exc}") from None
    return settings


def load_run_settings() -> Settings:
    """The settings of the environment, checked against the registries."""
    return check_registered(get_settings())
