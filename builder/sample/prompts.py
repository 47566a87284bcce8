"""The sample prompts: kohya's ``sample_prompts.txt`` format, or prompts built from the character.

One prompt per line; ``#`` lines and blank lines are skipped. Options follow the prompt
text, each introduced by `` --``: ``--n`` negative prompt, ``--w``/``--h`` size, ``--d``
seed, ``--l`` guidance (CFG) scale, ``--s`` steps, ``--ss`` sampler. This is the subset of
sd-scripts' ``line_to_prompt_dict`` that a Stable Diffusion 1.5 sample uses; a line's
options win over the ``[sample]`` config, which wins over the family's defaults
(builder.families ``sample_defaults``), so the grid matches what training sampled. As in
sd-scripts' FLUX sampler, a FLUX.1 line's ``--g`` is its distilled guidance (``--l`` is not
read) and Chroma's ``--l`` its CFG (``--g`` is not read); both ignore ``--ss``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.config import Config
from builder.errors import BuilderError
from builder.families import family, resolve_family, sample_settings

# kohya sampler names (train_util.get_my_scheduler) -> diffusers scheduler class and extra config.
SAMPLERS: dict[str, tuple[str, dict[str, str]]] = {
    "ddim": ("DDIMScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpmsolver": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver"}),
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpmsingle": ("DPMSolverSinglestepScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpm_2": ("KDPM2DiscreteScheduler", {}),
    "dpm_2_a": ("KDPM2AncestralDiscreteScheduler", {}),
}


def sampler_name(name: str) -> str:
    """kohya accepts ``k_euler`` and ``euler`` alike; unknown names are refused, not guessed."""
    key = name.strip().lower()
    key = key[2:] if key.startswith("k_") else key
    if key not in SAMPLERS:
        raise BuilderError(f"sampler '{name}' is not one of {', '.join(SAMPLERS)}")
    return key


@dataclass(frozen=True)
class SamplePrompt:
    text: str
    negative: str = ""
    width: int = 512
    height: int = 512
    steps: int = 25
    guidance: float = 7.0
    sampler: str = "ddim"  # "": the pipeline's own scheduler (FLUX, Chroma)
    seeds: tuple[int, ...] = field(default_factory=tuple)  # one column per seed
    call_kwargs: tuple[tuple[str, Any], ...] = ()  # the family's extra pipeline arguments (schnell: T5 length)


_OPTION = re.compile(r"^(ss|n|w|h|d|l|s|g)\s+(.+)$", re.IGNORECASE | re.DOTALL)


def parse_prompt_line(line: str, cfg: Config, origin: str = "prompt") -> SamplePrompt:
    """One kohya prompt line; options the line leaves out come from ``cfg.sample``."""
    parts = line.strip().split(" --")
    text = parts[0].strip()
    if not text:
        raise BuilderError(f"{origin}: the line has options but no prompt text")
    s = cfg.sample
    name = resolve_family(cfg.kohya.model_family, cfg.paths.base_model)
    native = family(name).RESOLUTION
    d = sample_settings(cfg, name)
    values: dict[str, object] = {
        "negative": "",
        "width": s.width or native,
        "height": s.height or native,
        "steps": d.steps,
        "guidance": d.guidance,
        "sampler": sampler_name(d.sampler) if d.sampler else "",
        "seeds": tuple(s.seeds),
        "call_kwargs": tuple(sorted(d.call_kwargs.items())),
    }
    for part in parts[1:]:
        m = _OPTION.match(part.strip())
        if not m:
            # sd-scripts ignores options it does not know (e.g. --cn for ControlNet); so do we.
            continue
        opt, raw = m.group(1).lower(), m.group(2).strip()
        try:
            if opt == "n":
                values["negative"] = raw
            elif opt == "w":
                values["width"] = int(raw)
            elif opt == "h":
                values["height"] = int(raw)
            elif opt == "d":
                values["seeds"] = (int(raw),)
            elif opt == "s":
                values["steps"] = max(1, min(1000, int(raw)))  # sd-scripts clamps the same way
            elif opt in d.guidance_options:
                values["guidance"] = float(raw)
            elif opt == "ss" and d.sampler:
                values["sampler"] = sampler_name(raw)
        except ValueError:
            raise BuilderError(f"{origin}: option --{opt} {raw!r} is not a number") from None
    for dim in ("width", "height"):
        if int(values[dim]) % 8 or int(values[dim]) <= 0:  # type: ignore[call-overload]
            raise BuilderError(f"{origin}: {dim} {values[dim]} must be a positive multiple of 8")
    if not values["seeds"]:
        raise BuilderError(f"{origin}: no seed (add --d N to the line or set [sample] seeds)")
    return SamplePrompt(text=text, **values)  # type: ignore[arg-type]


def read_prompt_file(path: Path, cfg: Config) -> list[SamplePrompt]:
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise BuilderError(f"cannot read prompt file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise BuilderError(f"prompt file {path} is not UTF-8 text") from None
    prompts = [
        parse_prompt_line(line, cfg, origin=f"{path} line {n}")
        for n, line in enumerate(lines, 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not prompts:
        raise BuilderError(f"prompt file {path} has no prompts")
    return prompts


def default_prompts(cfg: Config) -> list[SamplePrompt]:
    """A portrait and a wider shot of the character, the two views that show identity and its reach."""
    who = f"{cfg.character.trigger} {cfg.character.class_word}".strip()
    negative = "lowres, blurry, deformed, bad anatomy, extra fingers, watermark, text"
    lines = [
        f"photo of {who}, close-up portrait, looking at the camera, natural light --n {negative}",
        f"photo of {who}, upper body, standing outdoors in a city street --n {negative}",
    ]
    return [parse_prompt_line(line, cfg, origin="default prompt") for line in lines]


def load_prompts(cfg: Config, out: Path) -> tuple[list[SamplePrompt], str]:
    """``[sample] prompts``, else ``<OUT>/sample_prompts.txt``, else the defaults; and where they came from."""
    if cfg.sample.prompts:
        path = Path(cfg.sample.prompts)
        if not path.is_file():
            raise BuilderError(f"prompt file {path} does not exist ([sample] prompts / --prompts)")
        return read_prompt_file(path, cfg), str(path)
    path = Path(out) / "sample_prompts.txt"
    if path.is_file():
        return read_prompt_file(path, cfg), str(path)
    return default_prompts(cfg), "default prompts from [character]"
