"""The two routes to an activation agree: eager (plain tensors: the bound op's implementation inside
one autograd.Function) and traced (the torch.library custom ops that torch.compile and tensor
subclasses go through). Parametrised over the whole registry, every kind, both backends."""
import pickle

import pytest
import torch

import actkit
from actkit import kinds
from actkit.kinds import elementwise
from refcheck import KERNEL_DEVICE, backend, kind_inputs

SPECS = list(actkit.registry.REGISTRY.values())
EAGER_NODES = {"EagerFunctionBackward", "EagerFunction2Backward"}  # autograd's names for actkit.kinds.base's Functions


class Subclass(torch.Tensor):
    """A tensor subclass with torch's default behaviour: it takes the traced route (custom ops)."""


def _run(spec, args, wrt):
    y = actkit.functional.apply(spec.name, *args)
    grads = torch.autograd.grad(y, wrt, torch.linspace(-1, 1, y.numel(), device=y.device).reshape(y.shape),
                                allow_unused=True) if spec.differentiable else ()
    return y, grads


@pytest.mark.parametrize("backend_name", ["triton", "torch"])
@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_eager_route_matches_the_custom_ops(spec, backend_name):
    device = KERNEL_DEVICE if backend_name == "triton" else "cpu"
    args, wrt = kind_inputs(spec, device)
    sub_args = tuple(a.detach().as_subclass(Subclass).requires_grad_(a.requires_grad)
                     if isinstance(a, torch.Tensor) else a for a in args)
    sub_wrt = tuple(a for a in sub_args if isinstance(a, torch.Tensor) and a.requires_grad)
    with backend(backend_name):
        y, grads = _run(spec, args, wrt)
        y_op, grads_op = _run(spec, sub_args, sub_wrt)
    assert type(y.grad_fn).__name__ in EAGER_NODES, "plain tensors take the eager route"
    assert type(y_op.grad_fn).__name__ not in EAGER_NODES, "subclasses take the custom ops"
    torch.testing.assert_close(y_op.as_subclass(torch.Tensor), y, rtol=0, atol=0, equal_nan=True)
    for a, b in zip(grads_op, grads):
        torch.testing.assert_close(a.as_subclass(torch.Tensor), b, rtol=0, atol=0, equal_nan=True)


def test_no_grad_calls_skip_autograd():
    x = torch.randn(8, requires_grad=True)
    with torch.no_grad():
        y = actkit.functional.mish(x)
    assert y.grad_fn is None and not y.requires_grad
    assert actkit.functional.mish(x.detach()).grad_fn is None


def test_module_parameters_are_fixed_at_construction():
    m = actkit.nn.LeakyReLU(0.2)
    with pytest.raises(TypeError):
        m.params["negative_slope"] = 0.3
    torch.testing.assert_close(m(torch.tensor([-1.0])), torch.tensor([-0.2]))
    clone = pickle.loads(pickle.dumps(m))
    assert clone.params == {"negative_slope": 0.2} and clone(torch.tensor([-1.0])).item() == pytest.approx(-0.2)


def test_parameters_are_bound_once_and_still_validated_on_every_call():
    spec = actkit.get("leaky_relu")
    assert elementwise.bind(spec, (0.2,)) is elementwise.bind(spec, (), {"negative_slope": 0.2})
    x = torch.randn(4)
    for _ in range(2):  # a refused value is never cached
        with pytest.raises(ValueError, match="alpha must be non-zero"):
            actkit.functional.celu(x, alpha=0.0)
    with pytest.raises(TypeError, match="mish expects a torch.Tensor, got list"):
        actkit.functional.mish([1.0, 2.0])
    with pytest.raises(TypeError, match="Mish expects a torch.Tensor|mish expects a torch.Tensor"):
        actkit.nn.Mish()([1.0])
