"""The save policy: what autograd keeps for backward, held to what torch keeps, so that code which
modifies an activation's output in place (``y = act(x); y += r``) trains after ``actkit.patch``
exactly as it did before, with the same gradients."""
import copy
import inspect
import pickle

import pytest
import torch
from torch import nn

import actkit
from actkit import registry
from actkit.patch import INPLACE_KEEPS_OUTPUT, TORCH_MODULES
from refcheck import KERNEL_DEVICE, TORCH_TOLERANCE, backend

DIFFERENTIABLE = [s for s in registry.REGISTRY.values() if s.differentiable]
INPLACE_ERROR = "modified by an inplace operation"


def _call(spec, fn, x: torch.Tensor, **options) -> torch.Tensor:
    """``fn`` (the spec's torch reference or actkit's functional) on x, with what each kind needs."""
    if spec.kind.learnable:  # a per-channel parameter that takes gradients too
        return fn(x, torch.full((x.shape[1],), 0.25, dtype=x.dtype, device=x.device, requires_grad=True), **options)
    if spec.kind.normalises or spec.kind.gated:
        return fn(x, dim=1, **options)
    return fn(x, **options)


def _inplace_on_output(forward, x: torch.Tensor):
    """``y = forward(x); y += 1``, then backward: x's gradient, or the in-place error's text."""
    x = x.detach().clone().requires_grad_(True)
    y = forward(x)
    y.add_(1.0)
    try:
        (y * y).sum().backward()
    except RuntimeError as exc:
        assert INPLACE_ERROR in str(exc), exc
        return str(exc)
    return x.grad


def _points(device="cpu", dtype=torch.float64) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(4, 6, 5, device=device, dtype=dtype) * 3


@pytest.mark.parametrize("spec", DIFFERENTIABLE, ids=[s.name for s in DIFFERENTIABLE])
def test_torch_saves_is_what_torchs_own_op_keeps(spec):
    """The registry's torch_saves, checked on torch itself: modifying the output in place breaks
    torch's backward exactly where torch keeps the output."""
    found = _inplace_on_output(lambda t: _call(spec, spec.reference, t), _points())
    assert isinstance(found, str) == (spec.torch_saves == "y"), found


@pytest.mark.parametrize("backend_name", ["torch", "triton"])
@pytest.mark.parametrize("spec", DIFFERENTIABLE, ids=[s.name for s in DIFFERENTIABLE])
def test_default_policy_modifies_the_output_in_place_as_torch_does(spec, backend_name):
    """Under the default policy every activation fails where torch fails and elsewhere gives torch's
    gradient, on both backends."""
    device = KERNEL_DEVICE if backend_name == "triton" else "cpu"
    x = _points(device, torch.float32)
    expected = _inplace_on_output(lambda t: _call(spec, spec.reference, t), x)
    with backend(backend_name):
        found = _inplace_on_output(lambda t: _call(spec, getattr(actkit.functional, spec.name), t), x)
    assert type(found) is type(expected), (found, expected)
    if isinstance(expected, torch.Tensor):
        # fp32 kernels against torch's fp32 ops, each a few ulp from exact, through y * y
        torch.testing.assert_close(found, expected, **TORCH_TOLERANCE[torch.float32])


SAVES_Y_ONLY_IF_ASKED = [s for s in DIFFERENTIABLE if s.kind.save_policy and s.saves_for(s.defaults) == "y"
                         and s.torch_saves != "y"]


@pytest.mark.parametrize("spec", SAVES_Y_ONLY_IF_ASKED, ids=[s.name for s in SAVES_Y_ONLY_IF_ASKED])
def test_saves_y_is_opt_in_and_its_in_place_failure_says_why(spec):
    """saves="y" keeps the output (the memory saving), so an in-place change of it fails in backward
    where torch's op would not, and the error names the policy and the way out."""
    x = _points(dtype=torch.float32)
    found = _inplace_on_output(lambda t: getattr(actkit.functional, spec.name)(t, saves="y"), x)
    assert isinstance(found, str) and f"actkit's {spec.name} kept its output y" in found
    assert "saves='torch'" in found
    assert spec.saves_under("torch", spec.defaults) == "x" and spec.saves_under("y", spec.defaults) == "y"
    y = getattr(actkit.functional, spec.name)(x.clone().requires_grad_(True), saves="y")
    y.sum().backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time") as second:
        y.sum().backward()  # another failure to read the saved y: torch's words alone
    assert "kept its output" not in str(second.value)


# -- a model with a residual add on an activation's output, patched and not ------------------------
def _torch_modules() -> list[nn.Module]:
    """One module of every class patch replaces, and the in-place variant where the class has one."""
    made = []
    for cls in TORCH_MODULES:
        args = {"dim": 1} if cls in (nn.Softmax, nn.LogSoftmax) else {}
        made.append(cls(**args))
        if "inplace" in inspect.signature(cls).parameters:
            made.append(cls(**args, inplace=True))
    return made + [nn.GELU(approximate="tanh")]


MODULES = _torch_modules()
MODULE_IDS = [type(m).__name__ + ("-tanh" if getattr(m, "approximate", "none") == "tanh" else "")
              + ("-inplace" if getattr(m, "inplace", False) else "") for m in MODULES]


class ResidualBlock(nn.Module):
    """``y = act(linear(x)); y += x; linear(y)``: the residual add modifies the activation's output."""

    def __init__(self, act: nn.Module, width: int = 5):
        super().__init__()
        self.inner, self.act, self.outer = nn.Linear(width, width), act, nn.Linear(width, width)

    def forward(self, x):
        y = self.act(self.inner(x))
        y += x
        return self.outer(y)


def _train_step(model: nn.Module, x: torch.Tensor):
    """Every gradient of one step (x's and the parameters'), or the in-place error's text."""
    x = x.detach().clone().requires_grad_(True)
    try:
        model(x).square().sum().backward()
    except RuntimeError as exc:
        assert INPLACE_ERROR in str(exc), exc
        return str(exc)
    return [x.grad] + [p.grad for p in model.parameters()]


@pytest.mark.parametrize("backend_name", ["torch", "triton"])
@pytest.mark.parametrize("act", MODULES, ids=MODULE_IDS)
def test_a_model_that_trains_unpatched_trains_patched_with_the_same_gradients(act, backend_name):
    """Every activation class patch replaces (and its in-place variant), in a residual block that adds
    to the activation's output in place: after patching it trains if and only if it trained before, with
    the same gradients. The PyTorch fallback runs torch's own backward ops on the same saved tensor,
    so its gradients are torch's to the bit; the Triton kernels' fp32 math is a few ulp from torch's."""
    device = KERNEL_DEVICE if backend_name == "triton" else "cpu"
    torch.manual_seed(0)
    model = ResidualBlock(copy.deepcopy(act)).to(device)  # MODULES is shared by the cases: no stale .grad
    x = torch.randn(2, 3, 4, 5, device=device)
    patched = copy.deepcopy(model)
    report = actkit.patch(patched)
    assert len(report.replaced) == 1, report
    expected = _train_step(model, x)
    with backend(backend_name):
        found = _train_step(patched, x)
    assert type(found) is type(expected), (found, expected)
    if isinstance(expected, list):
        tolerance = dict(rtol=0, atol=0) if backend_name == "torch" else TORCH_TOLERANCE[torch.float32]
        for ours, theirs in zip(found, expected):
            torch.testing.assert_close(ours, theirs, **tolerance)


def test_patch_saves_y_gives_up_the_in_place_guarantee_for_memory():
    """patch(saves="y") keeps ELU's output: the residual block no longer trains, and says why."""
    model = ResidualBlock(nn.ELU())
    actkit.patch(model, saves="y")
    assert model.act.saves == "y" and model.act._op.saves == "y"
    found = _train_step(model, torch.randn(3, 5))
    assert isinstance(found, str) and "saves='torch'" in found


def test_inplace_modules_that_keep_their_output_are_the_listed_ones():
    """torch's in-place ops that keep their output (relu_, elu_, ...) fail on a later in-place change of
    it; patch gives their replacements saves="y", the same memory and behaviour. Checked on torch."""
    for cls in TORCH_MODULES:
        if "inplace" not in inspect.signature(cls).parameters:
            continue
        found = _inplace_on_output(lambda t: cls(inplace=True)(t * 1.0), _points())
        assert isinstance(found, str) == (cls in INPLACE_KEEPS_OUTPUT), cls


def test_patch_picks_the_saved_tensor_per_module():
    model = nn.Sequential(nn.ELU(), nn.ELU(inplace=True), nn.ReLU(inplace=True), nn.GELU(),
                          actkit.nn.LeakyReLU(saves="x"), nn.PReLU())
    actkit.patch(model)
    assert [getattr(m, "saves", None) for m in model] == ["torch", "y", "torch", "torch", "x", None]
    assert [m._op.saves for m in model[:5]] == ["x", "y", "y", "x", "x"]
    actkit.unpatch(model)
    actkit.patch(model, saves="y", saved_bits=2)  # few-bit where x would be kept, y elsewhere
    assert [m.extra_repr() for m in model[:5]] == ["alpha=1, saves='y'", "alpha=1, saves='y'", "saves='y'",
                                                   "saved_bits=2", "negative_slope=0.01, saves='y'"]
    actkit.unpatch(model)
    actkit.patch(model, saved_bits=1)  # the default policy keeps ELU's x: a 1-bit code instead
    assert [m.extra_repr() for m in model[:3]] == ["alpha=1, saved_bits=1", "alpha=1, saves='y'", ""]


# -- the option on modules, functions, patch; the traced route ------------------------------------
def test_policy_options_and_their_errors():
    x = torch.randn(10, requires_grad=True)
    for saves, kept in (("torch", "x"), ("y", "y"), ("x", "x")):
        m = actkit.nn.ELU(saves=saves)
        assert m._op.saves == kept and m._op.key == ("elu", 1.0, 0.0, kept)
        assert actkit.functional.elu(x, saves=saves).grad_fn is not None
    assert repr(actkit.nn.ELU(saves="y")) == "ELU(alpha=1, saves='y')" and repr(actkit.nn.ELU()) == "ELU(alpha=1)"
    bad = "elu: saves must be one of 'torch', 'y', 'x'"
    for call, error, words in (
            (lambda: actkit.nn.ELU(saves="output"), ValueError, bad),
            (lambda: actkit.functional.elu(x, saves=None), ValueError, bad),
            (lambda: actkit.nn.GELU(saves="y", saved_bits=2), ValueError, "does not go with saved_bits=2"),
            (lambda: actkit.nn.PReLU(saves="y"), TypeError, "prelu takes no saves="),
            (lambda: actkit.nn.Softmax(saves="y"), TypeError, "softmax takes no saves="),
            (lambda: actkit.functional.glu(x.view(2, 5).detach(), act="elu", saves="y"), TypeError,
             "saves is not available for GLUs"),
            (lambda: actkit.patch(nn.Sequential(nn.ELU()), saves="Y"), ValueError, "patch: saves must be one of"),
            (lambda: actkit.patch(nn.Sequential(nn.ELU()), impl="torch", saves="y"), ValueError, "needs impl='actkit'"),
    ):
        with pytest.raises(error, match=words):
            call()


def test_a_module_keeps_its_policy_through_pickling(tmp_path):
    model = nn.Sequential(actkit.nn.ELU(saves="y"), actkit.nn.Softplus(beta=2.0, saves="x"))
    torch.save(model, tmp_path / "model.pt")
    for copied in (torch.load(tmp_path / "model.pt", weights_only=False), copy.deepcopy(model)):
        assert [m._op.saves for m in copied] == ["y", "x"] and [m.saves for m in copied] == ["y", "x"]
    op = model[0]._op
    assert pickle.loads(pickle.dumps(op)) is op


@pytest.mark.parametrize("saves", ["torch", "y", "x"])
def test_compiled_calls_carry_the_saved_tensor(saves):
    """Under torch.compile the custom op carries what is saved, and its backward (the op it resolves
    from those constants) gives eager's gradient."""
    torch._dynamo.reset()
    x = torch.randn(16, requires_grad=True)
    calls = []

    def spy(graph, example_inputs):
        calls.extend(n.args for n in graph.graph.nodes
                     if n.target in (torch.ops.actkit.activation, torch.ops.actkit.activation.default))
        return graph

    def fn(t):
        return actkit.functional.elu(t, 0.5, saves=saves) * 2

    eager = torch.autograd.grad(fn(x).sum(), x)[0]  # binds the op eagerly first: dynamo trips on a first binding
    y = torch.compile(fn, fullgraph=True, backend=spy)(x)
    assert [args[1:5] for args in calls] == [("elu", 0.5, 0.0, "y" if saves == "y" else "x")]
    torch.testing.assert_close(torch.autograd.grad(y.sum(), x)[0], eager, rtol=0, atol=0)


def test_actkit_list_shows_what_each_policy_keeps():
    import json

    from typer.testing import CliRunner

    from actkit.cli.main import app

    result = CliRunner().invoke(app, ["list", "--json"])
    assert result.exit_code == 0, result.output
    records = {r["name"]: r for r in json.loads(result.output)["activations"]}
    fields = ("saves_for_backward", "saves_with_saves_y", "torch_saves")
    kept = {name: tuple(records[name][f] for f in fields) for name in ("relu", "elu", "gelu", "softmax")}
    assert kept == {"relu": ("y", "y", "y"), "elu": ("x", "y", "x"), "gelu": ("x", "x", "x"),
                    "softmax": ("y", "y", "y")}
