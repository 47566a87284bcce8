"""A GPU check in one go: precision, ONNX providers, fused-pass speed, VRAM and sampler speed.

    python -m bench.gpu_check --out gpu_check_out        # on a CUDA machine, under 10 minutes

Writes ``gpu_check.json`` and ``gpu_check.md`` (a plain markdown table) into --out, nothing else
anywhere: every network runs on random weights (the real architectures, seeded) and nothing is
downloaded. Sections:

- precision: each torch network in fp16 (bf16 where the device's dtype is fp32) against fp32
  on one random input, max abs difference of the outputs;
- providers: the onnxruntime provider each ONNX model's session actually got
  (``session.get_providers()``): the swappers' graphs and the SCRFD/ArcFace stand-ins;
- fused: images per second through the fused pass for each swapper (restorer none), each
  restorer (swapper ghost) and both ``best`` modes, at batch 1 and at the default batch, with the
  per-model forward seconds (bench.pipeline's wrappers) and the peak VRAM of each run;
- sampler: seconds per image of the tiny random SD 1.5 and SDXL pipelines (the tests' ones),
  and at full size for a base model already on disk (--sd15 PATH, --sdxl PATH; Hub offline).

Each section runs under one global time budget (--budget, 540 s): once it is spent the rest are
recorded as skipped. A section that fails is recorded with its error; the others still run.
Without CUDA it says so and exits 0 without running anything.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

NEEDS_CUDA = "bench.gpu_check needs a CUDA device (torch.cuda.is_available() is False): nothing was run."


class Budget:
    """One deadline for the whole check; a section starts only while time is left."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


@contextlib.contextmanager
def section(report: dict, name: str, budget: Budget) -> Iterator[dict | None]:
    """The section's dict in ``report``, or None when the budget is spent; errors are recorded."""
    entry: dict[str, Any] = {}
    report["sections"][name] = entry
    if budget.left() <= 0:
        entry["status"] = "skipped: time budget spent"
        yield None
        return
    t0 = time.perf_counter()
    try:
        yield entry
        entry.setdefault("status", "ok")
    except Exception as exc:  # one section's failure is a finding, not the end of the check
        entry["status"] = f"error: {type(exc).__name__}: {exc}"
        entry["traceback"] = traceback.format_exc(limit=6)
    entry["seconds"] = round(time.perf_counter() - t0, 2)


def item(entry: dict, key: str, budget: Budget, fn: Callable[[], Any]) -> None:
    """One measurement of a section, its error recorded under its own key."""
    if budget.left() <= 0:
        entry[key] = {"status": "skipped: time budget spent"}
        return
    t0 = time.perf_counter()
    try:
        entry[key] = fn()
    except Exception as exc:
        entry[key] = {"status": f"error: {type(exc).__name__}: {exc}"}
    entry[key]["seconds"] = round(time.perf_counter() - t0, 2)


def peak_vram(device: torch.device) -> Callable[[], float | None]:
    """Reset the peak counter now; the returned call gives the peak since, in MiB (None off CUDA)."""
    if device.type != "cuda":
        return lambda: None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    return lambda: round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- configuration


def base_cfg(device: torch.device, tiny: bool):
    from builder.config import Config

    cfg = Config()
    cfg.runtime.random_weights = True
    cfg.runtime.device = str(device)
    cfg.faces.detector = cfg.faces.judge = "dlib"  # random SCRFD finds no faces; dlib is real
    if tiny:
        cfg.swap.generator = "G_unet_1block"
    return cfg


def low_dtype(device: torch.device) -> torch.dtype:
    """The dtype the product runs in on ``device``; bf16 where that is fp32 (CPU), so the
    comparison still measures a reduced precision."""
    from builder.device import model_dtype

    dtype = model_dtype(device)
    return torch.bfloat16 if dtype == torch.float32 else dtype


# ---------------------------------------------------------------- precision


def compare(run: Callable[[torch.dtype], torch.Tensor], low: torch.dtype, device: torch.device) -> dict:
    """``run(dtype)`` gives a network's output at that dtype on one fixed input."""
    track = peak_vram(device)
    with torch.inference_mode():
        ref = run(torch.float32).float()
        got = run(low).float()
    diff = (got - ref).abs()
    return {
        "dtype": str(low).removeprefix("torch."),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "ref_max_abs": float(ref.abs().max()),
        "finite": bool(torch.isfinite(got).all()),
        "peak_vram_mib": track(),
    }


def first(y: Any) -> torch.Tensor:
    return y[0] if isinstance(y, tuple | list) else y


def module_runner(net: torch.nn.Module, inputs: list[torch.Tensor], device: torch.device) -> Callable[[torch.dtype], torch.Tensor]:
    """``net`` at a dtype (a copy each, so fp32 is never a rounded fp16) on ``inputs``."""

    def run(dtype: torch.dtype) -> torch.Tensor:
        m = copy.deepcopy(net).to(device, dtype)
        return first(m(*[x.to(device, dtype) for x in inputs]))

    return run


def restorer_runner(restorer: Any, x: torch.Tensor, device: torch.device) -> Callable[[torch.dtype], torch.Tensor]:
    """A TorchRestorer's own forward (CodeFormer's w, GPEN's wrapper) at a dtype."""

    def run(dtype: torch.dtype) -> torch.Tensor:
        r = dataclasses.replace(restorer, net=copy.deepcopy(restorer.net).to(device, dtype), device=device, dtype=dtype)
        return r.forward(x.to(device, dtype))

    return run


def precision(entry: dict, budget: Budget, device: torch.device, tiny: bool) -> None:
    from builder.swap.parsing import PARSERS, load_parser
    from builder.swap.restorers import BACKENDS as RESTORERS
    from builder.swap.restorers import load_restorer
    from builder.swap.swappers import load_swapper

    low = low_dtype(device)
    gen = torch.Generator().manual_seed(0)
    cpu = torch.device("cpu")  # built on the CPU, copied per dtype onto the device
    cfg = base_cfg(cpu, tiny)
    ghost = load_swapper(cfg, cpu, "ghost")
    crop = torch.rand(1, 3, ghost.crop_size, ghost.crop_size, generator=gen) * 2 - 1
    z = torch.randn(1, 512, generator=gen) * 10
    item(entry, f"ghost generator {cfg.swap.generator}", budget,
         lambda: compare(module_runner(ghost.generator, [crop, z], device), low, device))  # fmt: skip
    face112 = torch.rand(1, 3, 112, 112, generator=gen) * 2 - 1
    item(entry, "ghost arcface iresnet100", budget, lambda: compare(module_runner(ghost.arcface, [face112], device), low, device))
    x512 = torch.rand(1, 3, 512, 512, generator=gen) * 2 - 1
    for name in sorted(n for n in RESTORERS if n != "none"):
        if tiny and name != "gpen_bfr_512":
            continue  # --tiny: one restorer shows the path runs (a 512 net in bf16 is slow on a CPU)

        def one(name: str = name) -> dict:
            return compare(restorer_runner(load_restorer(cfg, cpu, name), x512, device), low, device)

        item(entry, f"restorer {name}", budget, one)
    for name in ["bisenet"] if tiny else PARSERS:
        cfg.swap.parser = name  # type: ignore[assignment]

        def parse(cfg=cfg) -> dict:
            return compare(module_runner(load_parser(cfg, cpu).net, [x512], device), low, device)

        item(entry, f"parser {name}", budget, parse)
    entry["note"] = "ONNX graphs run in fp32 (their own dtype); torch networks only"


# ---------------------------------------------------------------- providers


def sessions_of(obj: Any, depth: int = 3) -> list[Any]:
    """Every onnxruntime session reachable from ``obj``'s attributes."""
    if hasattr(obj, "get_providers") and hasattr(obj, "run"):
        return [obj]
    if depth == 0 or not hasattr(obj, "__dict__"):
        return []
    out = []
    for v in vars(obj).values():
        out += sessions_of(v, depth - 1)
    return out


def providers(entry: dict, budget: Budget, device: torch.device, tiny: bool) -> None:
    import onnxruntime

    from builder import ort
    from builder.faces.random_onnx import arcface_model, scrfd_model
    from builder.swap.swappers import BACKENDS, load_swapper

    cfg = base_cfg(device, tiny)
    entry["available"] = onnxruntime.get_available_providers()
    entry["wanted"] = ort.wanted(device)
    entry["cuda_provider_error"] = ort.cuda_provider_error() if device.type == "cuda" else None
    for name in BACKENDS:
        if name == "ghost":
            continue

        def got(name: str = name) -> dict:
            swapper = load_swapper(cfg, device, name)
            return {"providers": [s.get_providers() for s in sessions_of(swapper)]}

        item(entry, f"swapper {name}", budget, got)
    for name, model in (("scrfd (random graph)", scrfd_model(0)), ("arcface (random graph)", arcface_model(0))):
        item(entry, name, budget, lambda model=model: {"providers": [ort.session(model.SerializeToString(), device).get_providers()]})


# ---------------------------------------------------------------- fused pass


def fused_runs(tiny: bool) -> list[tuple[str, dict[str, Any]]]:
    """(label, swap overrides): each swapper alone, each restorer alone, and both best modes."""
    from builder.swap.restorers import BACKENDS as RESTORERS
    from builder.swap.swappers import BACKENDS as SWAPPERS

    swappers = ["ghost", "inswapper_128"] if tiny else list(SWAPPERS)
    restorers = ["gpen_bfr_512"] if tiny else sorted(n for n in RESTORERS if n != "none")
    base = "inswapper_128" if tiny else "ghost"  # the restorers' swapper: the product default, or the cheapest
    runs = [(f"swapper {s}", {"swapper": s, "restorer": "none"}) for s in swappers]
    runs += [(f"restorer {r}", {"swapper": base, "restorer": r}) for r in restorers]
    best_swap: dict[str, Any] = {"swapper": "best", "restorer": "none"}
    best_restore: dict[str, Any] = {"swapper": base, "restorer": "best"}
    if tiny:
        best_swap["swapper_candidates"] = swappers
        best_restore["restorer_candidates"] = ["none", "gpen_bfr_512"]
    return [*runs, ("best swapper", best_swap), ("best restorer", best_restore)]


def face_jobs(cfg, count: int) -> list:
    from bench.pipeline import DATA
    from builder.faces.detect import make_detector
    from builder.io import list_images, load_image
    from builder.swap.fused import FaceJob

    detector = make_detector(cfg)
    jobs = []
    for path in list_images(DATA / "donors"):
        image = load_image(path)
        faces = detector.detect(image)
        if faces:
            jobs.append(FaceJob(image, faces[0]))
        if len(jobs) == count:
            break
    return jobs


def fused_one(cfg, overrides: dict[str, Any], jobs: list, device: torch.device, warm: bool) -> dict:
    """Images per second at batch 1 and at the default batch, per-model seconds, peak VRAM."""
    from bench import pipeline as bench_pipeline
    from builder import build
    from builder.swap.source import source_identity

    cfg = copy.deepcopy(cfg)
    for k, v in overrides.items():
        setattr(cfg.swap, k, v)
    track = peak_vram(device)
    bench_pipeline.FORWARD.clear()
    models = bench_pipeline.timed_models(build.load_models)(cfg)
    load_s = bench_pipeline.FORWARD.pop("(model loading, not counted)", 0.0)
    source = source_identity([bench_pipeline.DATA / "source" / "5-10.png"], models.detector, models.fused.swappers, models.judge)
    out: dict[str, Any] = {"load_s": round(load_s, 2), "peak_vram_load_mib": track()}
    if warm:  # first-call allocations and cuDNN autotuning are not the pass's cost
        models.fused.run(jobs[:1], source)
    for label, size in (("batch 1", 1), (f"batch {cfg.swap.batch_size}", cfg.swap.batch_size)):
        track = peak_vram(device)
        bench_pipeline.FORWARD.clear()
        sync(device)
        t0 = time.perf_counter()
        for i in range(0, len(jobs), size):
            models.fused.run(jobs[i : i + size], source)
        sync(device)
        wall = time.perf_counter() - t0
        out[label] = {
            "images": len(jobs),
            "images_per_s": round(len(jobs) / wall, 3),
            "forward_s": {k: round(v, 3) for k, v in sorted(bench_pipeline.FORWARD.items())},
            "peak_vram_mib": track(),
        }
    return out


def fused(entry: dict, budget: Budget, device: torch.device, tiny: bool, photos: int) -> None:
    cfg = base_cfg(device, tiny)
    if tiny:  # two photos in one batch of two, no parser: the code paths, in seconds on a CPU
        cfg.swap.batch_size = 2
        cfg.swap.mouth, cfg.swap.paste_mask = False, "box"
    jobs = face_jobs(cfg, photos)
    entry["photos"] = len(jobs)
    entry["default_batch"] = cfg.swap.batch_size
    for label, overrides in fused_runs(tiny):
        item(entry, label, budget, lambda o=overrides: fused_one(cfg, o, jobs, device, not tiny))


# ---------------------------------------------------------------- sampler


def full_size(path: Path, device: torch.device, tiny: bool) -> dict:
    """A real base model already on disk, loaded as the sampler loads it, at its family's size."""
    from builder import families
    from builder.config import Config
    from builder.sample.pipeline import load_pipeline, pipeline_family

    cfg = Config()
    fam = families.family(pipeline_family(path, cfg))
    size = 64 if tiny else fam.RESOLUTION
    steps = 2 if tiny else 25
    track = peak_vram(device)
    pipe = load_pipeline(path, cfg, device)
    gen = torch.Generator(device).manual_seed(0)
    pipe("a photo", num_inference_steps=2, height=size, width=size, generator=gen, output_type="np")  # warm-up
    sync(device)
    t0 = time.perf_counter()
    pipe("a photo", num_inference_steps=steps, height=size, width=size, generator=gen, output_type="np")
    sync(device)
    return {"family": fam.NAME, "size": size, "steps": steps, "images": 1,
            "s_per_image": round(time.perf_counter() - t0, 4), "peak_vram_mib": track()}  # fmt: skip


def sampler(entry: dict, budget: Budget, device: torch.device, tiny: bool, bases: dict[str, Path | None]) -> None:
    from tests.fixtures.clip import write_clip_tokenizer
    from tests.fixtures.tiny_sd import build_tiny_pipeline
    from tests.fixtures.tiny_sdxl import build_tiny_sdxl_pipeline

    steps = 4 if tiny else 25  # 25: the SD 1.5/SDXL sample default (builder.families)
    images = 1 if tiny else 4
    with tempfile.TemporaryDirectory(prefix="gpu_check_tok_") as tmp:
        tok = write_clip_tokenizer(Path(tmp) / "clip")
        for name, build in (("sd15 tiny", lambda: build_tiny_pipeline(0, tok)),
                            ("sdxl tiny", lambda: build_tiny_sdxl_pipeline(0, tok))):  # fmt: skip

            def run(build=build) -> dict:
                pipe = build().to(device)
                pipe.set_progress_bar_config(disable=True)
                track = peak_vram(device)
                gen = torch.Generator(device).manual_seed(0)
                pipe("a photo", num_inference_steps=2, generator=gen, output_type="np")  # warm-up
                sync(device)
                t0 = time.perf_counter()
                pipe(["a photo"] * images, num_inference_steps=steps, generator=gen, output_type="np")
                sync(device)
                return {"steps": steps, "images": images, "s_per_image": round((time.perf_counter() - t0) / images, 4),
                        "peak_vram_mib": track()}  # fmt: skip

            item(entry, name, budget, run)
    for name, path in bases.items():
        if path is None or not path.exists():
            entry[f"{name} full size"] = {"status": f"not run: no local base model (--{name} PATH; nothing is downloaded)"}
        else:
            item(entry, f"{name} full size", budget, lambda path=path: full_size(path, device, tiny))


# ---------------------------------------------------------------- report


def mib(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0f} MiB"


def rows(report: dict) -> list[str]:
    lines = ["| section | item | result |", "|---|---|---|"]
    for name, sec in report["sections"].items():
        lines.append(f"| {name} | | {sec.get('status', '')} ({sec.get('seconds', 0)} s) |")
        for key, val in sec.items():
            if not isinstance(val, dict):
                continue
            lines.append(f"| {name} | {key} | {summary(val)} |")
    return lines


def summary(val: dict) -> str:
    if "max_abs_diff" in val:
        return f"{val['dtype']} vs fp32 max abs {val['max_abs_diff']:.3g} (ref max {val['ref_max_abs']:.3g}), VRAM {mib(val['peak_vram_mib'])}"
    if "providers" in val:
        return ", ".join(p[0] if p else "?" for p in val["providers"])
    if "s_per_image" in val:
        return f"{val['s_per_image']} s/image ({val['steps']} steps), VRAM {mib(val['peak_vram_mib'])}"
    runs = {k: v for k, v in val.items() if k.startswith("batch ") and isinstance(v, dict)}
    if runs:
        return "; ".join(f"{k}: {v['images_per_s']} img/s, VRAM {mib(v['peak_vram_mib'])}" for k, v in runs.items())
    return str(val.get("status", val))


def write(out: Path, report: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "gpu_check.md").write_text("\n".join(rows(report)) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="folder for gpu_check.json and gpu_check.md (default: a new one under /tmp)")
    ap.add_argument("--budget", type=float, default=540.0, help="seconds for the whole check; later sections are skipped")
    ap.add_argument("--photos", type=int, default=16, help="donor photos through the fused pass")
    ap.add_argument("--tiny", action="store_true", help="a few candidates, one photo pair, few sampler steps")
    ap.add_argument("--sd15", type=Path, help="a local SD 1.5 base model (file or diffusers folder) to time at full size")
    ap.add_argument("--sdxl", type=Path, help="a local SDXL base model to time at full size")
    ap.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # cpu: check the code paths here
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(NEEDS_CUDA)
        return 0
    # a single-file base model's component configs would otherwise be fetched from the Hub
    os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"
    out = args.out or Path(tempfile.mkdtemp(prefix="gpu_check_"))
    budget = Budget(args.budget)
    photos = 2 if args.tiny else args.photos
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "torch": torch.__version__, "cuda": torch.version.cuda, "tiny": args.tiny, "budget_s": args.budget,
        "sections": {},
    }  # fmt: skip
    t0 = time.perf_counter()
    steps: list[tuple[str, Callable[[dict], None]]] = [
        ("precision", lambda e: precision(e, budget, device, args.tiny)),
        ("providers", lambda e: providers(e, budget, device, args.tiny)),
        ("fused", lambda e: fused(e, budget, device, args.tiny, photos)),
        ("sampler", lambda e: sampler(e, budget, device, args.tiny, {"sd15": args.sd15, "sdxl": args.sdxl})),
    ]
    for name, fn in steps:
        with section(report, name, budget) as entry:
            if entry is not None:
                fn(entry)
        write(out, report)  # after every section: a killed run keeps what it measured
    report["total_s"] = round(time.perf_counter() - t0, 1)
    write(out, report)
    print("\n".join(rows(report)))
    print(f"\nwrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
