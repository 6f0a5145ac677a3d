"""How many Ray Train workers a training run gets, and on what devices.

The training settings (FLYWHEEL_TRAINING_WORKERS, _CPUS_PER_WORKER, _USE_GPU) become Ray
Train's ScalingConfig here, and nowhere else. Settings that Flywheel's own Ray could never
hold are refused before anything starts: Ray Train would otherwise wait for the resources
and give up only after its worker-group start timeout, with a message about placement
groups rather than about the setting to change.

Two kinds of Ray are checked: a Ray that Flywheel starts on this machine (the in-process
Ray of ensure_ray, the local head a training job is submitted to), against this machine; and
the autoscaling cluster of a KubeRay training RayJob (FLYWHEEL_KUBE_NAMESPACE), at the most
its worker group can grow to (FLYWHEEL_RAY_MAX_WORKERS pods of FLYWHEEL_RAY_WORKER_CPUS and
_GPUS each). Another cluster that Flywheel joins is not: what it can grow to is unknown here.

The GPU path (NCCL, one GPU per worker, the device chosen by ray.train.torch.get_device) is
not exercised here: the development machine has no GPU and this CPU build of torch sees
none; the tests run the CPU path (gloo).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from services.config import KubeSettings, Settings, TrainingSettings
from services.runtime.ray_head import local_cpus


class UnrunnableTraining(ValueError):
    """The training settings ask for more than the Ray that would run them has."""


def scaling_config(training: TrainingSettings):
    """Ray Train's ScalingConfig for these settings (a GPU each too, with use_gpu)."""
    from ray.train import ScalingConfig

    return ScalingConfig(
        num_workers=training.training_workers,
        use_gpu=training.training_use_gpu,
        resources_per_worker={"CPU": training.training_cpus_per_worker},
    )


def runs_on_local_ray(settings: Settings) -> bool:
    """Whether training would run on a Ray that Flywheel starts on this machine: no cluster
    configured, and this process is not the driver of a job on some cluster (RAY_ADDRESS)."""
    return not (
        settings.runtime.ray_address
        or settings.runtime.ray_job_address
        or os.environ.get("RAY_ADDRESS")
    )


def scaling_env(training: TrainingSettings) -> dict[str, str]:
    """The settings above as the environment of a training job that runs elsewhere (a Ray
    job, a KubeRay RayJob), which reads its settings from its own environment."""
    return {
        "FLYWHEEL_TRAINING_WORKERS": str(training.training_workers),
        "FLYWHEEL_TRAINING_CPUS_PER_WORKER": str(training.training_cpus_per_worker),
        "FLYWHEEL_TRAINING_USE_GPU": str(training.training_use_gpu).lower(),
    }


def check_scaling(settings: Settings, batch_size: int) -> None:
    """Refuse training settings that cannot run, before any Ray starts or any job is sent:
    against a training RayJob's cluster at its largest on Kubernetes, against this machine
    where Flywheel's own Ray would train, else the minibatch alone."""
    if settings.kube.kube_namespace is not None:
        refuse_unrunnable(
            settings.training,
            batch_size,
            kuberay_largest(settings.kube, settings.training),
            f"the training RayJob's Ray cluster at its largest ({settings.kube.ray_max_workers} "
            "pods: FLYWHEEL_RAY_MAX_WORKERS, _WORKER_CPUS, _WORKER_GPUS)",
        )
    elif runs_on_local_ray(settings):
        refuse_unrunnable(settings.training, batch_size, this_machine())
    else:
        refuse_unrunnable(settings.training, batch_size)


def kuberay_largest(kube: KubeSettings, training: TrainingSettings) -> dict[str, float]:
    """What a KubeRay cluster's worker group offers workers at its largest: its pods' CPUs and
    GPUs, counting only what whole workers can use (a worker does not span two pods)."""
    per_pod = int(kube.ray_worker_cpus // training.training_cpus_per_worker)
    if training.training_use_gpu:
        per_pod = min(per_pod, kube.ray_worker_gpus)
    return {
        "CPU": float(kube.ray_max_workers * per_pod * training.training_cpus_per_worker),
        "GPU": float(kube.ray_max_workers * (per_pod if training.training_use_gpu else 0)),
    }


def this_machine() -> dict[str, float]:
    """What a Ray that Flywheel starts here offers: its CPUs, and the GPUs torch can use
    (a GPU that this build of torch cannot use is no use to training)."""
    import torch

    return {"CPU": float(local_cpus()), "GPU": float(torch.cuda.device_count())}


def refuse_unrunnable(
    training: TrainingSettings,
    batch_size: int,
    resources: Mapping[str, float] | None = None,
    where: str = "this machine",
) -> None:
    """Raise UnrunnableTraining, naming the setting to change, unless every worker gets a
    share of each minibatch and ``resources`` (those of the Ray described by ``where``; None
    for a cluster that may grow) hold every worker."""
    workers = training.training_workers
    if batch_size < workers:
        raise UnrunnableTraining(
            f"a minibatch of {batch_size} cannot be shared by {workers} training workers: "
            "lower FLYWHEEL_TRAINING_WORKERS or raise the batch size"
        )
    if resources is None:
        return
    gpus = resources.get("GPU", 0.0)
    if training.training_use_gpu and gpus < workers:
        raise UnrunnableTraining(
            f"FLYWHEEL_TRAINING_USE_GPU asks for a GPU for each of {workers} training "
            f"workers, but {where} has {gpus:g}: unset it to train on CPUs"
        )
    cpus, needed = resources.get("CPU", 0.0), workers * training.training_cpus_per_worker
    if cpus < needed:
        raise UnrunnableTraining(
            f"{workers} training workers of {training.training_cpus_per_worker:g} CPUs "
            f"(FLYWHEEL_TRAINING_WORKERS, FLYWHEEL_TRAINING_CPUS_PER_WORKER) need {needed:g} "
            f"CPUs, but {where} has {cpus:g}"
        )
