"""Captioning (BLIP) and caption text rules.

- ``base``: ``Captioner`` protocol, ``CAPTIONERS`` registry, ``load_captioner(cfg, device)``.
- ``blip`` / ``lavis``: the backends (transformers BLIP; optional Salesforce LAVIS).
- ``text``: ``compose_caption``, ``strip_words``, ``fit_caption`` (CLIP token limit),
  ``required_max_token_length(captions)`` for kohya's ``max_token_length``.
- ``dataset_scan``: images of a folder or kohya dataset and their trigger/class words.
- ``recaption``: ``recaption(folder, cfg, ...)``, the ``caption`` command and the build
  stage's captioning.
"""
