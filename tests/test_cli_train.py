"""``actkit train`` through Typer's CliRunner: tables, result files, resume, clear errors."""
import json
import re

import pytest
import torch
from datafiles import Mirror, publish_idx
from typer.testing import CliRunner

from actkit import data as D
from actkit.cli.main import app

runner = CliRunner()
FAST = ["--dataset", "synthetic", "--model", "simple", "--epochs", "1", "--subset", "256", "--val-size", "200",
        "--batch-size", "64"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_two_activations_two_seeds_prints_the_comparison_table(tmp_path):
    out = tmp_path / "out"
    result = invoke("train", *FAST, "--act", "relu,elu", "--seeds", "2", "--out", out, "--verbose")
    assert result.exit_code == 0, result.output
    text = result.output
    assert "Test accuracy over seeds (mean ± 95% CI), cpu" in text
    assert "Δ vs relu" in text and "p (paired t)" in text and "baseline" in text
    assert "relu-actkit-seed1 (finished)" in text  # --verbose epoch tables
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["act_label"]: r for r in summary["rows"]}
    assert rows["elu"]["n"] == 2 and rows["elu"]["paired_n"] == 2
    acc = f"{100 * rows['elu']['test_acc_mean']:.2f} ± {100 * rows['elu']['test_acc_ci']:.2f}"
    assert acc in text
    assert sorted(p.name for p in (out / "runs").iterdir()) == [
        "elu-actkit-seed0.json", "elu-actkit-seed1.json", "relu-actkit-seed0.json", "relu-actkit-seed1.json"]


def test_saved_bits_option_trains_with_a_few_bit_backward(tmp_path):
    out = tmp_path / "out"
    result = invoke("train", *FAST, "--act", "gelu", "--saved-bits", "2", "--out", out)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "runs" / "gelu_saved_bits=2-actkit-seed0.json").read_text())
    assert record["config"]["act_params"] == {"saved_bits": 2} and record["memory"]["saved_bytes"] > 0
    assert "saved for bwd" in result.output


def test_rerun_refuses_then_resume_skips(tmp_path):
    out = tmp_path / "out"
    assert invoke("train", *FAST, "--seeds", "1", "--out", out).exit_code == 0
    before = (out / "runs" / "relu-actkit-seed0.json").read_bytes()
    refused = invoke("train", *FAST, "--seeds", "1", "--out", out)
    assert refused.exit_code == 2
    assert "already holds results" in refused.output and "--resume" in refused.output
    resumed = invoke("train", *FAST, "--seeds", "1", "--out", out, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "0 run(s) to do, 1 already finished (skipped)" in " ".join(resumed.output.split())
    assert (out / "runs" / "relu-actkit-seed0.json").read_bytes() == before


def test_resume_without_out_continues_the_newest_matching_sweep(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert invoke("train", *FAST, "--seeds", "1").exit_code == 0
    (first,) = (tmp_path / "runs").iterdir()
    result = invoke("train", *FAST, "--seeds", "2", "--resume")
    assert result.exit_code == 0, result.output
    assert list((tmp_path / "runs").iterdir()) == [first]
    assert sorted(p.name for p in (first / "runs").iterdir()) == ["relu-actkit-seed0.json", "relu-actkit-seed1.json"]


@pytest.mark.parametrize("args,message", [
    (["--act", "rleu"], "unknown activation 'rleu'. Did you mean 'relu'"),
    (["--dataset", "imagenet"], "unknown dataset 'imagenet'; choose one of: mnist, fashion-mnist, cifar10, synthetic"),
    (["--device", "tpu"], "unknown device 'tpu'; use auto, cpu, cuda or cuda:N"),
    (["--model", "resnet"], "unknown model 'resnet'; choose one of: convnet, simple"),
    (["--impl", "actkit,jit"], "unknown implementation 'jit'"),
    (["--act", "leaky_relu:slope=0.1"], "leaky_relu has no parameter 'slope'"),
    (["--baseline", "gelu"], "baseline 'gelu' is not one of the activations run"),
    (["--act", "relu,step"], "step has no gradient"),
    (["--act", "softmax"], "softmax is a rowwise function, not a pointwise activation"),
    (["--act", "prelu:weight=abc"], "must be a real number"),
    (["--seeds", "0"], "--seeds must be at least 1"),
    (["--subset", "999999"], "--subset must be between 1 and"),
    (["--saved-bits", "9"], "--saved-bits must be an integer from 1 to 8"),
    (["--saved-bits", "0"], "--saved-bits must be an integer from 1 to 8 (bits kept per element for backward), got "
                            "0; leave it out for the exact backward"),
    (["--act", "identity", "--saved-bits", "2"], "identity keeps nothing for backward"),
    (["--act", "identity:saved_bits=1"], "identity keeps nothing for backward"),
    (["--act", "relu,prelu", "--saved-bits", "2"], "prelu is a learnable activation: it has no few-bit backward"),
    (["--act", "gelu:saved_bits=2", "--impl", "actkit,compile"], "run it with --impl actkit"),
])
def test_bad_options_are_one_line_errors_with_exit_code_2(tmp_path, args, message):
    result = invoke("train", "--dataset", "synthetic", "--out", tmp_path / "out", *args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_all_with_saved_bits_trains_the_few_bit_ones_and_names_the_rest(tmp_path):
    """``--act all --saved-bits 2`` as ``--act relu,prelu --saved-bits 2`` would have it: every activation
    with a few-bit backward gets it, the others (refused when named) are left out, and the command says
    which. (A baseline among those left out then stops it before any training.)"""
    from actkit import train as tr

    left_out: list[str] = []
    chosen = tr.parse_activations("all", 2, left_out=left_out)
    assert left_out == ["identity", "prelu", "swish_beta"]
    assert {c.name for c in chosen} >= {"relu", "gelu", "silu"} and all(c.saved_bits == 2 for c in chosen)
    result = invoke("train", "--dataset", "synthetic", "--out", tmp_path / "out", "--act", "all", "--saved-bits", "2",
                    "--baseline", "prelu")
    text = " ".join(result.output.split())
    assert "--saved-bits 2 with --act all: training the activations that have a few-bit backward; left out (none to " \
           "give them): identity, prelu, swish_beta" in text
    assert result.exit_code == 2 and "baseline 'prelu' is not one of the activations run" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_without_a_gpu(tmp_path):
    result = invoke("train", "--dataset", "synthetic", "--device", "cuda", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "CUDA is not available" in result.output


def test_missing_dataset_names_the_places_and_the_command(tmp_path, monkeypatch):
    import dataclasses

    monkeypatch.setitem(D.DATASETS, "fashion-mnist",
                        dataclasses.replace(D.DATASETS["fashion-mnist"], system_dirs=(str(tmp_path / "nowhere"),)))
    empty = tmp_path / "empty"
    result = invoke("train", "--dataset", "fashion-mnist", "--data-dir", empty, "--out", tmp_path / "out",
                    "--no-download")
    assert result.exit_code == 1
    assert " ".join(result.output.split()).endswith("(Downloading is off: --no-download.)")
    assert str(empty / "FashionMNIST" / "raw") in result.output and str(tmp_path / "nowhere") in result.output
    assert "sudo apt-get install dataset-fashion-mnist" in result.output
    assert f"actkit train --dataset fashion-mnist --download --data-dir {empty}" in result.output
    assert not (tmp_path / "out").exists()


def test_a_missing_dataset_is_downloaded_with_a_progress_bar(tmp_path, monkeypatch):
    """The first run of a command on a machine without the dataset: torchvision's downloader, from a mirror on
    127.0.0.1 serving files in the official format, then training on them."""
    monkeypatch.delenv(D.NO_DOWNLOAD_ENV, raising=False)
    data_dir, out = tmp_path / "data", tmp_path / "out"
    with Mirror(tmp_path / "mirror") as mirror:
        publish_idx(monkeypatch, mirror, "mnist", seed=4)
        result = invoke("train", "--dataset", "mnist", "--data-dir", data_dir, "--model", "simple", "--epochs", "1",
                        "--val-size", "10", "--batch-size", "25", "--seeds", "1", "--no-diagnostics", "--out", out)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    raw = data_dir / "MNIST" / "raw"
    assert f"mnist is not on this machine: downloading it with torchvision into {data_dir}" in text
    assert f"mnist: downloaded and verified (MD5) into {raw}" in text
    # torchvision's progress bar for each of the four files (tqdm's "100%|####|", or torch's "100.0%" without tqdm)
    assert len(re.findall(r"100(\.0)?%", result.output)) >= 4, result.output
    assert f"mnist from {raw}: 50 train / 10 val / 20 test images" in text
    assert json.loads((out / "runs" / "relu-actkit-seed0.json").read_text())["data"]["source"] == str(raw)


def test_saves_option_trains_with_a_save_policy_and_refuses_what_cannot_take_one(tmp_path):
    """--saves y keeps ELU's output, which the next layer keeps anyway: less memory for backward than the
    default (torch's choice, x). The policy is part of the label and of the record's act_params."""
    result = invoke("train", *FAST, "--act", "elu,relu", "--saves", "y", "--out", tmp_path / "y")
    assert result.exit_code == 0, result.output
    by_y = json.loads((tmp_path / "y" / "runs" / "elu_saves=y-actkit-seed0.json").read_text())
    assert by_y["config"]["act_params"] == {"alpha": 1.0, "saves": "y"}
    assert (tmp_path / "y" / "runs" / "relu_saves=y-actkit-seed0.json").exists()
    assert invoke("train", *FAST, "--act", "elu", "--out", tmp_path / "torch").exit_code == 0
    default = json.loads((tmp_path / "torch" / "runs" / "elu-actkit-seed0.json").read_text())
    assert default["config"]["act_params"] == {"alpha": 1.0}
    assert by_y["memory"]["saved_bytes"] < default["memory"]["saved_bytes"]
    for args, words in ((["--saves", "output"], "saves must be one of 'torch', 'y', 'x'"),
                        (["--act", "prelu:saves=y"], "prelu is a learnable activation"),
                        (["--act", "elu", "--saves", "y", "--impl", "torch"], "a save policy is actkit's"),
                        (["--act", "gelu:saved_bits=2:saves=y"], "does not go with saved_bits=2")):
        refused = invoke("train", *FAST, *args, "--out", tmp_path / "refused")
        assert refused.exit_code == 2 and words in " ".join(refused.output.split()), refused.output
