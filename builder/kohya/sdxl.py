"""What sdxl_train_network.py refuses, checked before anything is launched.

sd-scripts checks these only after loading the models and caching latents
(``SdxlNetworkTrainer.assert_extra_args`` and ``sdxl_train_util.verify_sdxl_training_args``),
minutes into a run, with a bare assertion. The same rules, with the reason and the fix:

- ``v2`` is not an SDXL flag;
- ``cache_text_encoder_outputs`` (implied by ``cache_text_encoder_outputs_to_disk``) stores one
  encoding per caption, so the text encoders cannot be trained (``network_train_unet_only``
  is required) and no subset may change its caption from step to step (``shuffle_caption``,
  ``caption_dropout_rate``, ``token_warmup_step``, ``caption_tag_dropout_rate``);
- every dataset's ``bucket_reso_steps`` is a multiple of 32.
"""

from __future__ import annotations

from typing import Any

from builder.errors import ConfigError

# BaseSubset.is_text_encoder_output_cacheable: what varies a caption between steps.
CAPTION_VARIATION = {
    "shuffle_caption": "kohya.shuffle_caption = false",
    "caption_dropout_rate": "caption_dropout_rate = 0",
    "token_warmup_step": "token_warmup_step = 0",
    "caption_tag_dropout_rate": "caption_tag_dropout_rate = 0",
}
BUCKET_STEP = 32  # train_dataset_group.verify_bucket_reso_steps(32)


def caches_text_encoder_outputs(train: dict[str, Any]) -> bool:
    return bool(train.get("cache_text_encoder_outputs") or train.get("cache_text_encoder_outputs_to_disk"))


def _subsets(dataset_doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Each subset's settings layered as sd-scripts' BlueprintGenerator layers them (subset over dataset over general)."""
    general = dataset_doc.get("general", {})
    layered = []
    for ds in dataset_doc.get("datasets", []):
        ds_level = {k: v for k, v in ds.items() if k != "subsets"}
        layered += [{**general, **ds_level, **subset} for subset in ds.get("subsets", [])]
    return layered


def check_sdxl_args(train: dict[str, Any], dataset_doc: dict[str, Any], origin: str) -> None:
    """``train``: the flattened config.toml; ``dataset_doc``: dataset_config.toml as parsed."""
    if train.get("v2"):
        raise ConfigError(f"{origin}: v2 = true is an SD 2.x flag; sdxl_train_network.py refuses it")
    # The argparse namespace (config.toml) is the blueprint's last fallback, under every level.
    for subset in _subsets(dataset_doc):
        steps = subset.get("bucket_reso_steps", train.get("bucket_reso_steps", 64))
        if steps % BUCKET_STEP:
            raise ConfigError(
                f"{origin}: bucket_reso_steps = {steps}; SDXL needs a multiple of {BUCKET_STEP} "
                "(sdxl_train_network.py: verify_bucket_reso_steps(32))"
            )
    if not caches_text_encoder_outputs(train):
        return
    why = "cache_text_encoder_outputs stores one text-encoder output per caption"
    if not train.get("network_train_unet_only"):
        raise ConfigError(
            f"{origin}: {why}, so the text encoders cannot be trained: set network_train_unet_only = true, "
            "or cache_text_encoder_outputs = false (sdxl_train_network.py refuses the combination)"
        )
    for subset in _subsets(dataset_doc):
        varied = [k for k in CAPTION_VARIATION if subset.get(k, train.get(k, 0))]
        if varied:
            fixes = " and ".join(CAPTION_VARIATION[k] for k in varied)
            raise ConfigError(
                f"{origin}: {why}, so captions cannot change between steps, but {', '.join(varied)} "
                f"{'is' if len(varied) == 1 else 'are'} on for {subset.get('image_dir', 'a subset')}: set {fixes}, "
                "or cache_text_encoder_outputs = false (sdxl_train_network.py refuses the combination)"
            )
