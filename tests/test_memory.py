"""Bytes kept for backward: no activation keeps more than PyTorch's own op, and y is shared with the
next layer (ResNet-18 one training step, storages counted once, as actkit.memory counts them)."""
import pytest
import torch
from typer.testing import CliRunner

import actkit
from actkit import memory
from actkit.cli.main import app

NETWORK_ACTS = [s for s in actkit.registry.REGISTRY.values() if s.kind.pointwise]


def test_saved_bytes_counts_each_storage_once():
    x = torch.randn(1000, requires_grad=True)
    w = torch.randn(1000, requires_grad=True)
    # relu saves its output y; the product saves y again and w: two storages of 4000 bytes.
    assert memory.saved_bytes(lambda: (torch.relu(x) * w).sum()) == 2 * 4000


@pytest.mark.parametrize("spec", NETWORK_ACTS, ids=[s.name for s in NETWORK_ACTS])
def test_no_activation_keeps_more_than_torch(spec):
    """Small images so every registry activation is measured quickly; the ratios the issue states
    are checked at its size below."""
    kwargs = dict(batch=2, image_size=32)
    ours = memory.network_memory(spec.name, "actkit", **kwargs)
    theirs = memory.network_memory(spec.name, "torch", **kwargs)
    assert ours.parameter_bytes == theirs.parameter_bytes > 0
    assert ours.saved_bytes <= theirs.saved_bytes


@pytest.mark.parametrize("spec", NETWORK_ACTS, ids=[s.name for s in NETWORK_ACTS])
def test_saving_y_never_keeps_more_than_the_default_policy(spec):
    kwargs = dict(batch=2, image_size=32)
    by_y = memory.network_memory(spec.name, "actkit", saves="y", **kwargs)
    assert by_y.saves == "y" and by_y.saved_bytes <= memory.network_memory(spec.name, "actkit", **kwargs).saved_bytes


def test_resnet18_targets_at_the_issue_size():
    """Batch 8 of 3x64x64 (issue 10): every activation <= 1.00x torch; by default leaky_relu and elu keep
    what torch keeps (x), with saves="y" <= 0.92x, since their saved y is the next convolution's saved
    input; GELU at 2 bits close to that too."""
    rows = {(r["activation"], r["saves"]): r
            for r in memory.network_comparison(["relu", "leaky_relu", "elu"], saves=("torch", "y"))}
    for policy in ("torch", "y"):
        assert rows[("relu", policy)]["vs_torch"] == pytest.approx(1.0)  # torch's ReLU already saves y
    for name in ("leaky_relu", "elu"):
        assert rows[(name, "torch")]["vs_torch"] == pytest.approx(1.0)  # torch keeps x: so does actkit
        assert rows[(name, "y")]["vs_torch"] <= 0.92
    gelu = memory.network_comparison(["gelu"], saved_bits=[2])
    exact, few = (r for r in gelu if r["impl"] == "actkit")
    assert exact["vs_torch"] == pytest.approx(1.0) and few["vs_torch"] <= 0.92
    # 2 bits per element instead of 4 bytes: the activations' part shrinks by the fp32 x's share.
    assert few["activation_bytes"] < 0.8 * exact["activation_bytes"]


def test_memory_command_table_json_and_errors(tmp_path):
    runner = CliRunner()
    out = tmp_path / "mem.json"
    result = runner.invoke(app, ["memory", "--act", "gelu,relu", "--saved-bits", "2", "--batch", "2", "--size", "32",
                                 "--json", str(out)], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "actkit 2-bit" in result.output and "gelu" in result.output
    payload = actkit.results.read_json(out)
    assert payload["schema"] == "actkit.memory/1"
    impls = [(r["activation"], r["impl"], r["saved_bits"]) for r in payload["records"]]
    assert impls == [("gelu", "torch", None), ("gelu", "actkit", None), ("gelu", "actkit", None), ("gelu", "actkit", 2),
                     ("relu", "torch", None), ("relu", "actkit", None), ("relu", "actkit", None)]  # relu keeps y
    assert [r["saves"] for r in payload["records"]] == [None, "torch", "y", "torch", None, "torch", "y"]
    assert payload["config"]["saves"] == ["torch", "y"] and "actkit saves=y" in result.output
    for args, message in ((["--act", "softmax"], "softmax is a row-wise activation"), (["--saved-bits", "9"], "bad --saved-bits"),
                          (["--act", "mihs"], "unknown activation"), (["--size", "8"], "--size >= 32"),
                          (["--saves", "torch,output"], "bad --saves 'output'")):
        result = runner.invoke(app, ["memory", *args])
        assert result.exit_code == 2 and message in result.output, result.output
