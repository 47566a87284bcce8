"""``launch.py weights``: list the model files and their state; ``--fetch`` downloads them."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.markup import escape

from builder import weights as W
from builder.cli.common import build_config

STATE_STYLE = {W.PRESENT: "green", W.UNVERIFIED: "cyan", W.MISSING: "red", W.BAD: "bold red"}


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "weights",
        help="list model files and their state; --fetch downloads and verifies them",
        description="List every model file the builder uses (file, URL, size, sha256, licence, "
        "state), or download them with --fetch (resumable, checksum-verified). Works offline. "
        f"Cache: --weights-dir, else ${W.ENV_VAR}, else ~/.cache/lora-builder; Hugging Face "
        "repos go to the hub cache.",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="registry names (default: all)")
    p.add_argument(
        "--fetch", action="store_true",
        help="download the named entries (default: every non-optional entry)",
    )
    p.add_argument("--all", action="store_true", help="with --fetch: include optional entries too")
    p.add_argument(
        "--verify", action="store_true",
        help="hash present files against their sha256 (remembered, so once per file)",
    )
    p.add_argument(
        "--connect-timeout", type=float, default=None, metavar="S",
        help="seconds to wait for a host before giving up (default 4)",
    )
    return p


def run(args: argparse.Namespace) -> int:
    from builder import fetch as F

    cfg = build_config(args)
    weights_dir = cfg.runtime.weights_dir
    if args.fetch:
        names = args.names or [s.name for s in W.REGISTRY.values() if args.all or not s.optional]
        timeout = args.connect_timeout if args.connect_timeout is not None else F.CONNECT_TIMEOUT
        F.fetch(names, weights_dir, connect_timeout=timeout)
        return 0
    return list_weights(W.resolve_names(args.names) or list(W.REGISTRY), weights_dir, args.verify)


def _size(spec: W.WeightSpec) -> str:
    if spec.size is None:
        return "hub-managed" if spec.kind == "hf" else "unknown"
    return f"{spec.size:,} B ({spec.size / 1e6:.1f} MB)"


def list_weights(names: list[str], weights_dir: str, verify: bool) -> int:
    out = Console(soft_wrap=True, highlight=False)  # stdout, unwrapped: URLs stay greppable
    out.print(escape(f"model cache: {W.cache_dir(weights_dir)}   hub cache: {W.hf_cache_dir()}"))
    bad = 0
    for name in names:
        spec = W.REGISTRY[name]
        st = W.state(name, weights_dir, verify=verify)
        bad += st.state == W.BAD
        style = STATE_STYLE[st.state]
        tags = [spec.kind] + ([f"base model, {spec.family}"] if spec.family else []) + (["optional"] if spec.optional else [])
        out.print(f"\n[bold]{name}[/bold] [{style}]{escape(st.state)}[/{style}]  "
                  f"({', '.join(tags)}) {escape(spec.purpose)}")
        out.print(f"  file     {spec.filename}")
        out.print(f"  url      {W.page_url(spec)}")
        out.print(f"  size     {_size(spec)}")
        out.print(f"  sha256   {spec.sha256 or ('hub-verified' if spec.kind == 'hf' else 'unknown')}")
        out.print(f"  licence  {spec.license}")
        detail = f"   ({st.detail})" if st.detail else ""
        out.print(escape(f"  path     {st.path}{detail}"))
    return 1 if verify and bad else 0
