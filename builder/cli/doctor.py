"""``launch.py doctor``: one line per thing the builder needs, each OK / MISSING / WARN.

Offline and quick. Exit 1 only when something needed to run at all is broken (the
Python version, or a core package that does not import); missing weights, sd-scripts
or accelerate are reported but are not fatal, because they are fetched or only needed
by some stages.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import platform
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from builder import ort as ORT
from builder import weights as W
from builder.cli.common import add_shared_flags, build_config
from builder.config import Config
from builder.errors import BuilderError
from builder.needs import needed_for

MIN_PYTHON = (3, 11)
MIN_FREE_GB = 10.0  # weights ~3 GB, an SD 1.5 checkpoint 4 GB, plus a run's images
CORE_IMPORTS = ("numpy", "cv2", "PIL", "torchvision", "onnx", "transformers", "diffusers",
                "safetensors", "huggingface_hub")
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml",
                     "onnxruntime-openvino", "onnxruntime-silicon", "onnxruntime-qnn")
CV2_DISTRIBUTIONS = ("opencv-python-headless", "opencv-python", "opencv-contrib-python",
                     "opencv-contrib-python-headless")
# Each module that several distributions install: only one of them may be there.
MODULE_DISTRIBUTIONS = {"onnxruntime": ORT_DISTRIBUTIONS, "cv2": CV2_DISTRIBUTIONS}
STYLE = {"OK": "green", "WARN": "yellow", "MISSING": "red"}


@dataclass
class Check:
    status: str  # OK | WARN | MISSING
    what: str
    detail: str
    fatal: bool = False  # MISSING and needed to run at all


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "doctor",
        help="check Python, torch/CUDA, onnxruntime, disk, weights, sd-scripts, accelerate",
        description="Print one OK / MISSING / WARN line for each thing the builder needs. "
        "Offline. Exits 1 only if something needed to run at all is broken.",
    )
    add_shared_flags(p, "--sd-scripts")
    p.add_argument("--all", action="store_true", dest="show_all",
                   help="list every registry weight, not only the ones this config needs")
    return p


def check_python() -> Check:
    v = sys.version_info
    ok = (v.major, v.minor) >= MIN_PYTHON
    return Check("OK" if ok else "MISSING", "python",
                 f"{v.major}.{v.minor}.{v.micro} at {sys.executable}"
                 + ("" if ok else f" (need >= {MIN_PYTHON[0]}.{MIN_PYTHON[1]})"), fatal=not ok)


def check_torch() -> list[Check]:
    try:
        import torch
    except Exception as exc:  # a broken wheel raises more than ImportError
        return [Check("MISSING", "torch", f"import failed: {exc}", fatal=True)]
    checks = [Check("OK", "torch", torch.__version__)]
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        hint = f"; `train --gpus {count}` trains on all of them" if count > 1 else ""
        checks.append(Check("OK", "cuda", f"CUDA {torch.version.cuda}: {count} GPU(s){hint}"))
        checks += [gpu_check(i, torch.cuda.get_device_properties(i)) for i in range(count)]
    else:
        built = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build"
        checks.append(Check("WARN", "cuda", f"not available ({built}); everything runs on the CPU, slowly"))
    return checks


def gpu_check(index: int, props: object) -> Check:
    """One line per GPU: the numbers --gpu-ids takes, and what each can hold."""
    name = getattr(props, "name", "?")
    memory = getattr(props, "total_memory", 0) / 2**30
    cc = f"{getattr(props, 'major', '?')}.{getattr(props, 'minor', '?')}"
    return Check("OK", f"gpu {index}", f"{name}, {memory:.1f} GiB, compute capability {cc}")


def check_imports() -> list[Check]:
    out = []
    for mod in CORE_IMPORTS:
        try:
            m = importlib.import_module(mod)
            out.append(Check("OK", mod, str(getattr(m, "__version__", "imported"))))
        except Exception as exc:
            out.append(Check("MISSING", mod, f"import failed: {exc}", fatal=True))
    return out


def installed(dists: tuple[str, ...]) -> list[str]:
    """``name==version`` of each of ``dists`` installed."""
    found = []
    for dist in dists:
        try:
            found.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def gpu_ort_platform() -> bool:
    """Where requirements.txt installs onnxruntime-gpu."""
    return sys.platform == "linux" and platform.machine() == "x86_64"


def check_distributions() -> list[Check]:
    """Exactly one distribution of each shared module, and the GPU onnxruntime where it should be."""
    checks = []
    for module, dists in MODULE_DISTRIBUTIONS.items():
        found = installed(dists)
        what = f"{module} dists"
        if not found:
            checks.append(Check("MISSING", what, f"none of {', '.join(dists)} installed; "
                                "pip install -r requirements.txt", fatal=True))
        elif len(found) > 1:
            names = " ".join(f.split("==")[0] for f in found)
            checks.append(Check(
                "MISSING", what,
                f"{', '.join(found)} all install the one `{module}` module, whichever came last wins. "
                f"Fix: pip uninstall -y {names} && pip install -r requirements.txt", fatal=True))
        elif module == "onnxruntime" and gpu_ort_platform() and not found[0].startswith("onnxruntime-gpu=="):
            checks.append(Check("WARN", what, f"{found[0]}: the CPU build; ONNX models will not use the GPU. "
                                f"Fix: pip uninstall -y {found[0].split('==')[0]} && pip install -r requirements.txt"))
        else:
            checks.append(Check("OK", what, found[0]))
    return checks


def check_onnxruntime(cuda: bool) -> list[Check]:
    try:
        import onnxruntime as ort

        providers = ort.get_available_providers()
    except Exception as exc:
        return [Check("MISSING", "onnxruntime", f"import failed: {exc}", fatal=True)]
    checks = [Check("OK", "onnxruntime providers", ", ".join(providers))]
    if cuda:
        error = ORT.cuda_provider_error()
        if error:
            checks.append(Check(
                "MISSING", "onnxruntime cuda",
                f"the CUDA provider cannot load: {error}. onnxruntime-gpu 1.31 needs CUDA 13 and cuDNN 9 "
                "(pip install -r requirements.txt brings them as nvidia-* wheels)", fatal=True))
        else:
            checks.append(Check("OK", "onnxruntime cuda", "the CUDA provider loads"))
    return checks


def onnx_models(cfg: Config) -> list[str]:
    """The ONNX models this config runs (registry names; the insightface pack as its two nets)."""
    names = []
    for name in needed_for(cfg):
        spec = W.REGISTRY.get(name)
        if spec is None:
            continue
        if spec.kind == "zip":
            names += [f"{name}/{m}" for m in spec.members if m.endswith(".onnx")]
        elif spec.filename.endswith(".onnx") or any(m.endswith(".onnx") for m in spec.members):
            names.append(name)
    return names


def check_onnx_providers(cfg: Config, cuda_ok: bool) -> Check:
    """Which provider each ONNX model of this config will run on."""
    chosen = ORT.providers(cfg.runtime.device)[0]
    if chosen == ORT.CUDA and not cuda_ok:
        chosen = f"{ORT.CPU} (the CUDA provider cannot load)"
    models = onnx_models(cfg)
    if cfg.runtime.random_weights or not models:
        return Check("OK", "onnx models", f"random-weight stand-ins or none: all on {chosen}")
    return Check("OK", "onnx models", f"{', '.join(models)}: {chosen}")


def _existing_parent(path: Path) -> Path:
    path = path.expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(cfg: Config) -> list[Check]:
    places = {"weights cache": W.cache_dir(cfg.runtime.weights_dir),
              "output": Path(cfg.paths.out) if cfg.paths.out else Path.cwd()}
    checks = []
    for what, path in places.items():
        free = shutil.disk_usage(_existing_parent(path)).free / 1e9
        status = "OK" if free >= MIN_FREE_GB else "WARN"
        checks.append(Check(status, f"free disk ({what})", f"{free:.1f} GB free at {path}"))
    return checks


def check_weights(cfg: Config, show_all: bool = False) -> list[Check]:
    """What this config needs, and whether the first run fetches it; with ``show_all`` every registry file."""
    needed = needed_for(cfg)
    names = list(W.REGISTRY) if show_all else [n for n in needed if n in W.REGISTRY]
    checks = []
    for name in names:
        spec = W.REGISTRY[name]
        st = W.state(name, cfg.runtime.weights_dir)
        role = "needed by this config" if name in needed else ("optional" if spec.optional else "not used by this config")
        if st.state in (W.PRESENT, W.UNVERIFIED):
            checks.append(Check("OK", f"weight {name}", f"{st.state}: {st.path}"))
        elif st.state == W.BAD:
            checks.append(Check("WARN", f"weight {name}", f"{st.detail} at {st.path} ({role}); "
                                f"`weights --fetch {name}` replaces it"))
        elif name in needed:
            size = f", {spec.size / 1e9:.2f} GB" if spec.size else ""
            checks.append(Check("MISSING", f"weight {name}", f"fetched by the first run{size} "
                                f"(`weights --fetch {name}` now, or put it at {st.path})"))
        else:
            checks.append(Check("MISSING", f"weight {name}", f"{role}; `weights --fetch {name}` "
                                f"or put it at {st.path}"))
    if not show_all:
        others = len(W.REGISTRY) - len(names)
        checks.append(Check("OK", "other weights", f"{others} registry files this config does not use (--all lists them)"))
    checks.append(check_base_model_source(cfg))
    return checks


def check_base_model_source(cfg: Config) -> Check:
    """The base model train and sample will use: here already, or where it will come from (offline)."""
    from builder.base_model import base_model_spec, local_copy, parse_spec

    spec = base_model_spec(cfg)
    try:
        src = parse_spec(spec)
        found = local_copy(src, cfg)
    except BuilderError as exc:
        return Check("MISSING", "base model", str(exc))
    if found is not None:
        return Check("OK", "base model", f"{spec}: {found}")
    how = "generated on first use" if src.kind == "random" else "fetched by the first run that trains or samples"
    return Check("MISSING", "base model", f"{spec} ({src.kind}): not here yet, {how}")


def check_sd_scripts(cfg: Config) -> list[Check]:
    if not cfg.paths.sd_scripts:
        sd = None
        checks = [Check("MISSING", "sd-scripts",
                        "not set (needed by `train`): pass --sd-scripts DIR or set paths.sd_scripts")]
    else:
        sd = Path(cfg.paths.sd_scripts).expanduser()
        ok = (sd / "train_network.py").is_file()
        checks = [Check("OK" if ok else "MISSING", "sd-scripts",
                        f"{sd / 'train_network.py'}" + ("" if ok else " not found"))]
    bins = [Path(sys.executable).parent / "accelerate"]
    if sd is not None:
        bins += [sd / "venv" / "bin" / "accelerate", sd / ".venv" / "bin" / "accelerate"]
    found = shutil.which("accelerate") or next((str(b) for b in bins if os.access(b, os.X_OK)), None)
    checks.append(Check("OK" if found else "MISSING", "accelerate",
                        found or "no `accelerate` on PATH, in this venv or in sd-scripts' venv"))
    return checks


def run(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    checks = [check_python(), *check_torch()]
    cuda = any(c.what == "cuda" and c.status == "OK" for c in checks)
    checks += check_distributions() + check_onnxruntime(cuda)
    cuda_ok = not any(c.what == "onnxruntime cuda" and c.status != "OK" for c in checks)
    checks += [check_onnx_providers(cfg, cuda_ok), *check_imports(), *check_disk(cfg)]
    checks += check_weights(cfg, getattr(args, "show_all", False)) + check_sd_scripts(cfg)
    out = Console(soft_wrap=True, highlight=False)
    width = max(len(c.what) for c in checks)
    for c in checks:
        style = STYLE[c.status]
        out.print(f"[{style}]{c.status:<7}[/{style}] {escape(c.what):<{width}}  {escape(c.detail)}")
    fatal = [c.what for c in checks if c.fatal]
    if fatal:
        out.print(f"[bold red]cannot run: {', '.join(fatal)} broken[/bold red]")
        return 1
    return 0
