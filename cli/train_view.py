"""What ``actkit train`` prints: progress as the runs train (a bar per run, or plain lines per worker) and
the summary table. Imported by the command when it runs (it imports :mod:`actkit.train`, and torch)."""
from __future__ import annotations

from typing import Optional, Sequence

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from actkit import hostload
from actkit import train as tr
from actkit.results import format_bytes

from .common import Col, fitted_table, num, pct


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
    return f"test acc {100 * f['test_acc']:.2f}% ({num(t['train_images_per_s'], ',.0f')} img/s)"


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
                table.add_row(str(h["epoch"][i]), f"{h['train_loss'][i]:.4f}", pct(h["train_acc"][i]),
                              f"{h['val_loss'][i]:.4f}", pct(h["val_acc"][i]), f"{h['train_time_s'][i]:.1f}",
                              f"{h['eval_time_s'][i]:.1f}")
            table.caption = (f"test acc {pct(f['test_acc'])}%, test loss {f['test_loss']:.4f}, "
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


def summary_table(summary: Sequence[dict], baseline: str, device: str, width: Optional[int] = None) -> Table:
    """A row per activation x impl; in fewer than the table's width (``width``), the columns besides the
    accuracy, the difference to the baseline and its significance stand under each activation."""
    impls = {r["impl"] for r in summary}
    # labels carry parameters: never cut them short
    columns = [Col("activation", justify="left", no_wrap=False, overflow="fold")]
    if len(impls) > 1:
        columns.append(Col("impl", justify="left", no_wrap=False))
    peaks = any(r["peak_bytes"] is not None for r in summary)  # CUDA only: no empty column on CPU
    kept = ("test acc %", f"Δ vs {baseline} (pp)", "signif.")
    for column in ("seeds", "test acc %", "best / worst (seed)", "test loss", "train img/s", "step ms",
                   "saved for bwd", *(["peak mem"] if peaks else []), f"Δ vs {baseline} (pp)", "p (paired t)",
                   "signif.", "detectable (pp)"):
        columns.append(Col(column, no_wrap=column != "p (paired t)", stack=column not in kept))
    rows = []
    for r in summary:
        ci = f" ± {pct(r['test_acc_ci'])}" if r["test_acc_ci"] is not None else " ± n/a"
        if r["act_label"] == baseline:
            diff, p, sig = "baseline", "-", "-"
        elif r["diff"] is None:
            diff, p, sig = "-", "-", "-"
        else:
            diff = f"{100 * r['diff']:+.2f}" + (f" ± {pct(r['diff_ci'])}" if r["diff_ci"] is not None else "")
            p = _p(r["p_value"]) + (f" (Holm {_p(r['p_holm'])})" if r["p_holm"] is not None
                                    and r["p_holm"] != r["p_value"] else "")
            sig = ("n/a (1 seed)" if r["significant"] is None
                   else "[bold green]yes[/]" if r["significant"] else "no")
        detectable = power_cell(r, baseline)
        load_mark = hostload.mark(r)
        name = r["act_label"] + (f" [red]({r['diverged']} diverged)[/]" if r["diverged"] else "")
        cells = [name] + ([r["impl"]] if len(impls) > 1 else []) + [
            str(r["n"]), pct(r["test_acc_mean"]) + ci,
            f"{pct(r['best_acc'])} ({r['best_seed']}) / {pct(r['worst_acc'])} ({r['worst_seed']})",
            num(r["test_loss_mean"], ".4f"), num(r["train_images_per_s"], ",.0f") + load_mark,
            num(r["step_time_ms"], ".1f") + load_mark, format_bytes(r.get("saved_bytes")),
            *([format_bytes(r["peak_bytes"])] if peaks else []), diff, p, sig, detectable]
        rows.append(cells)
    load_note = hostload.note(summary, [f"{r['act_label']}/{r['impl']}" if len(impls) > 1 else r["act_label"]
                                        for r in summary])
    caption = ("Paired t-test on per-seed test accuracy against the baseline with the same impl; "
               "significant: Holm-adjusted p < 0.05; detectable: the smallest true difference that test finds "
               "with 80% power at this number of seeds (two-sided, alpha 0.05, from the observed SD of the "
               "per-seed differences). Saved for bwd: what autograd keeps in one training "
               "step; peak mem: peak CUDA memory of a run. Precision, recall, macro-F1: summary.json / runs/*.json."
               + (f" {escape(load_note)}." if load_note else ""))
    return fitted_table(columns, rows, width, title=f"Test accuracy over seeds (mean ± 95% CI), {device}",
                        header_style="bold", caption=caption)




def power_cell(row: dict, baseline: str) -> str:
    """The detectable difference in pp, or n/a with the reason in short (the full one is in summary.json)."""
    if row["act_label"] == baseline or row["paired_n"] == 0:
        return "-"
    if row.get("detectable_diff") is None:
        return "n/a (1 seed)" if row["paired_n"] < 2 else "n/a (zero SD)"
    return f"{100 * row['detectable_diff']:.2f}"
