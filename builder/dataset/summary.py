"""The dataset plan on one screen: the pose histogram before and after balancing, the split."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from builder.console import console
from builder.dataset.plan import TRAIN, VALIDATION, DatasetPlan


def pose_table(plan: DatasetPlan) -> Table:
    t = Table(title=f"Pose balance: {plan.pose_note}")
    t.add_column("yaw / pitch bin")
    t.add_column("kept photos", justify="right")
    t.add_column("validation", justify="right")
    t.add_column("training", justify="right")
    held: dict[str, int] = {}
    for key in plan.validation:
        held[plan.bins[key]] = held.get(plan.bins[key], 0) + 1
    for label, before in plan.pose_before.items():
        if before:
            t.add_row(label, str(before), str(held.get(label, 0)), str(plan.pose_after.get(label, 0)))
    return t


def print_dataset_summary(plan: DatasetPlan) -> None:
    if not plan.pose_before or not any(plan.pose_before.values()):
        return
    console.print(pose_table(plan))
    trains = len(plan.keys(TRAIN))
    console.print(
        f"[bold]dataset[/bold]: {trains} training image(s), {len(plan.keys(VALIDATION))} validation; "
        f"validation split: {escape(plan.validation_note)}"
    )
