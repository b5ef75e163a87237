"""``actkit train``: train the reference CNN with each activation and seed; compare with statistics."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import torch
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from actkit import data as data_mod
from actkit import diagnostics as diag_mod
from actkit import distributed as dist_mod
from actkit import hostload
from actkit import train as tr
from actkit.backend import BackendError
from actkit.models import IMPLS, MODELS
from actkit.results import format_bytes

from .main import app

err_console = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]Error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _pct(value: Optional[float], digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.{digits}f}"


def _num(value: Optional[float], fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _p(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return "<0.001" if value < 1e-3 else f"{value:.3f}"


def _sweep_line(runs, skipped, out, data) -> str:
    sizes = data.sizes
    return (f"[bold]{data.name}[/] from {data.source}: {sizes['train']} train / {sizes['val']} val / "
            f"{sizes['test']} test images. {len(runs)} run(s) to do"
            + (f", {len(skipped)} already finished (skipped)" if skipped else "") + f". Results: {out}")


def _epoch_text(config, entry) -> str:
    return (f"epoch {entry['epoch']}/{config.epochs} loss {entry['train_loss']:.4f} "
            f"val acc {100 * entry['val_acc']:.2f}%")


def _run_end_text(record) -> str:
    f, t = record["final"], record["timing"]
    return f"test acc {100 * f['test_acc']:.2f}% ({_num(t['train_images_per_s'], ',.0f')} img/s)"


class RichReporter(tr.Reporter):
    """One progress bar per run (loss and accuracy so far); per-run epoch tables when verbose.

    The live display starts with the first run, so what comes before it (a dataset download with
    torchvision's own progress bar) prints as it happens.
    """

    def __init__(self, progress: Progress, console: Console, verbose: bool):
        self.progress, self.console, self.verbose = progress, console, verbose
        self.task = None
        self.steps_per_epoch = 1

    def note(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def sweep_start(self, runs, skipped, out, data) -> None:
        self.console.print(_sweep_line(runs, skipped, out, data), highlight=False)
        self.progress.start()

    def run_start(self, config, steps_per_epoch, start_epoch) -> None:
        self.steps_per_epoch = steps_per_epoch
        resumed = f" (resumed after epoch {start_epoch})" if start_epoch else ""
        self.task = self.progress.add_task(f"{config.act_label}/{config.impl} seed {config.seed}{resumed}",
                                           total=config.epochs * steps_per_epoch,
                                           completed=start_epoch * steps_per_epoch, stats="")
        self.epochs = config.epochs

    def step(self, config, epoch, step_in_epoch, loss, acc) -> None:
        if loss is None:
            self.progress.advance(self.task)
        else:
            self.progress.update(self.task, advance=1,
                                 stats=f"epoch {epoch}/{config.epochs} loss {loss:.4f} acc {100 * acc:.2f}%")

    def epoch_end(self, config, entry) -> None:
        self.progress.update(self.task, stats=_epoch_text(config, entry))

    def run_end(self, config, record) -> None:
        f = record["final"]
        self.progress.update(self.task, stats=_run_end_text(record))
        if self.verbose:
            h = record["history"]
            table = Table(title=f"{record['id']} ({record['status']})", header_style="bold")
            for column in ("epoch", "train loss", "train acc %", "val loss", "val acc %", "train s", "eval s"):
                table.add_column(column, justify="right")
            for i in range(len(h["epoch"])):
                table.add_row(str(h["epoch"][i]), f"{h['train_loss'][i]:.4f}", _pct(h["train_acc"][i]),
                              f"{h['val_loss'][i]:.4f}", _pct(h["val_acc"][i]), f"{h['train_time_s'][i]:.1f}",
                              f"{h['eval_time_s'][i]:.1f}")
            table.caption = (f"test acc {_pct(f['test_acc'])}%, test loss {f['test_loss']:.4f}, "
                             f"macro-F1 {f['f1_macro']:.4f}")
            self.console.print(table)


class LineReporter(tr.Reporter):
    """Plain lines, each naming the worker: for several workers sharing one terminal (torchrun)."""

    def __init__(self, console: Console, worker: str):
        self.console, self.prefix = console, escape(f"[worker {worker}]")

    def note(self, text: str) -> None:
        self.console.print(f"{self.prefix} {text}", highlight=False, soft_wrap=True)

    def sweep_start(self, runs, skipped, out, data) -> None:
        self.note(_sweep_line(runs, skipped, out, data))

    def run_start(self, config, steps_per_epoch, start_epoch) -> None:
        self.note(f"{config.id}: started" + (f" (resumed after epoch {start_epoch})" if start_epoch else ""))

    def epoch_end(self, config, entry) -> None:
        self.note(f"{config.id}: {_epoch_text(config, entry)}")

    def run_end(self, config, record) -> None:
        self.note(f"{config.id}: {_run_end_text(record)}")


def summary_table(summary: Sequence[dict], baseline: str, device: str) -> Table:
    impls = {r["impl"] for r in summary}
    table = Table(title=f"Test accuracy over seeds (mean ± 95% CI), {device}", header_style="bold")
    table.add_column("activation", overflow="fold")  # labels carry parameters: never cut them short
    if len(impls) > 1:
        table.add_column("impl")
    peaks = any(r["peak_bytes"] is not None for r in summary)  # CUDA only: no empty column on CPU
    for column in ("seeds", "test acc %", "best / worst (seed)", "test loss", "train img/s", "step ms",
                   "saved for bwd", *(["peak mem"] if peaks else []), f"Δ vs {baseline} (pp)", "p (paired t)",
                   "signif.", "detectable (pp)"):
        table.add_column(column, justify="right", no_wrap=column != "p (paired t)")
    for r in summary:
        ci = f" ± {_pct(r['test_acc_ci'])}" if r["test_acc_ci"] is not None else " ± n/a"
        if r["act_label"] == baseline:
            diff, p, sig = "baseline", "-", "-"
        elif r["diff"] is None:
            diff, p, sig = "-", "-", "-"
        else:
            diff = f"{100 * r['diff']:+.2f}" + (f" ± {_pct(r['diff_ci'])}" if r["diff_ci"] is not None else "")
            p = _p(r["p_value"]) + (f" (Holm {_p(r['p_holm'])})" if r["p_holm"] is not None
                                    and r["p_holm"] != r["p_value"] else "")
            sig = ("n/a (1 seed)" if r["significant"] is None
                   else "[bold green]yes[/]" if r["significant"] else "no")
        detectable = power_cell(r, baseline)
        load_mark = hostload.mark(r)
        name = r["act_label"] + (f" [red]({r['diverged']} diverged)[/]" if r["diverged"] else "")
        cells = [name] + ([r["impl"]] if len(impls) > 1 else []) + [
            str(r["n"]), _pct(r["test_acc_mean"]) + ci,
            f"{_pct(r['best_acc'])} ({r['best_seed']}) / {_pct(r['worst_acc'])} ({r['worst_seed']})",
            _num(r["test_loss_mean"], ".4f"), _num(r["train_images_per_s"], ",.0f") + load_mark,
            _num(r["step_time_ms"], ".1f") + load_mark, format_bytes(r.get("saved_bytes")),
            *([format_bytes(r["peak_bytes"])] if peaks else []), diff, p, sig, detectable]
        table.add_row(*cells)
    load_note = hostload.note(summary, [f"{r['act_label']}/{r['impl']}" if len(impls) > 1 else r["act_label"]
                                        for r in summary])
    table.caption = ("Paired t-test on per-seed test accuracy against the baseline with the same impl; "
                     "significant: Holm-adjusted p < 0.05; detectable: the smallest true difference that test finds "
                     "with 80% power at this number of seeds (two-sided, alpha 0.05, from the observed SD of the "
                     "per-seed differences). Saved for bwd: what autograd keeps in one training "
                     "step; peak mem: peak CUDA memory of a run. Precision, recall, macro-F1: summary.json / runs/*.json."
                     + (f" {escape(load_note)}." if load_note else ""))
    return table


def power_cell(row: dict, baseline: str) -> str:
    """The detectable difference in pp, or n/a with the reason in short (the full one is in summary.json)."""
    if row["act_label"] == baseline or row["paired_n"] == 0:
        return "-"
    if row.get("detectable_diff") is None:
        return "n/a (1 seed)" if row["paired_n"] < 2 else "n/a (zero SD)"
    return f"{100 * row['detectable_diff']:.2f}"


def _stop(progress: Progress) -> None:
    if progress.live.is_started:  # stopping a display that never started prints an empty line
        progress.stop()


@app.command("train")
def train_command(
    dataset: str = typer.Option("fashion-mnist", "--dataset", "-d",
                                help=f"One of: {', '.join(data_mod.DATASETS)}."),
    act: str = typer.Option("relu", "--act", "-a",
                            help="Activations, comma-separated; parameters as name:param=value "
                                 "(leaky_relu:negative_slope=0.1, gelu:saved_bits=2); 'all' for every trainable one."),
    saved_bits: Optional[int] = typer.Option(None, "--saved-bits",
                                             help="Few-bit backward for every elementwise activation: keep a k-bit "
                                                  "code (1..8) per element instead of x (actkit impl only)."),
    model: str = typer.Option("convnet", "--model", "-m", help=f"One of: {', '.join(MODELS)}."),
    impl: str = typer.Option("actkit", "--impl",
                             help=f"Activation implementation(s), comma-separated: {', '.join(IMPLS)} "
                                  "(actkit kernels, eager PyTorch reference, torch.compile of the eager model)."),
    seeds: int = typer.Option(3, "--seeds", "-s", help="Number of seeds (paired across activations)."),
    first_seed: int = typer.Option(0, "--first-seed", help="Seeds are first-seed .. first-seed + seeds - 1."),
    epochs: int = typer.Option(10, "--epochs", "-e"),
    batch_size: int = typer.Option(128, "--batch-size", "-b"),
    lr: float = typer.Option(1e-3, "--lr", help="Learning rate (Adam)."),
    weight_decay: float = typer.Option(0.0, "--weight-decay"),
    optimizer: str = typer.Option("adam", "--optimizer", help="adam or sgd (momentum 0.9)."),
    val_size: Optional[int] = typer.Option(None, "--val-size",
                                           help="Validation images split from the training set "
                                                "\\[default: min(5000, 10% of the training set)]."),
    subset: Optional[int] = typer.Option(None, "--subset", help="Train on N images only (the test set stays full)."),
    augment: Optional[bool] = typer.Option(None, "--augment/--no-augment",
                                           help="Random crop + flip \\[default: on for cifar10 only]."),
    depth: int = typer.Option(0, "--depth", help="Extra conv blocks at constant resolution."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for PyTorch \\[default: torch's]."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir",
                                            help=f"Dataset directory \\[default: ${data_mod.DATA_DIR_ENV} or "
                                                 f"{data_mod.default_data_dir()}]."),
    download: Optional[bool] = typer.Option(
        None, "--download/--no-download",
        help=f"Download a dataset that is not found with torchvision's downloader (MD5-checked) into --data-dir "
             f"\\[default: yes, unless ${data_mod.NO_DOWNLOAD_ENV}=1]. --no-download: never; fail saying where "
             "the files were looked for."),
    out: Optional[Path] = typer.Option(None, "--out", "-o",
                                       help="Output directory \\[default: runs/<timestamp>; required with several "
                                            "workers, which all write into it]."),
    shard: Optional[str] = typer.Option(None, "--shard",
                                        help="K/N: run worker K's share of the sweep (run i goes to worker i mod N), "
                                             "e.g. --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT. Under "
                                             "torchrun the runs are split among its processes without it."),
    parallel: str = typer.Option("none", "--parallel",
                                 help="none: under torchrun, each process trains its share of the runs on its own "
                                      "GPU. data: all processes train every run together (DistributedDataParallel; "
                                      "--batch-size is the global batch)."),
    resume: bool = typer.Option(False, "--resume",
                                help="Continue a sweep: skip finished runs, restart unfinished ones from their "
                                     "last epoch. Without --out: the newest matching directory under runs/."),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="Activation to compare against \\[default: relu]."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Print a per-epoch table for every run."),
    diagnostics: bool = typer.Option(True, "--diagnostics/--no-diagnostics",
                                     help="Record dead units (start, middle, end) and per-layer gradient norms "
                                          "(per epoch) in each run's JSON (actkit.diagnostics)."),
) -> None:
    """Train the reference CNN with each activation x implementation x seed; report accuracy ± 95% CI,
    paired significance against the baseline, and training throughput. Results go to --out as JSON/CSV."""
    console = Console()
    if threads is not None:
        if threads < 1:
            _fail(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    if seeds < 1:
        _fail(f"--seeds must be at least 1, got {seeds}")
    if first_seed < 0:
        _fail(f"--first-seed must be >= 0, got {first_seed}")
    try:
        launch = dist_mod.Launch.from_env()
        workers = dist_mod.Shard.parse(shard) if shard is not None else dist_mod.Shard()
    except dist_mod.LaunchError as exc:
        _fail(str(exc))
    parallel = parallel.strip().lower()
    if parallel not in tr.PARALLEL_MODES:
        _fail(f"unknown --parallel {parallel!r}; choose none (split the sweep's runs among the processes) or data "
              "(train each run on all of them)")
    if out is None and (workers.count > 1 or launch.world_size > 1):
        _fail("--out is required when the sweep is spread over several workers (--shard, torchrun): they all "
              "write into that one directory")
    try:
        sweep = tr.Sweep(dataset=dataset, model=model, activations=tr.parse_activations(act, saved_bits),
                         impls=[i for i in impl.split(",") if i.strip()], seeds=list(range(first_seed, first_seed + seeds)),
                         epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                         optimizer=optimizer.strip().lower(), val_size=val_size, subset=subset, augment=augment,
                         depth=depth, device=device, baseline=baseline)
    except (ValueError, TypeError, BackendError) as exc:
        _fail(str(exc))
    if out is None:
        out = (tr.find_resumable(sweep) if resume else None) or tr.default_out()
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[stats]}"),
                        console=console)
    sharing_terminal = parallel == "none" and launch.local_world_size > 1
    worker_name = str(workers.within(launch)) if parallel == "none" else str(workers)
    reporter = (LineReporter(console, worker_name) if sharing_terminal
                else RichReporter(progress, console, verbose))
    try:
        result = tr.run_sweep(sweep, out, resume=resume, data_dir=data_dir, download=download, reporter=reporter,
                              callbacks=diag_mod.training_callbacks if diagnostics else None, shard=workers,
                              parallel=parallel, launch=launch)
    except data_mod.DatasetNotFoundError as exc:
        _fail(str(exc), code=1)
    except (tr.TrainError, data_mod.DatasetError, dist_mod.LaunchError) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _stop(progress)
        err_console.print(f"Interrupted. Finished runs and the last epoch of the current one are saved in {out}; "
                          f"continue with the same command plus --resume --out {out}", highlight=False)
        raise typer.Exit(130)
    finally:
        _stop(progress)
    if parallel == "data" and launch.rank != 0:
        return  # rank 0 reports the run
    if not result.complete:
        console.print(f"Worker {result.worker}: {len(result.ran)} run(s) trained, {len(result.skipped)} already "
                      f"finished. The sweep has {len(result.records)} of "
                      f"{len(result.records) + len(result.missing)} runs finished; the last worker to finish writes "
                      f"runs.csv and the summary (or, once all are done: actkit report {result.out}).",
                      highlight=False)
        return
    # Piped output (files, CI logs) has no terminal width: give the table room instead of folding it.
    wide = console if console.is_terminal else Console(width=max(console.width, 180))
    wide.print(summary_table(result.summary, sweep.baseline, sweep.device))
    console.print(f"Results: {result.out}/ (runs/*.json, runs.csv, summary.csv, summary.json)", highlight=False)
