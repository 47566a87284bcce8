"""The one typed configuration of a run.

Every default is written here once. A TOML file overrides the defaults section by
section, and command-line flags (or ``--set section.key=value``) override the file.
Unknown keys are errors that name the key and the closest valid one, because a typo
in a threshold should never be silently ignored.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from builder.errors import ConfigError

DEFAULT_BASE_MODEL = "epicrealism"  # registry name: the brief's realistic SD 1.5 fine-tune


@dataclass
class PathsConfig:
    source: list[str] = field(default_factory=list)  # source photos or folders of the new face
    donors: str = ""  # folder of donor photos
    out: str = ""  # run folder: img/, reg/, model/, log/, manifest, TOMLs
    reg: str = ""  # optional folder of regularisation images
    sd_scripts: str = ""  # kohya sd-scripts checkout
    # Base model (builder.base_model): a .safetensors/.ckpt file or diffusers folder, a registry
    # name (`launch.py weights`), a Hugging Face repo id owner/name[@revision][:file], civitai:<versionId>
    # or a civitai download URL, or any https URL. Empty: DEFAULT_BASE_MODEL, or with
    # --random-weights a generated random-weight SD 1.5.
    base_model: str = ""
    base_model_sha256: str = ""  # expected sha256 of a base model given as an https URL (optional)


@dataclass
class CharacterConfig:
    trigger: str = "ohwx"
    class_word: str = "woman"


@dataclass
class RuntimeConfig:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    random_weights: bool = False  # real architectures, seeded random weights: plumbing checks only
    seed: int = 0
    weights_dir: str = ""  # empty: $LORA_BUILDER_WEIGHTS or ~/.cache/lora-builder
    max_pixels: int = 60_000_000  # larger images are rejected instead of exhausting memory


@dataclass
class FacesConfig:
    detector: Literal["insightface", "dlib"] = "insightface"
    insightface_pack: Literal["antelopev2", "buffalo_l"] = "antelopev2"
    det_size: int = 640
    det_threshold: float = 0.5
    donor_face: Literal["largest", "consistent"] = "largest"
    judge: Literal["insightface", "dlib"] = "insightface"  # recognition net that scores identity
    max_faces: int = 10  # detections kept per photo, largest first
    ambiguous_ratio: float = 0.8  # "largest": skip a photo whose 2nd face has over this share of the 1st's area
    dlib_max_side: int = 1024  # dlib's HOG scans a copy at most this long; landmarks use full resolution


@dataclass
class SwapConfig:
    # "best": every swap.swapper_candidates runs on each face, the judge keeps the one that
    # best carries the source identity (README, build)
    swapper: Literal[
        "ghost", "inswapper_128", "hyperswap_1a_256", "hyperswap_1b_256", "hyperswap_1c_256", "simswap_256", "best"
    ] = "ghost"
    swapper_candidates: list[str] = field(
        default_factory=lambda: ["ghost", "inswapper_128", "hyperswap_1a_256", "simswap_256"]
    )
    generator: Literal["G_unet_1block", "G_unet_2blocks", "G_unet_3blocks"] = "G_unet_2blocks"  # GHOST's
    mouth: bool = True
    mouth_dilate: int = 9  # px in the 512 crop
    mouth_feather: int = 11  # px in the 512 crop
    restorer: Literal[
        "codeformer", "gfpgan", "gpen_bfr_512", "restoreformer++", "restoreformer", "none", "best"
    ] = "codeformer"
    # "best" restores each face with every candidate spec ("name" or "name:key=value") and keeps
    # the one the judge finds closest to the source (ties: the sharper)
    restorer_candidates: list[str] = field(
        default_factory=lambda: ["codeformer:w=0.5", "codeformer:w=1.0", "gfpgan", "restoreformer++"]
    )
    codeformer_w: float = 0.7
    parser: Literal["bisenet", "parsenet"] = "bisenet"
    paste_mask: Literal["parsing", "box"] = "parsing"
    batch_size: int = 8

    @property
    def needs_parser(self) -> bool:
        """The mouth transplant and the parsing paste mask both read the face-parsing map."""
        return self.mouth or self.paste_mask == "parsing"


@dataclass
class QualityConfig:
    min_det_score: float = 0.6
    min_face_px: int = 96  # shorter side of the donor face box
    max_blur_drop: float = 0.30  # reject if the result's Laplacian variance falls below this share of the donor's
    min_source_similarity: float | None = None  # judge cosine; unset: the judge's calibrated value (README, quality)
    max_donor_similarity: float | None = None  # above it the swap "did not take"; unset: the judge's value
    max_yaw: float = 60.0
    max_pitch: float = 40.0
    dedup_hamming: int = 6
    keep: int = 0  # 0 keeps everything that passes


# ---- caption: trait pruning ----
# Words and tags for the face's fixed traits. A character LoRA learns the face best when
# captions leave these out, so that the trigger carries them (README, caption). Matched as
# whole words, any case; a tag containing one is dropped. The danbooru tags "lips" and
# "nose" are what WD14 writes for a visible mouth and nose on photos.
_EYE_COLOURS = ("blue", "brown", "green", "grey", "gray", "hazel", "amber", "black", "aqua", "purple", "red", "yellow")
TRAIT_WORDS = (
    *(f"{c} eyes" for c in _EYE_COLOURS), "heterochromia", "freckles", "freckled", "freckles on her face",
    "freckles on his face", "mole", "moles", "mole under eye", "mole under mouth", "beauty mark", "dimples",
    "round face", "oval face", "square face", "heart-shaped face", "long face", "high cheekbones",
    "strong jawline", "sharp jawline", "full lips", "thin lips", "thick lips", "plump lips", "lips",
    "small nose", "big nose", "large nose", "pointed nose", "button nose", "nose", "thick eyebrows",
    "thin eyebrows", "bushy eyebrows", "long eyelashes", "eyelashes",
)
# Pruned too when caption.describe_hair is false (hair then belongs to the trigger as well).
_HAIR_COLOURS = ("blonde", "brown", "black", "red", "auburn", "grey", "gray", "white", "dark", "light brown", "pink", "silver")
HAIR_WORDS = (
    *(f"{c} hair" for c in _HAIR_COLOURS), "blonde", "brunette", "redhead",
    "short hair", "long hair", "very long hair", "medium hair", "shoulder-length hair", "curly hair",
    "wavy hair", "straight hair", "messy hair", "hair bun", "single hair bun", "ponytail", "side ponytail",
    "twintails", "braid", "braids", "bangs", "blunt bangs", "swept bangs", "bob cut", "sidelocks",
    "hair between eyes", "bald",
)


@dataclass
class CaptionConfig:
    # blip | lavis | florence2 (sentences), wd14 (tags), or a sentence backend + wd14 (both)
    # auto: florence2 for a family whose text encoder reads sentences (FLUX, Chroma: T5), else blip
    backend: Literal["auto", "blip", "lavis", "florence2", "wd14", "blip+wd14", "florence2+wd14", "none"] = "auto"
    model: str = "Salesforce/blip-image-captioning-large"
    # Florence-2 (native transformers classes): florence2_large, florence2_base, a repo id or a folder
    florence2_model: str = "florence2_large"
    florence2_task: Literal["<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>"] = "<DETAILED_CAPTION>"
    florence2_max_new_tokens: int = 256  # generated tokens; the CLIP budget (max_tokens) still applies
    # WD14 v3 tagger: wd14_swinv2, wd14_eva02_large, wd14_vit, a repo id, or a folder with
    # model.onnx and selected_tags.csv
    wd14_model: str = "wd14_swinv2"
    wd14_general_threshold: float = 0.35  # kohya's --thresh and the wd-tagger space's default
    wd14_character_threshold: float = 0.85  # the wd-tagger space's default
    wd14_remove_underscore: bool = True  # kohya's --remove_underscore: "long_hair" -> "long hair", not "^_^"
    trait_words: list[str] = field(default_factory=lambda: list(TRAIT_WORDS))  # removed so the trigger carries them
    describe_hair: bool = True  # false: hair_words are pruned too
    hair_words: list[str] = field(default_factory=lambda: list(HAIR_WORDS))
    batch_size: int = 8
    beams: int = 3
    sampling: bool = False
    top_p: float = 0.9
    min_length: int = 5
    max_length: int = 75
    mode: Literal["skip", "overwrite", "prefix-only"] = "skip"
    extension: Literal[".txt", ".caption"] = ".txt"
    separator: str = ", "
    order: list[str] = field(default_factory=lambda: ["trigger", "class", "caption", "tags"])
    strip_words: list[str] = field(default_factory=list)
    extra_tags: list[str] = field(default_factory=list)
    max_tokens: int = 75  # CLIP tokens per caption; 150 or 225 keeps long ones (kohya max_token_length)
    clip_tokenizer: str = "openai/clip-vit-large-patch14"  # HF repo id or local folder that counts tokens


@dataclass
class KohyaConfig:
    # auto: SDXL when the base model has SDXL's second text encoder, else SD 1.5 (builder.families)
    model_family: Literal["auto", "sd15", "sdxl", "flux", "chroma"] = "auto"
    preset: str = ""  # kohya_configs/ name or a .toml file; empty: character_sd15 or character_sdxl by family
    target_steps: int = 1600
    epochs: int = 10
    batch_size: int = 1
    resolution: int = 0  # 0: the family's native size (512 SD 1.5, 1024 SDXL)
    network_dim: int = 32
    network_alpha: int = 16
    learning_rate: float = 1e-4
    unet_lr: float = 1e-4
    text_encoder_lr: float = 5e-5
    optimizer: str = "AdamW8bit"
    mixed_precision: str = "fp16"
    attention: Literal["sdpa", "xformers", "none"] = "sdpa"
    reg_repeats: int = 1
    save_precision: Literal["fp16", "bf16", "float"] = "fp16"
    shuffle_caption: bool = True  # keep_tokens (from the captions) pins the trigger and class in front
    max_token_length: int = 0  # 0: 75, 150 or 225 from the captions' token counts; else forced
    sample_every_n_epochs: int = 1  # 0: sd-scripts renders no samples while training
    sample_sampler: str = "euler_a"
    output_name: str = ""  # LoRA file name; empty: the trigger word
    tokenizer_cache_dir: str = ""  # holds openai_clip-vit-large-patch14/ so train_network.py needs no download
    accelerate: str = ""  # accelerate executable; empty: sd-scripts' venv, then PATH, then this Python's
    extra_args: list[str] = field(default_factory=list)  # "key=value" train_network.py arguments over the preset
    num_processes: int = 1  # GPUs to train on (--gpus N); above 1: accelerate launch --multi_gpu
    gpu_ids: str = ""  # which GPUs, e.g. "0,1" (accelerate --gpu_ids); empty: all of them / the first N


@dataclass
class SampleConfig:
    # steps, guidance, sampler unset (0 / none / ""): the base model family's defaults (builder.families:
    # sample_defaults; SD 1.5/SDXL 25 steps, CFG 7, ddim; FLUX.1-dev 28, guidance 3.5; schnell 4, 0; Chroma 20, CFG 4)
    steps: int = 0
    guidance: float | None = None
    width: int = 0  # 0: the base model family's native size (512 SD 1.5, 1024 SDXL)
    height: int = 0
    seeds: list[int] = field(default_factory=lambda: [1, 2])
    identity_threshold: float | None = None  # judge cosine; unset: the [faces] judge's calibrated value
    sampler: str = ""  # kohya sampler name for prompt lines without --ss; FLUX/Chroma keep their flow-matching Euler
    prompts: str = ""  # kohya prompt file; empty: <out>/sample_prompts.txt, else built from [character]
    model_config: str = ""  # diffusers config folder (or repo id) for a single-file base model; offline: a local folder
    score: bool = True  # identity-score the samples against the source photos


# PhotoMaker prompts: "{class_word}" becomes [character] class_word, followed by the trigger
# word (PhotoMaker wants it right after the class word). Varied views, expressions and light.
SOURCES_PROMPTS = [
    "close-up portrait photo of a {class_word} img, neutral expression, soft window light",
    "portrait photo of a {class_word} img, smiling, golden hour sunlight, outdoors",
    "photo of a {class_word} img, three-quarter view, looking to the left, studio lighting",
    "photo of a {class_word} img, profile view, looking to the right, rim light",
    "candid photo of a {class_word} img, laughing, city street, overcast daylight",
    "photo of a {class_word} img, serious expression, dramatic side lighting, dark background",
    "photo of a {class_word} img, looking up, soft overhead light, park",
    "photo of a {class_word} img, head tilted, gentle smile, warm indoor lamp light",
    "portrait photo of a {class_word} img, surprised expression, bright flash photo",
    "photo of a {class_word} img, looking slightly down, cafe, natural light",
    "close-up photo of a {class_word} img, thoughtful expression, blue hour, neon light",
    "photo of a {class_word} img, wide smile, beach, midday sun",
]


@dataclass
class SourcesConfig:
    """`launch.py sources` / `run --generate-sources N`: more photos of the face with PhotoMaker V2."""

    generate: bool = False  # `run`: make the sources first (run --generate-sources N sets it)
    n: int = 12  # photos to generate; more than the prompts cycles them with the seed + 1000 per round
    prompts: list[str] = field(default_factory=lambda: list(SOURCES_PROMPTS))
    seeds: list[int] = field(default_factory=lambda: list(range(1, len(SOURCES_PROMPTS) + 1)))  # one per prompt
    # inference_pmv2.py's negative prompt.
    negative: str = "(asymmetry, worst quality, low quality, illustration, 3d, 2d, painting, cartoons, sketch), open mouth"
    base_model: str = ""  # SDXL base, any source [paths] base_model takes; empty: realvisxl_v4 (random: random-sdxl)
    model_config: str = ""  # diffusers config folder (or repo id) for a single-file SDXL base; offline: a local folder
    photomaker: str = ""  # photomaker-v2 .bin/.safetensors; empty: the registry's photomaker_v2
    trigger: str = "img"
    steps: int = 50  # PhotoMaker's default
    guidance: float = 5.0
    style_strength: float = 20.0  # percent of the steps before the ID is merged in (demo default 20, max 30 steps)
    width: int = 1024
    height: int = 1024
    min_identity: float | None = None  # judge cosine to the given photos; unset: the judge's calibrated value


@dataclass
class Config:
    paths: PathsConfig = field(default_factory=PathsConfig)
    character: CharacterConfig = field(default_factory=CharacterConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    faces: FacesConfig = field(default_factory=FacesConfig)
    swap: SwapConfig = field(default_factory=SwapConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    kohya: KohyaConfig = field(default_factory=KohyaConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    sources: SourcesConfig = field(default_factory=SourcesConfig)


def _closest(name: str, valid: typing.Iterable[str]) -> str:
    match = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.0)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check (and, for strings from the command line, convert) one value against its type."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key} = {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in args:
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin is list:
        (item,) = args
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [_coerce(v, item, key) for v in value]
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        try:
            if isinstance(value, str) or (isinstance(value, float) and value.is_integer()):
                return int(value)
        except ValueError:
            pass
        if isinstance(value, int):
            return value
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be a number, got {value!r}") from None
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    if hint is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key} must be empty, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {hint}")


def _section_types(section_cls: type) -> dict[str, Any]:
    return typing.get_type_hints(section_cls)


def _apply(cfg: Config, section: str, key: str, value: Any, origin: str) -> None:
    sections = {f.name: f for f in dataclasses.fields(Config)}
    if section not in sections:
        raise ConfigError(f"{origin}: unknown section [{section}]{_closest(section, sections)}")
    target = getattr(cfg, section)
    hints = _section_types(type(target))
    if key not in hints:
        raise ConfigError(f"{origin}: unknown key '{section}.{key}'{_closest(key, hints)}")
    setattr(target, key, _coerce(value, hints[key], f"{origin}: {section}.{key}"))


def from_dict(data: dict[str, Any], origin: str = "config", base: Config | None = None) -> Config:
    """Build a Config from nested dicts ({section: {key: value}}), checking every key."""
    # A deep copy: list values (source, seeds, strip_words) must not be shared with the base.
    cfg = copy.deepcopy(base) if base is not None else Config()
    for section, values in data.items():
        if not isinstance(values, dict):
            raise ConfigError(
                f"{origin}: '{section}' must be a [section] table{_closest(section, [f.name for f in dataclasses.fields(Config)])}"
            )
        for key, value in values.items():
            _apply(cfg, section, key, value, origin)
    return cfg


def load_toml(path: Path, base: Config | None = None) -> Config:
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return from_dict(data, origin=str(path), base=base)


def apply_overrides(cfg: Config, overrides: dict[str, Any], origin: str = "command line") -> Config:
    """Apply dotted overrides ({'swap.restorer': 'gfpgan'}); None values mean 'not given'."""
    nested: dict[str, dict[str, Any]] = {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        if "." not in dotted:
            raise ConfigError(f"{origin}: override '{dotted}' must look like section.key=value")
        section, key = dotted.split(".", 1)
        nested.setdefault(section, {})[key] = value
    return from_dict(nested, origin=origin, base=cfg)


def parse_set(items: list[str]) -> dict[str, str]:
    """Parse repeated ``--set section.key=value`` arguments."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} must look like section.key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
