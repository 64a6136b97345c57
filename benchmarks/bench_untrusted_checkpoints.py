"""What forged checkpoints cost to refuse: outcome, peak resident memory and time.

Each case is loaded in a fresh Python process (``lightsr.load`` or ``lightsr.load_official``);
the child reports the error message (or the model it loaded), its peak RSS (VmHWM) after
importing lightsr and after the load, and the load's wall time. The forged cases are the ones
an earlier review found drove allocation or work before anything was checked:

* metadata ``options={"channels": 6000}`` on a real FMEN-S file (the loader tried ~5 GB);
* ``options={"channels": 4096}``: within the option bounds, so it reaches the meta-device build
  and the shape comparison against the file's header;
* ``options={"num_blocks": 4000}``: cheap to write, minutes to build before;
* an authors'-layout FMEN file whose first conv is 30000x3x3x3 (3.2 MB; ~32 GB before);
* ``options={"attention_erbs": [1] * 10**6}`` (minutes of building before);
* a safetensors header claiming a 100 GB tensor;
* an old-style torch.save file whose storage declares 512 GB;

and, as baselines, the valid FMEN-S x2 lightsr checkpoint and the valid authors'-layout file.

    python benchmarks/bench_untrusted_checkpoints.py
    python benchmarks/bench_untrusted_checkpoints.py --before abff7dc  # + that revision's loader

``--before REV`` also runs each case through ``src/lightsr/checkpoint.py`` as of git revision
REV (imported beside the current package) under a 4 GiB address-space limit and a time limit,
to show what the checks prevent. Writes benchmarks/results/untrusted_checkpoints.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import resource
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

import lightsr
from lightsr.atomic import atomic_write
from lightsr.hardware import machine_record, proc_status_kb
from lightsr.models import fmen

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "untrusted_checkpoints.json"
BEFORE_ADDRESS_HEADROOM = 4 * 2**30


def _metadata(path: Path) -> dict[str, str]:
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return dict(json.loads(raw[8 : 8 + n])["__metadata__"])


def make_cases(folder: Path) -> list[tuple[str, str, Path]]:
    """(name, loader, path) for the baselines and every forged case."""
    torch.manual_seed(0)
    folded = lightsr.reparameterize(lightsr.create_model("fmen_s", scale=2))
    valid = folder / "fmen_s_x2.safetensors"
    lightsr.save(folded, valid, overwrite=True)
    state = load_file(str(valid))
    official = {k: v.clone() for k, v in fmen.to_official_state(folded).items()}
    valid_official = folder / "fmen_s_x2_official.pt"
    torch.save(official, valid_official)

    def forged_options(name: str, options: Any) -> Path:
        path = folder / f"{name}.safetensors"
        save_file(state, str(path), metadata={**_metadata(valid), "options": json.dumps(options)})
        return path

    wide = dict(official, **{"head.weight": torch.zeros(30000, 3, 3, 3)})
    wide_path = folder / "official_conv_30000.pt"
    torch.save(wide, wide_path)

    raw = valid.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    first = next(k for k in header if k != "__metadata__")
    header[first] = {"dtype": "F32", "shape": [25 * 10**9], "data_offsets": [0, 10**11]}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    huge_tensor = folder / "header_100gb_tensor.safetensors"
    huge_tensor.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n :])

    buffer = io.BytesIO()
    torch.save({"w": torch.ones(54321)}, buffer, _use_new_zipfile_serialization=False)
    storage = folder / "legacy_storage_512gb.pth"  # BININT2 54321 -> LONG1 2**37 (x4 bytes)
    pattern = b"M" + struct.pack("<H", 54321)
    storage.write_bytes(
        buffer.getvalue().replace(pattern, b"\x8a\x06" + (2**37).to_bytes(6, "little"), 1)
    )

    return [
        ("valid lightsr checkpoint (fmen_s x2, folded)", "load", valid),
        ("valid authors'-layout file (fmen_s x2)", "load_official", valid_official),
        ("metadata channels=6000", "load", forged_options("channels_6000", {"channels": 6000})),
        ("metadata channels=4096", "load", forged_options("channels_4096", {"channels": 4096})),
        ("metadata num_blocks=4000", "load", forged_options("blocks_4000", {"num_blocks": 4000})),
        (
            "metadata attention_erbs of 10^6 entries",
            "load",
            forged_options("erbs", {"attention_erbs": [1] * 10**6}),
        ),
        ("official conv 30000x3x3x3", "load_official", wide_path),
        ("header claiming a 100 GB tensor", "load", huge_tensor),
        ("old-style pickle declaring a 512 GB storage", "load_official", storage),
    ]


def child(loader: str, path: Path, before: Path | None) -> dict[str, Any]:
    """Load ``path`` in this (fresh) process; report the outcome, peak RSS and time."""
    module: Any = lightsr
    if before is not None:
        spec = importlib.util.spec_from_file_location("lightsr._checkpoint_before", before)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        limit = (proc_status_kb("VmSize") or 0) * 1024 + BEFORE_ADDRESS_HEADROOM
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    rss_before = proc_status_kb("VmHWM") or 0
    start = time.perf_counter()
    try:
        model = getattr(module, loader)(path)
        outcome = f"loaded {model.arch_name} x{model.scale}"
        error_type = None
    except Exception as exc:  # what the old loader raised is part of the record
        outcome, error_type = str(exc), type(exc).__name__
    seconds = time.perf_counter() - start
    return {
        "outcome": outcome[:600],
        "error_type": error_type,
        "seconds": round(seconds, 4),
        "peak_rss_mb": round((proc_status_kb("VmHWM") or 0) / 1024, 1),
        "peak_rss_growth_mb": round(((proc_status_kb("VmHWM") or 0) - rss_before) / 1024, 1),
        "peak_virtual_mb": round((proc_status_kb("VmPeak") or 0) / 1024, 1),
    }


def run_child(loader: str, path: Path, before: Path | None, timeout: float) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", loader, str(path)]
    if before is not None:
        command += ["--before-file", str(before)]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"outcome": f"still running after {timeout:.0f} s (killed)", "error_type": None}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {
            "outcome": f"child died (exit {done.returncode}): {done.stderr[-400:]}",
            "error_type": None,
            "process_seconds": round(time.perf_counter() - start, 2),
        }
    return dict(json.loads(lines[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="also run this git revision's loader (e.g. abff7dc)")
    parser.add_argument("--before-timeout", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--child", nargs=2, metavar=("LOADER", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--before-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]), args.before_file)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        before_file = None
        if args.before:
            before_file = folder / "checkpoint_before.py"
            source = subprocess.run(
                ["git", "show", f"{args.before}:src/lightsr/checkpoint.py"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            before_file.write_text(source)
        rows = []
        for name, loader, path in make_cases(folder):
            row: dict[str, Any] = {
                "case": name,
                "loader": f"lightsr.{loader}",
                "file_bytes": path.stat().st_size,
                "now": run_child(loader, path, None, timeout=120),
            }
            if before_file is not None:
                row["before"] = run_child(loader, path, before_file, args.before_timeout)
            rows.append(row)
            now = row["now"]
            print(
                f"{name:46s} {now.get('seconds', '-')!s:>8} s  peak RSS "
                f"{now.get('peak_rss_mb', '-')} MB (+{now.get('peak_rss_growth_mb', '-')})  "
                f"{now['outcome'][:90]}",
                flush=True,
            )
            if "before" in row:
                b = row["before"]
                print(
                    f"{'  before':46s} {b.get('seconds', '-')!s:>8} s  peak RSS "
                    f"{b.get('peak_rss_mb', '-')} MB  virtual {b.get('peak_virtual_mb', '-')} MB  "
                    f"{b['outcome'][:90]}",
                    flush=True,
                )
    record = {
        "benchmark": "untrusted checkpoints: forged files refused before allocating",
        "command": "python benchmarks/bench_untrusted_checkpoints.py"
        + (f" --before {args.before}" if args.before else ""),
        "before_revision": args.before,
        "before_address_limit": "VmSize after import + 4 GiB" if args.before else None,
        "machine": machine_record(),
        "cases": rows,
    }
    text = json.dumps(record, indent=2) + "\n"
    atomic_write(args.out, lambda tmp: Path(tmp).write_text(text), overwrite=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
