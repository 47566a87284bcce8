"""The regularisation subset's sd-scripts options: differential output preservation (PR #1710).

train_network.py (48d368fa, get_noise_pred_and_target) looks for
``custom_attributes.diff_output_preservation`` on each batch item and, for those items,
replaces the noise target with the UNet's prediction with the LoRA switched off
(``network.set_multiplier(0.0)``): the reg images then hold the LoRA to the base model's own
output for the class prompt instead of to the images. No command-line argument is involved.
SD 1.5's ``call_unet`` ignores the item indices, so its prior prediction covers the whole
batch and is written into the reg items only: a batch mixing reg and training items stops
with a shape error. That family therefore needs ``train_batch_size = 1`` with the option.
"""

from __future__ import annotations

from typing import Any

from builder import families
from builder.config import Config
from builder.errors import ConfigError

# Training scripts whose call_unet takes the DOP item indices (sdxl_train_network.py does).
INDEXLESS_SCRIPTS = ("train_network.py",)


def reg_attributes(cfg: Config, family: str) -> dict[str, Any]:
    """Extra keys of the is_reg subset."""
    if not cfg.dataset.diff_output_preservation:
        return {}
    script = families.family(family).SCRIPT
    if script in INDEXLESS_SCRIPTS and cfg.kohya.batch_size > 1:
        raise ConfigError(
            f"[dataset] diff_output_preservation with kohya.batch_size = {cfg.kohya.batch_size}: sd-scripts' "
            f"{script} computes the preserved prediction for the whole batch and fails on a batch that mixes "
            "reg and training images; set kohya.batch_size = 1 or turn the option off"
        )
    return {"custom_attributes": {"diff_output_preservation": True}}
