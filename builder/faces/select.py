"""Which face in a photo is the donor, and why (the reason goes into the manifest)."""

from __future__ import annotations

from typing import Literal

import numpy as np

from builder.errors import BuilderError
from builder.faces.identity import Judge, cosine
from builder.faces.types import Face


def select_donor_face(
    faces: list[Face],
    mode: Literal["largest", "consistent"],
    reference: np.ndarray | None = None,
    judge: Judge | None = None,
    image: np.ndarray | None = None,
    ambiguous_ratio: float = 0.8,
) -> tuple[Face | None, str]:
    """The donor's face, or None with the reason the photo is skipped.

    ``largest``: the biggest box, unless the second is within ``ambiguous_ratio`` of its
    area (faces.ambiguous_ratio): then the photo is skipped rather than guessing.
    ``consistent``: the face whose judge embedding is closest to ``reference`` (the
    donor's median embedding); faces without an embedding are embedded with ``judge``
    on ``image``.
    """
    if not faces:
        return None, "no face"
    ranked = sorted(faces, key=lambda f: f.area, reverse=True)
    if mode == "largest":
        if len(ranked) == 1:
            return ranked[0], "largest (only face)"
        ratio = ranked[1].area / max(ranked[0].area, 1e-9)
        if ratio > ambiguous_ratio:
            return None, (
                f"ambiguous: {len(ranked)} faces, the second is {ratio:.0%} of the largest's area "
                f"(faces.ambiguous_ratio = {ambiguous_ratio:.0%})"
            )
        return ranked[0], f"largest of {len(ranked)} faces (next is {ratio:.0%} of its area)"
    if mode == "consistent":
        if reference is None:
            raise BuilderError("donor_face = consistent needs the donor's reference embedding")
        sims = []
        for face in ranked:
            emb = face.embedding
            if emb is None:
                if judge is None or image is None:
                    raise BuilderError(
                        "donor_face = consistent needs a judge and the image to embed faces"
                    )
                emb = judge.embed(image, face)
            sims.append(cosine(emb, reference))
        best = int(np.argmax(sims))
        others = sorted(sims, reverse=True)[1:2]
        tail = f"; next {others[0]:.3f}" if others else ""
        return ranked[
            best
        ], f"closest to the donor's median identity (cosine {sims[best]:.3f}{tail})"
    raise BuilderError(f"unknown donor_face mode {mode!r}; use largest or consistent")
