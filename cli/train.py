"""``actkit train``: train the reference CNN with each activation and seed; compare with statistics."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer

from actkit.names import DATA_DIR_ENV, DATASETS, IMPLS, MODELS, NO_DOWNLOAD_ENV, PARALLEL_MODES, default_data_dir

from .common import console, fail, fit_width, interrupted, progress_bar, stop, wide_console


@dataclass(frozen=True)
class TrainOptions:
    """The values of ``actkit train``'s options, as parsed (see the command for what each means)."""
    dataset: str
    act: str
    saved_bits: Optional[int]
    saves: Optional[str]
    model: str
    impl: str
    seeds: int
    first_seed: int
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    optimizer: str
    val_size: Optional[int]
    subset: Optional[int]
    augment: Optional[bool]
    depth: int
    device: str
    threads: Optional[int]
    data_dir: Optional[Path]
    download: Optional[bool]
    out: Optional[Path]
    shard: Optional[str]
    parallel: str
    resume: bool
    baseline: Optional[str]
    verbose: bool
    diagnostics: bool


def train_command(
    dataset: str = typer.Option("fashion-mnist", "--dataset", "-d",
                                help=f"One of: {', '.join(DATASETS)}."),
    act: str = typer.Option("relu", "--act", "-a",
                            help="Activations, comma-separated; parameters as name:param=value "
                                 "(leaky_relu:negative_slope=0.1, gelu:saved_bits=2, elu:saves=y); 'all' for every "
                                 "trainable one."),
    saved_bits: Optional[int] = typer.Option(None, "--saved-bits",
                                             help="Few-bit backward for every elementwise activation: keep a k-bit "
                                                  "code (1..8) per element instead of x (actkit impl only). Named "
                                                  "activations without one are refused; with 'all' they are left "
                                                  "out, and the command says which."),
    saves: Optional[str] = typer.Option(None, "--saves",
                                        help="What every elementwise activation keeps for backward (actkit impl "
                                             "only): torch (what torch's op keeps; the default), y (the output "
                                             "wherever f' reads it: less memory) or x."),
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
                                            help=f"Dataset directory \\[default: ${DATA_DIR_ENV} or "
                                                 f"{default_data_dir()}]."),
    download: Optional[bool] = typer.Option(
        None, "--download/--no-download",
        help=f"Download a dataset that is not found with torchvision's downloader (MD5-checked) into --data-dir "
             f"\\[default: yes, unless ${NO_DOWNLOAD_ENV}=1]. --no-download: never; fail saying where "
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
    run_training(TrainOptions(**locals()))  # locals(): here, exactly the options


def run_training(options: TrainOptions) -> None:
    """Check the options, run the sweep (this worker's share of it), print the summary."""
    from actkit import diagnostics

    launch, workers, parallel = _check(options)
    sweep = _sweep(options)
    out = options.out
    if out is None:
        from actkit import train as tr

        out = (tr.find_resumable(sweep) if options.resume else None) or tr.default_out()
    result = _run(options, sweep, out, launch, workers, parallel,
                  callbacks=diagnostics.training_callbacks if options.diagnostics else None)
    if parallel == "data" and launch.rank != 0:
        return  # rank 0 reports the run
    if not result.complete:
        console.print(f"Worker {result.worker}: {len(result.ran)} run(s) trained, {len(result.skipped)} already "
                      f"finished. The sweep has {len(result.records)} of "
                      f"{len(result.records) + len(result.missing)} runs finished; the last worker to finish writes "
                      f"runs.csv and the summary (or, once all are done: actkit report {result.out}).",
                      highlight=False)
        return
    from .train_view import summary_table

    # Piped output (files, CI logs) has no terminal width: give the table room instead of folding it.
    table_console = wide_console(180)
    table_console.print(summary_table(result.summary, sweep.baseline, sweep.device, fit_width(table_console)))
    console.print(f"Results: {result.out}/ (runs/*.json, runs.csv, summary.csv, summary.json)", highlight=False)


def _check(options: TrainOptions):
    """Refuse bad counts and worker settings; set the threads. The launch (torchrun's environment), this
    worker's shard and the --parallel mode."""
    import torch

    from actkit import distributed

    if options.threads is not None:
        if options.threads < 1:
            fail(f"--threads must be at least 1, got {options.threads}")
        torch.set_num_threads(options.threads)
    if options.saved_bits is not None and not 1 <= options.saved_bits <= 8:  # 0 too: leave it out for exact
        fail(f"--saved-bits must be an integer from 1 to 8 (bits kept per element for backward), got "
             f"{options.saved_bits}; leave it out for the exact backward")
    if options.seeds < 1:
        fail(f"--seeds must be at least 1, got {options.seeds}")
    if options.first_seed < 0:
        fail(f"--first-seed must be >= 0, got {options.first_seed}")
    launch = distributed.Launch.from_env()
    workers = distributed.Shard.parse(options.shard) if options.shard is not None else distributed.Shard()
    parallel = options.parallel.strip().lower()
    if parallel not in PARALLEL_MODES:
        fail(f"unknown --parallel {parallel!r}; choose none (split the sweep's runs among the processes) or data "
             "(train each run on all of them)")
    if options.out is None and (workers.count > 1 or launch.world_size > 1):
        fail("--out is required when the sweep is spread over several workers (--shard, torchrun): they all "
             "write into that one directory")
    return launch, workers, parallel


def _sweep(options: TrainOptions):
    """The :class:`actkit.train.Sweep` the options describe."""
    from actkit import train as tr

    left_out: list[str] = []
    try:
        activations = tr.parse_activations(options.act, options.saved_bits, options.saves, left_out=left_out)
        if left_out:  # --act all --saved-bits k: the activations without a few-bit backward are not trained
            console.print(f"--saved-bits {options.saved_bits} with --act all: training the activations that have a "
                          f"few-bit backward; left out (none to give them): {', '.join(left_out)}", highlight=False)
        return tr.Sweep(dataset=options.dataset, model=options.model, activations=activations,
                        impls=[i for i in options.impl.split(",") if i.strip()],
                        seeds=list(range(options.first_seed, options.first_seed + options.seeds)),
                        epochs=options.epochs, batch_size=options.batch_size, lr=options.lr,
                        weight_decay=options.weight_decay, optimizer=options.optimizer.strip().lower(),
                        val_size=options.val_size, subset=options.subset, augment=options.augment,
                        depth=options.depth, device=options.device, baseline=options.baseline)
    except TypeError as exc:  # the registry's word for a parameter value that is not a number
        fail(str(exc))


def _run(options: TrainOptions, sweep, out: Path, launch, workers, parallel: str, callbacks):
    """Train this worker's runs with a live display (plain lines where workers share the terminal)."""
    from rich.progress import TextColumn, TimeRemainingColumn

    from actkit import train as tr

    from .train_view import LineReporter, RichReporter

    progress = progress_bar(TimeRemainingColumn(), TextColumn("{task.fields[stats]}"),
                            description="[bold]{task.description}")
    sharing_terminal = parallel == "none" and launch.local_world_size > 1
    worker_name = str(workers.within(launch)) if parallel == "none" else str(workers)
    reporter = (LineReporter(console, worker_name) if sharing_terminal
                else RichReporter(progress, console, options.verbose))
    try:
        return tr.run_sweep(sweep, out, resume=options.resume, data_dir=options.data_dir, download=options.download,
                            reporter=reporter, callbacks=callbacks, shard=workers, parallel=parallel, launch=launch)
    except KeyboardInterrupt:
        stop(progress)
        interrupted(f"Interrupted. Finished runs and the last epoch of the current one are saved in {out}; "
                    f"continue with the same command plus --resume --out {out}")
    finally:
        stop(progress)
