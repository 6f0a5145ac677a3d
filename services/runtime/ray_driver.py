"""This process as a Ray driver: join the configured cluster, or start a local Ray.

Training (services/training/job.py) and closed-loop evaluation run their Ray work from the
process that asks for it; ``ensure_ray`` connects it once, ``shutdown_ray`` lets it go.
"""

from __future__ import annotations

from pathlib import Path

from services.config import Settings
from services.runtime.ray_head import local_cpus, temp_dir_for


def ray_temp_dir(settings: Settings) -> Path:
    return temp_dir_for(settings.ray_dir)


def ensure_ray(settings: Settings) -> None:
    """Connect to ``settings.runtime.ray_address``, or start a local Ray sized to this machine."""
    import ray

    if ray.is_initialized():
        return
    if settings.runtime.ray_address:
        ray.init(address=settings.runtime.ray_address, log_to_driver=False)
        return
    temp = ray_temp_dir(settings)
    temp.mkdir(parents=True, exist_ok=True)
    ray.init(
        num_cpus=local_cpus(),
        include_dashboard=False,
        _temp_dir=str(temp),
        log_to_driver=False,
        configure_logging=False,
    )


def shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
