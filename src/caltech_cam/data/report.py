"""The human-readable summary of a prepared dataset (printed by ``prepare`` and at the start of training)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def format_summary(summary: Mapping[str, Any], max_items: int = 10) -> str:
    """Render :meth:`CaltechDataModule.summary` as text: nothing that was dropped goes unmentioned."""
    splits = summary["splits"]
    lines = [
        f"root: {summary['root']}",
        f"classes: {summary['classes']}  images: {summary['images']}  "
        + "  ".join(f"{name}: {n}" for name, n in splits.items())
        + f"  (split: {summary['split_source']})",
    ]
    sections = (
        ("skipped", [f"{s['path']}: {s['reason']}" for s in summary["skipped"]]),
        ("bad images (dropped)", [f"{b['path']}: {b['error']}" for b in summary["bad_images"]]),
        ("duplicate groups (each kept in one split)", [" = ".join(g) for g in summary["duplicate_groups"]]),
        (_near_title(summary["near_duplicates"]), [" ~ ".join(g) for g in summary["near_duplicate_groups"]]),
        ("warnings", list(summary["warnings"])),
    )
    for title, items in sections:
        lines.append(f"{title}: {len(items)}")
        lines += [f"  {item}" for item in items[:max_items]]
        if len(items) > max_items:
            lines.append(f"  ... {len(items) - max_items} more")
    if summary.get("manifest"):
        lines.append(f"manifest: {summary['manifest']}")
    return "\n".join(lines)


def _near_title(settings: Mapping[str, Any]) -> str:
    if not settings["enabled"]:
        return "near-duplicate groups (off: data.near_duplicates.enabled=false)"
    return (
        f"near-duplicate groups (perceptual hash within {settings['max_distance']} bits, "
        f"{settings['pairs']} pair(s); each kept in one split)"
    )
