"""Training sweeps: (activation x implementation x seed) runs of a reference CNN, saved as data.

A *sweep* (:class:`Sweep`) is one dataset, one model and one set of hyper-parameters, run for
every activation, implementation and seed. Each *run* (:class:`RunConfig`) trains the model from
scratch and writes one JSON record. Seeds are paired: for seed ``s`` the model's initial weights
(``torch.manual_seed(s)`` before construction), the dropout stream (the same global generator,
consumed identically whatever the activation) and the data order and augmentation (a CPU
``torch.Generator`` seeded with ``s``) are the same for every activation and implementation, so
differences between activations can be tested per seed (:mod:`actkit.stats`).

Output directory (``--out``)
----------------------------
::

    <out>/config.json              the sweep: {"schema": "actkit.train.sweep/1", "sweep": {...}, "workers": N,
                                   "env": {...}}
    <out>/runs/<run id>.json       one record per finished run (schema below), written atomically
    <out>/checkpoints/<run id>.pt  the last finished epoch of an unfinished run (deleted when it finishes)
    <out>/runs.csv                 one row per finished run (RUN_CSV_FIELDS)
    <out>/summary.csv              one row per (activation, impl): mean ± CI, paired test vs the baseline
    <out>/summary.json             the same summary as JSON

``run id`` is ``<activation label>-<impl>-seed<seed>``, e.g. ``relu-actkit-seed0`` or
``leaky_relu_negative_slope=0.1-torch-seed2``. Rerunning with ``resume=True`` skips runs whose
record exists with the same config, restarts unfinished runs from their checkpoint (RNG states
included, so the result is the one an uninterrupted run gives), and refuses a record made with
a different config. Without ``resume`` an output directory that already holds results is
refused: results are never overwritten. ``config.json`` guards the directory: a command whose
settings differ from it is refused with the differing settings named (only the activations,
implementations, seeds and baseline may change, to grow a finished sweep with ``--resume``).

Several workers, one directory
------------------------------
Under ``torchrun`` (``RANK``/``WORLD_SIZE``) or with ``--shard K/N`` the sweep's planned runs
(in the order of :meth:`Sweep.runs`) are dealt out, run ``i`` to worker ``i mod N``
(:mod:`actkit.distributed`), each worker on its own GPU (``LOCAL_RANK``), all writing into one
``--out``: each run is one worker's, and its record one atomically renamed file. The first worker
creates ``config.json`` (an atomic create-if-absent), the others must match it, in the number of
workers too until every planned run is finished. A worker without ``resume`` refuses only when
records or checkpoints of *its own* runs exist (the others' may already be there when it starts). ``runs.csv`` and the summaries are written only from a complete
sweep, by :func:`assemble`: the worker that finds every planned record on disk after its last run
(workers finishing at once write identical files), or any later ``--resume`` or ``actkit report``.
A killed worker is resumed by rerunning its command with ``--resume``. With ``--parallel data``
every run is instead trained by all processes of the launch (:func:`train_run` ``group``).

Run record (``runs/<run id>.json``, schema ``actkit.train.run/1``)
------------------------------------------------------------------
``schema``, ``id``
``status``           ``"finished"``, or ``"diverged"`` (training loss became non-finite; training
                     stopped at that epoch, the test metrics are those of the diverged model)
``config``           :class:`RunConfig` as a dict: dataset, model, activation, act_params (all
                     parameters, defaults included), act_label, impl, seed, epochs, batch_size, lr,
                     weight_decay, optimizer, val_size, subset, augment, depth, device, split_seed,
                     eval_batch_size
``env``              :func:`actkit.results.environment`: device and its name, torch/triton/actkit/
                     python versions, platform, configured backend, interpreter flag, CPU threads
``backend``          what ran the activations: ``triton``, ``triton-interpreter`` or ``torch``
                     (actkit's custom op), ``torch-eager`` (impl torch) or ``torch.compile``
``data``             dataset name, source directory (or ``generated``), shape, classes, normalisation
                     mean/std, sizes ``train``/``val``/``test``/``train_full``
``model``            ``name``, ``parameters`` (count), ``activation_layers`` (qualified names in
                     forward order), ``depth``
``history``          per-epoch lists of equal length: ``epoch`` (1-based), ``train_loss``,
                     ``train_acc`` (running mean over the epoch's batches, in training mode),
                     ``val_loss``, ``val_acc`` (eval mode, after the epoch), ``train_time_s``,
                     ``eval_time_s``, ``lr``
``final``            test set (evaluated once, at the end): ``test_loss``, ``test_acc``,
                     ``precision_macro``, ``recall_macro``, ``f1_macro``, ``precision_per_class``,
                     ``recall_per_class``, ``f1_per_class``, ``confusion`` (``[true][pred]`` counts),
                     plus ``val_loss``, ``val_acc`` (last epoch), ``best_val_acc``, ``best_val_epoch``
``timing``           ``wall_s`` (whole run incl. evaluation), ``train_s`` (training steps only),
                     ``eval_s``, ``steps``, ``images``, ``warmup_steps`` and ``warmup_s`` (the first
                     steps of a process, incl. any compilation: excluded from the rates),
                     ``train_images_per_s`` and ``step_time_ms`` (steady-state mean);
                     ``load_average`` (the host's 1-minute load average at each epoch's end),
                     ``threads`` (PyTorch's CPU threads) and ``cpu_count``: :func:`actkit.hostload.busy_run` reads them
``memory``           ``peak_bytes``: ``torch.cuda.max_memory_allocated`` during the run minus what was
                     allocated when it started (the device-resident dataset, ``resident_bytes``): the
                     memory the run itself needed (weights, optimizer state, activations, workspace);
                     ``null`` on CPU. ``peak_rss_bytes``: the process's peak resident memory so far
                     (process-wide, so it only grows over a sweep). ``saved_bytes``: what autograd
                     keeps for backward in one training step (distinct storages, counted on the first
                     step of the last epoch, any device; :mod:`actkit.memory`; in a data-parallel
                     run, rank 0's share of the batch), of which ``saved_parameter_bytes`` are the
                     model's own parameters
``diagnostics``      ``{callback name: [event, ...]}``; each event is the dict a :class:`Callback`
                     returned plus ``event`` (``start``/``epoch``/``end``) and ``epoch``
``parallel``         ``mode`` (``none`` or ``data``), ``world_size`` (processes that trained the run),
                     ``backend`` (``gloo``/``nccl``, or null), ``global_batch_size``,
                     ``per_process_batch_size``, ``lr`` (as given: the global batch is the same as
                     one process's), ``sync_batchnorm`` (BatchNorm statistics over the global batch)
``worker``           which worker ran it: ``shard`` (``K/N``), torchrun's ``rank``, ``world_size``,
                     ``local_rank``, ``local_world_size``, and ``host``
``resumed_from_epoch``  0, or the checkpointed epoch this run continued from
``started``, ``finished``  UTC timestamps

The package
-----------
:mod:`~actkit.train.config` (:class:`Sweep`, :class:`RunConfig`, the activations a sweep takes),
:mod:`~actkit.train.loop` (one run: :func:`train_run`), :mod:`~actkit.train.callbacks` (hooks and
progress), :mod:`~actkit.train.records` (CSV rows, the summary),
:mod:`~actkit.train.directory` (``config.json``, resume, :func:`assemble`) and
:mod:`~actkit.train.sweep` (:func:`run_sweep`, alone or as one of several workers). The schema names
live in :mod:`actkit.runs`, which reads the records back.
"""
from __future__ import annotations

from ..runs import RUN_SCHEMA, SWEEP_SCHEMA
from ..selection import ActChoice
from .callbacks import Callback, Reporter, RunContext
from .config import ResultsExistError, RunConfig, Sweep, TrainError, parse_activations, run_id
from .directory import SweepState, assemble, default_out, find_resumable, write_summaries
from .loop import evaluate, train_run
from .records import RUN_CSV_FIELDS, run_row, summarise
from .sweep import PARALLEL_MODES, SweepResult, run_sweep

__all__ = ["ActChoice", "Callback", "PARALLEL_MODES", "RUN_CSV_FIELDS", "RUN_SCHEMA", "Reporter", "ResultsExistError",
           "RunConfig", "RunContext", "SWEEP_SCHEMA", "Sweep", "SweepResult", "SweepState", "TrainError", "assemble",
           "default_out", "evaluate", "find_resumable", "parse_activations", "run_id", "run_row",
           "run_sweep", "summarise", "train_run", "write_summaries"]
