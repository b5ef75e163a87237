"""One of the two processes of tests/test_dtensor.py: every check on DTensors, in one gloo process group.

Run as ``python tests/dtensor_worker.py RANK WORLD_SIZE RENDEZVOUS_FILE OUT_DIR``. Each check (a
:data:`CASES` entry) runs on both ranks, collectives in the same order; a rank writes
``OUT_DIR/rank<RANK>.json``: ``{case: "ok" or the failure}``. The test module reads it, one test per
case, so that the process group (and the start of two interpreters) is paid once per module.

Every check compares actkit on DTensors with two independent things on the same inputs: the value
with the single-process op on the whole tensor, and the placements with what torch's own op (the
registry's reference: F.silu, torch.softmax, F.prelu, ``act(a) * b``) gives on the same DTensor.
"""
from __future__ import annotations

import copy
import datetime
import json
import sys
import traceback
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

import actkit
import actkit.functional as AF
from actkit import registry
from actkit.kinds import sharding
from refcheck import sum_error_bound

# actkit never imports torch.distributed.tensor (a second or more): each kind's rule waits until a call on
# the traced route finds DTensor loaded. So this worker uses every kind before loading it, and the first
# case checks that the rules were waiting and that a compiled call registers them.
AF.silu(torch.ones(2)), AF.prelu(torch.ones(2), 0.25), AF.softmax(torch.ones(2), -1), AF.swiglu(torch.ones(2))
WAITING_BEFORE_DTENSOR = None if "torch.distributed.tensor" in sys.modules else len(sharding._waiting)

from torch.distributed.tensor import (DTensor, Replicate, Shard, distribute_tensor,  # noqa: E402
                                      init_device_mesh)

DTYPE = torch.float64
# float64 throughout: actkit's result on a shard and on the whole tensor are the same float64 formula,
# except that a shard may run ATen's scalar tail loop where the whole tensor ran its vector loop (a few
# ulp, 2^-52 each) and a matmul or sum may add its <= 64 terms in another order (<= 64 * 2^-53 of the sum
# of |terms|, below 1e-13 here). A wrong placement (a shard's rows mixed up, an unsummed Partial, the
# wrong half of a GLU) is wrong by O(1).
VALUES = dict(rtol=1e-10, atol=1e-12)
SHAPE = (5, 6, 8)  # batch (uneven over 2 ranks), channels (dim 1, as torch.nn.PReLU counts them), features (last)
PLACEMENTS = {"shard0": Shard(0), "shard_last": Shard(len(SHAPE) - 1), "replicate": Replicate()}
LEARNABLE_PLACEMENTS = {**PLACEMENTS, "shard_channel": Shard(1)}


def data(*shape, seed: int) -> torch.Tensor:
    """The same tensor on every rank."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)


def as_dtensor(t: torch.Tensor, mesh, placement) -> DTensor:
    return distribute_tensor(t.detach().clone(), mesh, [placement]).requires_grad_(t.requires_grad)


def full(t) -> torch.Tensor:
    return t.full_tensor() if isinstance(t, DTensor) else t


def check_close(got, want, what: str) -> None:
    torch.testing.assert_close(full(got), want, **VALUES, msg=lambda m: f"{what}: {m}")


def check_same_placements(got, want, what: str) -> None:
    assert tuple(got.placements) == tuple(want.placements), \
        f"{what}: actkit gives {tuple(got.placements)}, torch {tuple(want.placements)}"


def run_three_ways(ours, torch_op, inputs: dict, mesh, placement, grad_names: tuple[str, ...]):
    """``ours`` on DTensors of ``inputs`` (placed by ``placement(name)``), ``torch_op`` on the same DTensors
    and ``ours`` on the whole tensors; forward and a backward of ``sum(y * dy)`` each. Returns the three
    (output, {name: grad}) and checks the distributed one's values against the single-process one."""
    results = []
    for op, distributed in ((ours, True), (torch_op, True), (ours, False)):
        tensors = {n: (as_dtensor(t, mesh, placement(n)) if distributed else t.detach().clone().requires_grad_())
                   for n, t in inputs.items()}
        for n in grad_names:
            tensors[n].requires_grad_()
        y = op(*tensors.values())
        dy = data(*y.shape, seed=99)
        (y * (distribute_tensor(dy, mesh, [Replicate()]) if distributed else dy)).sum().backward()
        results.append((y, {n: tensors[n].grad for n in grad_names}))
    (mine, my_grads), (theirs, their_grads), (single, single_grads) = results
    check_close(mine, single.detach(), "output")
    check_same_placements(mine, theirs, "output placements")
    for n in grad_names:
        check_same_placements(my_grads[n], their_grads[n], f"d{n} placements")
    return results


# -- the kinds, one case per kind, activation and placement ---------------------------------------
def elementwise_case(name: str, params: dict, placement):
    def case(mesh):
        spec = registry.get(name)
        (_, mine), _, (_, single) = run_three_ways(lambda x: getattr(AF, name)(x, **params),
                                                   lambda x: spec.reference(x, **params),
                                                   {"x": data(*SHAPE, seed=1)}, mesh, lambda n: placement, ("x",))
        check_close(mine["x"], single["x"], "dx")
    return case


# torch's references for the learnable kind, written in torch ops: F.prelu has no DTensor backward in torch
# 2.14 (aten._prelu_kernel_backward has no sharding strategy), so the placements to match are those of
# torch's composite; and d(y)/d(weight) per element, float64, for the bound on the parameter's gradient.
LEARNABLE = {
    "prelu": (lambda x, a: torch.where(x > 0, x, registry.per_channel(a, x) * x),
              lambda x, a: torch.where(x > 0, torch.zeros_like(x), x)),
    "swish_beta": (lambda x, b: x * torch.sigmoid(registry.per_channel(b, x) * x),
                   lambda x, b: (lambda s: x * x * s * (1 - s))(torch.sigmoid(registry.per_channel(b, x) * x))),
}


def learnable_case(name: str, channels: int, placement):
    def case(mesh):
        composite, dy_dweight = LEARNABLE[name]
        x, weight = data(*SHAPE, seed=2), 0.5 + 0.3 * data(channels, seed=3)
        (_, mine), _, (_, single) = run_three_ways(
            lambda x, weight: getattr(AF, name)(x, weight), composite, {"x": x, "weight": weight},
            mesh, lambda n: placement if n == "x" else Replicate(), ("x", "weight"))
        check_close(mine["x"], single["x"], "dx")
        # The parameter's gradient sums dy * dy/dweight over every element of its channel: the ranks' partial
        # sums and the whole tensor's sum add in different orders, each within sum_error_bound of the exact sum.
        terms = data(*SHAPE, seed=99) * dy_dweight(x, weight)
        dims = [d for d in range(x.dim()) if d != 1] if channels > 1 else None
        bound = 2 * sum_error_bound(terms, dims, accumulate=DTYPE).reshape(weight.shape)
        error = (full(mine["weight"]) - single["weight"]).abs()
        worst = int((error - bound).argmax())
        assert bool((error <= bound).all()), \
            f"dweight[{worst}] off by {error[worst].item():.3g}, bound {bound[worst].item():.3g}"
        torch.testing.assert_close(single["weight"], terms.sum(dims).reshape(weight.shape), **VALUES)
    return case


def rowwise_case(name: str, dim: int, placement):
    def case(mesh):
        spec = registry.get(name)
        (_, mine), _, (_, single) = run_three_ways(lambda x: getattr(AF, name)(x, dim), lambda x: spec.reference(x, dim),
                                                   {"x": data(*SHAPE, seed=4)}, mesh, lambda n: placement, ("x",))
        check_close(mine["x"], single["x"], "dx")
    return case


def glu_case(name: str, dim: int | None, placement):
    """One tensor split along ``dim``, or (dim None) two tensors a and b."""
    def case(mesh):
        spec = registry.get(name)
        if dim is None:
            inputs, names = {"x": data(*SHAPE, seed=5), "y": data(*SHAPE, seed=6)}, ("x", "y")
            ours, theirs = (lambda x, y: getattr(AF, name)(x, y)), (lambda x, y: spec.reference(x, y))
        else:
            inputs, names = {"x": data(*SHAPE, seed=5)}, ("x",)
            ours, theirs = (lambda x: getattr(AF, name)(x, dim=dim)), (lambda x: spec.reference(x, dim=dim))
        (_, mine), _, (_, single) = run_three_ways(ours, theirs, inputs, mesh, lambda n: placement, names)
        for n in names:
            check_close(mine[n], single[n], f"d{n}")
    return case


def fewbit_case(name: str, bits: int, placement):
    """The forward is the activation's; the gradient the few-bit one, which the single-process op gives too."""
    def case(mesh):
        spec = registry.get(name)
        (_, mine), _, (_, single) = run_three_ways(lambda x: getattr(AF, name)(x, saved_bits=bits),
                                                   lambda x: spec.reference(x), {"x": data(*SHAPE, seed=7)}, mesh,
                                                   lambda n: placement, ("x",))
        check_close(mine["x"], single["x"], "dx")
    return case


# -- models: tensor parallel, actkit.patch, nn modules, FSDP2 -----------------------------------------
class SwiGLUMLP(nn.Module):
    """A transformer's feed-forward block: down(swiglu(gate(x), up(x)))."""

    def __init__(self, width: int = 8, hidden: int = 16):
        super().__init__()
        self.gate, self.up = nn.Linear(width, hidden, bias=False), nn.Linear(width, hidden, bias=False)
        self.act, self.down = actkit.nn.SwiGLU(), nn.Linear(hidden, width, bias=False)

    def forward(self, x):
        return self.down(self.act(self.gate(x), self.up(x)))


def torch_mlp() -> nn.Module:
    """An MLP of torch.nn activation modules, for actkit.patch to swap."""
    return nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8), nn.Softmax(dim=-1))


def train_steps(model: nn.Module, batches, steps: int = 2) -> tuple[list[float], dict]:
    """``steps`` of SGD on ``mean(model(x) * target)``: the losses and the gradients of the last step."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for x, target in batches[:steps]:
        opt.zero_grad()
        loss = (full(model(x)) * target).mean()  # full_tensor() is differentiable
        loss.backward()
        losses.append(float(full(loss)))
        grads = {n: full(p.grad).clone() for n, p in model.named_parameters()}
        opt.step()
    return losses, grads


def check_same_run(got, want, what: str) -> None:
    (losses, grads), (want_losses, want_grads) = got, want
    torch.testing.assert_close(torch.tensor(losses, dtype=DTYPE), torch.tensor(want_losses, dtype=DTYPE), **VALUES,
                               msg=lambda m: f"{what} losses: {m}")
    assert grads.keys() == want_grads.keys()
    for name in grads:
        check_close(grads[name], want_grads[name], f"{what} grad of {name}")


def model_batches(rows: int, seed: int = 10):
    return [(data(rows, 8, seed=seed + i), data(rows, 8, seed=seed + 100 + i)) for i in range(2)]


def copy_of(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)


def tensor_parallel_swiglu(mesh):
    """ColwiseParallel gate and up (their outputs stay DTensors, Shard(-1), so SwiGLU gets DTensors),
    RowwiseParallel down: the same losses and gradients as the model in one process."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    torch.manual_seed(0)
    single = SwiGLUMLP().to(DTYPE)
    tp = parallelize_module(copy_of(single), mesh, {"gate": ColwiseParallel(use_local_output=False),
                                                     "up": ColwiseParallel(use_local_output=False),
                                                     "down": RowwiseParallel()})
    seen = []
    tp.act.register_forward_hook(lambda m, args, out: seen.append((type(out), tuple(out.placements))))
    batches = model_batches(4)
    check_same_run(train_steps(tp, batches), train_steps(single, batches), "tensor parallel")
    assert seen[0] == (DTensor, (Shard(1),)), f"SwiGLU's output: {seen[0]}"  # Shard(-1) of the (4, 16) hidden


def patched_tensor_parallel(mesh):
    """actkit.patch on a tensor-parallel model of torch modules (GELU between the colwise and rowwise
    linears gets DTensors; the Softmax after them, its replicated output)."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    torch.manual_seed(1)
    single = torch_mlp().to(DTYPE)
    tp = parallelize_module(copy_of(single), mesh, {"0": ColwiseParallel(use_local_output=False),
                                                     "2": RowwiseParallel(use_local_output=False)})
    report = actkit.patch(tp)
    assert [type(m).__name__ for m in tp] == ["Linear", "GELU", "Linear", "Softmax"]
    assert all(type(m).__module__.startswith("actkit") for m in (tp[1], tp[3])), report
    batches = model_batches(4)
    check_same_run(train_steps(tp, batches), train_steps(single, batches), "patched tensor parallel")


def distributed_modules(mesh):
    """actkit.nn modules with their parameters distributed (distribute_module: replicated) on sharded inputs."""
    from torch.distributed.tensor import distribute_module

    for placement in PLACEMENTS.values():
        for make in (lambda: actkit.nn.GELU(), lambda: actkit.nn.Softmax(dim=-1), lambda: actkit.nn.SwiGLU(dim=1),
                     lambda: actkit.nn.PReLU(num_parameters=SHAPE[1], init=0.1)):
            single = make().to(DTYPE)
            module = distribute_module(copy_of(single), mesh)
            x = data(*SHAPE, seed=12)
            y = module(as_dtensor(x, mesh, placement))
            check_close(y, single(x), f"{single!r} on {placement}")


def fsdp2(mesh):
    """fully_shard of an MLP with actkit.nn.GELU and a per-channel actkit.nn.PReLU (its parameter sharded
    by FSDP): each rank trains on its half of the batch; losses averaged over ranks and gradients equal the
    one-process run on the whole batch."""
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(2)
    single = nn.Sequential(nn.Linear(8, 16), actkit.nn.GELU(), nn.Linear(16, 8), actkit.nn.PReLU(num_parameters=8),
                           nn.Linear(8, 8)).to(DTYPE)
    sharded = copy_of(single)
    for layer in sharded:
        if any(True for _ in layer.parameters()):
            fully_shard(layer, mesh=mesh)
    fully_shard(sharded, mesh=mesh)
    batches, rank, world = model_batches(8), mesh.get_local_rank(), mesh.size()
    local = [(x.chunk(world)[rank], t.chunk(world)[rank]) for x, t in batches]
    losses, grads = train_steps(sharded, local)
    mean_losses = []
    for value in losses:
        total = torch.tensor([value], dtype=DTYPE)
        dist.all_reduce(total)
        mean_losses.append(float(total) / world)
    check_same_run((mean_losses, grads), train_steps(single, batches), "FSDP2")


def compiled_before_eager(mesh):
    """torch.compile(fullgraph=True) of actkit ops on DTensors before any eager DTensor call: the rules that
    waited for DTensor are registered while Dynamo traces, and the compiled results are the eager ones."""
    assert WAITING_BEFORE_DTENSOR == 4, f"rules waiting before DTensor was loaded: {WAITING_BEFORE_DTENSOR}"
    x = data(*SHAPE, seed=13)
    for f in (lambda t: AF.silu(t), lambda t: AF.softmax(t, -1)):
        dx = as_dtensor(x, mesh, Shard(0)).requires_grad_()
        y = torch.compile(f, fullgraph=True, backend="aot_eager")(dx)
        y.sum().backward()
        single = x.clone().requires_grad_()
        want = f(single)
        want.sum().backward()
        check_close(y, want.detach(), "compiled output")
        check_close(dx.grad, single.grad, "compiled dx")
    assert sharding._waiting == [], "rules still waiting after compiled DTensor calls"


CASES: dict[str, object] = {"compiled-before-eager": compiled_before_eager}
for _where, _p in PLACEMENTS.items():
    for _name, _params in (("silu", {}), ("sigmoid", {}), ("leaky_relu", {"negative_slope": 0.2}), ("lisht", {})):
        CASES[f"elementwise-{_name}-{_where}"] = elementwise_case(_name, _params, _p)
    CASES[f"fewbit-gelu-2bit-{_where}"] = fewbit_case("gelu", 2, _p)
    CASES[f"rowwise-softmax-last-{_where}"] = rowwise_case("softmax", -1, _p)
    CASES[f"rowwise-log_softmax-dim0-{_where}"] = rowwise_case("log_softmax", 0, _p)
    CASES[f"glu-swiglu-last-{_where}"] = glu_case("swiglu", -1, _p)
    CASES[f"glu-geglu-dim1-{_where}"] = glu_case("geglu", 1, _p)
    CASES[f"glu-swiglu-pair-{_where}"] = glu_case("swiglu", None, _p)
for _where, _p in LEARNABLE_PLACEMENTS.items():
    CASES[f"learnable-prelu-per_channel-{_where}"] = learnable_case("prelu", SHAPE[1], _p)
    CASES[f"learnable-prelu-shared-{_where}"] = learnable_case("prelu", 1, _p)
    CASES[f"learnable-swish_beta-per_channel-{_where}"] = learnable_case("swish_beta", SHAPE[1], _p)
CASES.update({"tensor-parallel-swiglu-mlp": tensor_parallel_swiglu, "patch-tensor-parallel": patched_tensor_parallel,
              "nn-modules": distributed_modules, "fsdp2-mlp": fsdp2})


# -- entry point -------------------------------------------------------------------------------------
def main(rank: int, world: int, rendezvous: str, out: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))
    mesh = init_device_mesh("cpu", (world,))
    results = {}
    for name, case in CASES.items():
        try:
            case(mesh)
            results[name] = "ok"
        except Exception:  # noqa: BLE001 (the report says what failed; the test asserts on it)
            results[name] = traceback.format_exc(limit=6)
    dist.destroy_process_group()
    tmp = out / f"rank{rank}.json.tmp"
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(out / f"rank{rank}.json")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))
