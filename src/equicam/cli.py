"""The ``equicam`` command line: one entry, one subcommand per task.

Handlers import the library lazily so that ``equicam --help`` answers at once.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

# Kept here, not imported, so that `equicam --help` loads no numpy; a test keeps them in step.
METHODS = ("cam", "gradcam", "gradcampp")
PRECISIONS = ("auto", "fp32", "bf16")
PROTOCOLS = ("paper", "refined", "guided")
FAMILIES = ("train", "clinical-1.5T", "research-3T", "clinical-3T")
BUNDLED = ("equivariant", "baseline", "second-stage")


def checkpoint_arg(spec: str) -> str:
    """``--checkpoint``: a bundled model's name or an existing file; a typo gets close names."""
    if spec in BUNDLED or Path(spec).is_file():
        return spec
    close = difflib.get_close_matches(spec, BUNDLED, n=2, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise argparse.ArgumentTypeError(
        f"'{spec}' is neither a bundled model ({', '.join(BUNDLED)}) nor a file{hint}"
    )


DEBUG_HELP = "show the full traceback of an error (default: one line naming the file)"


def _synth(args: argparse.Namespace) -> None:
    from equicam.core.synth import write_cases

    folders = write_cases(args.out_dir, args.cases, args.seed, args.size, args.family)
    print(f"wrote {len(folders)} cases ({args.family}) to {args.out_dir}")


def _prepare(args: argparse.Namespace) -> None:
    from equicam.core.prepare import prepare

    meta = prepare(
        args.data_dir,
        args.out,
        size=args.size,
        seed=args.seed,
        bias_correction=args.bias_correction,
    )
    print(
        f"cached {meta['n_slices']} slices ({meta['n_positive']} with tumour) of "
        f"{len(meta['cases'])} cases to {args.out}; splits {meta['splits']}"
    )


def _cam(args: argparse.Namespace) -> None:
    from equicam.core.cam_output import cam_case

    written = cam_case(
        args.case,
        args.checkpoint,
        args.out,
        method=args.method,
        device=args.device,
        threshold=args.threshold,
        precision=args.precision,
        protocol=args.protocol,
        bias_correction=args.bias_correction,
    )
    for path in written:
        print(path)


def _evaluate(args: argparse.Namespace) -> None:
    from equicam.core.evaluation import evaluate

    results = evaluate(
        args.data_dir,
        args.checkpoint,
        args.out,
        method=args.method,
        device=args.device,
        threshold=args.threshold,
        precision=args.precision,
        protocol=args.protocol,
        workers=args.workers,
        resume=args.resume,
        bias_correction=args.bias_correction,
    )
    print(
        f"protocol {results['protocol']}: {len(results['tumour_patients'])} tumour patients, "
        f"{len(results['tumour_free']['cases'])} tumour-free, {len(results['failed'])} failed"
    )
    for name, row in results["summary"].items():
        if row["n_cases"]:
            print(
                f"{name:16s} Dice {row['dice_mean']:.3f} +- {row['dice_std']:.3f}  "
                f"ASSD {row['assd_mean']:.2f} mm  HD95 {row['hd95_mean']:.2f} mm  "
                f"(threshold {row['threshold']:.2f})"
            )
    print(f"wrote {args.out}/results.json and results.md")


def _view(args: argparse.Namespace) -> None:
    from equicam.plugin.viewer import open_viewer

    open_viewer(args.case)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``equicam`` and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="equicam",
        description="Cross-modality equivariant class activation maps for brain-tumour MRI.",
    )
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    # the same flag after the subcommand; SUPPRESS keeps a top-level --debug from being reset
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "synth", parents=[debug], help="write synthetic BraTS-like cases (BraTS 2021 layout)"
    )
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--cases", type=int, default=10, help="number of cases (default 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--size",
        choices=("full", "small"),
        default="full",
        help="full: 240x240x155 at 1 mm (BraTS grid); small: 2 mm grid for tests",
    )
    p.add_argument(
        "--family",
        choices=FAMILIES,
        default="train",
        help="appearance family (field strength, sequences, acquisition): 'train' mixes "
        "clinical-1.5T and research-3T per case; clinical-3T is the held-out test family "
        "(default train)",
    )
    p.set_defaults(func=_synth)

    p = sub.add_parser(
        "prepare",
        parents=[debug],
        help="build the 2-D slice cache and patient splits for training",
    )
    p.add_argument("data_dir", metavar="DATA_DIR")
    p.add_argument("--out", required=True, metavar="CACHE", help="new folder for the cache")
    p.add_argument("--size", type=int, default=240, help="side of cached slices (default 240)")
    p.add_argument("--seed", type=int, default=0, help="seed of the patient split (default 0)")
    p.add_argument(
        "--bias-correction",
        action="store_true",
        help="divide each sequence by a smooth field fitted to it before normalising it; "
        "networks trained on the cache record it, and inference with them does the same",
    )
    p.set_defaults(func=_prepare)

    checkpoint_help = (
        f"a bundled model ({', '.join(BUNDLED)}) or a .safetensors file of your own training: "
        "CAM networks, or a second stage (python -m training.train_segnet), whose map is "
        "second_stage and whose mask is that map at its threshold (default equivariant)"
    )
    method_help = (
        "map to compute: cam (class activation map), gradcam (Grad-CAM) or gradcampp "
        "(Grad-CAM++) (default cam)"
    )
    for name, helptext, positional in (
        ("cam", "write CAMs, fused CAMs and pseudo-masks of one case as NIfTI", "case"),
        ("evaluate", "Dice/ASSD/HD95 of every labelled case under DATA_DIR", "data_dir"),
    ):
        p = sub.add_parser(name, parents=[debug], help=helptext)
        p.add_argument(
            positional,
            metavar=positional.upper(),
            help="case folder or one of its files"
            if name == "cam"
            else "folder of BraTS cases (any layout)",
        )
        p.add_argument(
            "--checkpoint", type=checkpoint_arg, default="equivariant", help=checkpoint_help
        )
        p.add_argument(
            "--out",
            required=True,
            metavar="OUT_DIR",
            help="output folder; cam writes a new OUT_DIR/<case id> folder per run "
            "(OUT_DIR/<case id>_2 when one exists)"
            if name == "cam"
            else "output folder",
        )
        p.add_argument("--method", choices=METHODS, default="cam", help=method_help)
        p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
        p.add_argument(
            "--threshold", type=float, default=None, help="mask threshold (default: checkpoint's)"
        )
        p.add_argument(
            "--precision",
            choices=PRECISIONS,
            default="auto",
            help="network arithmetic: bf16 where the device computes it natively, else fp32 "
            "(default auto)",
        )
        p.add_argument(
            "--protocol",
            choices=PROTOCOLS,
            default=None,
            help="post-processing: paper (per-slice min-max, classifier gating, threshold), "
            "refined (per-volume normalisation, z-smoothed gate, components, growth in mm) or "
            "guided (refined maps as seeds of the bright regions of one sequence, FLAIR say); "
            "default: the checkpoint's, the one that measured best on its validation patients; "
            "not for a second stage",
        )
        p.add_argument(
            "--bias-correction",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="divide each sequence by a smooth field fitted to it (a polynomial of log "
            "intensity) before normalising it, or not (default: the checkpoint's setting, that of "
            "the data it was trained or calibrated on, equicam prepare --bias-correction; the "
            "bundled CAM networks: on)",
        )
        if name == "evaluate":
            p.add_argument(
                "--workers",
                type=int,
                default=1,
                help="cases evaluated at once, one process each (default 1; memory grows with it)",
            )
            p.add_argument(
                "--resume",
                action="store_true",
                help="reuse the cases an earlier run with the same settings kept in OUT_DIR/cases",
            )
        p.set_defaults(func=_cam if name == "cam" else _evaluate)

    p = sub.add_parser(
        "view",
        parents=[debug],
        help="open napari with a case or a folder of cases (default: the sample case)",
    )
    p.add_argument(
        "case",
        nargs="?",
        default=None,
        metavar="CASE",
        help="a case folder or one of its files, or a folder of cases (opened in the case "
        "navigator at the first case not yet saved)",
    )
    p.set_defaults(func=_view)
    return parser


def describe(error: BaseException) -> str:
    """One line for the user: the file and the problem, whatever raised it."""
    from equicam.core.errors import EquicamError

    if isinstance(error, EquicamError):
        return str(error)
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.filename}: {error.strerror or error}"
    if isinstance(error, MemoryError):
        return "out of memory; the input is larger than this machine can hold"
    return f"{error} ({type(error).__name__})"


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"equicam: warning: {message}\n"


def report_errors(prog: str, debug: bool, call: Callable[[], object]) -> int:
    """Run ``call`` and return its exit status, every error told as one line.

    Parameters
    ----------
    prog
        The command's name, which starts each line on stderr.
    debug
        Let the error propagate with its traceback instead of one line.
    call
        The command's work.

    Returns
    -------
    int
        0 on success, 2 on any error (one line naming the file and the problem), 130 on
        Ctrl-C.
    """
    import warnings

    try:
        with warnings.catch_warnings():
            if not debug:
                warnings.formatwarning = _format_warning
            call()
    except KeyboardInterrupt:
        print(f"{prog}: cancelled", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the one place every error is told to the user
        if debug:
            raise
        print(f"{prog}: error: {describe(error)}", file=sys.stderr)
        return 2
    return 0


def run_module(prog: str, main: Callable[[list[str]], object]) -> int:
    """Run a ``python -m`` entry point's ``main`` on ``sys.argv`` as :func:`report_errors` does.

    ``--debug`` anywhere among the arguments shows the traceback instead of one line; it is
    taken out before ``main`` parses the rest.
    """
    argv = sys.argv[1:]
    rest = [a for a in argv if a != "--debug"]
    return report_errors(prog, len(rest) != len(argv), lambda: main(rest))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    Any error becomes one line on stderr naming the file and the problem, with exit status
    2 (``--debug`` shows the traceback instead); Ctrl-C exits with 130.
    """
    args = build_parser().parse_args(argv)
    return report_errors(f"equicam {args.command}", args.debug, lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
