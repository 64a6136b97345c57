"""What OpenVINO's two ways of compiling lightsr's export cost per input size: time and memory.

lightsr's ONNX export has a free height and width. OpenVINO can compile it for one input shape
(``reshape`` first: its CPU plugin then plans the reuse of its buffers) or as it is, for any
shape. ``lightsr.quantize.openvino_runner`` does the first for large inputs and the second for
inputs of at most ``_OPENVINO_ANY_SHAPE_MAX_PIXELS``; this measures why. For the bundled
default x2 model (``--weights``), fp32, ``--precision bf16`` (OpenVINO's bf16, where the CPU
has it natively) or ``--precision int8`` (the quantized graph ``--precision int8`` runs, from
lightsr's cache, its kept convs in the precision lightsr runs them in here), and each LR
size, in a fresh process per (way, size):

- ``compile_s``: compiling (and making an infer request);
- ``first_s``: the first inference after it (the any-shape model sizes its buffers then);
- ``infer_s``: min of ``--rounds`` more inferences;
- ``peak_mib``: VmHWM after them minus VmRSS before the compile.

    python benchmarks/bench_openvino_shapes.py [--sizes 120x125 180x180 256x256] [--rounds 3]
    python benchmarks/bench_openvino_shapes.py --precision int8 --sizes 180x180 256x256 362x288

Writes ``benchmarks/results/openvino_shapes/<cpu>.json`` (one record per weights and precision).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from labelled_runs import run_child, save_run  # noqa: E402


def child(
    weights: str, precision: str, way: str, height: int, width: int, rounds: int
) -> dict[str, Any]:
    import numpy as np
    import openvino as ov
    import torch

    import lightsr
    from lightsr.deploy import reparameterize
    from lightsr.hardware import proc_status_kb
    from lightsr.quantize import exported_graph_bytes, openvino_core

    hint = "bf16" if precision == "bf16" else "f32"
    if precision == "int8":  # the quantized graph --precision int8 runs (from lightsr's cache)
        from lightsr.upscale import Upscaler

        runner = Upscaler(lightsr.load(weights), tile=None, precision="int8", backend="openvino")
        assert runner.int8 is not None
        graph = runner.int8.onnx
        hint = "bf16" if runner.int8.report.floats == "bf16" else "f32"  # as lightsr runs it
        del runner
    else:
        graph, _ = exported_graph_bytes(reparameterize(lightsr.load(weights)).eval())
    core = openvino_core()
    model = core.read_model(graph)
    if way == "per_shape":
        model.reshape({0: ov.PartialShape([1, 3, height, width])})
    config = {"INFERENCE_NUM_THREADS": torch.get_num_threads(), "INFERENCE_PRECISION_HINT": hint}
    x = np.random.default_rng(0).random((1, 3, height, width), dtype=np.float32)
    base_kb = proc_status_kb("VmRSS") or 0
    t = time.perf_counter()
    request = core.compile_model(model, "CPU", config).create_infer_request()
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    request.infer({0: x})
    first_s = time.perf_counter() - t
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        request.infer({0: x})
        times.append(time.perf_counter() - t)
    return {
        "compile_s": round(compile_s, 3),
        "first_s": round(first_s, 3),
        "infer_s": round(min(times), 3),
        "peak_mib": round(((proc_status_kb("VmHWM") or 0) - base_kb) / 1024),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="a2f_sd_x2")
    parser.add_argument("--sizes", nargs="+", default=["120x125", "180x180", "256x256"])
    parser.add_argument("--precision", choices=["fp32", "bf16", "int8"], default="fp32")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        way, h, w, rounds = args.child
        record = child(args.weights, args.precision, way, int(h), int(w), int(rounds))
        print("CHILD " + json.dumps(record), flush=True)
        return 0
    record: dict[str, Any] = {}
    for size in args.sizes:
        h, w = (int(v) for v in size.split("x"))
        for way in ("per_shape", "any_shape"):
            argv = ["--weights", args.weights, "--precision", args.precision]
            argv += ["--child", way, str(h), str(w), str(args.rounds)]
            r = record.setdefault(size, {})[way] = run_child(__file__, argv, None)
            print(
                f"{args.weights} {args.precision} {size:8s} {way:9s} compile "
                f"{r['compile_s']:.3f} s  first {r['first_s']:.3f} s  infer "
                f"{r['infer_s']:.3f} s  peak {r['peak_mib']} MiB"
            )
    if args.no_save:
        return 0
    path = save_run(
        "openvino_shapes",
        f"{args.weights} {args.precision}",
        {"rounds": args.rounds, **record},
        what="OpenVINO on lightsr's ONNX export (fp32) or int8 graph, compiled for the input's "
        "shape (per_shape) or as exported (any_shape), per LR size; labelled 'WEIGHTS PRECISION'",
        how="a fresh process per (way, size); compile_s includes the infer request; first_s: "
        "the first inference; infer_s: min of the rounds after it; peak_mib: VmHWM after them "
        "minus VmRSS before the compile",
        command="python benchmarks/bench_openvino_shapes.py [--weights NAME] [--precision P] "
        "[--sizes HxW ...]",
    )
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
