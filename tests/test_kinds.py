"""The kind protocol: every registry spec's Kind answers the questions asked of it, and every kind's
module provides the same functions, with bound ops that come back from the constants they carry."""
import pickle

import pytest
import torch

import actkit
from actkit import kinds
from actkit.kinds import base
from refcheck import backend, kind_inputs

PROTOCOL = ("resolve", "op_for", "apply", "functional", "parameters", "init_module", "module_kwargs",
            "init_reference", "reference_forward")


SPECS = list(actkit.registry.REGISTRY.values())
# ATen's hardsigmoid_backward multiplies by 1/6 rounded to float32 even for float64 tensors (3e-8 relative);
# actkit, reading f' from y, multiplies by the float64 1/6.
ATEN_FP32_CONSTANT = {"hardsigmoid": 2 ** -24}


@pytest.mark.parametrize("kind", list(kinds.KINDS.values()), ids=str)
def test_kind_module_provides_the_protocol(kind):
    missing = [name for name in PROTOCOL if not callable(getattr(kind.ops, name, None))]
    assert missing == []
    assert kind.pointwise == (kind.not_pointwise is None)
    assert kinds.get(kind.name) is kind and str(kind) == kind.name
    assert pickle.loads(pickle.dumps(kind)) is kind


def test_every_spec_has_a_known_kind_and_strings_still_name_one():
    assert {s.kind for s in actkit.registry.REGISTRY.values()} == set(kinds.KINDS.values())
    spec = actkit.ActivationSpec("toy_kind", "f(x) = x", torch.clone, "ToyKind", "(-inf, inf)", monotonic=True,
                                 smooth=True, zero_centred=True, saturating=False, kind="learnable")
    assert spec.kind is kinds.LEARNABLE
    with pytest.raises(ValueError, match="unknown activation kind 'nope'; known: elementwise, learnable"):
        kinds.get("nope")


def test_kinds_answer_as_the_registry_documents_them():
    """One answer per question: pointwise kinds fill activation slots, the elementwise kind alone binds
    scalar parameters and has a few-bit backward."""
    get = actkit.get
    assert [get(n).kind.pointwise for n in ("gelu", "prelu", "softmax", "swiglu")] == [True, True, False, False]
    assert [n for n in kinds.KINDS if kinds.KINDS[n].few_bit] == ["elementwise"]
    assert get("prelu").kind.learnable and get("softmax").kind.normalises and get("geglu").kind.gated
    assert get("gelu").kind.keeps_input(get("gelu"), {}) and not get("relu").kind.keeps_input(get("relu"), {})
    assert [n for n in kinds.KINDS if kinds.KINDS[n].save_policy] == ["elementwise"]
    lrelu = get("leaky_relu")
    assert lrelu.kind.keeps_input(lrelu, {"negative_slope": 0.1})  # torch's leaky_relu keeps x
    assert not lrelu.kind.keeps_input(lrelu, {"negative_slope": 0.1}, saves="y")
    assert lrelu.kind.keeps_input(lrelu, {"negative_slope": -0.1}, saves="y")  # y cannot tell the sign of x


@pytest.mark.parametrize("name, args", [("leaky_relu", (0.2,)), ("gelu", ()), ("prelu", ()), ("softmax", ()),
                                        ("swiglu", ()), ("glu", ("tanh",))])
def test_bound_op_comes_back_from_its_key(name, args):
    """The constants a bound op's custom ops carry give the very op back (a named GLU: the generic GLU
    of the same gate, which computes the same), and so does unpickling."""
    spec = actkit.get(name)
    op = spec.kind.ops.op_for(spec, *args)
    assert isinstance(op, base.BoundOp)
    back = spec.kind.ops.resolve(*op.key)
    assert back is op or (spec.kind.gated and back.gate is op.gate and back.spec_name is None)
    assert pickle.loads(pickle.dumps(op)) is op


def test_few_bit_op_comes_back_from_its_key():
    spec = actkit.get("gelu")
    op = spec.kind.ops.op_for(spec, saved_bits=3)
    assert op.bits == 3 and op.key == ("gelu", 0.0, 0.0, 3)
    assert pickle.loads(pickle.dumps(op)) is op


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_every_activation_computes_its_reference_in_float64(spec):
    """Whatever its kind, an activation on the PyTorch backend computes its registry reference: in float64 its
    output, and the gradient of each tensor input, equal the reference's and autograd's of the reference. A kind
    may reach the same math by another route (f' read from y, a fused formula), so not to the bit: to 1e-10
    relative (each value here is a few float64 operations, 2^-53 each, on inputs of magnitude below 20)."""
    args, wrt = kind_inputs(spec, "cpu", torch.float64)
    with backend("torch"):
        y = actkit.functional.apply(spec.name, *args)
    y_ref = spec.reference(*args, **(spec.defaults if spec.kind.scalar_params else {}))
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
    if not spec.differentiable:
        return
    dy = torch.linspace(-1, 1, y.numel(), dtype=torch.float64).reshape(y.shape)
    grads = torch.autograd.grad(y, wrt, dy)
    rtol = ATEN_FP32_CONSTANT.get(spec.name, 1e-10)
    for ours, ref, name in zip(grads, torch.autograd.grad(y_ref, wrt, dy), ("x", "parameter")):
        torch.testing.assert_close(ours, ref, rtol=rtol, atol=1e-12, msg=lambda m: f"d{name}: {m}")


@pytest.mark.parametrize("make, message", [
    (lambda: actkit.nn.Activation("prelu", saved_bits=2),
     "PReLU: saved_bits (the few-bit backward) applies to elementwise activations only; prelu is a learnable "
     "activation, so drop saved_bits"),
    (lambda: actkit.nn.SwiGLU(saved_bits=2), "SwiGLU: saved_bits (the few-bit backward) applies to elementwise"),
    (lambda: actkit.nn.Softmax(saved_bits=1), "Softmax: saved_bits (the few-bit backward) applies to elementwise"),
    (lambda: actkit.nn.PReLU(slope=0.1), "PReLU: got an unexpected keyword argument 'slope'; its arguments: "
                                          "num_parameters, init, device, dtype"),
    (lambda: actkit.nn.Softmax(1, 2), "Softmax: too many positional arguments; its arguments: dim"),
    (lambda: actkit.nn.ReferenceActivation("prelu", saved_bits=2), "PReLU: saved_bits (the few-bit backward)"),
])
def test_module_arguments_a_kind_does_not_take_are_one_line(make, message):
    """Named after the module and what it takes, never after an internal function (``init_module()``)."""
    with pytest.raises(TypeError) as caught:
        make()
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    assert "init_module" not in str(caught.value) and "init_reference" not in str(caught.value)


def test_saved_bits_on_identity_is_refused_in_one_line():
    """identity keeps nothing for backward (dx = dy), so codes would add memory: refused, as step is."""
    for make in (lambda: actkit.nn.Identity(saved_bits=2),
                 lambda: actkit.functional.identity(torch.ones(3), saved_bits=2)):
        with pytest.raises(ValueError, match=r"^identity keeps nothing for backward \(its gradient is dy itself\), "
                                             r"so saved_bits has nothing to save$"):
            make()
    assert actkit.nn.Identity(saved_bits=0).saved_bits is None  # 0: the exact backward, as None
