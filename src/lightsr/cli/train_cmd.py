"""``lightsr train CONFIG [key=value ...]`` and ``lightsr train --resume RUN_DIR [key=value ...]``.

Several processes: ``torchrun --nproc_per_node N -m lightsr train CONFIG ...``.
"""

from __future__ import annotations

import argparse
import json

from ..config import load_config
from ..errors import ConfigError
from ..train import resume_config, train
from ._args import add_device_arg, add_quiet_arg, add_threads_arg, apply_threads


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model from a recipe (configs/*.toml), or resume a run",
        description=(
            "Train a model from a recipe file (TOML or JSON; see configs/) with optional "
            "key=value overrides, e.g. `lightsr train configs/fmen_s.toml "
            "data.hr_dirs='[\"/data/DIV2K\"]' scale=2 out_dir=runs/fmen_x2`. "
            "`--resume RUN_DIR` continues a stopped or killed run exactly. Put options before "
            "CONFIG or after the last key=value."
        ),
    )
    p.add_argument("config", nargs="?", help="recipe file (.toml or .json)")
    p.add_argument("overrides", nargs="*", help="key=value settings, e.g. optim.lr=1e-3")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in this folder")
    p.add_argument(
        "--stop-at",
        type=int,
        metavar="STEP",
        help="stop after this step, state saved (resume later with --resume RUN_DIR)",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    add_device_arg(
        p, default=None, shown="the recipe's `device`, auto unless set; --device X is device=X"
    )
    add_threads_arg(p)
    add_quiet_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config, overrides = args.config, list(args.overrides)
    # `lightsr train --resume RUN key=value`: argparse puts the first override in `config`.
    if config is not None and "=" in config and not config.endswith((".toml", ".json")):
        config, overrides = None, [config, *overrides]
    # The flags are spellings of config keys (both may change on resume).
    for flag, key, value in (
        ("--device", "device", json.dumps(args.device) if args.device else None),
        ("--quiet", "progress", "false" if args.quiet else None),
    ):
        if value is None:
            continue
        if any(o.split("=", 1)[0].strip() == key for o in overrides):
            raise ConfigError(f"{flag} and {key}=... both set `{key}`: give one of them.")
        overrides.append(f"{key}={value}")
    apply_threads(args)
    if args.resume:
        cfg = resume_config(args.resume, overrides, config_path=config)
    else:
        if config is None:
            raise ConfigError("name a recipe file (e.g. configs/fmen_s.toml) or --resume RUN_DIR.")
        cfg = load_config(config, overrides)
    if args.print_config:
        shown = cfg.to_dict()
        shown["_derived"] = {"lr_patch": cfg.lr_patch, "hr_patch": cfg.hr_patch}
        print(json.dumps(shown, indent=2, sort_keys=True))
        return 0

    result = train(cfg, resume=args.resume, stop_at=args.stop_at)
    if result.stopped:
        print(
            f"stopped at step {result.step}; continue with: lightsr train --resume {result.run_dir}"
        )
        return 130
    best = f", best PSNR-Y {result.best_psnr:.3f} dB" if result.best_psnr is not None else ""
    print(f"finished {result.step} steps in {result.run_dir}{best}")
    return 0
