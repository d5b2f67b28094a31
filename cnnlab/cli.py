"""The `cnnlab` command line. Each subcommand is a `_cmd_*` function; bad input exits 2 with one line."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UsageError(message)


def positive_int(text: str) -> int:
    """argparse type: an integer above zero."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be greater than zero")
    return value


def arch_choice(text: str) -> str:
    """argparse type: a registered architecture name."""
    from cnnlab.registry import arch_names

    if text not in arch_names():
        raise argparse.ArgumentTypeError(f"unknown architecture {text!r}; choose from: {', '.join(arch_names())}")
    return text


def print_json(data) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def print_table(rows: list[dict], columns: list[str]) -> None:
    """Plain aligned text table on stdout."""
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


def _cmd_models(args) -> None:
    from cnnlab.compare import architecture_rows

    rows = architecture_rows()
    if args.json:
        print_json(rows)
    else:
        print_table(rows, ["name", "family", "year", "params", "macs", "depth", "top1", "top5", "input_size"])


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
    print_table(rows, ["name", "type", "output_shape", "params", "macs", "formula"])
    print()
    for key, value in totals.items():
        print(f"{key}: {value}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = _Parser(prog="cnnlab", description="Explore classic ConvNets and transfer learning.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    models = sub.add_parser("models", help="list the registered architectures")
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=_cmd_models)

    profile = sub.add_parser("profile", help="per-layer parameters, MACs and output shapes")
    profile.add_argument("arch", type=arch_choice)
    profile.add_argument("--input-size", type=positive_int, default=None)
    profile.add_argument("--json", action="store_true")
    profile.set_defaults(func=_cmd_profile)

    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `cnnlab` and `python -m cnnlab`."""
    try:
        args = build_parser().parse_args(argv)
        args.func(args)
    except UsageError as error:
        print(f"cnnlab: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    return 0
