"""What `evaluate` writes beside its metrics: classification reports and the CAM score tables.

Classification (from the logits of the one test/val pass, collected by `callbacks.LogitCollector`): per-class accuracy
(CSV), the most-confused class pairs (CSV), and the confusion matrix as a TensorBoard figure (row-normalized; cell
counts printed only up to `ANNOTATE_UP_TO` classes, so 257 classes stay readable). CAM scores (`scoring.CamScores`):
one Markdown table per layer, JSON, CSV, and TensorBoard hparams + scalars (one run per layer × method).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from caltech_cam.cam.scoring import CamScores
from caltech_cam.utils.files import write_atomically, write_text

ANNOTATE_UP_TO = 30  # classes; beyond, per-cell text is unreadable and only the colour is drawn
TOP_PAIRS = 20


@dataclass(frozen=True)
class ClassReport:
    """`confusion` (C, C) int64, rows = true class, columns = predicted; top-1/top-5 from the same logits."""

    class_names: list[str]
    confusion: Tensor
    top1: float
    top5: float

    def per_class(self) -> list[dict[str, Any]]:
        """class, n, correct, accuracy (correct / n; None where the split has no image of the class)."""
        n = self.confusion.sum(dim=1).tolist()
        correct = self.confusion.diagonal().tolist()
        return [
            {"class": name, "n": k, "correct": c, "accuracy": c / k if k else None}
            for name, k, c in zip(self.class_names, n, correct, strict=True)
        ]

    def confused_pairs(self, top: int = TOP_PAIRS) -> list[dict[str, Any]]:
        """The `top` largest off-diagonal cells: true, predicted, count, share of the true class's images."""
        off = self.confusion.clone()
        off.fill_diagonal_(0)
        flat = off.flatten()
        order = flat.argsort(descending=True, stable=True)[:top]
        totals = self.confusion.sum(dim=1)
        count = len(self.class_names)
        pairs = []
        for index in order.tolist():
            value = int(flat[index])
            if value == 0:
                break
            true, predicted = divmod(index, count)
            pairs.append(
                {
                    "true": self.class_names[true],
                    "predicted": self.class_names[predicted],
                    "count": value,
                    "share": value / int(totals[true]),
                }
            )
        return pairs


def class_report(logits: Tensor, labels: Tensor, class_names: Sequence[str]) -> ClassReport:
    """Confusion matrix C[t, p] = #{images of class t predicted p} (argmax of the logits), top-1 and top-5."""
    count = len(class_names)
    if logits.ndim != 2 or logits.shape[1] != count or labels.shape != (logits.shape[0],):
        raise ValueError(
            f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not fit {count} classes"
        )
    predicted = logits.argmax(dim=1)
    confusion = torch.bincount(labels * count + predicted, minlength=count * count).view(count, count)
    top5 = logits.topk(min(5, count), dim=1).indices.eq(labels[:, None]).any(dim=1)
    n = max(labels.numel(), 1)
    return ClassReport(list(class_names), confusion, float(confusion.trace()) / n, float(top5.sum()) / n)


def confusion_figure(report: ClassReport):
    """A matplotlib figure of the row-normalized confusion matrix (share of each true class)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    count = len(report.class_names)
    totals = report.confusion.sum(dim=1, keepdim=True).clamp_min(1)
    shares = (report.confusion / totals).numpy()
    side = min(4 + 0.25 * count, 24)
    fig, ax = plt.subplots(figsize=(side, side), dpi=100)
    # Many classes: small confusions are faint on a linear scale; a square-root scale keeps them visible.
    from matplotlib.colors import Normalize, PowerNorm

    norm = Normalize(0, 1) if count <= ANNOTATE_UP_TO else PowerNorm(0.5, vmin=0, vmax=1)
    image = ax.imshow(shares, cmap="Blues", norm=norm, interpolation="nearest")
    scale = "" if count <= ANNOTATE_UP_TO else " (square-root scale)"
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=f"share of the true class{scale}")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if count <= 60:
        ax.set_xticks(range(count), report.class_names, rotation=90, fontsize=7)
        ax.set_yticks(range(count), report.class_names, fontsize=7)
    if count <= ANNOTATE_UP_TO:
        for (t, p), value in zip(
            torch.cartesian_prod(torch.arange(count), torch.arange(count)).tolist(),
            report.confusion.flatten().tolist(),
            strict=True,
        ):
            if value:
                ax.text(
                    p,
                    t,
                    str(value),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if shares[t, p] > 0.5 else "black",
                )
    ax.set_title(f"confusion matrix ({count} classes, top-1 {report.top1:.1%})")
    fig.tight_layout()
    return fig


def _write_csv(path: Path, rows: list[dict[str, Any]], fields: Sequence[str]) -> None:
    with write_atomically(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in fields})


def write_classification(report: ClassReport, output_dir: Path, writer: Any) -> dict[str, Any]:
    """per_class_accuracy.csv, confused_pairs.csv, confusion_matrix.png and the TensorBoard figure; a summary."""
    output_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(
        output_dir / "per_class_accuracy.csv", report.per_class(), ("class", "n", "correct", "accuracy")
    )
    pairs = report.confused_pairs()
    _write_csv(output_dir / "confused_pairs.csv", pairs, ("true", "predicted", "count", "share"))
    fig = confusion_figure(report)
    with write_atomically(output_dir / "confusion_matrix.png", mode="wb") as fh:
        fig.savefig(fh, format="png")
    writer.add_figure("classification/confusion_matrix", fig, global_step=0, close=True)
    writer.add_scalar("classification/acc_top1", report.top1, 0)
    writer.add_scalar("classification/acc_top5", report.top5, 0)
    return {"acc_top1": report.top1, "acc_top5": report.top5, "most_confused": pairs[:5]}


# ----------------------------------------------------------------------------------------------- CAM scores
def _cell(row: dict[str, Any]) -> str:
    if row["n"] == 0 or math.isnan(row["mean"]):
        return "n/a"
    return f"{row['mean']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"


def cam_tables(scores: CamScores) -> str:
    """One Markdown table per layer: rows = methods then the baselines, columns = metrics, mean [95 % CI]."""
    out = []
    for layer in scores.settings["layers"]:
        rows = [r for r in scores.rows if r["layer"] == layer]
        metrics = list(dict.fromkeys(r["metric"] for r in rows))
        methods = list(dict.fromkeys(r["method"] for r in rows))
        cells = {(r["method"], r["metric"]): _cell(r) for r in rows}
        arrows = {r["metric"]: "↑" if r["better"] == "higher" else "↓" for r in rows}
        flagged = {m for m, per in scores.sanity.items() if per.get(layer, {}).get("flagged")}
        out.append(f"### {layer}\n")
        out.append("| method | " + " | ".join(f"{m} {arrows[m]}" for m in metrics) + " |")
        out.append("|---|" + "---|" * len(metrics))
        for method in methods:
            name = f"{method} (sanity: flagged)" if method in flagged else method
            out.append(f"| {name} | " + " | ".join(cells.get((method, m), "") for m in metrics) + " |")
        out.append("")
    out.extend(f"- {note}" for note in scores.notes)
    return "\n".join(out)


CSV_FIELDS = (
    "layer",
    "method",
    "metric",
    "mean",
    "ci_low",
    "ci_high",
    "n",
    "excluded",
    "better",
    "runtime_s",
)


def write_cam_scores(scores: CamScores, output_dir: Path, writer_dir: Path, hparams: dict[str, Any]) -> str:
    """cam_scores.json, cam_scores.csv, TensorBoard hparams + scalars under `writer_dir`/cams/<layer>/<method>;
    returns the Markdown tables."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    output_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "settings": scores.settings,
        "rows": scores.rows,
        "sanity": scores.sanity,
        "notes": scores.notes,
        "runtime_s": scores.runtime,
    }
    # NaN (a column with no image, e.g. localization without boxes) is written as null: strict JSON parsers.
    write_text(
        output_dir / "cam_scores.json", json.dumps(_finite(payload), indent=2, default=str, allow_nan=False)
    )
    _write_csv(output_dir / "cam_scores.csv", scores.rows, CSV_FIELDS)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in scores.rows:
        groups.setdefault((row["layer"], row["method"]), []).append(row)
    for (layer, method), rows in groups.items():
        finite = {f"cams/{r['metric']}": r["mean"] for r in rows if r["n"] and not math.isnan(r["mean"])}
        params = {**hparams, "layer": layer, "method": method}
        with SummaryWriter(log_dir=str(writer_dir / "cams" / layer / method)) as writer:
            for summary in hparams_summary(params, finite):
                writer.file_writer.add_summary(summary)
            for tag, value in finite.items():
                writer.add_scalar(tag, value, 0)
    return cam_tables(scores)


def _finite(value: Any) -> Any:
    """`value` with every non-finite float (NaN, ±inf) replaced by None, through dicts, lists and tuples."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
