"""Selective activation checkpointing with a policy that names actkit's ops.

``torch.utils.checkpoint(..., context_fn=partial(create_selective_checkpoint_contexts, policy))``
asks ``policy`` about every op the checkpointed forward dispatches. actkit's ops are
``torch.ops.actkit.*`` (the eager route takes them too while such a policy's dispatch mode is active),
so ``MUST_SAVE`` keeps their output and the backward does not run them again; ``MUST_RECOMPUTE``
runs them again (``PREFER_RECOMPUTE`` does too in eager mode; under torch.compile it lets the
partitioner choose, which may keep an opaque op's output). The gradients are those of the same call
without checkpointing. Counted here: how often an op's implementation ran (``Implementation.op_forward``,
what the custom ops call), in a region whose backward needs the op's output (it is multiplied by a
parameter).
"""
import functools

import pytest
import torch
import torch._functorch.config
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

import actkit
from actkit.kinds import base, fewbit, glu
from kindcases import CASES
from refcheck import KERNEL_DEVICE, backend

BACKENDS = {"torch": "cpu", "triton": KERNEL_DEVICE}
POLICIES = {"must_save": (CheckpointPolicy.MUST_SAVE, 1), "must_recompute": (CheckpointPolicy.MUST_RECOMPUTE, 2)}
ONE_PER_KIND = [c for c in CASES if c.id in {"gelu", "sigmoid", "gelu:saved_bits=2", "prelu:C=3", "softmax:dim=-1",
                                               "swiglu:dim=-1", "glu:a,b"}]


def actkit_policy(decision):
    """``decision`` for actkit's ops, recompute the rest: the policy the README shows."""
    def policy(ctx, op, *args, **kwargs):
        return decision if op.namespace == "actkit" else CheckpointPolicy.PREFER_RECOMPUTE
    return policy


@pytest.fixture
def runs(monkeypatch):
    """The list that every run of an actkit op's implementation appends to."""
    calls = []
    for cls in (base.Implementation, fewbit.FewBitImpl):
        run = cls.op_forward
        monkeypatch.setattr(cls, "op_forward", lambda self, *a, _run=run: calls.append(self) or _run(self, *a))
    return calls


def checkpointed(fn, decision):
    """``fn`` in a non-reentrant checkpoint whose policy gives actkit's ops ``decision``."""
    context = functools.partial(create_selective_checkpoint_contexts, actkit_policy(decision))
    return lambda *t: checkpoint(fn, *t, use_reentrant=False, context_fn=context)


def scaled(fn):
    """``fn(*inputs) * scale``, scale the last input: its gradient needs fn's output, so the backward
    must have that output, saved or recomputed (an op's own backward may need only its input)."""
    return lambda *t: fn(*t[:-1]) * t[-1]


def _grads(fn, inputs):
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    leaves.append(torch.tensor(1.5, device=leaves[0].device, requires_grad=True))
    y = fn(*leaves)
    weights = torch.linspace(-1, 2, y.numel(), device=y.device).reshape(y.shape).to(y.dtype)
    return torch.autograd.grad(y, leaves, weights)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_policy_naming_actkit_ops_decides_in_eager_mode(case, backend_name, policy, runs):
    decision, expected_runs = POLICIES[policy]
    inputs = case.inputs(torch.float32, BACKENDS[backend_name])
    with backend(backend_name):
        expected = _grads(scaled(case.fn), inputs)
        runs.clear()
        got = _grads(checkpointed(scaled(case.fn), decision), inputs)
    assert len(runs) == expected_runs, f"{policy}: the actkit op ran {len(runs)} times"
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=0, atol=0)


# AOTAutograd's cache keys a graph without the policy: a graph partitioned for MUST_SAVE would be
# replayed for MUST_RECOMPUTE (and the design notes' stale-backward trap): off for these tests.
no_cached_partition = (torch._functorch.config.patch(enable_autograd_cache=False)
                       if hasattr(torch._functorch.config, "enable_autograd_cache") else (lambda test: test))


@pytest.mark.slow
@no_cached_partition
@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("case", ONE_PER_KIND, ids=[c.id for c in ONE_PER_KIND])
def test_policy_naming_actkit_ops_decides_under_torch_compile(case, backend_name, runs):
    """The compiled graph keeps the op's output or runs it again in backward, as the policy says (GLUs
    on the "kernel" compile path: the default composite has no actkit op to name). The backend
    choice is fresh, so it is first looked up while Dynamo traces the checkpointed region (a
    higher-order op, where a global may not change). The op itself is bound before, as a module
    binds it at construction: a first call that binds one (an insertion into actkit's op cache)
    inside a compiled checkpoint is refused by Dynamo ("HOP: Unsafe side effect")."""
    inputs = case.inputs(torch.float32, BACKENDS[backend_name])
    glu.set_compile_path("kernel")
    try:
        with backend(backend_name):
            case.fn(*inputs)  # binds the op
            actkit.set_backend(backend_name)  # a fresh choice, as in a new process
            results = {}
            for policy, (decision, expected_runs) in POLICIES.items():
                torch._dynamo.reset()  # Dynamo's guards do not cover what the policy decides
                compiled = torch.compile(checkpointed(scaled(case.fn), decision), fullgraph=True)
                _grads(compiled, inputs)  # compiles (and runs) once
                runs.clear()
                results[policy] = _grads(compiled, inputs)
                assert len(runs) == expected_runs, f"{policy}: the actkit op ran {len(runs)} times"
            expected = _grads(scaled(case.fn), inputs)
        for got in results.values():
            for g, e in zip(got, expected):
                torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-6)
    finally:
        glu.set_compile_path(None)
        torch._dynamo.reset()


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    act = actkit.nn.Activation(name) if name != "gelu:saved_bits=2" else actkit.nn.GELU(saved_bits=2)
    width = 8 if actkit.get(name.split(":")[0]).kind.gated else 16
    return torch.nn.Sequential(torch.nn.Linear(8, 16), act, torch.nn.Linear(width, 4))


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("name", ["gelu", "sigmoid", "gelu:saved_bits=2", "prelu", "softmax", "swiglu"])
def test_checkpoint_with_autocast_on_cpu(name, backend_name, runs):
    """Linear -> act -> Linear under CPU autocast (bf16: actkit sees the Linear's bf16 output), in a
    checkpoint with the policy: the op's output is kept (it ran once), and every parameter's gradient
    is the uncheckpointed model's, bit for bit (the backward's recompute replays the same autocast)."""
    device = BACKENDS[backend_name]
    model = _model(name).to(device)
    x = torch.randn(6, 8, device=device)
    results = []
    with backend(backend_name):
        for saved in (False, True):
            model.zero_grad()
            runs.clear()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = checkpointed(model, CheckpointPolicy.MUST_SAVE)(x) if saved else model(x)
            assert y.dtype == torch.bfloat16
            y.float().square().sum().backward()
            results.append([p.grad.clone() for p in model.parameters()])
    assert len(runs) == 1, f"the actkit op ran {len(runs)} times under the checkpoint"
    for got, expected in zip(*reversed(results)):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_the_list_form_names_the_forward_ops(runs):
    """``create_selective_checkpoint_contexts([ops])`` saves the listed ops' outputs: the README's short form."""
    ops = [torch.ops.actkit.activation.default, torch.ops.actkit.glu.default]
    context = functools.partial(create_selective_checkpoint_contexts, ops)
    x = torch.randn(4, 8, requires_grad=True)
    scale = torch.tensor(2.0, requires_grad=True)
    block = lambda t, s: actkit.functional.swiglu(actkit.functional.mish(t)) * s  # noqa: E731
    y = checkpoint(block, x, scale, use_reentrant=False, context_fn=context)
    y.sum().backward()
    assert len(runs) == 2  # mish and swiglu once each, kept for backward
