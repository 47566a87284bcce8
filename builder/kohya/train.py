"""Run sd-scripts' train_network.py (SDXL: sdxl_train_network.py) through ``accelerate launch``, streaming its log.

Checks first (each failure has its own message): the sd-scripts checkout, the
``accelerate`` launcher, the base model, and for SDXL the argument combinations
sdxl_train_network.py refuses. With ``kohya.num_processes`` above 1 accelerate starts
one process per GPU (``--multi_gpu``). Then the child's output goes to the terminal
and ``<out>/log/train.log``; its tqdm "steps" counter drives a progress bar; a failure
ends with the last lines of the log and the exact command to run by hand.
"""

from __future__ import annotations

import collections
import datetime
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from rich.markup import escape

from builder import families
from builder.config import Config
from builder.console import console, progress
from builder.errors import BuilderError, ConfigError
from builder.families import resolve_family

# tqdm's bar for the training loop (desc="steps"); "validation steps:" bars are not it.
STEP_RE = re.compile(r"^steps:\s+\d+%\|.*?\|\s*(\d+)/(\d+)")
TOTAL_RE = re.compile(r"total optimization steps[^:]*:\s*(\d+)")
EPOCH_RE = re.compile(r"^epoch (\d+)/(\d+)")
TAIL_LINES = 40


@dataclass
class TrainCommand:
    argv: list[str]
    cwd: Path
    config: Path
    log: Path

    def shell(self) -> str:
        """What to paste into a terminal to run it by hand."""
        if os.name == "nt":
            return f'cd /d "{self.cwd}" && {subprocess.list2cmdline(self.argv)}'
        return f"cd {shlex.quote(str(self.cwd))} && {shlex.join(self.argv)}"


def check_sd_scripts(folder: str | Path, family: str = families.DEFAULT) -> Path:
    if not str(folder):
        raise BuilderError(
            "sd-scripts checkout not given: pass --sd-scripts DIR or set paths.sd_scripts "
            "(git clone https://github.com/kohya-ss/sd-scripts)"
        )
    path = Path(folder).expanduser().resolve()
    if not path.is_dir():
        raise BuilderError(f"sd-scripts checkout {path} does not exist (paths.sd_scripts / --sd-scripts)")
    if not (path / "train_network.py").is_file():
        raise BuilderError(f"{path} is not an sd-scripts checkout: it has no train_network.py")
    script = families.family(family).SCRIPT
    if not (path / script).is_file():
        raise BuilderError(f"{path} has no {script}: update sd-scripts (git pull) to train {family} LoRAs")
    return path


def _venv_bins(sd_scripts: Path) -> list[Path]:
    # kohya_ss and sd-scripts' own install instructions put their virtualenv beside the code.
    bins = []
    for root in (sd_scripts, sd_scripts.parent):
        for name in ("venv", ".venv"):
            bins += [root / name / "bin", root / name / "Scripts"]
    return bins


def find_accelerate(
    sd_scripts: Path,
    explicit: str = "",
    search_path: str | None = None,
    python: str = sys.executable,
) -> list[str]:
    """The argv prefix of ``accelerate launch``: its executable, or ``python -m`` its launcher."""
    exe = "accelerate.exe" if os.name == "nt" else "accelerate"
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise BuilderError(f"kohya.accelerate = {explicit}: no such file")
        return [str(path.resolve()), "launch"]
    for folder in _venv_bins(sd_scripts):
        if (folder / exe).is_file():
            return [str(folder / exe), "launch"]
    found = shutil.which("accelerate", path=search_path)
    if found:
        return [found, "launch"]
    beside = Path(python).parent / exe
    if beside.is_file():
        return [str(beside), "launch"]
    probe = subprocess.run([python, "-c", "import accelerate.commands.launch"], capture_output=True)
    if probe.returncode == 0:
        return [python, "-m", "accelerate.commands.launch"]
    raise BuilderError(
        "accelerate not found: not in sd-scripts' venv, not on PATH, not beside "
        f"{python}, and `{python} -m accelerate.commands.launch` fails. Install sd-scripts' "
        "requirements (pip install -r requirements.txt in the sd-scripts venv) or set kohya.accelerate"
    )


def check_base_model(value: str) -> Path:
    if not value:
        raise BuilderError("base model not given: pass --base-model FILE or set paths.base_model")
    from builder.base_model import check_local

    path = Path(value).expanduser()
    if not path.exists():
        raise BuilderError(f"base model {path} does not exist")
    if path.is_file() and path.suffix.lower() not in (".safetensors", ".ckpt", ".pt", ".bin"):
        raise BuilderError(f"base model {path}: expected a .safetensors or .ckpt file or a diffusers folder")
    if path.is_dir() or path.suffix.lower() == ".safetensors":
        check_local(path)  # a diffusers folder, or a FLUX/Chroma set with every part
    return path


def _pretrained(base_model: str) -> str:
    """What config.toml's pretrained_model_name_or_path is for this base model (FLUX: its transformer)."""
    from builder.families import flux

    path = Path(base_model).expanduser().resolve()
    try:
        if path.is_dir() and flux.find_parts(path):
            return str(flux.base_set(path).transformer.resolve())
    except BuilderError:
        pass  # check_base_model reports it
    return str(path)


def read_config_toml(config: Path) -> dict:
    """config.toml flattened as sd-scripts flattens it."""
    try:
        doc = tomllib.loads(config.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BuilderError(f"{config} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise BuilderError(f"{config}: not valid TOML: {exc}") from None
    flat: dict = {}
    for key, value in doc.items():
        flat.update(value if isinstance(value, dict) else {key: value})
    return flat


def gpu_options(num_processes: int, gpu_ids: str) -> list[str]:
    """accelerate launch's options for ``num_processes`` GPUs (one process each), and which ones."""
    if num_processes < 1:
        raise ConfigError(f"kohya.num_processes (--gpus) = {num_processes}: must be at least 1")
    ids = [i.strip() for i in gpu_ids.split(",")] if gpu_ids.strip() else []
    if any(not i.isdigit() for i in ids) or len(set(ids)) != len(ids):
        raise ConfigError(f"kohya.gpu_ids = {gpu_ids!r}: write distinct GPU numbers separated by commas, e.g. \"0,1\"")
    if ids and len(ids) != num_processes:
        raise ConfigError(
            f"kohya.gpu_ids = {gpu_ids!r} names {len(ids)} GPU(s) but kohya.num_processes (--gpus) is "
            f"{num_processes}: accelerate runs one process per GPU, so make them agree"
        )
    options = ["--multi_gpu", "--num_processes", str(num_processes)] if num_processes > 1 else []
    # With one process, --gpu_ids picks the GPU (accelerate sets CUDA_VISIBLE_DEVICES).
    return options + (["--gpu_ids", ",".join(ids)] if ids else [])


def make_command(
    out: Path, sd_scripts: Path, launch: list[str], family: str = families.DEFAULT, num_processes: int = 1, gpu_ids: str = ""
) -> TrainCommand:
    config = (out / "config.toml").resolve()
    argv = [*launch, *gpu_options(num_processes, gpu_ids), "--num_cpu_threads_per_process", "1",
            str(sd_scripts / families.family(family).SCRIPT), "--config_file", str(config)]
    return TrainCommand(argv=argv, cwd=sd_scripts, config=config, log=(out / "log" / "train.log").resolve())


def _segments(stream: IO[bytes]) -> Iterator[tuple[str, bool]]:
    """Pieces of the child's output split at \\n and \\r; True when the piece ended with \\r."""
    buf = b""
    while True:
        chunk = stream.read1(4096) if hasattr(stream, "read1") else stream.read(4096)
        if not chunk:
            break
        buf += chunk
        while True:
            cut = min((i for i in (buf.find(b"\n"), buf.find(b"\r")) if i >= 0), default=-1)
            if cut < 0:
                break
            yield buf[:cut].decode("utf-8", "replace"), buf[cut : cut + 1] == b"\r"
            buf = buf[cut + 1 :]
    if buf:
        yield buf.decode("utf-8", "replace"), False


@dataclass
class TrainResult:
    returncode: int
    steps_done: int
    total_steps: int | None
    tail: list[str]


def run_training(cmd: TrainCommand, env: dict[str, str] | None = None) -> TrainResult:
    """Run it, echo its lines, log them, and follow its step counter on a progress bar."""
    cmd.log.parent.mkdir(parents=True, exist_ok=True)
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8", **(env or {})}
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    steps_done, total = 0, None
    with open(cmd.log, "a", encoding="utf-8") as log, progress() as bar:
        log.write(f"\n=== {datetime.datetime.now().isoformat(timespec='seconds')} {cmd.shell()}\n")
        task = bar.add_task("training", total=None, status="starting")
        try:
            proc = subprocess.Popen(cmd.argv, cwd=cmd.cwd, env=child_env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT)
        except OSError as exc:
            raise BuilderError(f"cannot start {cmd.argv[0]}: {exc.strerror or exc}") from exc
        assert proc.stdout is not None
        try:
            for text, is_cr in _segments(proc.stdout):
                if not text.strip():
                    continue
                step = STEP_RE.match(text.strip())
                if step:
                    done, of = int(step.group(1)), int(step.group(2))
                    if done != steps_done or total != of:
                        steps_done, total = done, of
                        bar.update(task, completed=done, total=of, status="")
                        log.write(text.strip() + "\n")
                    continue
                if is_cr:  # other carriage-return bars (latents caching): log only
                    log.write(text + "\n")
                    continue
                tail.append(text)
                log.write(text + "\n")
                log.flush()
                bar.console.print(text, markup=False, highlight=False)
                if m := TOTAL_RE.search(text):
                    total = int(m.group(1))
                    bar.update(task, total=total)
                elif m := EPOCH_RE.match(text.strip()):
                    bar.update(task, status=f"epoch {m.group(1)}/{m.group(2)}")
            proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        log.write(f"=== exit code {proc.returncode}\n")
    return TrainResult(proc.returncode, steps_done, total, list(tail))


def _ok(what: str, detail: object) -> None:
    console.print(f"[green]ok[/green] {what}: {escape(str(detail))}")


def train_lora(out: Path, cfg: Config, write_configs: bool = False, dry_run: bool = False, base_model_given: bool = False) -> int:
    """Check everything, (re)write the kohya files when needed, and run sd-scripts; its exit code.

    The kohya files are rewritten when config.toml is missing, when asked, or when the
    base model given on the command line differs from config.toml's; otherwise the
    existing config.toml is used as it is, so hand edits survive.
    """
    from builder.kohya.files import CONFIG_TOML, write_kohya_files

    out = Path(out)
    if not out.is_dir():
        raise BuilderError(f"run folder {out} does not exist")
    gpu_options(cfg.kohya.num_processes, cfg.kohya.gpu_ids)  # a bad --gpus fails before anything is written
    sd_scripts = check_sd_scripts(cfg.paths.sd_scripts)
    _ok("sd-scripts", sd_scripts)
    launch = find_accelerate(sd_scripts, cfg.kohya.accelerate)
    _ok("accelerate", " ".join(launch))

    config = out / CONFIG_TOML
    current = read_config_toml(config).get("pretrained_model_name_or_path") if config.is_file() else None
    wanted = _pretrained(cfg.paths.base_model) if cfg.paths.base_model else None
    if write_configs or not config.is_file() or (base_model_given and current != wanted):
        check_base_model(cfg.paths.base_model)
        files = write_kohya_files(out, cfg)
        _ok("wrote", ", ".join(str(p) for p in (files.config, files.dataset_config, files.sample_prompts, files.gui_config)))
    flat = read_config_toml(config)
    _ok("base model", check_base_model(flat.get("pretrained_model_name_or_path", "")))
    dataset_toml = Path(flat.get("dataset_config", ""))
    if not dataset_toml.is_file():
        raise BuilderError(f"{config}: dataset_config {dataset_toml} does not exist (use --write-configs)")
    _ok("dataset config", dataset_toml)
    family = resolve_family(cfg.kohya.model_family, flat["pretrained_model_name_or_path"])
    check_sd_scripts(sd_scripts, family)
    # config.toml may be hand-edited: hold both files to the training script's late rules again.
    try:
        dataset_doc = tomllib.loads(dataset_toml.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise BuilderError(f"{dataset_toml}: not valid TOML: {exc}") from None
    families.family(family).check_train_args(flat, dataset_doc, f"{config} + {dataset_toml.name}")
    _ok("model family", f"{family} ({families.family(family).SCRIPT})")

    cmd = make_command(out, sd_scripts, launch, family, cfg.kohya.num_processes, cfg.kohya.gpu_ids)
    console.print(f"[bold]command[/bold] (log: {escape(str(cmd.log))}):")
    print(cmd.shell(), flush=True)
    if dry_run:
        return 0
    result = run_training(cmd)
    if result.returncode != 0:
        console.print(f"[bold red]training failed[/bold red] (exit code {result.returncode}); last lines of {cmd.log}:")
        for line in result.tail:
            console.print(f"  {escape(line)}")
        console.print("[bold]to run it by hand:[/bold]")
        print(cmd.shell(), flush=True)
        return result.returncode if result.returncode > 0 else 1
    saved = sorted((out / "model").glob("*.safetensors"))
    console.print(
        f"[green]training finished[/green]: {result.steps_done}/{result.total_steps or '?'} steps; "
        f"{len(saved)} LoRA file(s) in {escape(str(out / 'model'))}"
    )
    return 0
