"""The best epoch, by one rule: the highest source identity among the epochs that neither leak
the donor nor have stopped following their prompts.

- leaking: more than ``[sample] max_donor_share`` of the epoch's sample faces are closer (report
  judge) to the donor's median identity than to the source's;
- overfit: the epoch's mean prompt adherence (CLIP) is more than ``[sample] adherence_margin``
  below the base-model control row's.

A condition that could not be measured (no donor photos, adherence off, no control row) is
left out of the rule, and the verdict says so. Where no epoch qualifies there is no best
epoch; the closest is named: the fewest failed conditions, then the smallest miss (each miss
in units of its own threshold), then the higher identity.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from builder.sample.score import EpochSummary

RULE = (
    "highest mean source identity (report judge) among the epochs with at most {share:.0%} of their "
    "sample faces closer to the donor than to the source, and a mean prompt adherence no more than "
    "{margin:g} below the base model's"
)
# The smallest scales a miss is divided by, so a threshold of 0 still ranks the misses.
_MIN_SHARE_SCALE = 0.05
_MIN_MARGIN_SCALE = 0.005


@dataclass(frozen=True)
class EpochVerdict:
    label: str
    leaking: bool | None  # None: not measured
    overfit: bool | None
    qualifies: bool
    miss: float  # how far it is from qualifying (0 when it qualifies), in threshold units


@dataclass(frozen=True)
class BestEpoch:
    best: str | None
    closest: str | None  # where nothing qualifies: the epoch nearest to qualifying
    rule: str
    sentence: str
    verdicts: dict[str, EpochVerdict]
    max_donor_share: float
    adherence_margin: float
    base_adherence: float | None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["verdicts"] = {k: {f: v for f, v in asdict(e).items() if f != "label"} for k, e in self.verdicts.items()}
        return out


def _judge(s: EpochSummary, base_adherence: float | None, max_share: float, margin: float) -> EpochVerdict:
    leaking = None if s.share_closer_to_donor is None else s.share_closer_to_donor > max_share
    overfit = (
        None
        if base_adherence is None or s.mean_adherence is None
        else s.mean_adherence < base_adherence - margin
    )
    miss = 0.0
    if leaking:
        miss += (s.share_closer_to_donor - max_share) / max(max_share, _MIN_SHARE_SCALE)  # type: ignore[operator]
    if overfit:
        miss += (base_adherence - margin - s.mean_adherence) / max(margin, _MIN_MARGIN_SCALE)  # type: ignore[operator]
    qualifies = s.mean_similarity is not None and not leaking and not overfit
    return EpochVerdict(s.label, leaking, overfit, qualifies, round(miss, 6))


def choose_best(
    epochs: list[EpochSummary], base: EpochSummary | None, max_donor_share: float, adherence_margin: float
) -> BestEpoch:
    """The rule above on the LoRA epochs (``epochs``, control excluded) and the control row ``base``."""
    base_adherence = base.mean_adherence if base is not None else None
    verdicts = {s.label: _judge(s, base_adherence, max_donor_share, adherence_margin) for s in epochs}
    rule = RULE.format(share=max_donor_share, margin=adherence_margin)
    # Only over epochs with a face: without one there is no leakage to measure, and the
    # sentence already says there is no face.
    faced = [verdicts[s.label] for s in epochs if s.mean_similarity is not None]
    unmeasured = []
    if faced and all(v.leaking is None for v in faced):
        unmeasured.append("donor leakage was not measured")
    if faced and all(v.overfit is None for v in faced):
        unmeasured.append("prompt adherence was not measured against the base model")
    note = f" ({'; '.join(unmeasured)}, so the rule left it out)" if unmeasured else ""

    def done(best: str | None, closest: str | None, sentence: str) -> BestEpoch:
        return BestEpoch(best, closest, rule, sentence + note, verdicts, max_donor_share, adherence_margin, base_adherence)

    with_face = [s for s in epochs if s.mean_similarity is not None]
    if not with_face:
        return done(None, None, "no epoch's samples show a face: there is no best epoch")
    ranked = sorted(with_face, key=lambda s: (-round(s.mean_similarity or 0.0, 6), -s.share_above_threshold, s.label))
    qualified = [s for s in ranked if verdicts[s.label].qualifies]
    if qualified:
        best = qualified[0]
        return done(best.label, None, f"best epoch {best.label}: identity {best.mean_similarity:.3f}")

    def failed(v: EpochVerdict) -> int:
        return int(bool(v.leaking)) + int(bool(v.overfit))

    closest = min(ranked, key=lambda s: (failed(verdicts[s.label]), verdicts[s.label].miss))
    v = verdicts[closest.label]
    why = " and ".join(w for w, bad in (("leaks the donor", v.leaking), ("is overfit", v.overfit)) if bad)
    return done(None, closest.label, f"no epoch qualifies; the closest is {closest.label}, which {why}")
