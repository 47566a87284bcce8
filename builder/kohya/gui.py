"""A kohya_ss GUI LoRA configuration (``kohya_gui_lora.json``) for the same training.

The GUI saves and "Open"s a flat JSON of its own parameter names (lora_gui.save_configuration
in bmaltais/kohya_ss). It is written in the GUI's folder mode (train_data_dir = <out>/img,
the repeats read from the folder name) so the Folders tab shows the dataset; arguments the
GUI has no field for go into its ``additional_parameters`` command-line string.

Each model family sets its own fields (builder.families: ``GUI_FIELDS``, ``GUI_RENAMES``); for
SDXL the ``sdxl`` checkbox is ticked (the GUI then runs sdxl_train_network.py) and the
SDXL-only arguments go to its SDXL fields. It has no network_train_unet_only field: a text
encoder learning rate of 0 is how it asks for that (lora_gui: unet-only when
text_encoder_lr == 0 and unet_lr != 0).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from builder import families
from builder.kohya.dataset import KohyaDataset
from builder.kohya.schema import gui_keys

# sd-scripts argument -> GUI field where the names differ.
RENAMES = {
    "optimizer_type": "optimizer",
    "resolution": "max_resolution",
    "max_train_epochs": "epoch",
}
# Expressed by the GUI in its own way (folder mode, LoRA type, attention dropdown).
HANDLED = {"dataset_config", "network_module", "sdpa", "xformers", "sample_prompts", "max_token_length",
           "batch_size", "network_train_unet_only"}


def _cli_value(value: Any) -> str:
    return " ".join(shlex.quote(str(v)) for v in value) if isinstance(value, list) else shlex.quote(str(value))


def gui_config(
    ds: KohyaDataset,
    train: dict[str, Any],
    dataset_general: dict[str, Any],
    prompts_text: str,
    family: str = families.DEFAULT,
    num_processes: int = 1,
    gpu_ids: str = "",
) -> dict[str, Any]:
    """``train``: flattened config.toml; ``dataset_general``: dataset_config.toml [general].

    ``num_processes``/``gpu_ids``: the accelerate launch the GUI's Accelerate tab makes.
    """
    known = gui_keys()
    fam = families.family(family)
    renames = {**RENAMES, **fam.GUI_RENAMES}
    gui: dict[str, Any] = {
        "LoRA_type": "Standard",  # networks.lora
        "v2": False,
        "v_parameterization": False,
        **fam.GUI_FIELDS,
        "dataset_config": "",
        "train_data_dir": str(ds.image_dir.parent.resolve()),
        "reg_data_dir": str(ds.reg_dir.parent.resolve()) if ds.reg_dir else "",
        "xformers": "sdpa" if train.get("sdpa") else "xformers" if train.get("xformers") else "none",
        "max_token_length": int(train.get("max_token_length", 75)),
        "sample_prompts": "\n".join(line for line in prompts_text.splitlines() if not line.startswith("#")),
        "num_cpu_threads_per_process": 1,
        "multi_gpu": num_processes > 1,
        "num_processes": num_processes,
        "gpu_ids": gpu_ids,
        "max_train_epochs": 0,  # 0: the GUI uses "epoch"
        "lr_warmup": 0,
    }
    extra: list[str] = []
    for key, value in {**dataset_general, **train}.items():
        if key in HANDLED:
            continue
        name = renames.get(key, key)
        if name in known:
            gui[name] = value
        elif isinstance(value, bool):
            if value:
                extra.append(f"--{key}")
        else:
            extra.append(f"--{key} {_cli_value(value)}")
    if "text_encoder_lr" in gui and isinstance(gui["text_encoder_lr"], list):
        gui["text_encoder_lr"] = gui["text_encoder_lr"][0]
    if train.get("network_train_unet_only"):
        gui["text_encoder_lr"] = 0
    gui["additional_parameters"] = " ".join(extra)
    return dict(sorted(gui.items()))


def masked_gui_fields(ds: KohyaDataset, dataset_toml: Path) -> dict[str, Any]:
    """With loss masks, the GUI trains from dataset_config.toml: its folder mode has no field for
    the masks' conditioning_data_dir, and masked_loss without masks would train as if unmasked."""
    if ds.mask_dir is None:
        return {}
    return {"masked_loss": True, "dataset_config": str(dataset_toml.resolve())}
