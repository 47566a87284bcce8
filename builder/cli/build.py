"""`launch.py build`: donor photos + source face -> captioned kohya image folder, TOMLs, manifest."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from builder.build import MANIFEST, BuildSummary, run_build
from builder.cli.common import build_config
from builder.config import Config
from builder.console import console, random_weights_banner
from builder.contact_sheet import write_quality_sheets
from builder.manifest import FAILED, KEPT
from builder.quality.decide import Assessment
from builder.quality.summary import summarize


def add_build_flags(p: argparse.ArgumentParser) -> None:
    """The flags `build` and `run` share."""
    S = argparse.SUPPRESS
    p.add_argument("--source", dest="paths.source", nargs="+", default=S, metavar="PATH", help="source photo(s) or folder of the new face")
    p.add_argument("--donors", dest="paths.donors", default=S, metavar="DIR", help="folder of donor photos")
    p.add_argument("--out", dest="paths.out", default=S, metavar="DIR", help="run folder")
    p.add_argument("--trigger", dest="character.trigger", default=S, help="trigger word (e.g. ohwx)")
    p.add_argument("--class-word", dest="character.class_word", default=S, help="class word (e.g. woman)")
    p.add_argument("--detector", dest="faces.detector", default=S, choices=["insightface", "dlib"])
    p.add_argument("--judge", dest="faces.judge", default=S, choices=["insightface", "dlib"], help="recognition net that scores identity")
    p.add_argument("--donor-face", dest="faces.donor_face", default=S, choices=["largest", "consistent"])
    p.add_argument("--generator", dest="swap.generator", default=S, choices=["G_unet_1block", "G_unet_2blocks", "G_unet_3blocks"])
    p.add_argument("--restorer", dest="swap.restorer", default=S, choices=["codeformer", "gfpgan", "none"])
    p.add_argument("--codeformer-w", dest="swap.codeformer_w", type=float, default=S, help="CodeFormer fidelity (0 = quality, 1 = fidelity)")
    p.add_argument("--mouth", dest="swap.mouth", action=argparse.BooleanOptionalAction, default=S, help="put the donor's own mouth back (default on)")
    p.add_argument("--batch-size", dest="swap.batch_size", type=int, default=S, help="faces per model batch")
    p.add_argument("--keep", dest="quality.keep", type=int, default=S, metavar="N", help="keep only the best N results")
    p.add_argument("--reg", dest="paths.reg", default=S, metavar="DIR", help="regularisation images")


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "build",
        help="swap, restore, filter and caption the donor photos into a kohya training folder",
        description="Swap the source face onto every donor photo (detect once, one fused "
        "swap/mouth/restore/paste pass), score and filter the results, caption the kept ones "
        "and write the kohya folder, TOMLs and manifest. Re-running resumes.",
    )
    add_build_flags(p)
    return p


def write_sheets(summary: BuildSummary, cfg: Config) -> None:
    pictures = []
    for r in sorted(summary.records, key=lambda r: r.key):
        if not r.quality:
            continue
        shown = summary.out / r.output if r.output else Path(r.input)
        assessment = Assessment.from_dict(r.quality)
        assessment.decision.kept = r.status == KEPT  # --random-weights keeps what the scores reject
        pictures.append((shown, assessment))
    write_quality_sheets(pictures, summary.out, max_pixels=cfg.runtime.max_pixels)


def print_summary(summary: BuildSummary) -> None:
    console.print(summarize([r.quality for r in summary.records if r.quality]))
    failures = [r for r in summary.records if r.status == FAILED and not r.quality]
    if failures:
        t = Table(title=f"{len(failures)} photo(s) could not be used")
        t.add_column("photo")
        t.add_column("reason")
        for r in failures[:20]:
            t.add_row(r.key, "; ".join(r.reasons))
        console.print(t)
    console.print(
        f"[bold]build[/bold]: {summary.photos} photos ({summary.processed} this run), "
        f"[green]{summary.kept} kept[/green], [red]{summary.rejected} rejected[/red], "
        f"{summary.failed} unusable, in {summary.seconds:.1f}s\n"
        f"  training images: {summary.image_dir}\n"
        f"  manifest:        {summary.out / MANIFEST}\n"
        f"  contact sheets:  {summary.out / 'contact_sheet.png'}, {summary.out / 'contact_sheet_rejects.png'}"
    )


def run(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    if cfg.runtime.random_weights:
        random_weights_banner()
    summary = run_build(cfg)
    write_sheets(summary, cfg)
    print_summary(summary)
    return 0 if summary.kept > 0 else 1
