"""One rich console for the CLI, progress bars, and the random-weights banner."""

from __future__ import annotations

from rich.console import Console
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True, highlight=False)


def progress(transient: bool = False) -> Progress:
    """The progress bar every long loop uses, so they all look and behave the same."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        transient=transient,
    )


_banner_shown = False


def random_weights_banner() -> None:
    """Shown once per process, by whichever stage first builds a random-weight model."""
    global _banner_shown
    if _banner_shown:
        return
    _banner_shown = True
    console.print(
        Panel(
            "[bold]--random-weights[/bold]: every model has its real architecture but seeded "
            "random weights.\nThe pictures, captions and scores this run makes are MEANINGLESS; "
            "use it only to check the plumbing.",
            title="RANDOM WEIGHTS",
            style="bold red",
        )
    )
