"""Developer tool: hold the generated kohya files to a real sd-scripts checkout.

CI cannot install sd-scripts, so this records what it accepts (``sdscripts_schema.json``)
and the tests hold every generated file to that record. Run it with a Python that can
import sd-scripts (its own virtualenv, with this repository importable):

    python -m builder.kohya.verify_sdscripts --sd-scripts ~/sd-scripts --kohya-ss ~/kohya_ss --write-schema
    python -m builder.kohya.verify_sdscripts --sd-scripts ~/sd-scripts --run runs/ohwx

``--write-schema`` rewrites the record from the checkout (its commit, the dataset-config
keys its ConfigSanitizer allows at each level, every train_network.py argument with its
kind and choices, and the kohya_ss GUI's saved LoRA configuration names). ``--run`` feeds
a generated run folder through sd-scripts' own code paths: ``read_config_from_file`` on
config.toml, ConfigSanitizer + BlueprintGenerator on dataset_config.toml, building the
DreamBooth dataset (folder scan, repeats, caption reading), and ``load_prompts``. An SDXL
run folder (config.toml written for sdxl_train_network.py) goes through that script's parser
and its own checks too: ``sdxl_train_util.verify_sdxl_training_args`` and
``SdxlNetworkTrainer.assert_extra_args`` (text-encoder caching rules, bucket steps of 32). A FLUX
or Chroma run folder (flux_train_network.py) goes through that script's parser,
``flux_utils.analyze_checkpoint_state`` on the transformer (dev or schnell, block counts) and
``FluxNetworkTrainer.assert_extra_args`` (which runs train_network.py's checks first: bucket steps of 64).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from builder.kohya.schema import SCHEMA_PATH


def _git_commit(folder: Path) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _import_sd_scripts(sd_scripts: Path) -> tuple[Any, Any, Any]:
    sys.path.insert(0, str(sd_scripts))
    os.chdir(sd_scripts)  # sd-scripts resolves some files relative to its checkout
    import train_network  # type: ignore[import-not-found]
    from library import config_util, train_util  # type: ignore[import-not-found]

    return train_network, config_util, train_util


def _sdxl_parser() -> argparse.ArgumentParser:
    import sdxl_train_network  # type: ignore[import-not-found]

    return sdxl_train_network.setup_parser()


def _flux_parser() -> argparse.ArgumentParser:
    import flux_train_network  # type: ignore[import-not-found]

    return flux_train_network.setup_parser()


# The script a run folder's config.toml was written for -> its parser.
PARSERS = {"sdxl_train_network.py": _sdxl_parser, "flux_train_network.py": _flux_parser}


def _argument_record(action: argparse.Action) -> dict[str, Any]:
    flag = isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction)
    record: dict[str, Any] = {"kind": "flag" if flag else "value"}
    if not flag:
        record["type"] = getattr(action.type, "__name__", str(action.type)) if action.type else "str"
        if action.choices is not None:
            record["choices"] = list(action.choices)
        if action.nargs is not None:
            record["nargs"] = action.nargs
    return record


def gui_parameter_names(kohya_ss: Path) -> list[str]:
    """The keys kohya_ss writes into a saved LoRA configuration (lora_gui.save_configuration)."""
    source = (kohya_ss / "kohya_gui" / "lora_gui.py").read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and node.name == "save_configuration":
            # SaveConfigFile drops these two; the rest is the flat JSON the GUI "Open"s.
            return [a.arg for a in node.args.args if a.arg not in ("save_as_bool", "file_path")]
    raise SystemExit(f"{kohya_ss}: lora_gui.py has no save_configuration")


def collect_schema(
    sd_scripts: Path, kohya_ss: Path | None, sd_commit: str | None = None, gui_commit: str | None = None
) -> dict[str, Any]:
    train_network, config_util, _ = _import_sd_scripts(sd_scripts)
    parser = train_network.setup_parser()
    arguments = {a.dest: _argument_record(a) for a in parser._actions if a.dest != "help"}
    # sdxl_train_network.py: train_network's parser plus sdxl_train_util.add_sdxl_training_arguments.
    sdxl_only = {a.dest: _argument_record(a) for a in _sdxl_parser()._actions if a.dest not in arguments and a.dest != "help"}
    # flux_train_network.py: train_network's plus add_dit_training_arguments, add_flux_train_arguments, split_mode.
    flux_only = {a.dest: _argument_record(a) for a in _flux_parser()._actions if a.dest not in arguments and a.dest != "help"}
    # The same sanitizer train_network builds (masked_loss off: no ControlNet-style subsets).
    sanitizer = config_util.ConfigSanitizer(True, True, False, True)
    schema: dict[str, Any] = {
        "sd_scripts": {"repository": "https://github.com/kohya-ss/sd-scripts", "commit": sd_commit or _git_commit(sd_scripts)},
        "dataset_config": {
            "general": sorted(map(str, sanitizer.general_schema)),
            "datasets": sorted(str(k) for k in sanitizer.db_dataset_schema if str(k) != "subsets"),
            "subsets": sorted(map(str, sanitizer.db_subset_schema)),
            "required_subset_keys": ["image_dir"],
            # with --masked_loss a subset holding conditioning_data_dir is a ControlNet-style one
            "masked_subsets": sorted(map(str, config_util.ConfigSanitizer(True, True, True, True).cn_subset_schema)),
        },
        "train_network_arguments": dict(sorted(arguments.items())),
        "sdxl_train_network_arguments": dict(sorted(sdxl_only.items())),
        "flux_train_network_arguments": dict(sorted(flux_only.items())),
    }
    if kohya_ss is None and SCHEMA_PATH.is_file():
        # Re-recording sd-scripts alone keeps the GUI's record as it was.
        previous = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
        if "kohya_ss_gui" in previous:
            schema["kohya_ss_gui"] = previous["kohya_ss_gui"]
    if kohya_ss is not None:
        schema["kohya_ss_gui"] = {
            "repository": "https://github.com/bmaltais/kohya_ss",
            "commit": gui_commit or _git_commit(kohya_ss),
            "lora_config_keys": sorted(gui_parameter_names(kohya_ss)),
        }
    return schema


def check_run(sd_scripts: Path, run: Path) -> list[str]:
    """Feed a generated run folder through sd-scripts' own readers; return what they report."""
    run = run.resolve()
    train_network, config_util, train_util = _import_sd_scripts(sd_scripts)
    config_file = str(run / "config.toml")
    script = Path(config_file).read_text(encoding="utf-8").split(" ", 2)[1]  # "# <script> --config_file ..."
    sdxl = script == "sdxl_train_network.py"
    is_flux = script == "flux_train_network.py"
    parser = PARSERS[script]() if script in PARSERS else train_network.setup_parser()
    # read_config_from_file re-parses sys.argv, exactly as `<script> --config_file X` would.
    sys.argv = [script, "--config_file", config_file]
    args = parser.parse_args()
    args = train_util.read_config_from_file(args, parser)
    known = set(vars(parser.parse_args([])))
    import toml  # the reader sd-scripts itself uses

    flat: dict[str, Any] = {}
    for key, value in toml.load(config_file).items():
        flat.update(value if isinstance(value, dict) else {key: value})
    report = [f"config.toml: {len(flat)} keys, all known to {script}: {set(flat) <= known}"]
    unknown = sorted(set(flat) - known)
    if unknown:
        raise SystemExit(f"config.toml has keys {script} ignores: {unknown}")
    train_util.verify_training_args(args)
    train_util.prepare_dataset_args(args, True)
    if sdxl:
        from library import sdxl_train_util  # type: ignore[import-not-found]

        sdxl_train_util.verify_sdxl_training_args(args)
        report.append("sdxl_train_util.verify_sdxl_training_args: passed")
    report.append(f"resolution {args.resolution!r}, max_token_length {args.max_token_length}")
    if is_flux and args.model_type != "chroma":  # get_tokenize_strategy skips it for Chroma too
        from library import flux_utils  # type: ignore[import-not-found]

        # What get_tokenize_strategy and load_flow_model read from the transformer's keys.
        diffusers, schnell, blocks, _ = flux_utils.analyze_checkpoint_state(args.pretrained_model_name_or_path)
        report.append(
            f"flux_utils.analyze_checkpoint_state: diffusers={diffusers}, schnell={schnell}, blocks {blocks}; "
            f"model_type {args.model_type}, guidance_scale {args.guidance_scale}, timestep_sampling "
            f"{args.timestep_sampling}, t5xxl_max_token_length {args.t5xxl_max_token_length}, "
            f"apply_t5_attn_mask {args.apply_t5_attn_mask}, fp8_base {args.fp8_base}"
        )

    user_config = config_util.load_user_config(args.dataset_config)
    # train_network.py builds its sanitizer with args.masked_loss; masked_loss=True is the
    # stricter reading too (ControlNet-style conditioning_data_dir subsets allowed, still checked).
    for masked in sorted({bool(args.masked_loss), True}):
        config_util.BlueprintGenerator(config_util.ConfigSanitizer(True, True, masked, True)).generate(user_config, args)
        report.append(f"ConfigSanitizer(True, True, masked_loss={masked}, True) + BlueprintGenerator: accepted")
    generator = config_util.BlueprintGenerator(config_util.ConfigSanitizer(True, True, args.masked_loss, True))
    blueprint = generator.generate(user_config, args)
    group, val_group = config_util.generate_dataset_group_by_blueprint(blueprint.dataset_group)
    if sdxl:
        import sdxl_train_network  # type: ignore[import-not-found]

        sdxl_train_network.SdxlNetworkTrainer().assert_extra_args(args, group, val_group)
        report.append(
            f"SdxlNetworkTrainer.assert_extra_args: passed (cache_text_encoder_outputs={args.cache_text_encoder_outputs}, "
            f"network_train_unet_only={args.network_train_unet_only}, bucket_reso_steps {group.datasets[0].bucket_reso_steps})"
        )
    if is_flux:
        import flux_train_network  # type: ignore[import-not-found]

        trainer = flux_train_network.FluxNetworkTrainer()
        trainer.assert_extra_args(args, group, None)
        report.append(
            f"FluxNetworkTrainer.assert_extra_args: passed (model_type={trainer.model_type}, use_clip_l={trainer.use_clip_l}, "
            f"cache_text_encoder_outputs={args.cache_text_encoder_outputs}, train_clip_l={trainer.train_clip_l}, "
            f"bucket_reso_steps {group.datasets[0].bucket_reso_steps})"
        )
    for dataset in group.datasets:
        for subset in dataset.subsets:
            report.append(
                f"subset {subset.image_dir}: {subset.img_count} images x {subset.num_repeats} repeats, "
                f"is_reg={subset.is_reg}, caption_extension={subset.caption_extension!r}, "
                f"keep_tokens={subset.keep_tokens}, shuffle={subset.shuffle_caption}"
            )
        masks = sum(1 for info in dataset.image_data.values() if getattr(info, "cond_img_path", None))
        report.append(f"{type(dataset).__name__}: loss masks (conditioning_data_dir) for {masks} of {len(dataset.image_data)} images")
        captions = sorted({info.caption for info in dataset.image_data.values()})
        report.append(f"dataset: {dataset.num_train_images} train items, {dataset.num_reg_images} reg items; "
                      f"first caption read: {captions[0] if captions else None!r}")
    if val_group is not None:
        for dataset in val_group.datasets:
            report.append(
                f"validation dataset: {dataset.num_train_images} images from "
                f"{', '.join(s.image_dir for s in dataset.subsets)} (validation_split {dataset.validation_split})"
            )
        report.append(f"validation batches (len of the validation group): {len(val_group)}; "
                      f"validate_every_n_epochs {args.validate_every_n_epochs}")
    else:
        report.append("no validation dataset")
    reg_attrs = [s.custom_attributes for d in group.datasets for s in d.subsets if s.is_reg]
    if reg_attrs:
        report.append(f"reg subset custom_attributes: {reg_attrs}")
    # train_network.py: steps per epoch = ceil(len(train_dataloader) / num_processes / grad accumulation).
    report.append(f"batches per epoch (len of the dataset group): {len(group)}")
    prompts = train_util.load_prompts(str(args.sample_prompts))
    report.append(f"sample prompts: {len(prompts)}, first: {prompts[0]}")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sd-scripts", type=Path, required=True)
    parser.add_argument("--kohya-ss", type=Path, default=None, help="kohya_ss GUI checkout (for --write-schema)")
    parser.add_argument("--write-schema", action="store_true")
    parser.add_argument("--sd-scripts-commit", default=None, help="when the checkout is not a git work tree")
    parser.add_argument("--kohya-ss-commit", default=None, help="when the checkout is not a git work tree")
    parser.add_argument("--run", type=Path, nargs="+", default=None, help="run folder(s) with config.toml")
    args = parser.parse_args()
    sd_scripts = args.sd_scripts.resolve()
    if args.write_schema:
        schema = collect_schema(
            sd_scripts, args.kohya_ss.resolve() if args.kohya_ss else None, args.sd_scripts_commit, args.kohya_ss_commit
        )
        SCHEMA_PATH.write_text(json.dumps(schema, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {SCHEMA_PATH} from sd-scripts {schema['sd_scripts']['commit']}")
    for run in args.run or []:
        print(f"== {run}")
        for line in check_run(sd_scripts, run):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
