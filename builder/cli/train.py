"""``launch.py train OUT``: train the LoRA with sd-scripts' train_network.py.

The kohya files (both TOMLs, sample prompts, GUI JSON) are written from ``OUT/img`` and
the config when ``OUT/config.toml`` is missing, when ``--write-configs`` is given, or when
``--base-model`` names another model than config.toml does; otherwise config.toml is
used as it is, so hand edits survive.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.markup import escape

from builder.cli.common import build_config
from builder.console import console
from builder.errors import BuilderError
from builder.kohya.files import CONFIG_TOML, write_kohya_files
from builder.kohya.train import (
    check_base_model,
    check_sd_scripts,
    find_accelerate,
    make_command,
    read_config_toml,
    run_training,
)


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="train the LoRA: accelerate launch <sd-scripts>/train_network.py --config_file OUT/config.toml",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("out", type=Path, help="run folder (holds img/, config.toml, ...)")
    p.add_argument("--sd-scripts", dest="paths.sd_scripts", default=argparse.SUPPRESS, metavar="DIR",
                   help="kohya-ss/sd-scripts checkout")
    p.add_argument("--base-model", dest="paths.base_model", default=argparse.SUPPRESS, metavar="FILE",
                   help="SD 1.5 .safetensors/.ckpt file or diffusers folder")
    p.add_argument("--accelerate", dest="kohya.accelerate", default=argparse.SUPPRESS, metavar="EXE",
                   help="accelerate executable (default: sd-scripts' venv, PATH, this Python's)")
    p.add_argument("--preset", dest="kohya.preset", default=argparse.SUPPRESS,
                   help="kohya_configs/ preset name or a preset .toml file")
    p.add_argument("--write-configs", action="store_true",
                   help="rewrite the TOMLs, prompts and GUI JSON from OUT/img and the config first")
    p.add_argument("--dry-run", action="store_true", help="run the checks and print the command; do not train")
    return p


def _ok(what: str, detail: object) -> None:
    console.print(f"[green]ok[/green] {what}: {escape(str(detail))}")


def run(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    out: Path = args.out
    if not out.is_dir():
        raise BuilderError(f"run folder {out} does not exist")
    sd_scripts = check_sd_scripts(cfg.paths.sd_scripts)
    _ok("sd-scripts", sd_scripts)
    launch = find_accelerate(sd_scripts, cfg.kohya.accelerate)
    _ok("accelerate", " ".join(launch))

    config = out / CONFIG_TOML
    given_model = getattr(args, "paths.base_model", None)
    current = read_config_toml(config).get("pretrained_model_name_or_path") if config.is_file() else None
    rewrite = (
        args.write_configs or not config.is_file()
        or (given_model is not None and current != str(Path(given_model).expanduser().resolve()))
    )
    if rewrite:
        check_base_model(cfg.paths.base_model)
        files = write_kohya_files(out, cfg)
        _ok("wrote", ", ".join(str(p) for p in (files.config, files.dataset_config, files.sample_prompts,
                                                 files.gui_config)))
    flat = read_config_toml(config)
    _ok("base model", check_base_model(flat.get("pretrained_model_name_or_path", "")))
    dataset_toml = Path(flat.get("dataset_config", ""))
    if not dataset_toml.is_file():
        raise BuilderError(f"{config}: dataset_config {dataset_toml} does not exist (use --write-configs)")
    _ok("dataset config", dataset_toml)

    cmd = make_command(out, sd_scripts, launch)
    console.print(f"[bold]command[/bold] (log: {escape(str(cmd.log))}):")
    print(cmd.shell(), flush=True)
    if args.dry_run:
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
