"""The whole `build` stage on a fixed set of donor photos: per-stage time, images per second,
peak memory, the share of time spent outside model forward passes, and memory as the
donor folder grows.

    .venv/bin/python -m bench.pipeline                       # 8 photos, product defaults, then 50 vs 500
    .venv/bin/python -m bench.pipeline --photos 16 --device cuda --caption-backend blip
    .venv/bin/python -m bench.pipeline --scaling ""           # skip the 50/500 memory runs

Models run with --random-weights (real architectures, seeded weights): the time a forward
pass takes does not depend on the weights' values. The ONNX swappers (inswapper, HyperSwap,
SimSwap) are the exception: their stand-ins have the published graphs' inputs and outputs but
only a few convolutions inside, so their swap times are the pre/post-processing plus a tiny
graph, a lower bound, not the published models' cost.

    .venv/bin/python -m bench.pipeline --photos 8 --scaling "" --cheap --extra --set swap.swapper=best \
        --set swap.swapper_candidates=ghost,inswapper_128,hyperswap_1a_256,simswap_256   # s/face per swapper

Every model call is timed by wrapping the loaded models' methods (detect, judge embed, swap,
parse, restore, caption); "outside" is the wall time of the build after model loading minus
those calls: decoding, warps, masks, paste, scoring arithmetic, writes, manifest, settling, contact sheets and TOMLs.

The memory runs are separate processes (peak RSS is per process), one per folder size, with
the cheapest real configuration so 500 photos finish on a laptop CPU: G_unet_1block, no
restorer, no mouth parsing, box paste mask, dlib faces, photos shrunk to --scaling-side.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import cv2

from builder import build as build_module
from builder import pipeline
from builder.caption.base import load_captioner
from builder.caption.recaption import recaption
from builder.cli.common import build_config
from builder.io import list_images, load_image
from builder.kohya.files import write_kohya_files
from tests.conftest import DATA as TEST_DATA
from tests.fixtures.clip import write_clip_tokenizer

REPO = Path(__file__).resolve().parents[1]
DATA = TEST_DATA  # the shared photos, found as the tests find them (a worktree sits elsewhere)
STAGES = ("decode", "detect", "warp", "swap", "carry", "parse", "mouth", "restore", "paste", "score", "write")
CHEAP = ["--generator", "G_unet_1block", "--restorer", "none", "--no-mouth", "--set", "swap.paste_mask=box",
         "--detector", "dlib", "--judge", "dlib", "--caption-backend", "none"]  # fmt: skip
FORWARD = defaultdict(float)  # model call -> seconds


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not getrusage: ru_maxrss survives fork+exec, so a child
    started by a big parent would report the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, bytes on macOS


def timed(name: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            FORWARD[name] += time.perf_counter() - t0

    return wrapper


def wrap(obj, name: str, *methods: str) -> None:
    for m in methods:
        if obj is not None and hasattr(obj, m):
            setattr(obj, m, timed(name, getattr(obj, m)))


def timed_models(real_load):
    def load(cfg):
        t0 = time.perf_counter()
        models = real_load(cfg)
        FORWARD["(model loading, not counted)"] = time.perf_counter() - t0
        wrap(models.detector, "detect", "detect")
        wrap(models.judge, "judge embed", "embed")
        for swapper in models.fused.swappers:  # one line per candidate in the "best" modes
            wrap(swapper, f"swap {swapper.name}", "swap", "embed_source")
        for restorer in models.fused.restorers:
            wrap(restorer, f"restore {restorer.name}", "restore")
        wrap(models.fused.parser, "parse", "parse")
        return models

    return load


def timed_captioner(cfg, device):
    captioner = load_captioner(cfg, device)
    wrap(captioner, "caption", "caption")
    return captioner


def prepare(folder: Path, count: int, side: int) -> None:
    """``count`` donor photos (copies under new names past 44), longest side ``side`` (0: as is)."""
    folder.mkdir(parents=True, exist_ok=True)
    donors = sorted((DATA / "donors").iterdir())
    cache: dict[Path, object] = {}
    for i in range(count):
        src = donors[i % len(donors)]
        if src not in cache:
            image = load_image(src)
            if side:
                s = side / max(image.shape[:2])
                image = cv2.resize(image, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
            cache[src] = cv2.imencode(".png", image)[1].tobytes()
        (folder / f"{i:05d}_{src.stem}.png").write_bytes(cache[src])


def run_build(donors: Path, out: Path, flags: list[str], clip: Path) -> dict:
    """`build` as `launch.py build` runs it (build stage, then captions and TOMLs), timed."""
    argv = ["build", "--source", str(DATA / "source" / "5-10.png"), "--donors", str(donors), "--out", str(out),
            "--random-weights", "--set", f"caption.clip_tokenizer={clip}", *flags]  # fmt: skip
    import launch

    cfg = build_config(launch.make_parser().parse_args(argv))
    build_module.load_models = timed_models(build_module.load_models)
    phases: dict[str, float] = {}
    rss: dict[str, float] = {}
    t0 = time.perf_counter()
    summary = build_module.run_build(cfg)
    phases["photos (run_build)"] = time.perf_counter() - t0
    rss["after the photo loop"] = peak_rss_mb()
    t1 = time.perf_counter()
    pipeline.write_sheets(summary, cfg)
    phases["contact sheets"] = time.perf_counter() - t1
    rss["after the contact sheets"] = peak_rss_mb()
    t2 = time.perf_counter()
    recaption(out, cfg, cfg.character.trigger, cfg.character.class_word, captioner_factory=timed_captioner)
    write_kohya_files(out, cfg, cfg.caption.extension)
    phases["caption + TOMLs"] = time.perf_counter() - t2
    rss["final"] = peak_rss_mb()
    return {"cfg": cfg, "summary": summary, "phases": phases, "rss": rss, "wall": time.perf_counter() - t0}


def gpu_peak() -> str:
    import torch

    if not torch.cuda.is_available():
        return "n/a (no CUDA device)"
    return f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB allocated, {torch.cuda.max_memory_reserved() / 2**20:.0f} MiB reserved"


def main_run(args: argparse.Namespace, clip: Path, tmp: Path) -> None:
    donors, out = tmp / "donors", tmp / "run"
    prepare(donors, args.photos, args.side)
    flags = ["--device", args.device, "--caption-backend", args.caption_backend, "--batch-size", str(args.batch_size), *args.extra]
    if args.cheap:
        flags = [*flags, *CHEAP]
    res = run_build(donors, out, flags, clip)
    cfg, summary = res["cfg"], res["summary"]
    n = summary.processed
    load = FORWARD.pop("(model loading, not counted)", 0.0)
    work = res["wall"] - load
    forward = sum(FORWARD.values())
    per_stage = defaultdict(float)
    for r in summary.records:
        for k, v in r.timings.items():
            per_stage[k] += v
    print(f"== build on {n} donor photos ({args.side or 'native'} px side), random weights, device {args.device}")
    print(f"   swapper {cfg.swap.swapper}, generator {cfg.swap.generator}, restorer {cfg.swap.restorer}, mouth {cfg.swap.mouth}, "
          f"paste mask {cfg.swap.paste_mask}, detector {cfg.faces.detector}, judge {cfg.faces.judge}, "
          f"caption {cfg.caption.backend}, batch {cfg.swap.batch_size}, torch threads {_threads()}")  # fmt: skip
    print(f"model loading: {load:.2f}s (not counted below)")
    print("per-stage seconds per photo (manifest timings; a batch's time is shared by its photos):")
    for k in STAGES:
        print(f"   {k:8s} {per_stage.get(k, 0.0) / max(n, 1):8.3f}")
    for k, v in res["phases"].items():
        extra = f"  ({v / max(n, 1):.3f}/photo)" if k != "photos (run_build)" else ""
        print(f"   {k:24s} {v - (load if k == 'photos (run_build)' else 0):8.2f}s{extra}")
    print("model forward calls (wall seconds): " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(FORWARD.items())))
    for stage in ("swap", "restore"):  # per backend: the "best" modes run every candidate
        parts = {k.split(" ", 1)[1]: v for k, v in FORWARD.items() if k.startswith(f"{stage} ")}
        total = sum(parts.values())
        each = ", ".join(f"{k} {v / max(n, 1):.3f}" for k, v in parts.items())
        print(f"{stage}: {total / max(n, 1):.3f} s per face ({each}), {total / work:.1%} of the build")
    print(f"images per second: {n / work:.3f} ({n} photos in {work:.2f}s after loading)")
    print("peak RSS: " + ", ".join(f"{k} {v:.0f} MB" for k, v in res["rss"].items()))
    print(f"peak GPU memory: {gpu_peak()}")
    outside = (work - forward) / work
    verdict = "PASS" if outside < 0.15 else "FAIL"
    print(f"time outside model forward passes: {work - forward:.2f}s of {work:.2f}s = {outside:.1%} (limit 15%): {verdict}")


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def sample_rss(manifest: Path, every: float = 5.0) -> None:
    """Print the current RSS against photos done, so a long run shows whether memory climbs."""
    page = os.sysconf("SC_PAGE_SIZE")
    while True:
        time.sleep(every)
        try:
            done = manifest.read_bytes().count(b"\n")
            rss = int(Path("/proc/self/statm").read_text().split()[1]) * page / 2**20
        except OSError:
            continue
        print(json.dumps({"done": done, "rss_mb": round(rss)}), flush=True)


def child(args: argparse.Namespace, clip: Path) -> None:
    """One memory-scaling run in this process; prints a JSON line."""
    donors = Path(args.child_donors)
    out = Path(tempfile.mkdtemp(prefix="bench_out_"))
    threading.Thread(target=sample_rss, args=(out / "manifest.jsonl",), daemon=True).start()
    try:
        res = run_build(donors, out, ["--device", args.device, "--batch-size", str(args.batch_size), *CHEAP], clip)
        n = res["summary"].processed
        load = FORWARD.get("(model loading, not counted)", 0.0)
        print(json.dumps({"photos": n, "rss": res["rss"], "seconds": res["wall"] - load}))
    finally:
        shutil.rmtree(out, ignore_errors=True)


def scaling(args: argparse.Namespace, clip: Path, tmp: Path) -> None:
    sizes = sorted(int(s) for s in args.scaling.split(",") if s)
    folder = tmp / "copies"
    prepare(folder, max(sizes), args.scaling_side)
    print(f"\n== memory as the donor folder grows: {', '.join(map(str, sizes))} photos "
          f"(copies of the 44 donors under new names, {args.scaling_side} px side), one process per size,")
    print(f"   cheapest real configuration: {' '.join(CHEAP)}, random weights, device {args.device}")  # fmt: skip
    copies = list_images(folder)
    results = {}
    for n in sizes:
        sub = tmp / f"donors_{n}"
        sub.mkdir()
        for p in copies[:n]:
            os.link(p, sub / p.name)
        cmd = [sys.executable, "-m", "bench.pipeline", "--child-donors", str(sub), "--device", args.device,
               "--batch-size", str(args.batch_size), "--clip", str(clip)]  # fmt: skip
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        samples, final = [], None
        for ln in proc.stdout:
            if ln.startswith('{"done"'):
                samples.append(json.loads(ln))
                if len(samples) % 12 == 0:
                    print(f"      ... {samples[-1]['done']} photos done, RSS now {samples[-1]['rss_mb']} MB", flush=True)
            elif ln.startswith("{"):
                final = json.loads(ln)
        if proc.wait() != 0 or final is None:
            print(f"   {n} photos: FAILED (exit {proc.returncode})")
            return
        results[n] = r = final
        during = [s["rss_mb"] for s in samples if s["done"] > 0]
        if during:
            print(f"      RSS while photos were processed: min {min(during)} MB, max {max(during)} MB over {len(during)} samples")
        rss = ", ".join(f"{k} {v:.0f} MB" for k, v in r["rss"].items())
        print(f"   {n:4d} photos: {r['seconds']:.1f}s ({r['photos'] / r['seconds']:.2f} img/s); peak RSS {rss}")
    lo, hi = results[sizes[0]]["rss"], results[sizes[-1]]["rss"]
    for k in lo:
        print(f"   peak RSS ratio {sizes[-1]}/{sizes[0]} {k}: {hi[k] / lo[k]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=8, help="donor photos in the timed run")
    ap.add_argument("--side", type=int, default=0, help="shrink the timed run's photos to this longest side (0: as they are)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--caption-backend", default="none", choices=["none", "blip", "lavis"],
                    help="none on CPU by default: a random BLIP-large is minutes per dataset there")  # fmt: skip
    ap.add_argument("--cheap", action="store_true", help="the timed run uses the cheapest configuration too")
    ap.add_argument("--scaling", default="50,500", help="folder sizes for the memory runs ('' to skip)")
    ap.add_argument("--scaling-side", type=int, default=400)
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `build` flags for the timed run")
    ap.add_argument("--child-donors", help=argparse.SUPPRESS)
    ap.add_argument("--clip", help=argparse.SUPPRESS)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as t:
        tmp = Path(t)
        clip = Path(args.clip) if args.clip else write_clip_tokenizer(tmp / "clip")
        if args.child_donors:
            child(args, clip)
            return
        if args.photos:
            main_run(args, clip, tmp)
        if args.scaling:
            scaling(args, clip, tmp)


if __name__ == "__main__":
    main()
