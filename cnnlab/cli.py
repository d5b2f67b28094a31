"""The `cnnlab` command line. Each subcommand is a `_cmd_*` function; bad input exits 2 with one line."""
from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import sqlite3
import sys
from dataclasses import asdict
from pathlib import Path

from cnnlab.defaults import DEFAULT_EPOCHS, DEFAULT_LR
from cnnlab.naming import CHANNEL_ORDERS, CLASSIFIERS, HEADS, POOLINGS, PROBE_CLASSIFIERS, STRATEGIES
from cnnlab.paths import DataDirError
from cnnlab.runstore import default_path as run_store_path


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors, and without abbreviated options: `--epoch 2` is refused with the option it
    likely meant (--epochs), never taken for whichever option it starts."""

    def __init__(self, *args, **kwargs):
        self.option_names: list[str] = []  # what an unknown option is matched against
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def add_argument(self, *names, **kwargs):
        self.option_names += [name for name in names if name.startswith("-")]
        return super().add_argument(*names, **kwargs)

    def error(self, message: str):
        raise UsageError(f"{message} (`{self.prog} --help` says more)")


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line; an option the subcommand does not know is refused by the subcommand, with its
    help to read and the option it may have meant."""
    args, extras = parser.parse_known_args(argv)
    if extras:
        command = parser.subcommands[args.command]
        guesses = {_closest_option(extra.split("=")[0], command.option_names)
                   for extra in extras if extra.startswith("--")} - {None}
        hint = f"; did you mean {' or '.join(sorted(guesses))}?" if guesses else ""
        command.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
    return args


def _closest_option(given: str, known: list[str]) -> str | None:
    """The known option `given` most likely meant: the longest one it starts with (--lr for --lr-rate), else the
    closest spelling (--json for --jsn), else None."""
    starts = [option for option in known if option.startswith("--") and given.startswith(option)]
    if starts:
        return max(starts, key=len)
    return next(iter(difflib.get_close_matches(given, known, n=1, cutoff=0.75)), None)


def positive_int(text: str) -> int:
    """argparse type: an integer above zero."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be greater than zero")
    return value


def _check_arch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse an architecture the registry does not know; a name written otherwise (GoogLeNet, ResNet-50) is taken
    for the registered one. Checked once the whole command line has parsed: the registry loads torch (seconds), so a
    mistake elsewhere on the line is told at once."""
    if getattr(args, "arch", None) is None:
        return
    from cnnlab.registry import arch_names

    plain = lambda name: re.sub(r"[-_ ]", "", name.lower())
    args.arch = next((name for name in arch_names() if plain(name) == plain(args.arch)), args.arch)
    if args.arch not in arch_names():
        parser.subcommands[args.command].error(
            f"unknown architecture {args.arch!r}; choose from: {', '.join(arch_names())}")


def print_json(data) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def print_table(rows: list[dict], columns: list[str]) -> None:
    """Plain aligned text table on stdout."""
    cells = [["-" if row.get(c) is None else str(row[c]) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


def _cmd_models(args) -> None:
    from cnnlab.compare import architecture_rows
    from cnnlab.profiling import human

    rows = architecture_rows()
    if args.json:
        print_json(rows)
        return
    shown = [{**row, "params": f"{row['params']:,}", "macs": human(row["macs"]), "size_mib": f"{row['size_mb']:.2f}",
              "input": "x".join(map(str, row["input_size"]))} for row in rows]
    print_table(shown, ["name", "family", "year", "params", "macs", "size_mib", "depth", "top1", "top5", "input"])


def _cmd_profile(args) -> None:
    from cnnlab.profiling import profile_arch

    try:
        profile = profile_arch(args.arch, args.input_size)
    except ValueError as error:
        raise UsageError(str(error)) from None
    rows = [dict(asdict(r), flops=r.flops) for r in profile.rows]
    totals = {"arch": args.arch, "input_shape": profile.input_shape, "output_shape": profile.output_shape,
              "params": profile.params, "trainable_params": profile.trainable_params,
              "frozen_params": profile.frozen_params, "macs": profile.macs, "flops": profile.flops,
              "depth": profile.depth, "size_mb": round(profile.size_mb, 2)}
    if args.json:
        print_json({"totals": totals, "layers": rows})
        return
    print_table([dict(row, type=r.type_label) for row, r in zip(rows, profile.rows)],
                ["name", "type", "output_shape", "params", "macs", "formula"])
    print()
    for key, value in totals.items():
        print(f"{key}: {value}")
    _print_notes(args.arch)


def _reduce_setup(args):
    """The calculator's ConvSetup from `cnnlab reduce` arguments, or UsageError."""
    from cnnlab.reductions import ConvSetup

    missing = [flag for flag, value in (("--size", args.size), ("--in-channels", args.in_channels),
                                        ("--out-channels", args.out_channels), ("--kernel", args.kernel))
               if value is None]
    if missing:
        raise UsageError(f"reduce needs {', '.join(missing)} (or --arch NAME for a network's modules)")
    if len(args.size) > 2:
        raise UsageError(f"--size takes H or H W, not {len(args.size)} numbers")
    height, width = args.size[0], args.size[-1]
    return ConvSetup(height, width, args.in_channels, args.out_channels, args.kernel, args.reduce_to)


def _calculator_flags(args) -> list[str]:
    return [flag for flag, value in (("--size", args.size), ("--in-channels", args.in_channels),
                                     ("--out-channels", args.out_channels), ("--kernel", args.kernel),
                                     ("--reduce-to", args.reduce_to), ("--factorize", args.factorize or None))
            if value is not None]


def _print_network_reductions(arch: str, as_json: bool, paper_kernels: bool = False) -> None:
    from cnnlab.reductions import network_reductions

    try:
        network = network_reductions(arch, paper_kernels)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if as_json:
        print_json(network.as_dict())
        return
    print_table([m.summary() for m in network.modules],
                ["module", "type", "input", "reductions", "own_branch_1x1", "pool_projections", "macs",
                 "macs_without", "ratio", "params", "params_without"])
    print()
    for key, value in network.totals().items():
        print(f"{key}: {value}")
    _print_notes(arch)


def _print_notes(arch: str) -> None:
    """The registry's notes on how `arch` as built differs from its paper (a kernel, a count), after a table."""
    from cnnlab.registry import get_spec

    for note in get_spec(arch).notes:
        print(f"note: {note}")


def _print_reduction(result) -> None:
    from cnnlab.profiling import human

    s = result.setup
    reduction = f", 1x1 reduction to {s.reduce_to} first" if s.reduce_to else ""
    print(f"{s.height}x{s.width}x{s.in_channels} input, {s.kernel}x{s.kernel} convolution to {s.out_channels} "
          f"('same' padding, stride 1){reduction}")
    steps = [("naive", result.naive)] + ([("1x1 reduce", result.reduce), ("conv", result.conv)] if result.reduce else [])
    print_table([{"step": step, "macs": cost.macs, "formula": cost.formula, "params": cost.params,
                  "params formula": cost.params_formula} for step, cost in steps],
                ["step", "macs", "formula", "params", "params formula"])
    print()
    print(f"total_macs: {result.total_macs} ({result.total_formula})")
    print(f"total_params: {result.total_params} ({human(result.total_params)})")
    if not s.reduce_to:
        print("(--reduce-to C counts the same convolution after a 1x1 reduction to C channels, and what it saves)")
        return
    print(f"ratio: {_times(result.ratio, 'MACs')}, {_times(result.params_ratio, 'params')} than the naive convolution")


def _factorization_setup(args):
    """The FactorizationSetup from `cnnlab reduce --factorize` arguments, or UsageError."""
    from cnnlab.reductions import FactorizationSetup

    if args.reduce_to is not None:
        raise UsageError("--factorize cannot be combined with --reduce-to")
    s = _reduce_setup(args)
    try:
        return FactorizationSetup(s.height, s.width, s.in_channels, s.out_channels, s.kernel)
    except ValueError as error:
        raise UsageError(str(error)) from None


def _print_factorization(result) -> None:
    k = f"{result.setup.kernel}x{result.setup.kernel}"
    print(result.method)
    if result.unchanged:
        print(f"one {k} is the chain itself: nothing to factorize, nothing saved")
        return
    steps = [("one " + result.single.label, result.single)] + [(layer.label, layer) for layer in result.layers]
    print_table([{"step": step, "macs": cost.macs, "formula": cost.formula, "params": cost.params,
                  "params formula": cost.params_formula} for step, cost in steps],
                ["step", "macs", "formula", "params", "params formula"])
    print(f"receptive_field: {'x'.join(map(str, result.receptive_field))} (one {k}: {k})")
    print(f"total_macs: {result.macs} ({result.formula})")
    print(f"total_params: {result.params} ({result.params_formula})")
    print(f"ratio: {_times(result.ratio, 'MACs')}, {_times(result.params_ratio, 'params')} than one {k} "
          f"({result.saving:.0%} of its MACs saved)")


def _print_factorizations(setup, as_json: bool) -> None:
    from cnnlab.reductions import factorizations

    vgg, asymmetric = factorizations(setup)
    if as_json:
        print_json({"vgg_stack": vgg.as_dict(), "asymmetric": asymmetric.as_dict()})
        return
    s = setup
    print(f"{s.height}x{s.width}x{s.in_channels} input, {s.kernel}x{s.kernel} convolution to {s.out_channels} "
          "('same' padding, stride 1), factorized")
    for result in (vgg, asymmetric):
        print()
        _print_factorization(result)


def _cmd_reduce(args) -> None:
    from cnnlab.reductions import compare_reduction

    if args.arch:
        if given := _calculator_flags(args):
            raise UsageError(f"--arch cannot be combined with {', '.join(given)}")
        _print_network_reductions(args.arch, args.json, args.paper_kernels)
        return
    if args.paper_kernels:
        raise UsageError("--paper-kernels goes with --arch googlenet")
    if args.factorize:
        _print_factorizations(_factorization_setup(args), args.json)
        return
    result = compare_reduction(_reduce_setup(args))
    if args.json:
        print_json(result.as_dict())
    else:
        _print_reduction(result)


def _arch_of(args) -> str:
    """--arch, else the run's architecture when --weights is a run folder, else the default architecture."""
    from cnnlab.registry import DEFAULT_ARCH
    from cnnlab.weights import trained_arch

    return args.arch or (args.weights and trained_arch(args.weights)) or DEFAULT_ARCH


def _cmd_predict(args) -> None:
    import warnings

    from cnnlab.images import ImageInputError
    from cnnlab.predict import predict_image
    from cnnlab.weights import WeightsError, weights_label

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # torch's note on foreign pickles
            result = predict_image(args.image, _arch_of(args), args.weights, args.top)
    except (ImageInputError, WeightsError) as error:
        raise UsageError(str(error)) from None
    rows = [{"rank": rank, "index": p.index, "label": p.label, "probability": p.probability}
            for rank, p in enumerate(result.predictions, 1)]
    if args.json:  # probabilities unrounded, as `mistakes --json` gives them: the table rounds
        print_json({"image": args.image, "arch": result.arch, "weights": result.weights, "predictions": rows,
                    "notes": list(result.notes)})
        return
    print(f"{result.arch} with {weights_label(result.weights)}")
    print_table([{**row, "probability": f"{row['probability']:.4f}"} for row in rows],
                ["rank", "index", "label", "probability"])
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.top > len(rows):
        print(f"note: the model knows {len(rows)} classes, fewer than --top {args.top}: all are listed",
              file=sys.stderr)


def _times(ratio: float, what: str) -> str:
    """'21.43x fewer MACs', or for a 'reduction' that costs more, '2.94x more MACs'."""
    return f"{ratio:.2f}x fewer {what}" if ratio >= 1 else f"{1 / ratio:.2f}x more {what}"


def positive_float(text: str) -> float:
    """argparse type: a number above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be greater than zero")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer of zero or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must not be negative")
    return value


def _run_training(config, out_dir=None, record: bool = False, result_stream=None):
    """Run a training config with the console progress on rank 0 (its result line on `result_stream`, default
    stderr); user-facing errors become UsageError. With
    `record`, the run is one of the run store's (the dashboard shows it live; see `jobs.run_here`) and its record
    is returned; else it writes to `out_dir` only and the engine's result is returned."""
    import warnings

    from cnnlab.distributed import context_from_env
    from cnnlab.jobs import run_here, user_errors
    from cnnlab.training import ConsoleProgress, run

    callbacks = [ConsoleProgress(result_stream=result_stream)] if context_from_env().is_main else []
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # torch's note on foreign pickles
            return run_here(config, tuple(callbacks)) if record else run(config, callbacks, out_dir)
    except user_errors() as error:
        raise UsageError(str(error)) from None
    except KeyboardInterrupt as stop:
        if not record:  # (a run of the store says how it resumes by its id)
            stop.out_dir = out_dir
        raise


def _recorded_result(run) -> dict:
    """A run of the store trained here: its result with its id and status, and a word on stderr about it."""
    if run.status == "cancelled":
        print(f"run {run.id} was cancelled (from the dashboard or `cnnlab cancel`) before it finished; "
              f"`cnnlab resume {run.id}` queues it again {_resumes_from(run.id)}", file=sys.stderr)
    print(f"run {run.id}: listed by `cnnlab runs` and on the dashboard's Runs page", file=sys.stderr)
    return {**(run.result or {}), "run": run.id, "status": run.status}


def _make_run_config(strategy: str, args, **options):
    from cnnlab.data import absolute_dataset
    from cnnlab.training import ConfigError, make_config

    if isinstance(options.get("weights"), str) and Path(options["weights"]).expanduser().exists():
        options["weights"] = str(Path(options["weights"]).expanduser().resolve())
    try:
        return make_config(strategy, _arch_of(args), absolute_dataset(args.dataset), **options)
    except ConfigError as error:
        raise UsageError(str(error)) from None


def _input_size(args) -> int | None:
    """--input-size, else the size the dashboard starts from: None (the network's own) but for datasets of tiny
    images (see data.suggested_input_size)."""
    from cnnlab.data import image_side, suggested_input_size
    from cnnlab.registry import get_spec

    if args.input_size is not None:
        return args.input_size
    spec = get_spec(_arch_of(args))
    suggested = suggested_input_size(spec.image_size, spec.min_input_size, spec.fixed_input_size,
                                     image_side(args.dataset))
    return None if suggested == spec.image_size else suggested


def _config_from_args(args):
    return _make_run_config(args.strategy, args, weights=args.weights, epochs=args.epochs,
                            batch_size=args.batch_size, lr=args.lr, freeze=args.freeze, head=args.head,
                            classifier=args.classifier, tap=_tap_name(args), tap_pooling=args.tap_pooling,
                            image_size=_input_size(args), device=args.device, seed=args.seed)


def _cmd_train(args) -> int:
    from cnnlab.distributed import context_from_env
    from cnnlab.checkpoints import NO_MODEL
    from cnnlab.training import default_run_dir, keeps_model, unused_fields

    if args.out is not None and not args.out.strip():
        raise UsageError("--out needs a folder")
    if args.out and args.epochs is None and "epochs" not in unused_fields(args.strategy, args.classifier or "logreg"):
        args.epochs = _stored_epochs(Path(args.out))  # a run folder to continue: as many epochs as it was set for
    config = _config_from_args(args)
    if args.out is not None:
        _check_out_folder(Path(args.out), config.dataset)
    result_stream = None if args.json else sys.stdout  # the result line is the output, unless JSON is
    if args.out or context_from_env().enabled:  # a folder of its own, or a torchrun job: outside the run store
        out_dir = Path(args.out) if args.out else default_run_dir(config)
        result = _run_training(config, out_dir, result_stream=result_stream).to_json()
    else:
        result = _recorded_result(_run_training(config, record=True, result_stream=result_stream))
    if not keeps_model(config.strategy, config.tap, config.tap_pooling):
        print(f"note: this run {NO_MODEL}", file=sys.stderr)
    if args.json and context_from_env().is_main:
        print_json(result)
    return _exit_status(result)


def _stored_epochs(folder) -> int | None:
    """The epochs of the cnnlab run whose config `folder` holds, else None."""
    from cnnlab.checkpoints import read_json

    try:
        epochs = read_json(folder / "config.json").get("epochs")
    except (OSError, ValueError, AttributeError):
        return None
    return epochs if isinstance(epochs, int) and epochs > 0 else None


def _exit_status(result: dict) -> int:
    """1 for a run cancelled before it finished (from the dashboard or `cnnlab cancel`), so that scripts see it
    did not complete; else 0."""
    return 1 if result.get("status") == "cancelled" else 0


def _check_out_folder(out, dataset: str) -> None:
    """--out must be a folder of its own: not a file, not inside the run store or the dataset, and not a folder
    of other files (a run folder to resume is fine). Made when the run writes its config, so that a run that fails
    before (bad data, weights) leaves no empty folder behind."""
    import os

    from cnnlab.distributed import context_from_env
    from cnnlab.jobs import runs_folder

    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    where = out.expanduser().resolve()
    kind, _, data_path = dataset.partition(":")
    if where.is_relative_to(runs_folder().resolve()):
        raise UsageError(f"--out {out} is inside the run store ({runs_folder()}), which cnnlab manages; choose "
                         "a folder of your own, or leave out --out to record the run in the store")
    if kind == "folder" and where.is_relative_to(Path(data_path).expanduser().resolve()):
        raise UsageError(f"--out {out} is inside the dataset {dataset}, where a run's files would become images "
                         "or a class; choose a folder outside it")
    if context_from_env().is_main and where.is_dir() and not (where / "config.json").is_file() \
            and any(where.iterdir()):
        raise UsageError(f"--out {out} holds other files and no cnnlab run; choose a new or empty folder")
    existing = next(folder for folder in (where, *where.parents) if folder.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        why = "is a file" if not existing.is_dir() else "cannot be written to"
        raise UsageError(f"cannot create the --out folder {out}: {existing} {why}")


def _cmd_submit(args) -> None:
    from cnnlab.jobs import submit, user_errors, worker_alive
    from cnnlab.training import preflight

    config = _config_from_args(args)
    try:
        preflight(config)  # a queued run meets its data and weights only later, in the worker: check them now
    except user_errors() as error:
        raise UsageError(str(error)) from None
    run_id = submit(config)
    if args.json:
        print_json({"run": run_id, "status": "queued", "worker_alive": worker_alive()})
        return
    print(run_id)
    if not worker_alive():
        print("note: no worker is running; start one with `cnnlab worker`", file=sys.stderr)


def _cmd_runs(args) -> None:
    from cnnlab.jobs import recover_interrupted, run_summaries
    from cnnlab.runstore import RunStore

    store = RunStore()
    recover_interrupted(store)
    runs = store.runs()
    rows = run_summaries(runs, store)
    if args.json:
        print_json(rows)
        return
    if not rows:
        print(f"no runs yet in {store.path}; `cnnlab train` or `cnnlab submit` starts one", file=sys.stderr)
        return
    shown = [{**r, "val_acc": f"{r['val_acc']:.4f}" if r["val_acc"] is not None else None} for r in rows]
    print_table(shown, ["id", "status", "method", "arch", "dataset", "epochs", "val_acc", "duration_s", "created",
                        "progress"])
    notes = [(r, note) for r, run in zip(rows, runs)
             if (note := _first_line(r["error"]) or _cancelled_note(r) or _best_stage_note(run))]
    if notes:  # below the table, whole: a failure's reason and how to resume are too long for a column
        print()
        for row, note in notes:
            print(f"{row['id']} ({row['status']}): {note}")


def _best_stage_note(run) -> str | None:
    """Which stage a finished probe's val_acc is: 'val_acc is stage 4's (blocks.4), the best of 5 stages on the
    same validation images'; None for other runs."""
    from cnnlab.jobs import best_probe_stage

    if not (best := best_probe_stage(run)):
        return None
    stages = run.result["stages"]
    return (f"val_acc is stage {best['stage']}'s ({best['layer']}), the best of {len(stages)} stages on the same "
            "validation images; the dashboard's Runs page charts every stage")


def _cancelled_note(row: dict) -> str | None:
    """How a cancelled run goes on: 'Resume (`cnnlab resume ID`) continues it from its last checkpoint', as an
    interrupted run's note says it."""
    if row["status"] != "cancelled":
        return None
    return f"Resume (`cnnlab resume {row['id']}`) continues it {_resumes_from(row['id'])}"


def _first_line(text: str | None) -> str | None:
    """The first line of `text`, whole (the table's last column: a resume hint must not be cut)."""
    return text.strip().splitlines()[0] if text and text.strip() else None


def _run_command(action, run_id: str):
    """`action(run_id)`; no such run, or a run in the wrong state, is a UsageError (the errors of a run's data,
    weights or options pass on as they are, for the caller to word)."""
    from cnnlab.jobs import user_errors

    try:
        return action(run_id)
    except KeyError:
        raise UsageError(f"no run {run_id!r}; see `cnnlab runs`") from None
    except user_errors():
        raise
    except ValueError as error:
        raise UsageError(str(error)) from None


def _cmd_cancel(args) -> None:
    from cnnlab.jobs import cancel, terminal_pid
    from cnnlab.runstore import RunStore

    if _run_command(lambda run_id: RunStore().get(run_id).status, args.run) == "cancelled":
        raise UsageError(f"run {args.run} is cancelled already; `cnnlab resume {args.run}` queues it again")
    status = _run_command(cancel, args.run)
    if status == "running":
        pid = terminal_pid(RunStore().get(args.run))
        who = f"the `cnnlab train` running it in a terminal (process {pid})" if pid else "its worker"
        print(f"{args.run}: cancel requested; {who} stops it at the next step")
    elif status == "cancelled":
        print(f"{args.run}: cancelled")
    else:
        raise UsageError(f"run {args.run} has ended ({status}); only queued or running runs can be cancelled")


def _cmd_resume(args) -> None:
    from cnnlab.checkpoints import latest_checkpoint
    from cnnlab.jobs import resume, run_dir, user_errors, worker_alive

    try:
        _run_command(resume, args.run)  # its data and weights are checked before it is queued
    except user_errors() as error:
        raise UsageError(f"run {args.run} cannot resume: {error}") from None
    checkpoint = latest_checkpoint(run_dir(args.run))
    print(f"{args.run}: queued again; " + (f"it continues after epoch {checkpoint.epoch}, its last checkpoint"
                                           if checkpoint else "it starts from the beginning (it saved no checkpoint)"))
    if not worker_alive():
        print("note: no worker is running; start one with `cnnlab worker`", file=sys.stderr)


def _cmd_delete(args) -> None:
    from cnnlab.jobs import delete_run, run_dir

    run_ids, refused = list(dict.fromkeys(args.runs)), []
    for run_id in run_ids:  # each once, in order; one refused does not stop the others
        try:
            had_folder = _run_command(delete_run, run_id)
        except UsageError as error:
            if len(run_ids) == 1:
                raise
            print(f"cnnlab: error: {error}", file=sys.stderr)
            refused.append(run_id)
            continue
        print(f"{run_id}: deleted" + (f", with its folder {run_dir(run_id)}" if had_folder else ""))
    if refused:
        raise UsageError(f"not deleted: {', '.join(refused)}")


def _cmd_worker(args) -> None:
    from cnnlab.jobs import work, worker_pids
    from cnnlab.paths import data_dir

    try:
        done = work(once=args.once, idle_exit_s=args.idle_exit, gpu=args.gpu,
                    say=lambda line: print(f"worker: {line}", file=sys.stderr, flush=True))
    except ValueError as error:
        raise UsageError(str(error)) from None
    if done < 0:
        gpu = f" for GPU {args.gpu}" if args.gpu is not None else ""
        raise UsageError(f"a worker{gpu} is running already (process {', '.join(map(str, worker_pids()))}) and takes "
                         f"the queue of {data_dir()}; `cnnlab runs` shows what it runs"
                         + ("" if gpu else "; on a machine with several GPUs, --gpu N starts one for another"))
    print(f"worker: {done} run(s) taken from the queue; `cnnlab runs` says how each ended" if done else
          "worker: the queue is empty; `cnnlab submit` queues a run", file=sys.stderr)


def _cmd_probe(args) -> int:
    result = _recorded_result(_run_training(_config_from_args(args), record=True))
    if args.json:
        print_json(result)
        return _exit_status(result)
    from cnnlab.registry import stage_labels

    labels = stage_labels(result["arch"])
    print_table([{**row, "stage": labels[row["stage"] - 1], "train_acc": f"{row['train_acc']:.4f}",
                  "val_acc": f"{row['val_acc']:.4f}"}
                 for row in result.get("stages", [])], ["stage", "layer", "dim", "train_acc", "val_acc"])
    if result.get("stages"):
        from cnnlab.training import probe_reading

        print(probe_reading(result["stages"], result.get("val_size"), result["arch"], result["config"]["weights"]))
    return _exit_status(result)


def _cmd_export(args) -> None:
    from cnnlab.checkpoints import CheckpointError, export_checkpoint

    try:
        result = export_checkpoint(args.checkpoint, args.format)
    except CheckpointError as error:
        raise UsageError(str(error)) from None
    print(f"{result.path}: {result.format}; {result.verdict()}")
    if not result.matches:
        sys.exit(1)


def _cmd_mistakes(args) -> None:
    from cnnlab.jobs import user_errors
    from cnnlab.mistakes import MistakesError, validation_mistakes

    folder = Path(run_folder(args.run, path_only=True))
    try:
        report = validation_mistakes(folder, limit=args.limit, device=args.device)
    except (MistakesError, *user_errors()) as error:  # a device this machine lacks, too
        raise UsageError(str(error)) from None
    if args.json:
        print_json(report.to_json())
        return
    surest = "its mistake" if report.wrong == 1 else "the surest one" if len(report.mistakes) == 1 else \
        f"the {len(report.mistakes)} surest"
    print(f"{report.wrong} wrong among {report.examined} of {report.validation_size} validation images of "
          f"{report.dataset} ({report.accuracy:.2%} right); {surest}:")
    if report.scores_note:
        print(f"note: {report.scores_note}", file=sys.stderr)
    print_table([{"index": m.index, "true": m.true, "predicted": m.predicted, "confidence": f"{m.confidence:.3f}",
                  "p(true)": f"{m.true_probability:.3f}"} for m in report.mistakes],
                ["index", "true", "predicted", "confidence", "p(true)"])


def _print_layer_list(activations, weights: str, as_json: bool) -> None:
    rows = [{"index": layer.index, "stage": layer.stage, "layer": layer.name, "type": layer.type,
             "shape": list(layer.shape)} for layer in activations.layers]
    if as_json:
        print_json({"arch": activations.arch, "weights": weights, "layers": rows})
        return  # the stage numbered as Launch's freeze plans and taps number it: 'stage 1 (relu)' is the stem
    print_table([{**row, "stage": layer.stage_label, "shape": "x".join(map(str, layer.shape))}
                 for row, layer in zip(rows, activations.layers)], ["index", "stage", "layer", "type", "shape"])


def _layer_at(activations, index: int, listing: str = "`--layer list`"):
    """The layer `--layer list` numbers `index`, or UsageError naming the range."""
    if index >= len(activations.layers):
        raise UsageError(f"{activations.arch} has layers 0 to {len(activations.layers) - 1}, not {index}; "
                         f"{listing} lists them")
    return activations.layers[index]


def _tap_name(args) -> str | None:
    """--tap as given, or for a number the module of the layer `cnnlab features IMAGE --layer list` numbers so
    (the numbering does not depend on the weights: a random network of the architecture is listed)."""
    if not (args.tap and args.tap.isdigit()):
        return args.tap
    from cnnlab.activations import extract, module_path
    from cnnlab.images import read_image, sample_images
    from cnnlab.registry import get_spec
    from cnnlab.weights import load_weights

    arch = _arch_of(args)
    loaded = load_weights(arch, "none")
    activations = extract(loaded.model, loaded.batch_for(read_image(sample_images()["chelsea"])), get_spec(arch))
    layer = _layer_at(activations, int(args.tap), f"`cnnlab features IMAGE --arch {arch} --layer list`")
    print(f"note: --tap {args.tap} is layer {module_path(layer.name)} ({layer.type}, {layer.stage_label})",
          file=sys.stderr)
    return module_path(layer.name)


def _cmd_features(args) -> None:
    from cnnlab.activations import extract
    from cnnlab.images import ImageInputError, read_image
    from cnnlab.mosaic import COLORMAPS, write_layer_pictures
    from cnnlab.registry import get_spec
    from cnnlab.weights import WeightsError, load_weights, weights_label

    listing = args.layer == "list"
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise UsageError(f"--out {args.out} is a file, not a folder")
    if args.colormap not in COLORMAPS:
        raise UsageError(f"unknown colour map {args.colormap!r}; choose from: {', '.join(COLORMAPS)}")
    args.arch = _arch_of(args)
    spec = get_spec(args.arch)
    by_index = args.layer.isdigit()  # the index column of --layer list
    try:
        loaded = load_weights(args.arch, args.weights)
        batch = loaded.batch_for(read_image(args.image))
        activations = extract(loaded.model, batch, spec, None if listing or by_index else [args.layer])
    except (ImageInputError, WeightsError, ValueError) as error:
        raise UsageError(str(error)) from None
    for note in loaded.notes:
        print(f"note: {note}", file=sys.stderr)
    if listing:
        _print_layer_list(activations, loaded.weights, args.json)
        return
    if by_index:
        args.layer = _layer_at(activations, int(args.layer)).name
    layer = activations.info(args.layer)
    if args.out is None:  # said once the layer is known to exist: one correction is then enough
        raise UsageError("features needs --out DIR to write the maps of a layer (or --layer list to list them)")
    values = activations.maps[args.layer]
    if args.top and args.top > len(values):
        print(f"note: --top {args.top} is more than the {len(values)} channels of {layer.name}: all are drawn",
              file=sys.stderr)
    if values.ndim == 1:
        print(f"note: {layer.name} gives a vector of {len(values)} values, not maps: each tile of the grid is one "
              "value, largest first" + ("; `cnnlab predict` names the classes" if layer.name == spec.classifier
                                       else ""), file=sys.stderr)
    try:
        files = write_layer_pictures(values, args.out, args.layer, args.top, args.colormap, args.order)
    except OSError as error:
        raise UsageError(f"cannot write to {args.out}: {error.strerror or error}") from None
    shape = "x".join(map(str, layer.shape))
    if args.json:
        print_json({"arch": args.arch, "weights": loaded.weights, "layer": layer.name, "type": layer.type,
                    "stage": layer.stage, "shape": list(layer.shape), "grid": str(files.grid),
                    "channels": list(files.picture.channels), "channel_files": [str(p) for p in files.channel_files],
                    "vmin": files.picture.vmin, "vmax": files.picture.vmax})
        return
    print(f"{args.arch} ({weights_label(loaded.weights)}), input {'x'.join(map(str, batch.shape[1:]))}")
    print(f"layer {layer.name} ({layer.type}, {layer.stage_label}): output {shape}")
    print(f"grid: {files.grid} ({len(files.picture.channels)} {'values' if values.ndim == 1 else 'channels'}, "
          f"{CHANNEL_ORDERS[args.order]}; colours "
          f"{files.picture.vmin:.3g} to {files.picture.vmax:.3g})")
    if files.channel_files:
        print(f"channels: {len(files.channel_files)} files in {files.channel_files[0].parent}")


def _add_run_options(parser: argparse.ArgumentParser, strategies: tuple[str, ...] = ()) -> None:
    """The options of a run; with `strategies`, a required --strategy among them, else the probe's options."""
    if strategies:
        parser.add_argument("--strategy", required=True, choices=strategies)
    parser.add_argument("--arch", help="an architecture (see cnnlab models); default: the run's when --weights is "
                                       "a run folder, else tf_efficientnet_lite0")
    parser.add_argument("--dataset", required=True,
                        help="digits, mnist[:ROOT], cifar10[:ROOT], folder:PATH (a folder per class) or zip:PATH")
    parser.add_argument("--weights", help=("scratch: none; otherwise " if strategies else "") +
                        "default (pretrained, offline first), shipped, torchvision, timm, a weights file, or a run "
                        "(its id, as `cnnlab runs` lists it, or folder: go on from the model it trained)")
    parser.add_argument("--batch-size", type=positive_int, help="images per step (default 64)")
    parser.add_argument("--input-size", type=positive_int,
                        help="square input size in pixels (default: the architecture's own, e.g. 224, but 128 "
                             "for the tiny images of digits, mnist and cifar10, as on the dashboard); smaller trains "
                             "faster")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="fixes the train/validation split, the initial weights and the data order")
    if not strategies:
        parser.add_argument("--classifier", choices=PROBE_CLASSIFIERS,
                            help="fitted at each stage (default logreg)")
        parser.set_defaults(strategy="probe", epochs=None, lr=None, freeze=None, head=None, tap=None,
                            tap_pooling=None)
        return
    parser.add_argument("--epochs", type=positive_int,
                        help="passes over the training images (scratch, finetune, extract with --classifier linear); "
                             f"default {DEFAULT_EPOCHS['scratch']}, {DEFAULT_EPOCHS['finetune']} and "
                             f"{DEFAULT_EPOCHS['linear']}, as on the dashboard")
    parser.add_argument("--lr", type=positive_float,
                        help="peak learning rate (AdamW, warmup then cosine decay); default "
                             f"{DEFAULT_LR['scratch']:g} scratch, {DEFAULT_LR['finetune']:g} finetune, "
                             f"{DEFAULT_LR['extract']:g} extract (only with --classifier linear)")
    parser.add_argument("--freeze", help="finetune: none, body (head only), stage:K (freeze through stage K) "
                                         "or all-but:N (train only the last N layers); default stage:K through "
                                         "the middle stage (K half the stages), or the lecture's plan for VGG-16; "
                                         "the run's first line says what it freezes")
    parser.add_argument("--head", choices=HEADS,
                        help="scratch, finetune: the network's own classifier layers (the last one new for your "
                             "classes), or the lecture's new head, Flatten -> Dense(1024) -> Dropout(0.5) -> "
                             "Dense(classes) (VGG-16 only; its finetune default)")
    parser.add_argument("--classifier", choices=CLASSIFIERS,
                        help="extract (default logreg)" + ("; probe: logreg, svm or knn at each stage"
                                                           if "probe" in strategies else ""))
    parser.add_argument("--tap", help="extract: penultimate (default), or a layer: its name (a stage such as "
                                      "blocks.2) or its number in `cnnlab features IMAGE --layer list`")
    parser.add_argument("--tap-pooling", choices=POOLINGS,
                        help="extract: average the tap's feature maps over their positions (default) or flatten them "
                             "whole, as the lecture's VGG16 recipe does (7 x 7 x 512 = 25,088 features at 224 px; "
                             "smaller inputs give fewer)")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cnnlab")
    except PackageNotFoundError:
        return "(not installed)"


JSON_HELP = "print the result as one JSON object on stdout (notes stay on stderr)"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = _Parser(prog="cnnlab", description="Explore classic ConvNets and transfer learning.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    parser.subcommands = sub.choices

    models = sub.add_parser("models", help="list the registered architectures")
    models.add_argument("--json", action="store_true", help=JSON_HELP)
    models.set_defaults(func=_cmd_models)

    profile = sub.add_parser("profile", help="per-layer parameters, MACs and output shapes")
    profile.add_argument("arch", help="an architecture (see cnnlab models)")
    profile.add_argument("--input-size", type=positive_int, default=None,
                         help="square input size in pixels (default: the architecture's own)")
    profile.add_argument("--json", action="store_true", help=JSON_HELP)
    profile.set_defaults(func=_cmd_profile)

    reduce = sub.add_parser("reduce", help="what a 1x1 reduction saves: the calculator, or --arch for a network's "
                                           "modules as built and without their reductions")
    reduce.add_argument("--size", type=positive_int, nargs="+", metavar=("H", "W"),
                        help="input height and width (one number: square)")
    reduce.add_argument("--in-channels", type=positive_int, help="input channels C_in")
    reduce.add_argument("--out-channels", type=positive_int, help="output channels C_out of the k x k convolution")
    reduce.add_argument("--kernel", type=positive_int, help="kernel size k")
    reduce.add_argument("--reduce-to", type=positive_int, help="channels C_red of a 1x1 reduction in front")
    reduce.add_argument("--factorize", action="store_true",
                        help="compare the k x k convolution (k odd, at least 3) with VGG's stack of 3x3 and "
                             "Inception-v3's 1 x k then k x 1 instead")
    reduce.add_argument("--arch", help="print the per-module table of this network instead")
    reduce.add_argument("--paper-kernels", action="store_true",
                        help="with --arch googlenet: the paper's 5x5 convolutions where torchvision's has 3x3")
    reduce.add_argument("--json", action="store_true", help=JSON_HELP)
    reduce.set_defaults(func=_cmd_reduce)

    predict = sub.add_parser("predict", help="top-K ImageNet classes of an image with probabilities")
    predict.add_argument("image", help="image file (JPEG, PNG, WebP, BMP, GIF or TIFF)")
    predict.add_argument("--arch", help="default: the run's architecture when --weights is a run folder, "
                                        "else tf_efficientnet_lite0")
    predict.add_argument("--weights", default="default",
                         help="default (pretrained, offline where possible), shipped, torchvision, timm, none, "
                              "a weights file (.safetensors or a .pth state dict), or a run's id or folder (its "
                              "trained model and class names)")
    predict.add_argument("--top", type=positive_int, default=5, help="how many classes to list (default 5)")
    predict.add_argument("--json", action="store_true", help=JSON_HELP)
    predict.set_defaults(func=_cmd_predict)

    train = sub.add_parser("train", help="train a network: scratch, finetune or extract (the lecture's strategies)")
    _add_run_options(train, ("scratch", "finetune", "extract"))
    train.add_argument("--out", help="a run folder of its own, outside the run store; an unfinished run of the "
                                     "same config there is resumed, and a finished one trains on to a larger --epochs "
                                     "(default: a run of the store, in $CNNLAB_HOME/runs/<run id>, that `cnnlab runs` "
                                     "and the dashboard list live)")
    train.add_argument("--json", action="store_true", help=JSON_HELP)
    train.set_defaults(func=_cmd_train)

    submit = sub.add_parser("submit", help="queue a run for the background worker (same options as train; "
                                           "--strategy probe queues a probe)")
    _add_run_options(submit, STRATEGIES)
    submit.add_argument("--json", action="store_true", help=JSON_HELP)
    submit.set_defaults(func=_cmd_submit)

    runs = sub.add_parser("runs", help="the queue and history of runs")
    runs.add_argument("--json", action="store_true", help=JSON_HELP)
    runs.set_defaults(func=_cmd_runs)

    cancel = sub.add_parser("cancel", help="cancel a queued run, or stop a running one at its next step")
    cancel.add_argument("run", help="run id, or its start (see cnnlab runs)")
    cancel.set_defaults(func=_cmd_cancel)

    resume = sub.add_parser("resume", help="queue an interrupted, failed or cancelled run again, from its checkpoint")
    resume.add_argument("run", help="run id, or its start (see cnnlab runs)")
    resume.set_defaults(func=_cmd_resume)

    delete = sub.add_parser("delete", help="delete runs that are over: their record, log, checkpoints and exports")
    delete.add_argument("runs", nargs="+", metavar="run", help="run id (see cnnlab runs); a queued or running run "
                                                               "is refused: cancel it first")
    delete.set_defaults(func=_cmd_delete)

    worker = sub.add_parser("worker", help="take queued runs one at a time and train them (one worker per GPU)")
    worker.add_argument("--once", action="store_true", help="exit when the queue is empty")
    worker.add_argument("--idle-exit", type=positive_float, metavar="SECONDS",
                        help="exit after this long with nothing queued")
    worker.add_argument("--gpu", type=non_negative_int, help="the GPU this worker owns (one worker per GPU)")
    worker.set_defaults(func=_cmd_worker)

    probe = sub.add_parser("probe", help="Strategy III at every stage: validation accuracy per depth",
                           description="Freeze the pretrained backbone, read each stage's averaged feature maps "
                                       "and fit a classifier on them: validation accuracy per depth, the lecture's "
                                       "general-to-specific claim measured on your data.")
    _add_run_options(probe)
    probe.add_argument("--json", action="store_true", help=JSON_HELP)
    probe.set_defaults(func=_cmd_probe)

    export = sub.add_parser("export", help="export a trained checkpoint to ONNX or TorchScript, checked by running it")
    export.add_argument("checkpoint", help="a run id (see cnnlab runs), a run folder or one of its "
                                           "checkpoints/ckpt-NNNN folders")
    export.add_argument("--format", choices=["onnx", "torchscript"], default="onnx", help="default: onnx")
    export.set_defaults(func=_cmd_export)

    mistakes = sub.add_parser("mistakes", help="the validation images a finished run's model gets wrong, surest first")
    mistakes.add_argument("run", help="a run id (see cnnlab runs), a run folder or one of its checkpoints/ckpt-NNNN")
    mistakes.add_argument("--limit", type=positive_int, default=24, help="how many to list (default 24)")
    mistakes.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    mistakes.add_argument("--json", action="store_true", help=JSON_HELP)
    mistakes.set_defaults(func=_cmd_mistakes)

    features = sub.add_parser("features", help="a layer's feature maps for an image, as PNG (grid and per channel)",
                              usage="%(prog)s IMAGE --layer LAYER --out DIR [--top N] [--colormap MAP] [--arch A] "
                                    "[--weights W] [--json]\n       %(prog)s IMAGE --layer list [--arch A] "
                                    "[--weights W] [--json]")
    features.add_argument("image", help="image file (JPEG, PNG, WebP, BMP, GIF or TIFF)")
    features.add_argument("--arch", help="default: the run's architecture when --weights is a run folder, "
                                         "else tf_efficientnet_lite0")
    features.add_argument("--weights", default="default",
                          help="default (pretrained if available offline, else random), shipped, torchvision, timm, "
                               "none, a weights file (.safetensors or a .pth state dict), or a run's id or folder")
    features.add_argument("--layer", required=True,
                          help="a layer name or index, or 'list' to list every layer with its index and shape")
    features.add_argument("--out", metavar="DIR", help="folder for <layer>_grid.png and <layer>/channel_NNNN.png "
                                                       "(needed for a layer's maps)")
    features.add_argument("--top", type=positive_int, help="only the first N channels in --order (default: all)")
    features.add_argument("--order", default="mean", choices=CHANNEL_ORDERS,
                          help="mean: most active first; spread: the maps that vary most across positions first; "
                               "index: by channel number")
    features.add_argument("--colormap", default="viridis", help="viridis, inferno, magma, cividis, turbo or gray")
    features.add_argument("--json", action="store_true", help=JSON_HELP)
    features.set_defaults(func=_cmd_features)

    return parser


def run_folder(text: str, path_only: bool = False) -> str:
    """A run id, as `cnnlab runs` lists it, stands for its folder (unless a file or folder here has that name);
    an id of no run, or of a run of the store that kept no folder (a probe), is a UsageError saying so; anything
    else is left as it is, but with `path_only` (where only a run or a path is taken) a path that does not exist
    is a UsageError as well."""
    from cnnlab.jobs import run_dir
    from cnnlab.runstore import RunStore

    is_id = re.fullmatch(r"[0-9a-f]{12}", text) is not None
    if Path(text).exists() or not (is_id or path_only):
        return text
    if is_id and run_dir(text).is_dir():
        return str(run_dir(text))
    try:
        run = RunStore().get(text) if is_id else None
    except KeyError:
        run = None
    if run is None:
        raise UsageError(f"no run {text} and no file or folder of that name here; `cnnlab runs` lists the runs")
    raise UsageError(f"run {text} ({run.config.get('strategy')}, {run.status}) saved no model to use here")


def _name_runs(args) -> None:
    """Where a run is named (a run id, or a run folder or weights that may be one), the start of a run's id
    stands for the whole id, as in git, and a run id given as weights or a checkpoint for its folder
    (`run_folder`); a file or folder of that name here comes first."""
    from cnnlab.runstore import RunStore

    def expand(text: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{1,11}", text) or Path(text).exists():
            return text
        try:
            return RunStore().resolve(text)
        except ValueError as error:
            raise UsageError(str(error)) from None

    if isinstance(getattr(args, "run", None), str):
        args.run = expand(args.run)
    if isinstance(getattr(args, "runs", None), list):
        args.runs = [expand(text) for text in args.runs]
    for name in ("weights", "checkpoint"):
        if getattr(args, name, None):
            setattr(args, name, run_folder(expand(getattr(args, name)), path_only=name == "checkpoint"))


def _resumes_from(run_id: str) -> str:
    from cnnlab.checkpoints import latest_checkpoint
    from cnnlab.jobs import run_dir

    saved = latest_checkpoint(run_dir(run_id)) is not None
    return "from its last checkpoint" if saved else "from the start (it saved no checkpoint)"


def main(argv: list[str] | None = None) -> int:
    """Entry point of `cnnlab` and `python -m cnnlab`."""
    try:
        parser = build_parser()
        args = _parse(parser, argv)
        _check_arch(parser, args)
        _name_runs(args)
        status = args.func(args) or 0
    except (UsageError, DataDirError) as error:
        print(f"cnnlab: error: {error}", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as error:  # the run store's file, damaged or not SQLite at all
        print(f"cnnlab: error: the run store {run_store_path()} cannot be read ({error}); move it aside "
              "to start a new one", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`| head`): quiet, and no complaint when Python flushes at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as stop:
        run_id, out_dir = getattr(stop, "run_id", None), getattr(stop, "out_dir", None)
        hint = (f"; `cnnlab resume {run_id}` continues run {run_id} {_resumes_from(run_id)}" if run_id else
                f"; the same command again continues the run in {out_dir} from its last checkpoint" if out_dir else "")
        print(f"\ncnnlab: interrupted{hint}", file=sys.stderr)
        return 130
    return status
