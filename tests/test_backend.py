"""Backend choice: auto, overrides, the interpreter rule, dtypes, and that the choice is what runs."""
import pytest
import torch

import actkit
import actkit.kernels.elementwise as elementwise
from actkit.backend import BackendError
from refcheck import KERNEL_DEVICE, backend


def test_auto_uses_the_pytorch_fallback_for_cpu_tensors(monkeypatch):
    monkeypatch.delenv("ACTKIT_BACKEND", raising=False)
    actkit.set_backend(None)  # re-read the environment
    assert actkit.get_backend() == "auto"
    assert actkit.backend_for(torch.ones(3)) == "torch"


def test_float64_and_integer_tensors_always_use_pytorch():
    with backend("triton"):
        assert actkit.backend_for(torch.ones(3, dtype=torch.float64, device=KERNEL_DEVICE)) == "torch"
        assert actkit.backend_for(torch.ones(3, dtype=torch.int32, device=KERNEL_DEVICE)) == "torch"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter rule concerns CPU tensors")
def test_triton_on_cpu_runs_under_the_interpreter_only(monkeypatch):
    with backend("triton"):
        assert actkit.backend_for(torch.ones(3)) == "triton-interpreter"
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with pytest.raises(BackendError, match="TRITON_INTERPRET=1"):
            actkit.backend_for(torch.ones(3))


def test_environment_variable_selects_the_backend(monkeypatch):
    """ACTKIT_BACKEND is read once and kept (backend_for runs on every call), and read anew by
    set_backend(None)."""
    monkeypatch.setenv("ACTKIT_BACKEND", "torch")
    actkit.set_backend(None)
    try:
        assert actkit.get_backend() == "torch"
        assert actkit.backend_for(torch.ones(3, device=KERNEL_DEVICE)) == "torch"
        monkeypatch.setenv("ACTKIT_BACKEND", "triton")
        assert actkit.get_backend() == "torch"  # kept until asked to re-read
        actkit.set_backend(None)
        assert actkit.get_backend() == "triton"
        monkeypatch.setenv("ACTKIT_BACKEND", "fast")
        actkit.set_backend(None)
        with pytest.raises(BackendError, match="unknown backend 'fast'.*auto, triton, torch"):
            actkit.get_backend()
    finally:
        monkeypatch.delenv("ACTKIT_BACKEND")
        actkit.set_backend(None)


def test_set_backend_validates_and_resets():
    with pytest.raises(BackendError, match="choose one of"):
        actkit.set_backend("cuda")
    with backend("torch"):
        assert actkit.get_backend() == "torch"
    assert actkit.get_backend() in ("auto", "triton", "torch")


@pytest.mark.parametrize("choice, launches", [("triton", 2), ("torch", 0)])
def test_the_chosen_backend_is_what_runs(monkeypatch, choice, launches):
    calls = []
    for name in ("forward", "backward"):
        original = getattr(elementwise, name)
        monkeypatch.setattr(elementwise, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    x = torch.randn(10, device=KERNEL_DEVICE if choice == "triton" else "cpu", requires_grad=True)
    with backend(choice):
        actkit.functional.gelu(x).sum().backward()
    assert len(calls) == launches


def test_kernels_reject_unsupported_dtypes():
    with pytest.raises(TypeError, match="float32, float16 and bfloat16"):
        elementwise.forward(torch.ones(3, dtype=torch.float64), None)


def test_available_backends_reports_this_machine():
    found = actkit.available_backends()
    assert found["torch"] is True
    assert found["triton"] == torch.cuda.is_available()


def test_triton_older_than_3_3_is_refused_with_the_reason(monkeypatch):
    """Triton 3.1/3.2 refuse device functions as constexpr arguments (found by compiling with 3.1):
    auto falls back to PyTorch on CUDA with one warning; an explicit triton request is one clear error."""
    import actkit.backend as b

    assert b._version_tuple("3.2.0") < b.TRITON_MIN_VERSION <= b._version_tuple("3.3.1+git1234")
    monkeypatch.setattr(b, "TRITON_VERSION", "3.1.0")
    monkeypatch.setattr(b, "_TRITON_TOO_OLD", True)
    monkeypatch.setattr(b, "_TRITON_USABLE", False)
    monkeypatch.setattr(b, "_warned_old_triton", False)
    assert "triton >= 3.3" in b.triton_problem() and "3.1.0" in b.triton_problem()
    assert b.available_backends()["triton"] is False
    with backend("triton"):
        with pytest.raises(BackendError, match="need triton >= 3.3"):
            actkit.backend_for(torch.ones(3))
    with pytest.warns(RuntimeWarning, match="PyTorch fallback on CUDA: Triton 3.1.0"):
        assert b._fall_back_to_torch() == "torch"  # what auto does for a CUDA tensor
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert b._fall_back_to_torch() == "torch"  # said once per process
