"""Result files: atomic writes that never leave a truncated or temporary file, and the environment stamp."""
import csv
import json
import os
import stat

import pytest
import torch

from actkit import results


def test_json_round_trip_and_permissions(tmp_path):
    path = results.write_json(tmp_path / "sub" / "r.json", {"x": torch.tensor([1.5, 2.0]), "dtype": torch.float16})
    assert results.read_json(path) == {"x": [1.5, 2.0], "dtype": "torch.float16"}
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    path = results.write_json(tmp_path / "r.json", {"ok": 1})
    with pytest.raises(TypeError, match="cannot store object"):
        results.write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_csv_columns_and_cells(tmp_path):
    path = results.write_csv(tmp_path / "t.csv", [{"a": 1, "b": [1, 2]}, {"a": 2, "c": None}])
    rows = list(csv.DictReader(path.open()))
    assert rows == [{"a": "1", "b": "[1, 2]", "c": ""}, {"a": "2", "b": "", "c": ""}]


def test_environment_names_device_and_versions():
    env = results.environment("cpu")
    assert env["torch"] == torch.__version__
    assert env["device"] == "cpu" and env["device_name"]
    assert {"timestamp", "triton", "actkit", "python", "configured_backend", "triton_interpreter"} <= set(env)
