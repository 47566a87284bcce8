"""Captioning (BLIP, Florence-2, WD14 tags) and caption text rules.

- ``base``: ``Captioner`` (sentences) and ``Tagger`` (tags) protocols, ``Caption``, the
  ``CAPTIONERS``/``TAGGERS``/``BACKENDS`` registries, ``load_captioner(cfg, device)`` and
  ``weights(cfg)`` (the registry entries a backend loads).
- ``blip`` / ``lavis`` / ``florence2``: the sentence backends (transformers BLIP; optional
  Salesforce LAVIS; transformers' native Florence-2).
- ``wd14``: SmilingWolf's v3 taggers through onnxruntime, preprocessed as kohya does.
- ``text``: ``compose_caption``, ``strip_words`` (also trait pruning), ``prune_tags``,
  ``fit_caption`` (CLIP token limit: tags trimmed first), ``required_max_token_length``.
- ``dataset_scan``: images of a folder or kohya dataset and their trigger/class words.
- ``recaption``: ``recaption(folder, cfg, ...)``, the ``caption`` command and the build
  stage's captioning.
"""
