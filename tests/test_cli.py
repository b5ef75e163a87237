"""`actkit list` and `actkit --version` through Typer's CliRunner."""
import json

from typer.testing import CliRunner

import actkit
from actkit.cli.main import app

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"actkit {actkit.__version__}"


def test_list_shows_every_activation():
    result = runner.invoke(app, ["list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in actkit.available():
        assert name in result.output
    assert "Backends on this machine" in result.output


def test_list_json_is_machine_readable():
    result = runner.invoke(app, ["list", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    names = [a["name"] for a in data["activations"]]
    assert names == actkit.available()
    mish = next(a for a in data["activations"] if a["name"] == "mish")
    assert mish["formula"] == actkit.get("mish").formula
    assert mish["smooth"] is True and mish["monotonic"] is False
    leaky = next(a for a in data["activations"] if a["name"] == "leaky_relu")
    assert leaky["params"] == [{"name": "negative_slope", "default": 0.01, "doc": "slope for x < 0"}]
    assert data["backends"]["torch"] is True


def test_python_dash_m_runs_the_same_app():
    """torchrun and SLURM scripts start workers as `python -m actkit.cli.main ...`."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "actkit.cli.main", "--version"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"actkit {actkit.__version__}"
