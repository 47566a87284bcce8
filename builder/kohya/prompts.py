"""``sample_prompts.txt`` in sd-scripts' line format.

One prompt per line; options follow as `` --x value``: ``--n`` negative prompt, ``--w``
and ``--h`` size, ``--d`` seed, ``--l`` CFG scale, ``--s`` steps (train_util.line_to_prompt_dict);
FLUX's ``--g`` is its embedded guidance (flux_train_utils.sample_image_inference).
"""

from __future__ import annotations

from builder import families
from builder.config import Config
from builder.errors import BuilderError

SCENES = (
    "close-up portrait photo, looking at the camera, soft natural light",
    "upper body photo, smiling, outdoors in a park, daylight",
    "full body photo, standing on a city street, casual clothes",
    "portrait photo, three-quarter view, indoors, warm lamp light",
)
NEGATIVE = "lowres, blurry, deformed face, bad anatomy, extra fingers, watermark, text"


def _clean(text: str, what: str) -> str:
    text = " ".join(text.split())
    if " --" in f" {text}":
        raise BuilderError(f"{what} {text!r} contains ' --', which sd-scripts reads as the start of an option")
    return text


def prompt_lines(cfg: Config, family: str = families.DEFAULT) -> list[str]:
    s = cfg.sample
    subject = _clean(f"{cfg.character.trigger} {cfg.character.class_word}", "trigger/class")
    seeds = s.seeds or [0]
    # Multiples of 64 suit both families' latents (SD 1.5 and SDXL: 8 px per latent, 3 downsamplings).
    size = [max(64, round((v or families.family(family).RESOLUTION) / 64) * 64) for v in (s.width, s.height)]
    d = families.sample_settings(cfg, family)
    guidance = " ".join([f"--{d.guidance_options[0]} {d.guidance:g}", *([d.line_extra] if d.line_extra else [])])
    return [
        f"{subject}, {scene} --n {NEGATIVE} --w {size[0]} --h {size[1]} --d {seeds[i % len(seeds)]} "
        f"{guidance} --s {d.steps}"
        for i, scene in enumerate(SCENES)
    ]


def sample_prompts_text(cfg: Config, family: str = families.DEFAULT) -> str:
    header = "# sd-scripts sample prompts: --n negative, --w/--h size, --d seed, --l CFG scale, --s steps"
    return "\n".join([header, *prompt_lines(cfg, family)]) + "\n"
