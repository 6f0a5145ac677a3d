"""The house's structure is checked, not only drawn: layers point down, no file imports itself
back through a chain, and the two paths that MLflow model files of existing homes import stay.

The layers are import-linter's contract in pyproject.toml (also `make lint`); grimp, the graph
import-linter builds, counts imports inside function bodies too, so a loop cannot hide there.
"""

import importlib
from pathlib import Path

import grimp
import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cli", "flows", "sim", "services", "policies")


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph(*PACKAGES)


def test_layer_contracts_are_kept(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename="pyproject.toml", no_cache=True, no_logo=True) == 0


def test_no_module_imports_itself_back(graph):
    circles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back is not None:
                circles.append(" -> ".join((module, *back)))
    assert circles == []


def test_services_import_neither_flows_nor_the_cli_nor_the_simulated_fleet(graph):
    services = {m for m in graph.modules if m.split(".")[0] == "services"}
    upward = sorted(
        f"{m} -> {d}"
        for m in services
        for d in graph.find_modules_directly_imported_by(m)
        if d.split(".")[0] in ("cli", "flows", "sim")
    )
    assert upward == []


def test_the_simulated_fleet_reaches_flywheel_only_as_a_robot_does(graph):
    """sim/ may use the episode model, the log writer, the twin and the policies; the rest of
    Flywheel (store, rollout, API...) it reaches over HTTP."""
    allowed = (
        "services.episodes",
        "services.features",
        "services.ingest.formats",
        "services.twin",
        "policies",
        "sim",
    )
    reached = sorted(
        d
        for m in graph.modules
        if m.split(".")[0] == "sim"
        for d in graph.find_modules_directly_imported_by(m)
        if not d.startswith(allowed)
    )
    assert reached == []


def test_paths_that_registered_models_import_still_exist():
    """MLflow models-from-code: every registered model carries a copy of
    services/registry/pyfunc.py, which imports these two modules by path."""

    pyfunc = (ROOT / "services/registry/pyfunc.py").read_text()
    for module in ("services.features", "policies.checkpoint"):
        assert f"from {module} import" in pyfunc
        importlib.import_module(module)
