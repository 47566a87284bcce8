"""``launch.py review OUT``: a local web page to keep/reject results, edit captions and compare epochs."""

from __future__ import annotations

import argparse
from pathlib import Path

from builder.cli.common import build_config, config_flag
from builder.errors import BuilderError


def port_number(text: str) -> int:
    """--port: 0 (a free one) to 65535, or a usage error instead of a traceback."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port: use 1-65535, or 0 for a free one")
    return port


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "review",
        help="open a local review page: keep/reject results, edit captions, compare epochs",
        description="Serve a review page for the run folder OUT on 127.0.0.1 only. Keep/reject "
        "decisions and caption edits are written to OUT/overrides.json; the image folder and the "
        "TOMLs follow at once, and later build/run/caption runs keep them. Pass the same --config "
        "as the build. To reach it from a laptop: ssh -L 8765:127.0.0.1:8765 gpu-box, with --port 8765.",
    )
    p.add_argument("out", type=Path, metavar="OUT", help="run folder (holds manifest.jsonl)")
    p.add_argument("--port", type=port_number, default=0, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--no-browser", action="store_true", help="only print the URL")
    p.add_argument("--author", default=None, help="name recorded with each decision (default: your login name)")
    config_flag(p, "--trigger", dest="character.trigger", help="trigger word (default: from the img/ folder name)")
    config_flag(p, "--class-word", dest="character.class_word", help="class word (default: from the img/ folder name)")
    return p


def make_app(args: argparse.Namespace):
    """The ReviewApp for ``args``, its config settled the way the build settled this run folder."""
    from builder.build import MANIFEST
    from builder.caption.dataset_scan import parse_kohya_folder
    from builder.caption.text import load_clip_counter
    from builder.manifest import BY_RANDOM_WEIGHTS, Manifest
    from builder.review.server import ReviewApp

    out = args.out.resolve()
    if not (out / MANIFEST).is_file():
        raise BuilderError(f"{out}: no {MANIFEST}; run `launch.py build --out {args.out}` first")
    cfg = build_config(args)
    cfg.paths.out = str(out)
    folders = [d for d in (out / "img").glob("*") if d.is_dir() and parse_kohya_folder(d.name)]
    if len(folders) == 1 and "character.trigger" not in vars(args) and "character.class_word" not in vars(args):
        cfg.character.trigger, cfg.character.class_word = parse_kohya_folder(folders[0].name)
    # A run folder built with --random-weights keeps every result: reviewing it must settle the same way.
    if any(r.decided_by == BY_RANDOM_WEIGHTS for r in Manifest(out / MANIFEST).records.values()):
        cfg.runtime.random_weights = True
    counter = load_clip_counter(cfg.caption.clip_tokenizer, cfg.runtime.weights_dir)
    return ReviewApp(out, cfg, counter, author=args.author)


def run(args: argparse.Namespace) -> int:
    import os
    import sys
    import webbrowser

    from builder.console import console
    from builder.review.server import ReviewServer

    server = ReviewServer(make_app(args), port=args.port)
    # Without a display, webbrowser would start a text browser in this terminal instead.
    headless = sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if headless and not args.no_browser:
        console.print("no display here: open the URL in a browser, through an SSH tunnel from a laptop (see README, review)")
    console.print(f"review page for {server.app.out}: [bold]{server.url}[/bold]  (Ctrl-C stops it)")
    if not args.no_browser and not headless:
        webbrowser.open(server.url)
    server.serve()
    console.print("review server stopped; decisions are in overrides.json")
    return 0
