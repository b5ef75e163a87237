"""The command starts light: --help, --version and shell completion import neither torch nor the heavy parts
of actkit; `import actkit` is cheap and loads the library on first use; the CLI's torch-free names match
the library's tables; `actkit list` reads at 80 columns; known errors become one line and an exit code."""
import json
import os
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

HEAVY = ("torch", "scipy", "matplotlib", "actkit.train", "actkit.training", "actkit.bench", "actkit.registry")


def loaded_after(code: str, env: dict | None = None) -> tuple[str, list[str]]:
    """Run ``code`` in a fresh interpreter; its stdout and the heavy modules (and their submodules) it imported."""
    probe = ("import json, sys\ntry:\n" + "".join(f"    {line}\n" for line in code.splitlines())
             + "except SystemExit:\n    pass\n"
             + f"heavy = [m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in {HEAVY!r})]\n"
             + "print(json.dumps(sorted(heavy)), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr
    return done.stdout, json.loads(done.stderr.strip().splitlines()[-1])


def run_actkit(*args: str) -> str:
    return f"sys.argv = ['actkit', {', '.join(map(repr, args))}]\nfrom actkit.cli.main import app\napp()"


@pytest.mark.parametrize("args", [("--version",), ("--help",), ("train", "--help"), ("bench", "--help"),
                                  ("plot", "curves", "--help"), ("memory", "--help"), ("roofline", "--help")])
def test_help_and_version_do_not_import_torch(args):
    out, heavy = loaded_after(run_actkit(*args))
    assert heavy == []
    assert ("actkit " in out) if args == ("--version",) else ("Usage: actkit" in out)


def test_shell_completion_does_not_import_torch():
    """Typer runs the program on every TAB: it must answer without loading the library."""
    out, heavy = loaded_after(run_actkit(), env={"_ACTKIT_COMPLETE": "complete_bash", "COMP_WORDS": "actkit tr",
                                                 "COMP_CWORD": "1"})
    assert heavy == []
    assert "train" in out.split()


def test_import_actkit_is_lazy_and_the_api_is_unchanged():
    out, heavy = loaded_after("import actkit\nprint(actkit.__version__)")
    assert heavy == [] and out.strip()
    # actkit.memory imports the submodule actkit.patch first: actkit.patch stays the function.
    out, heavy = loaded_after("import actkit, actkit.memory\nfrom actkit import nn, functional, patch\n"
                              "import torch\nx = torch.linspace(-3, 3, 7)\n"
                              "assert torch.equal(actkit.functional.mish(x), functional.mish(x))\n"
                              "model = torch.nn.Sequential(torch.nn.ReLU())\npatch(model, act='gelu')\n"
                              "print(type(model[0]).__name__, actkit.patch is patch,"
                              " isinstance(nn.Mish(), nn.Activation), actkit.get('mish').name,"
                              " 'mish' in actkit.available())")
    assert out.split() == ["GELU", "True", "True", "mish", "True"]


def test_lightweight_names_match_the_library():
    from actkit import data, memory, models, names, toy
    from actkit import train as tr
    from actkit.cli.main import app

    assert tuple(data.DATASETS) == names.DATASETS
    assert (tuple(models.MODELS), models.IMPLS, memory.MODELS, toy.DATASETS) == (names.MODELS, names.IMPLS,
                                                                          names.MEMORY_MODELS, names.TOY_DATASETS)
    assert tuple(tr.PARALLEL_MODES) == names.PARALLEL_MODES
    listed = json.loads(CliRunner().invoke(app, ["list", "--json"]).output)["activations"]
    assert tuple(a["name"] for a in listed if a["kind"] == "glu") == names.GLU_ACTIVATIONS


def test_list_reads_at_80_columns():
    """The README's first command in an 80-column terminal: no column squeezed to nothing, no header cut short."""
    import actkit
    from actkit.cli.main import app

    result = CliRunner().invoke(app, ["list"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in result.output
    header = next(line for line in lines if "formula" in line)
    assert [h.strip() for h in header.split("┃")[1:-1]] == ["name", "formula", "saves"]
    text = " ".join(result.output.replace("│", " ").split())
    for name in actkit.available():
        spec = actkit.get(name)
        row = next(line for line in lines if line.startswith(f"│ {name} "))
        assert " ".join(spec.formula.split()[:3]) in row  # the formula starts on the name's line
        # every word of the formula is there (rows fold between words), and the range under it
        assert all(word in text for word in spec.formula.split()), name
        assert f"range {spec.output_range.split()[0]}" in text


def test_wide_terminal_keeps_one_column_per_property():
    from actkit.cli.main import app

    result = CliRunner().invoke(app, ["list"], env={"COLUMNS": "200"})
    header = next(line for line in result.output.splitlines() if "formula" in line)
    assert [h.strip() for h in header.split("┃")[1:-1]] == ["name", "formula", "range", "params", "mono", "smooth",
                                                            "zero-c.", "satur.", "saves"]


def test_known_errors_become_one_line_and_an_exit_code():
    from actkit import backend, data
    from actkit.cli.common import reports_errors

    def command(kind: str) -> None:
        raise {"value": ValueError("bad value; choose x or y"), "backend": backend.BackendError("no triton"),
               "missing": data.DatasetNotFoundError("mnist is not here"), "bug": KeyError("oops")}[kind]

    app = typer.Typer()
    app.command()(reports_errors(command))
    runner = CliRunner()
    for kind, code, line in (("value", 2, "Error: bad value; choose x or y"), ("backend", 2, "Error: no triton"),
                             ("missing", 1, "Error: mnist is not here")):
        result = runner.invoke(app, [kind])
        assert (result.exit_code, result.stderr.strip(), result.stdout) == (code, line, "")
    bug = runner.invoke(app, ["bug"])
    assert isinstance(bug.exception, KeyError)  # not input: a traceback, not a one-line error


def test_a_new_command_is_a_function_and_one_registration(monkeypatch):
    """What README "Adding a command" says: a plain function, registered in main; it is listed, runs, and
    its bad input ends as one line with exit code 2."""
    from actkit.cli import main

    monkeypatch.setattr(main.app, "registered_commands", list(main.app.registered_commands))

    def hello(name: str = typer.Option("world", "--name", help="Who to greet.")) -> None:
        """Greet someone."""
        if not name.strip():
            raise ValueError("--name is empty; give a name, e.g. --name Ada")
        typer.echo(f"hello {name}")

    main.register("hello", hello)
    runner = CliRunner()
    listing = runner.invoke(main.app, ["--help"], env={"COLUMNS": "120"})
    assert "hello" in listing.output and "Greet someone." in listing.output
    assert runner.invoke(main.app, ["hello", "--name", "Ada"]).output == "hello Ada\n"
    bad = runner.invoke(main.app, ["hello", "--name", " "])
    assert (bad.exit_code, bad.stderr.strip()) == (2, "Error: --name is empty; give a name, e.g. --name Ada")
