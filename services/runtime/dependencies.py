"""Reaching what Flywheel depends on, with errors that name the setting to fix.

Each check answers quickly and says which ``FLYWHEEL_*`` setting points at the thing that
could not be reached; the API's readiness endpoint and ``flywheel up``-style start-ups use
``wait_for`` to retry a bounded number of times while a database or server is starting.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from services.config import Settings
from services.runtime.ray_driver import ensure_ray
from services.store.db import engine_for

T = TypeVar("T")


class DependencyUnavailable(RuntimeError):
    """A database, MLflow or Ray could not be reached; the message names the setting."""


def _redact(url: str) -> str:
    """A URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a SQLAlchemy URL (MLflow, Ray): show it as given
        return url


def check_database(settings: Settings) -> None:
    from sqlalchemy import text

    try:
        with engine_for(settings.db_url).connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        raise DependencyUnavailable(
            f"cannot reach the Flywheel database at {_redact(settings.db_url)}: "
            f"{_first_line(exc)} (check FLYWHEEL_DATABASE_URL, and that the server is up)"
        ) from exc


def check_mlflow(settings: Settings) -> None:
    import os

    from mlflow import MlflowClient

    # One quick try: MLflow's own client retries for minutes with backoff.
    saved = {k: os.environ.get(k) for k in _MLFLOW_QUICK}
    os.environ.update(_MLFLOW_QUICK)
    try:
        MlflowClient(settings.mlflow_uri).search_experiments(max_results=1)
    except Exception as exc:
        raise DependencyUnavailable(
            f"cannot reach MLflow at {_redact(settings.mlflow_uri)}: {_first_line(exc)} "
            "(check FLYWHEEL_MLFLOW_TRACKING_URI)"
        ) from exc
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_MLFLOW_QUICK = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


def check_ray(settings: Settings) -> None:
    """Only a configured Ray address can be unreachable; the embedded default starts one."""
    if not settings.runtime.ray_address:
        return
    try:
        ensure_ray(settings)
    except Exception as exc:
        raise DependencyUnavailable(
            f"cannot reach the Ray cluster at {settings.runtime.ray_address}: {_first_line(exc)} "
            "(check FLYWHEEL_RAY_ADDRESS, or unset it to start a local Ray)"
        ) from exc


def wait_for(
    check: Callable[[], T],
    *,
    attempts: int = 10,
    delay_s: float = 1.0,
    max_delay_s: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``check`` until it passes, backing off exponentially; re-raise after ``attempts``."""
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    for attempt in range(1, attempts + 1):
        try:
            return check()
        except DependencyUnavailable:
            if attempt == attempts:
                raise
            sleep(min(delay_s * 2 ** (attempt - 1), max_delay_s))
    raise AssertionError("unreachable")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
