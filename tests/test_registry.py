"""The registry's public API: names, aliases, errors, parameters, derived functions and classes."""
import inspect

import pytest
import torch

import actkit

REQUIRED = ["identity", "step", "sigmoid", "tanh", "relu", "relu6", "leaky_relu", "elu", "celu", "selu", "gelu",
            "gelu_tanh", "gelu_sigmoid", "silu", "mish", "lisht", "softplus", "softsign", "hardswish",
            "hardsigmoid", "hardtanh", "logsigmoid", "tanhshrink"]


def test_every_required_activation_is_registered():
    assert set(REQUIRED) <= set(actkit.available())


def test_aliases_are_case_insensitive():
    assert actkit.get("Swish") is actkit.get("silu")
    assert actkit.get("LINEAR") is actkit.get("identity")
    assert actkit.get("Leaky-ReLU") is actkit.get("leaky_relu")


def test_unknown_name_suggests_the_closest_and_lists_valid_names():
    with pytest.raises(ValueError) as err:
        actkit.get("mihs")
    message = str(err.value)
    assert "Did you mean 'mish'" in message
    assert "Valid names:" in message and "relu" in message


def test_unknown_name_without_close_match_still_lists_names():
    with pytest.raises(ValueError, match="Valid names: .*gelu"):
        actkit.get("zzzzzz")


def test_non_string_name_is_a_type_error():
    with pytest.raises(TypeError):
        actkit.get(3)


@pytest.mark.parametrize("name", REQUIRED)
def test_functional_and_module_exist_for_every_activation(name):
    spec = actkit.get(name)
    fn = getattr(actkit.functional, name)
    signature = inspect.signature(fn).parameters.values()
    assert [p.name for p in signature if p.kind is p.POSITIONAL_OR_KEYWORD] == [p.name for p in spec.params]
    # Options are keyword-only, so they never shadow an activation parameter: softmax's dtype, and
    # the save policy and few-bit backward wherever there is a backward (not step, whose f' is 0).
    options = {"rowwise": ["dtype"], "learnable": []}.get(spec.kind.name,
                                                          ["saves", "saved_bits"] if spec.differentiable else [])
    assert [p.name for p in signature if p.kind is p.KEYWORD_ONLY] == options
    assert isinstance(getattr(actkit.nn, spec.class_name)(), actkit.nn.Activation)
    x = torch.linspace(-4, 4, 41)
    torch.testing.assert_close(fn(x), spec.reference(x, **spec.defaults))
    for alias in spec.aliases:
        torch.testing.assert_close(getattr(actkit.functional, alias)(x), fn(x))


def test_parameters_bind_positionally_and_by_keyword():
    spec = actkit.get("hardtanh")
    assert spec.bind((-2.0,), {"max_val": 3}) == {"min_val": -2.0, "max_val": 3.0}
    assert spec.kernel_args({"min_val": -2.0, "max_val": 3.0}) == (-2.0, 3.0)
    assert actkit.get("relu").kernel_args({}) == (0.0, 0.0)


@pytest.mark.parametrize("call, error, match", [
    (lambda: actkit.functional.relu(torch.ones(2), alpha=1.0), TypeError, "relu has no parameter 'alpha'; its parameters: none"),
    (lambda: actkit.functional.elu(torch.ones(2), beta=1.0), TypeError, "its parameters: alpha"),
    (lambda: actkit.functional.elu(torch.ones(2), alpha="big"), TypeError, "must be a real number"),
    (lambda: actkit.functional.elu(torch.ones(2), alpha=float("nan")), ValueError, "must be finite"),
    (lambda: actkit.functional.elu(torch.ones(2), 1.0, 2.0), TypeError, "takes 1 parameter"),
    (lambda: actkit.functional.elu(torch.ones(2), 1.0, alpha=2.0), TypeError, "both positionally and by keyword"),
    (lambda: actkit.functional.hardtanh(torch.ones(2), min_val=1.0, max_val=-1.0), ValueError, "min_val <= max_val"),
    (lambda: actkit.functional.celu(torch.ones(2), alpha=0.0), ValueError, "alpha must be non-zero"),
    (lambda: actkit.functional.softplus(torch.ones(2), beta=0), ValueError, "beta must be non-zero"),
    (lambda: actkit.functional.mish([1.0, 2.0]), TypeError, "expects a torch.Tensor"),
])
def test_bad_parameters_get_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_register_rejects_a_taken_name():
    with pytest.raises(ValueError, match="already registered"):
        actkit.register(actkit.get("mish"))


def test_specs_are_consistent():
    for spec in actkit.registry.REGISTRY.values():
        assert spec.formula and spec.output_range and spec.class_name
        assert spec.saves in actkit.registry.SAVES


def _table_users(table, pointwise: bool):
    return {spec.table_key for spec in actkit.registry.REGISTRY.values()
            if (spec.kind.scalar_params if pointwise else spec.kind.learnable)}


def test_every_device_function_table_entry_serves_a_spec_and_back():
    """The registry points into the kernels' tables by key: no spec without its device functions,
    no device functions that nothing uses, and every ``@triton.jit`` f / f' in the module listed (an
    activation added from outside actkit lists its own, defined elsewhere: tests/test_extending.py)."""
    from actkit.kernels import activations, learnable

    assert _table_users(activations.TABLE, pointwise=True) == set(activations.TABLE)
    assert _table_users(learnable.TABLE, pointwise=False) == set(learnable.TABLE)
    listed = {fn for entry in activations.TABLE.values() for fn in entry if fn is not None}
    for spec in actkit.registry.REGISTRY.values():  # and the forms a plan reaches (softplus's), each
        entry = activations.TABLE.get(spec.table_key) if spec.kind.scalar_params else None
        if entry is not None and entry.fwd_plan is not None:
            cases = [spec.kernel_args(spec.defaults)] + [(p0, p1) for _, p0, p1 in entry.fwd_plan_cases]
            listed |= {entry.fwd_plan(p0, p1)[0] for p0, p1 in cases}
    defined = {v for k, v in vars(activations).items() if k.endswith(("_fwd", "_bwd", "_bwd_y", "_zero", "_zero_y"))}
    assert defined <= listed
    for spec in actkit.registry.REGISTRY.values():
        if spec.kind.scalar_params and spec.differentiable:
            for saved in {"x", spec.saves_for(spec.defaults)} - {"none"}:
                assert spec.triton_derivative(saved) is not None, (spec.name, saved)


def test_softplus_thresholds_of_the_registry_and_the_kernels_agree():
    """Saving y (the registry) and skipping the linear branch's test (the kernels' plain forward) rest
    on one fact, that past this threshold x + log1p(e^(-beta x)) / beta rounds to x: one number."""
    from actkit.kernels import activations

    assert actkit.registry.SOFTPLUS_Y_MIN_THRESHOLD == activations.SOFTPLUS_INERT_THRESHOLD
