"""``lightsr profile``: parameters, Multi-Adds, NTIRE figures, memory and runtime of a model."""

from __future__ import annotations

import argparse
import json
import sys

from ..atomic import atomic_write_text, check_outputs
from ..checkpoint import load_any
from ..deploy import reparameterize
from ..errors import ConfigError
from ..hardware import resolve_device
from ..hub import get_weights, resolve_model
from ..profile import (
    count_ops,
    load_psnr_results,
    lr_size_for_output,
    plot_psnr_vs_multiadds,
    profile,
    profile_all,
    require_matplotlib,
    write_results,
)
from ..registry import create_model
from ._args import (
    add_checkpoint_arg,
    add_device_arg,
    add_overwrite_arg,
    add_quiet_arg,
    add_threads_arg,
    add_weights_args,
    non_negative_int,
    positive_int,
    scale_arg,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help="count parameters, Multi-Adds (720p), NTIRE MACs/activations/convs; time a forward",
        description=(
            "Profile one model (its training form; with --folded also the folded form) or, "
            "with --all, every registered model at each scale in both forms. MACs are counted at "
            "the dispatcher (F.conv2d included); Multi-Adds are for a 1280x720 output "
            "(x3: 240x427 LR); NTIRE figures at a 256x256 LR input."
        ),
    )
    p.add_argument("model", nargs="?", help="registered model name (see `lightsr list`)")
    p.add_argument(
        "--scale", type=scale_arg, help="scale factor: 2, 3 or 4 (default: the checkpoint's, or 4)"
    )
    add_checkpoint_arg(p)
    add_weights_args(p)
    p.add_argument(
        "--folded",
        action="store_true",
        help="profile the folded (deploy) form too: both forms are printed (a folded checkpoint "
        "has only that form)",
    )
    p.add_argument("--all", action="store_true", help="every model x scale, both forms")
    add_device_arg(p, default="cpu")
    add_threads_arg(p)
    p.add_argument(
        "--size", type=positive_int, default=256, help="LR side for runtime/memory (default 256)"
    )
    p.add_argument(
        "--reps", type=positive_int, default=10, help="timed forward passes (default 10)"
    )
    p.add_argument(
        "--warmup", type=non_negative_int, default=3, help="untimed passes first (default 3)"
    )
    p.add_argument("--no-runtime", action="store_true", help="skip timing (counts only)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--breakdown", action="store_true", help="MACs per module at 720p")
    p.add_argument("--json", metavar="OUT", help="write the report(s) as JSON")
    p.add_argument("--csv", metavar="OUT", help="with --all: also write a CSV table")
    p.add_argument("--plot", metavar="PNG", help="with --all: PSNR vs Multi-Adds plot (matplotlib)")
    p.add_argument(
        "--results-dir",
        default="benchmarks/results",
        help="with --plot: folder of evaluation JSON files to read Set5 x4 PSNR from",
    )
    add_overwrite_arg(p, what="existing --json/--csv/--plot files")
    add_quiet_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # resolve_device: one rule for every command (a bad name is a ConfigError, no traceback)
    device = str(resolve_device(args.device))
    opts = dict(
        device=device,
        threads=args.threads,
        runtime=not args.no_runtime,
        memory=not args.no_memory,
        runtime_size=args.size,
        reps=args.reps,
        warmup=args.warmup,
    )
    if (args.csv or args.plot) and not args.all:
        raise ConfigError("--csv and --plot tabulate every model: use them with --all.")
    # Existing output files are refused now, not after the profiling run.
    check_outputs(args.json, args.csv, args.plot, overwrite=args.overwrite)
    if args.all:
        if args.model or args.checkpoint:
            raise ConfigError("--all profiles every model: give no MODEL or --checkpoint with it.")
        if args.plot:
            require_matplotlib()  # before the long run, not after it
        reports = profile_all(
            scales=[args.scale] if args.scale else None, progress=not args.quiet, **opts
        )
        for r in reports:
            print(r.summary())
        if args.json or args.csv:
            write_results(reports, args.json, csv_path=args.csv, overwrite=args.overwrite)
            print("wrote " + " and ".join(p for p in (args.json, args.csv) if p))
        if args.plot:
            psnr = load_psnr_results(args.results_dir)
            n = plot_psnr_vs_multiadds(reports, psnr, args.plot, overwrite=args.overwrite)
            print(f"wrote {args.plot} ({n} models with a Set5 x4 PSNR in {args.results_dir})")
        return 0

    model = _build(args)

    # --folded: the training form, then the folded one (a folded checkpoint has only that)
    forms = [model]
    if args.folded and not getattr(model, "folded", False):
        forms.append(reparameterize(model))
    elif args.folded:
        print("note: the checkpoint holds the folded form only: no training form", file=sys.stderr)
    reports = []
    for i, form in enumerate(forms):
        report = profile(form, **opts)
        if i and reports[0].form == "training":
            report.params_training = reports[0].params  # the same network, before folding
        reports.append(report)
        print(("\n" if i else "") + report.summary())
        if args.breakdown:
            count = count_ops(form, lr_size_for_output(report.scale))
            print("  MACs at 720p by module:")
            for name, macs in sorted(count.by_scope(depth=2).items(), key=lambda kv: -kv[1]):
                print(f"    {name or '<root>':<32} {macs / 1e9:8.3f} G")
    if args.json:
        # The last form asked for at the top (a reader of one report keeps working), the
        # training form's report under "training_form" when both were profiled.
        data = reports[-1].to_dict()
        if len(reports) > 1:
            data["training_form"] = reports[0].to_dict()
        text = json.dumps(data, indent=1) + "\n"
        atomic_write_text(args.json, text, overwrite=args.overwrite)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def _build(args: argparse.Namespace):
    if args.weights:
        entry = get_weights(args.weights)
        if entry.precision == "int8":
            raise ConfigError(
                f"--weights {entry.name} is {entry.base} run at int8 in ONNX Runtime; profile "
                f"counts and times the torch model: profile --weights {entry.base} (int8 "
                "changes neither parameters nor Multi-Adds). int8 speed: docs/BACKENDS.md "
                "(benchmarks/bench_backends.py)."
            )
        return resolve_model(
            model=args.model,
            checkpoint=args.checkpoint,
            scale=args.scale,
            weights=args.weights,
            weights_dir=args.weights_dir,
        ).model
    if args.checkpoint:
        return load_any(args.checkpoint, expect_arch=args.model, expect_scale=args.scale)
    if not args.model:
        raise ConfigError("name a model (see `lightsr list`), or pass --checkpoint or --all.")
    return create_model(args.model, scale=args.scale or 4)
