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
                                     ("--reduce-to", args.reduce_to)) if value is not None]


def _print_network_reductions(arch: str, as_json: bool) -> None:
    from cnnlab.reductions import network_reductions

    try:
        network = network_reductions(arch)
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
    print(f"ratio: {result.ratio:.2f}x fewer MACs, {result.params_ratio:.2f}x fewer params than the naive convolution")


def _cmd_reduce(args) -> None:
    from cnnlab.reductions import compare_reduction

    if args.arch:
        if given := _calculator_flags(args):
            raise UsageError(f"--arch cannot be combined with {', '.join(given)}")
        _print_network_reductions(args.arch, args.json)
        return
    result = compare_reduction(_reduce_setup(args))
    if args.json:
        print_json(result.as_dict())
    else:
        _print_reduction(result)


def _cmd_predict(args) -> None:
    import warnings

    from cnnlab.images import ImageInputError
    from cnnlab.predict import predict_image
    from cnnlab.weights import WeightsError

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # torch's note on foreign pickles
            result = predict_image(args.image, args.arch, args.weights, args.top)
    except (ImageInputError, WeightsError) as error:
        raise UsageError(str(error)) from None
    rows = [{"rank": rank, "index": p.index, "label": p.label, "probability": round(p.probability, 4)}
            for rank, p in enumerate(result.predictions, 1)]
    if args.json:
        print_json({"image": args.image, "arch": result.arch, "weights": result.weights, "predictions": rows,
                    "notes": list(result.notes)})
        return
    print(f"{result.arch} with {result.weights} weights")
    print_table(rows, ["rank", "index", "label", "probability"])
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)


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

    reduce = sub.add_parser("reduce", help="what a 1x1 reduction saves: the calculator, or --arch for a network's "
                                           "modules as built and without their reductions")
    reduce.add_argument("--size", type=positive_int, nargs="+", metavar=("H", "W"),
                        help="input height and width (one number: square)")
    reduce.add_argument("--in-channels", type=positive_int, help="input channels C_in")
    reduce.add_argument("--out-channels", type=positive_int, help="output channels C_out of the k x k convolution")
    reduce.add_argument("--kernel", type=positive_int, help="kernel size k")
    reduce.add_argument("--reduce-to", type=positive_int, help="channels C_red of a 1x1 reduction in front")
    reduce.add_argument("--arch", type=arch_choice, help="print the per-module table of this network instead")
    reduce.add_argument("--json", action="store_true")
    reduce.set_defaults(func=_cmd_reduce)

    predict = sub.add_parser("predict", help="top-K ImageNet classes of an image with probabilities")
    predict.add_argument("image", help="image file (JPEG, PNG, WebP, BMP, GIF or TIFF)")
    predict.add_argument("--arch", type=arch_choice, default="tf_efficientnet_lite0")
    predict.add_argument("--weights", default="default",
                         help="default (pretrained, offline where possible), shipped, torchvision, timm, none, "
                              "or a weights file (.safetensors or a .pth state dict)")
    predict.add_argument("--top", type=positive_int, default=5)
    predict.add_argument("--json", action="store_true")
    predict.set_defaults(func=_cmd_predict)

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
