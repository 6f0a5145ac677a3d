"""`flywheel policy-server` refuses a model URI that is not its model version."""

from typer.testing import CliRunner

from cli import app


def test_a_model_uri_that_names_another_version_is_refused(settings, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_MODEL_VERSION", "3")
    monkeypatch.setenv("FLYWHEEL_MODEL_URI", "models:/flywheel-policy/4")
    result = CliRunner().invoke(app, ["policy-server", "--port", "1"])
    assert result.exit_code != 0
    assert "models:/flywheel-policy/3" in result.output
