"""Registry of every model file the product uses, and the one cache folder they live in.

Model loaders call ``require(name, cfg.runtime.weights_dir)``: it returns the cached file
(the pack FOLDER for insightface zips, the snapshot folder for Hugging Face repos) or
raises MissingWeightError naming the file, its URL and the exact path to put it by hand.
``require`` only checks that the file is there: test fixtures put random-weight
checkpoints under the official names, and the loaders' strict key/shape checks catch a
wrong file. Checksums are verified when a file is downloaded (``builder.fetch``) and by
``launch.py weights --verify``; the result is remembered in ``.verified.json`` so
listing the cache stays fast.

Every size and sha256 below was read from a public source named in the comment beside
it; where none could be read here the value is None and the listing says "unknown".
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from builder.errors import BuilderError, MissingWeightError

if TYPE_CHECKING:
    pass

ENV_VAR = "LORA_BUILDER_WEIGHTS"
# The CLIP tokenizer kohya trains SD 1.5 with. Here, below both the caption package and the
# registry's users, so that imports run one way (caption -> weights, never back).
CLIP_REPO_ID = "openai/clip-vit-large-patch14"
VERIFIED_FILE = ".verified.json"


@dataclass(frozen=True)
class WeightSpec:
    name: str  # registry key, used on the command line
    filename: str  # official file name, kept unchanged in the cache
    url: str  # official download URL (or Hugging Face repo id when kind == "hf")
    size: int | None  # bytes; None where it could not be read
    sha256: str | None  # None where no upstream checksum could be read here
    license: str
    purpose: str
    kind: str = "file"  # file | zip | hf
    subdir: str = ""  # folder inside the cache
    members: tuple[str, ...] = ()  # zip: the .onnx files a usable pack must hold; hf: the only files fetched
    optional: bool = False  # not fetched unless named (or --all)
    mirrors: tuple[str, ...] = ()  # further URLs of the same file, tried in order after url
    crc32: str | None = None  # zlib CRC32 (8 hex digits) where a published value is known
    # A file published beside the download holding its CRC32 (FaceFusion's .hash), fetched from
    # the same folder as whichever URL serves the file and checked when crc32 is unknown.
    crc32_file: str = ""
    family: str = ""  # base models only: the model family ("sd15" | "sdxl") train and sample load


_SBER = "https://github.com/sberbank-ai/sber-swap/releases/download"
_INSIGHTFACE = "https://github.com/deepinsight/insightface/releases/download/v0.7"
_GHOST_LICENSE = "Apache-2.0 (ai-forever/ghost LICENSE)"
_INSIGHTFACE_LICENSE = "insightface models: non-commercial research only"
_FF_GITHUB = "https://github.com/facefusion/facefusion-assets/releases/download"
_FF_HF = "https://huggingface.co/facefusion"
# Licences as FaceFusion's model table states them (face_swapper/core.py __metadata__).
_RESEARCH_RAIL = "ResearchRAIL (FaceFusion, 2025): research use"
_SIMSWAP_LICENSE = "SimSwap (neuralchen): non-commercial"
# FaceFusion lists the converter under SimSwap's non-commercial entry; facefusion-labs' CrossFace
# README badges its code OpenRAIL-MS.
_CROSSFACE_LICENSE = "non-commercial (FaceFusion's SimSwap entry); CrossFace code OpenRAIL-MS"
_SPECS = [
    # GHOST generators and identity net. URLs: ai-forever/ghost download_models.sh
    # (sber-swap-v2.0 and arcface releases). No published size or sha256 found: unknown.
    WeightSpec(
        "ghost_unet_1block", "G_unet_1block.pth", f"{_SBER}/sber-swap-v2.0/G_unet_1block.pth",
        None, None, _GHOST_LICENSE, "GHOST AEI-Net generator, 1 AAD block", subdir="ghost",
    ),
    WeightSpec(
        "ghost_unet_2blocks", "G_unet_2blocks.pth", f"{_SBER}/sber-swap-v2.0/G_unet_2blocks.pth",
        None, None, _GHOST_LICENSE, "GHOST AEI-Net generator, 2 AAD blocks (default)",
        subdir="ghost",
    ),
    WeightSpec(
        "ghost_unet_3blocks", "G_unet_3blocks.pth", f"{_SBER}/sber-swap-v2.0/G_unet_3blocks.pth",
        None, None, _GHOST_LICENSE, "GHOST AEI-Net generator, 3 AAD blocks", subdir="ghost",
    ),
    WeightSpec(
        "ghost_arcface", "backbone.pth", f"{_SBER}/arcface/backbone.pth",
        None, None, _GHOST_LICENSE, "GHOST identity encoder (iresnet100, 512-d)", subdir="ghost",
    ),
    # GHOST's own `antelope` detector pack (ghost download_models.sh). antelopev2 below holds
    # the same SCRFD-10G detector, so these are optional. The antelopev2 copies are
    # 16,923,827 B / sha256 5838f7fe... (scrfd) and 4ab1d643... (glintr100), but nothing
    # here shows that GHOST's release files are byte-identical: unknown.
    WeightSpec(
        "ghost_antelope_scrfd", "scrfd_10g_bnkps.onnx", f"{_SBER}/antelope/scrfd_10g_bnkps.onnx",
        None, None, _INSIGHTFACE_LICENSE, "GHOST's SCRFD-10G detector (antelope pack)",
        subdir="ghost/antelope", optional=True,
    ),
    WeightSpec(
        "ghost_antelope_glintr100", "glintr100.onnx", f"{_SBER}/antelope/glintr100.onnx",
        None, None, _INSIGHTFACE_LICENSE, "GHOST's glintr100 recognition net (antelope pack)",
        subdir="ghost/antelope", optional=True,
    ),
    # insightface v0.7 release packs. Sizes and sha256: several independent manifests agree,
    # e.g. a Bildebank installer (INSIGHTFACE_MODEL_SPECS, with member names and sizes) and
    # librephotos' model catalogue. antelopev2.zip nests its files in antelopev2/.
    WeightSpec(
        "antelopev2", "antelopev2.zip", f"{_INSIGHTFACE}/antelopev2.zip",
        360_662_982, "8e182f14fc6e80b3bfa375b33eb6cff7ee05d8ef7633e738d1c89021dcf0c5c5",
        _INSIGHTFACE_LICENSE, "SCRFD-10G detector + glintr100 recognition (insightface pack)",
        kind="zip", subdir="insightface/models",
        members=("scrfd_10g_bnkps.onnx", "glintr100.onnx"),
    ),
    WeightSpec(
        "buffalo_l", "buffalo_l.zip", f"{_INSIGHTFACE}/buffalo_l.zip",
        288_621_354, "80ffe37d8a5940d59a7384c201a2a38d4741f2f3c51eef46ebb28218a7b0ca2f",
        _INSIGHTFACE_LICENSE, "SCRFD-10G detector + w600k_r50 recognition (insightface pack)",
        kind="zip", subdir="insightface/models", members=("det_10g.onnx", "w600k_r50.onnx"),
    ),
    # sha256 1009e537...: CodeFormer-pinning manifests (arktronic/sd-multi verify-resources.sh,
    # SwarmUI FaceTools); size 376,637,898 B from a provenance note on the same hash.
    WeightSpec(
        "codeformer", "codeformer.pth",
        "https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth",
        376_637_898, "1009e537e0c2a07d4cabce6355f53cb66767cd4b4297ec7a4a64ca4b8a5684b7",
        "S-Lab License 1.0 (non-commercial)", "CodeFormer face restorer", subdir="codeformer",
    ),
    # URL: GFPGAN inference_gfpgan.py (version 1.4). sha256 e2cd4703...: arktronic/sd-multi and
    # several other manifests; size 348,632,874 B from two manifests listing that hash.
    WeightSpec(
        "gfpgan_v1.4", "GFPGANv1.4.pth",
        "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth",
        348_632_874, "e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad",
        "Apache-2.0 (TencentARC/GFPGAN)", "GFPGAN v1.4 face restorer", subdir="gfpgan",
    ),
    # ---- GPEN ----
    # URL: yangxy/GPEN README (2c73670), the file face_model/face_gan.py loads as a raw state
    # dict. No published size or sha256 found (the mirrors seen list only the URL): unknown.
    # Licence: the repo has no LICENSE file and its README withholds its best model "due to
    # commercial issues"; FaceFusion lists this model as Non-Commercial.
    WeightSpec(
        "gpen_bfr_512", "GPEN-BFR-512.pth",
        "https://public-vigen-video.oss-cn-shanghai.aliyuncs.com/robin/models/GPEN-BFR-512.pth",
        None, None, "non-commercial (yangxy/GPEN: no licence file; FaceFusion: Non-Commercial)",
        "GPEN-BFR-512 face restorer", subdir="gpen",
    ),
    # ---- RestoreFormer++ / RestoreFormer ----
    # URL: RestoreFormerPlusPlus inference.py (release v1.0.0). Size 294,028,815 B: a public
    # download manifest that checked it against the release's Content-Length; it is the 73,472,579
    # float32 network parameters plus ~314 B per tensor, so the file holds the network alone.
    # No published sha256 found: unknown.
    WeightSpec(
        "restoreformer++", "RestoreFormer++.ckpt",
        "https://github.com/wzhouxiff/RestoreFormerPlusPlus/releases/download/v1.0.0/"
        "RestoreFormer++.ckpt",
        294_028_815, None, "Apache-2.0 (wzhouxiff/RestoreFormerPlusPlus)",
        "RestoreFormer++ face restorer", subdir="restoreformer",
    ),
    # URL: GFPGAN inference_gfpgan.py (-v RestoreFormer). Only an md5 (eaeeff6c...) is published,
    # by lama-cleaner's RestoreFormer plugin; no size or sha256 found: unknown.
    WeightSpec(
        "restoreformer", "RestoreFormer.pth",
        "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.4/RestoreFormer.pth",
        None, None, "Apache-2.0 (TencentARC/GFPGAN, wzhouxiff/RestoreFormer)",
        "RestoreFormer face restorer (GFPGAN's release)", subdir="restoreformer", optional=True,
    ),
    # URLs: facexlib/parsing/__init__.py. sha256: the AUR python-facexlib PKGBUILD (which
    # pairs each release URL with its sha256); sizes: a model-info manifest listing those hashes.
    WeightSpec(
        "parsing_bisenet", "parsing_bisenet.pth",
        "https://github.com/xinntao/facexlib/releases/download/v0.2.0/parsing_bisenet.pth",
        53_289_463, "468e13ca13a9b43cc0881a9f99083a430e9c0a38abd935431d1c28ee94b26567",
        "MIT (xinntao/facexlib)", "BiSeNet face parsing (19 classes)", subdir="facexlib",
    ),
    WeightSpec(
        "parsing_parsenet", "parsing_parsenet.pth",
        "https://github.com/xinntao/facexlib/releases/download/v0.2.2/parsing_parsenet.pth",
        85_331_193, "3d558d8d0e42c20224f13cf5a29c79eba2d59913419f945545d8cf7b72920de2",
        "MIT (xinntao/facexlib)", "ParseNet face parsing (19 classes)", subdir="facexlib",
    ),
    # Hugging Face repos: the hub checks each file against its LFS sha256 as it downloads.
    # Sizes (~1.9 GB large, ~1 GB base) are not pinned because the repos hold several formats.
    WeightSpec(
        "blip_large", "Salesforce/blip-image-captioning-large",
        "Salesforce/blip-image-captioning-large", None, None,
        "BSD-3-Clause (Salesforce BLIP)", "BLIP captioner, large", kind="hf",
    ),
    WeightSpec(
        "blip_base", "Salesforce/blip-image-captioning-base",
        "Salesforce/blip-image-captioning-base", None, None,
        "BSD-3-Clause (Salesforce BLIP)", "BLIP captioner, base", kind="hf", optional=True,
    ),
    # ---- captions: WD14 taggers and Florence-2 ----
    # SmilingWolf's v3 taggers (apache-2.0): only model.onnx and selected_tags.csv are fetched,
    # not the timm safetensors beside them. Florence-2 in transformers' native format (MIT):
    # the florence-community conversions, which need no trust_remote_code. Sizes not pinned
    # (hub repos; the hub checks each file's LFS sha256 as it downloads).
    *(
        WeightSpec(
            name, repo, repo, None, None, "Apache-2.0 (SmilingWolf)", purpose, kind="hf",
            members=("model.onnx", "selected_tags.csv"), optional=True,
        )
        for name, repo, purpose in (
            ("wd14_swinv2", "SmilingWolf/wd-swinv2-tagger-v3", "WD14 v3 tagger, SwinV2 (caption.wd14_model default)"),
            ("wd14_eva02_large", "SmilingWolf/wd-eva02-large-tagger-v3", "WD14 v3 tagger, EVA02-Large"),
            ("wd14_vit", "SmilingWolf/wd-vit-tagger-v3", "WD14 v3 tagger, ViT"),
        )
    ),
    WeightSpec(
        "florence2_large", "florence-community/Florence-2-large", "florence-community/Florence-2-large",
        None, None, "MIT (microsoft/Florence-2)", "Florence-2 large captioner, 0.77B (caption.florence2_model default)",
        kind="hf", optional=True,
    ),
    WeightSpec(
        "florence2_base", "florence-community/Florence-2-base", "florence-community/Florence-2-base",
        None, None, "MIT (microsoft/Florence-2)", "Florence-2 base captioner, 0.23B", kind="hf", optional=True,
    ),
    # ---- ONNX swappers (FaceFusion assets) ----
    # URLs: facefusion face_swapper/core.py (resolve_download_url: the GitHub release, then the
    # Hugging Face mirror). Each is checked against FaceFusion's CRC32 .hash beside it (no public
    # copy of those values was found). sha256 and sizes: public manifests that pin these exact
    # files. inswapper a290273e... / 555,303,150 B: several (the models-3.0.0 copy, a re-export;
    # insightface's original file is e4a3f08c..., 554,253,681 B, and is not what these URLs serve).
    # hyperswap 1a/1b/1c: two manifests each for the sha256; 402,742,682 B for 1a and 1c from two
    # and for 1b from one (the three are one architecture). simswap_256 and crossface_simswap:
    # no published sha256 or size found: unknown, the .hash is the only check.
    *(
        WeightSpec(
            name, f"{name}.onnx", f"{_FF_GITHUB}/{base}/{name}.onnx", size, sha256, lic, purpose,
            subdir="facefusion", mirrors=(f"{_FF_HF}/{base}/resolve/main/{name}.onnx",),
            crc32_file=f"{name}.hash", optional=True,
        )
        for name, base, size, sha256, lic, purpose in (
            (
                "inswapper_128", "models-3.0.0", 555_303_150,
                "a290273ed497312095dac48cdef20feec9d5208298223dd01288ab202b54bea7",
                _INSIGHTFACE_LICENSE, "insightface INSwapper 128 face swapper",
            ),
            (
                "hyperswap_1a_256", "models-3.3.0", 402_742_682,
                "c0e98a8a03a238f461ed3d2570e426b49f46745ee400854a60dceeb70c246add",
                _RESEARCH_RAIL, "FaceFusion HyperSwap 1a 256 face swapper",
            ),
            (
                "hyperswap_1b_256", "models-3.3.0", 402_742_682,
                "5124031789c42f71b9558fb71954ef7aedb6da7ed9fac79293e23c61a792a73e",
                _RESEARCH_RAIL, "FaceFusion HyperSwap 1b 256 face swapper",
            ),
            (
                "hyperswap_1c_256", "models-3.3.0", 402_742_682,
                "5528c2d76fe9986c99d829278987ef9f3a630cb606db7628d02b57b330f406a5",
                _RESEARCH_RAIL, "FaceFusion HyperSwap 1c 256 face swapper",
            ),
            (
                "simswap_256", "models-3.0.0", None, None,
                _SIMSWAP_LICENSE, "SimSwap 256 face swapper (neuralchen)",
            ),
            (
                "crossface_simswap", "models-3.4.0", None, None,
                _CROSSFACE_LICENSE, "CrossFace: w600k_r50 ArcFace -> SimSwap's identity space",
            ),
        )
    ),
    # CLIP's BPE merges: the CLIP tokenizer (caption token counts, sd-scripts' tokenizer_cache_dir)
    # is built from it offline (builder.caption.clip_tokenizer). sha256 924691ac...: keras-cv's
    # SimpleTokenizer pins this openai/CLIP URL with it; size 1,356,917 B from a manifest pinning
    # the same hash (open-clip-torch's copy has both).
    WeightSpec(
        "clip_bpe", "bpe_simple_vocab_16e6.txt.gz",
        "https://github.com/openai/CLIP/raw/main/clip/bpe_simple_vocab_16e6.txt.gz",
        1_356_917, "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a",
        "MIT (openai/CLIP)", "CLIP ViT-L/14 tokenizer merges (caption token counts, sd-scripts)",
        subdir="clip",
    ),
    # ---- base models (builder.base_model) ----
    # Names `--base-model` accepts. Each is one original-layout single-file checkpoint, pinned
    # by sha256 and size, downloadable without an account.
    # sha256 6ce01616... and size 4,265,146,304 B: several manifests pinning this exact
    # resolve URL (it is also A1111's well-known short hash 6ce0161689).
    WeightSpec(
        "sd15", "v1-5-pruned-emaonly.safetensors",
        "https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/"
        "v1-5-pruned-emaonly.safetensors",
        4_265_146_304, "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa",
        "CreativeML Open RAIL-M", "Stable Diffusion 1.5, vanilla (train, sample)",
        subdir="sd", optional=True, family="sd15",
    ),
    # epiCRealism "Natural Sin RC1 VAE" (civitai model 25694, version 143906, the brief's
    # example), fp16 pruned with the VAE baked in. sha256 84d76a03... and 2,132,625,612 B: the
    # hub's LFS record of this file, and independently badmonk/om's copy (commit e664c5c).
    WeightSpec(
        "epicrealism", "epicrealism_naturalSinRC1VAE.safetensors",
        "https://huggingface.co/philz1337x/epicrealism/resolve/main/"
        "epicrealism_naturalSinRC1VAE.safetensors",
        2_132_625_612, "84d76a0328ee5a1a2a1d466ba7478ab59183e3fea385441528aa4c5d567fd43e",
        "CreativeML Open RAIL-M", "epiCRealism Natural Sin RC1 VAE, SD 1.5 photo fine-tune (default)",
        subdir="sd", optional=True, family="sd15",
    ),
    # Realistic Vision V5.1 with its VAE (civitai model 4201). sha256 15012c53... and
    # 2,132,625,894 B: two independent hub copies agree (JCTN/fav_models commit ab379ae,
    # a ComfyUI space's checkpoints folder); the URL pins that commit.
    WeightSpec(
        "realistic_vision", "realisticVisionV51_v51VAE.safetensors",
        "https://huggingface.co/JCTN/fav_models/resolve/ab379ae5e614d54eb4dca8e0729a44b5d60da56a/"
        "realisticVisionV51_v51VAE.safetensors",
        2_132_625_894, "15012c538f503ce2ebfc2c8547b268c75ccdaff7a281db55399940ff1d70e21d",
        "CreativeML Open RAIL-M", "Realistic Vision V5.1 (VAE baked in), SD 1.5 photo fine-tune",
        subdir="sd", optional=True, family="sd15",
    ),
    # ---- SDXL base models (builder.families: "sdxl") ----
    # SDXL base 1.0 in its SGM single-file layout. sha256 31e35c80... and 6,938,078,334 B:
    # the hub's LFS record, repeated by several independent manifests pinning this file.
    WeightSpec(
        "sdxl_base", "sd_xl_base_1.0.safetensors",
        "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/sd_xl_base_1.0.safetensors",
        6_938_078_334, "31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6120b893f7e5b",
        "CreativeML Open RAIL++-M", "Stable Diffusion XL base 1.0 (train, sample)",
        subdir="sdxl", optional=True, family="sdxl",
    ),
    # RealVisXL V4.0, the photo fine-tune PhotoMaker's README recommends as its SDXL base.
    # No size or sha256 could be read here (the hub's LFS record was not reachable): unverified.
    WeightSpec(
        "realvisxl_v4", "RealVisXL_V4.0.safetensors",
        "https://huggingface.co/SG161222/RealVisXL_V4.0/resolve/main/RealVisXL_V4.0.safetensors",
        None, None, "CreativeML Open RAIL++-M (SDXL's; model card: openrail++)",
        "RealVisXL V4.0, SDXL photo fine-tune (PhotoMaker's recommended base)",
        subdir="sdxl", optional=True, family="sdxl",
    ),
    # ---- sample: prompt adherence (builder.sample.adherence) ----
    # OpenAI CLIP ViT-B/32, the TorchScript archive OpenAI publishes (URL as open_clip's
    # pretrained.py lists it). OpenAI's URLs carry the file's sha256 as their folder name, and
    # clip.py's downloader checks it; no size is published beside it: unknown.
    WeightSpec(
        "clip_vit_b32", "ViT-B-32.pt",
        "https://openaipublic.azureedge.net/clip/models/"
        "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
        None, "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
        "MIT (openai/CLIP)", "CLIP ViT-B/32: sample prompt adherence", subdir="clip",
    ),
    # ---- sources (PhotoMaker V2) ----
    # TencentARC/PhotoMaker-V2 (inference_pmv2.py: hf_hub_download of photomaker-v2.bin). About
    # 1.8 GB on the hub; no exact size or sha256 could be read here: unknown.
    WeightSpec(
        "photomaker_v2", "photomaker-v2.bin",
        "https://huggingface.co/TencentARC/PhotoMaker-V2/resolve/main/photomaker-v2.bin",
        None, None, "Apache-2.0 (TencentARC/PhotoMaker-V2)",
        "PhotoMaker V2 ID encoder + SDXL LoRA (sources)", subdir="photomaker", optional=True,
    ),
]
REGISTRY: dict[str, WeightSpec] = {s.name: s for s in _SPECS}

# Files the hub must hold for a BLIP snapshot to load with transformers.
HF_ALLOW = ["*.json", "*.txt", "model.safetensors"]
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def cache_dir(weights_dir: str = "") -> Path:
    if weights_dir:
        return Path(weights_dir).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return Path.home() / ".cache" / "lora-builder"


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache (HF_HUB_CACHE / HF_HOME are honoured by huggingface_hub)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def spec_for(name: str) -> WeightSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        match = difflib.get_close_matches(name, list(REGISTRY), n=1, cutoff=0.0)
        hint = f" (did you mean '{match[0]}'?)" if match else ""
        raise BuilderError(
            f"unknown weight '{name}'{hint}; known: {', '.join(REGISTRY)}"
        ) from None


def weight_path(name: str, weights_dir: str = "") -> Path:
    """Where ``name`` lives: the file, the pack folder (zip) or the hub repo folder (hf)."""
    spec = spec_for(name)
    if spec.kind == "hf":
        return hf_cache_dir() / ("models--" + spec.url.replace("/", "--"))
    if spec.kind == "zip":
        return cache_dir(weights_dir) / spec.subdir / spec.name
    return cache_dir(weights_dir) / spec.subdir / spec.filename


def download_path(name: str, weights_dir: str = "") -> Path:
    """Where the downloaded file itself goes (the .zip for packs)."""
    spec = spec_for(name)
    return cache_dir(weights_dir) / spec.subdir / spec.filename


def pack_folder(spec: WeightSpec, folder: Path) -> Path | None:
    """The folder holding the pack's .onnx files: ``folder`` or its one nested copy.

    antelopev2.zip holds antelopev2/*.onnx, so extracting it by hand into
    .../models/antelopev2/ gives .../antelopev2/antelopev2/*.onnx; both are accepted.
    """
    for candidate in (folder, folder / spec.name):
        if all((candidate / m).is_file() for m in spec.members):
            return candidate
    return None


def hf_snapshot(spec: WeightSpec) -> Path | None:
    """The cached snapshot folder of a hub repo that holds its members (else a config and weights), or None."""
    repo = hf_cache_dir() / ("models--" + spec.url.replace("/", "--"))
    ref = repo / "refs" / "main"
    candidates = []
    if ref.is_file():
        candidates.append(repo / "snapshots" / ref.read_text().strip())
    snapshots = repo / "snapshots"
    if snapshots.is_dir():
        candidates += sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    for snap in candidates:
        if spec.members:
            if all((snap / m).is_file() for m in spec.members):
                return snap
        elif (snap / "config.json").is_file() and any((snap / w).is_file() for w in HF_WEIGHT_FILES):
            return snap
    return None


def page_url(spec: WeightSpec) -> str:
    """A URL a person can open: the file itself, or the hub page of a repo."""
    return f"https://huggingface.co/{spec.url}" if spec.kind == "hf" else spec.url


def manual_hint(spec: WeightSpec, weights_dir: str = "") -> str:
    """How to get ``spec`` by hand: its URL and the exact path to put it."""
    if spec.kind == "hf":
        return (
            f"on a machine with internet run `huggingface-cli download {spec.url}` and copy "
            f"its hub cache folder models--{spec.url.replace('/', '--')} into {hf_cache_dir()}"
        )
    if spec.kind == "zip":
        folder = weight_path(spec.name, weights_dir)
        return (
            f"download {spec.url} by hand and unzip it so that "
            f"{folder / spec.members[0]} exists (or put the zip at "
            f"{download_path(spec.name, weights_dir)} and run `python launch.py weights --fetch "
            f"{spec.name}` to verify and unpack it)"
        )
    return f"download {spec.url} by hand and put it at {weight_path(spec.name, weights_dir)}"


def require(name: str, weights_dir: str = "") -> Path:
    """The cached file for ``name``, or a MissingWeightError saying where to get it and put it."""
    spec = spec_for(name)
    found: Path | None
    if spec.kind == "hf":
        found = hf_snapshot(spec)
    elif spec.kind == "zip":
        found = pack_folder(spec, weight_path(name, weights_dir))
    else:
        path = weight_path(name, weights_dir)
        found = path if path.is_file() else None
    if found is None:
        raise MissingWeightError(
            f"model '{spec.filename}' ({name}) is missing. Run `python launch.py weights "
            f"--fetch {name}`, or {manual_hint(spec, weights_dir)}"
        )
    return found


# ---- state of the cache (offline) -------------------------------------------------------

MISSING = "missing"
PRESENT = "present"
UNVERIFIED = "present (unverified)"
BAD = "checksum bad"


@dataclass(frozen=True)
class WeightState:
    state: str  # MISSING | PRESENT | UNVERIFIED | BAD
    path: Path
    detail: str = ""


def sha256_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            if on_bytes:
                on_bytes(len(chunk))
    return digest.hexdigest()


def _verified_db(weights_dir: str) -> dict[str, dict]:
    try:
        return json.loads((cache_dir(weights_dir) / VERIFIED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def remember_verified(path: Path, sha256: str, weights_dir: str = "") -> None:
    """Record that ``path`` (as it is now: size and mtime) hashed to ``sha256``."""
    from builder.io import atomic_write_json

    root = cache_dir(weights_dir)
    db = _verified_db(weights_dir)
    st = path.stat()
    db[str(path.resolve().relative_to(root.resolve()))] = {
        "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256,
    }
    atomic_write_json(root / VERIFIED_FILE, db)


def _remembered_sha(path: Path, weights_dir: str) -> str | None:
    try:
        key = str(path.resolve().relative_to(cache_dir(weights_dir).resolve()))
        st = path.stat()
    except (OSError, ValueError):
        return None
    rec = _verified_db(weights_dir).get(key)
    if rec and rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns:
        return rec.get("sha256")
    return None


def state(name: str, weights_dir: str = "", verify: bool = False) -> WeightState:
    """What the cache holds for ``name``. Cheap unless ``verify`` (which hashes and remembers)."""
    spec = spec_for(name)
    if spec.kind == "hf":
        snap = hf_snapshot(spec)
        if snap is None:
            return WeightState(MISSING, weight_path(name, weights_dir))
        return WeightState(PRESENT, snap, "hub cache (files checked by the hub on download)")
    if spec.kind == "zip":
        folder = pack_folder(spec, weight_path(name, weights_dir))
        if folder is None:
            return WeightState(MISSING, weight_path(name, weights_dir), _partial_note(spec, weights_dir))
        # The zip's sha256 was checked before it was unpacked; members are checked by name.
        return WeightState(PRESENT, folder)
    path = weight_path(name, weights_dir)
    if not path.is_file():
        return WeightState(MISSING, path, _partial_note(spec, weights_dir))
    size = path.stat().st_size
    if spec.size is not None and size != spec.size:
        return WeightState(BAD, path, f"size {size:,} B, expected {spec.size:,} B")
    if spec.sha256 is None:
        return WeightState(UNVERIFIED, path, "no upstream sha256 known")
    known = _remembered_sha(path, weights_dir)
    if known is None and verify:
        known = sha256_file(path)
        remember_verified(path, known, weights_dir)
    if known is None:
        return WeightState(UNVERIFIED, path, "not hashed yet (weights --verify)")
    if known != spec.sha256:
        return WeightState(BAD, path, f"sha256 {known}, expected {spec.sha256}")
    return WeightState(PRESENT, path)


def _partial_note(spec: WeightSpec, weights_dir: str) -> str:
    part = download_path(spec.name, weights_dir).with_name(spec.filename + ".part")
    if part.is_file():
        return f"{part.stat().st_size / 1e6:.1f} MB downloaded, --fetch resumes"
    return ""


def resolve_names(names: Iterable[str]) -> list[str]:
    """Check each name against the registry (closest-name message on a typo), keep order."""
    out: list[str] = []
    for n in names:
        spec_for(n)
        if n not in out:
            out.append(n)
    return out
