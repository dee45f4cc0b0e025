"""Evaluation reports: per-item and per-view CSV, a summary JSON, a Markdown table and a contact sheet PNG.

Missing values (LPIPS without weights, geometry without surface samples) are written as ``n/a`` (CSV, Markdown)
and ``null`` (JSON), never as a number. Non-finite numbers (PSNR of a perfect prediction) are written as ``inf``
in all three (a JSON string, since JSON has no infinity).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import UInt8

from diffusiongs.data.store import atomic_write_bytes
from diffusiongs.evaluation.runner import GEOMETRY_METRICS, IMAGE_METRICS, MESH_METRICS, EvalResult
from diffusiongs.inference.media import image_row, write_image

ITEMS_CSV = "items.csv"
VIEWS_CSV = "views.csv"
SUMMARY_JSON = "summary.json"
REPORT_MD = "report.md"
CONTACT_SHEET = "contact_sheet.png"

NA = "n/a"
SHEET_GAP = 4
"""Pixels between contact-sheet tiles; items are separated by three times as much."""

DIGITS = {"psnr": 2, "ssim": 4, "lpips": 4, "fd_vgg": 2, "chamfer": 4, "f_score": 4, "precision": 4, "recall": 4}
"""Decimals in the Markdown tables (the CSV and JSON keep full precision)."""

TABLE_HEADERS = ["method", "items", "PSNR ↑", "SSIM ↑", "LPIPS ↓", "FD-VGG16 ↓", "Chamfer ↓", "F-score ↑", "s/item"]
GEOMETRY_HEADERS = ["geometry of", "items", "Chamfer ↓", "F-score ↑", "precision ↑", "recall ↑", "s/item"]
"""The table that sets the mesh's scores beside the Gaussians' (``evaluate --mesh``)."""


def format_value(value: float | int | None, digits: int = 6) -> str:
    """A table cell: ``n/a`` for missing values, ``inf``/``nan`` spelled out, else ``digits`` decimals."""
    if value is None:
        return NA
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}f}"


def json_value(value: Any) -> Any:
    """Plain-JSON version of a report value (non-finite floats become strings, nested containers recurse)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    return value


def write_json(path: Path, payload: Any) -> None:
    atomic_write_bytes(path, json.dumps(json_value(payload), indent=1, allow_nan=False).encode())


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def method_label(info: dict[str, Any]) -> str:
    """``diffusion (ddim, 30 steps)``, ``deterministic (w/o timestep)``, ``copy-condition (baseline)``."""
    if info.get("method") == "diffusion":
        return f"diffusion ({info['sampler']}, {info['steps']} steps)"
    return str(info.get("method"))


def summary_row(label: str, summary: dict[str, Any]) -> list[str]:
    """One row under :data:`TABLE_HEADERS`."""
    return [label, str(summary["items"]), *(format_value(summary[m], DIGITS[m]) for m in IMAGE_METRICS),
            format_value(summary.get("fd_vgg"), DIGITS["fd_vgg"]), format_value(summary["chamfer"], DIGITS["chamfer"]),
            format_value(summary["f_score"], DIGITS["f_score"]),
            format_value(summary["seconds_median"], 3)]


def machine_info(device: torch.device | str) -> dict[str, Any]:
    """What the numbers were measured on."""
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
    return {"device": f"{device.type}: {name}", "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__}


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _csv_bytes(header: list[str], rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode()


def _has_mesh(result: EvalResult) -> bool:
    return any(i.mesh_chamfer is not None for i in result.items)


def _items_csv(result: EvalResult) -> bytes:
    metrics = [*IMAGE_METRICS, *GEOMETRY_METRICS]
    mesh_columns = [*MESH_METRICS, "mesh_faces", "mesh_seconds"] if _has_mesh(result) else []
    header = ["item_id", *metrics, "num_points", "seconds", "target_views", *mesh_columns]
    rows = [[i.item_id, *(format_value(getattr(i, m), 8) for m in metrics), format_value(i.num_points),
             format_value(i.seconds, 4), " ".join(map(str, i.target_views)),
             *(format_value(getattr(i, m), 8) for m in mesh_columns)] for i in result.items]
    return _csv_bytes(header, rows)


def geometry_rows(summary: dict[str, Any]) -> list[list[str]]:
    """Rows under :data:`GEOMETRY_HEADERS`: the Gaussians' geometry scores and those of their meshes."""
    def row(label: str, prefix: str, items: int, seconds: float | None) -> list[str]:
        return [label, str(items), *(format_value(summary[f"{prefix}{m}"], 4) for m in GEOMETRY_METRICS),
                format_value(seconds, 3)]

    return [row("Gaussians (centres, opacity-weighted)", "", summary["geometry_items"], summary["seconds_median"]),
            row("mesh", "mesh_", summary["mesh_items"], summary["mesh_seconds_median"])]


def _views_csv(result: EvalResult) -> bytes:
    rows = []
    for item in result.items:
        for k, view in enumerate(item.target_views):
            rows.append([item.item_id, str(view), *(NA if item.views[m] is None else format_value(item.views[m][k], 8)
                                                     for m in IMAGE_METRICS)])
    return _csv_bytes(["item_id", "view", *IMAGE_METRICS], rows)


def contact_sheet(result: EvalResult) -> UInt8[np.ndarray, "h w 3"] | None:
    """Two rows per item: the input then the ground-truth target views; a blank tile then the predicted views."""
    rows = []
    for entry in result.sheet:
        blank = torch.ones_like(entry.condition)
        rows.append(image_row(torch.cat([entry.condition[None], entry.targets]), SHEET_GAP))
        rows.append(image_row(torch.cat([blank[None], entry.renders]), SHEET_GAP))
    if not rows:
        return None
    width = max(r.shape[1] for r in rows)
    canvas = []
    for k, row in enumerate(rows):
        pad = np.full((row.shape[0], width - row.shape[1], 3), 255, np.uint8)
        canvas.append(np.concatenate([row, pad], axis=1))
        gap = SHEET_GAP * (3 if k % 2 else 1) if k < len(rows) - 1 else 0
        canvas.append(np.full((gap, width, 3), 255, np.uint8))
    return np.concatenate(canvas, axis=0)


def _settings_table(info: dict[str, Any], summary: dict[str, Any]) -> str:
    """``info["settings"]`` (readable strings, in order), the method and the item counts."""
    rows = [["method", method_label(info)], *([k, str(v)] for k, v in info.get("settings", {}).items())]
    rows.append(["items", f"{summary['items']} scored ({summary['views']} views), {summary['skipped']} skipped"])
    return markdown_table(["setting", "value"], rows)


def _markdown(result: EvalResult, summary: dict[str, Any], sheet: bool) -> str:
    info = result.info
    parts = [f"# Evaluation: {method_label(info)}", "", _settings_table(info, summary), "",
             markdown_table(TABLE_HEADERS, [summary_row(method_label(info), summary)]), "",
             "Image metrics are means over each item's target views, then over items; geometry over the "
             f"{summary['geometry_items']} items with surface samples and Gaussians; s/item is the median "
             "generation time.", ""]
    if summary.get("mesh_items"):
        parts += ["Geometry of the Gaussians and of the meshes extracted from them (s/item: sampling for the "
                  "Gaussians, mesh extraction for the meshes; medians):", "",
                  markdown_table(GEOMETRY_HEADERS, geometry_rows(summary)), ""]
    by_view = summary["psnr_by_view"]
    if by_view:
        parts += ["PSNR by target view:", "",
                  markdown_table(["view", *by_view], [["PSNR", *(format_value(v, 2) for v in by_view.values())]]), ""]
    if result.skipped:
        parts += [f"Skipped ({len(result.skipped)}):", ""]
        parts += [f"* `{s.item_id}`: {s.reason}" for s in result.skipped] + [""]
    if sheet:
        names = ", ".join(f"`{e.item_id}`" for e in result.sheet)
        parts += [f"![contact sheet]({CONTACT_SHEET})", "",
                  f"Contact sheet, two rows per item ({names}): the input view, then ground-truth target views; "
                  "below them the predictions of the same views.", ""]
    return "\n".join(parts)


def write_report(result: EvalResult, out_dir: Path) -> dict[str, Any]:
    """Write items.csv, views.csv, summary.json, report.md and contact_sheet.png (when any item was scored) into
    ``out_dir`` (each file atomically); returns the summary JSON's content."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = result.summary()
    atomic_write_bytes(out_dir / ITEMS_CSV, _items_csv(result))
    atomic_write_bytes(out_dir / VIEWS_CSV, _views_csv(result))
    sheet = contact_sheet(result)
    if sheet is not None:
        write_image(sheet, out_dir / CONTACT_SHEET)
    payload = {**result.info, "metrics": summary,
               "skipped_items": [{"item": s.item_id, "reason": s.reason} for s in result.skipped]}
    write_json(out_dir / SUMMARY_JSON, payload)
    atomic_write_bytes(out_dir / REPORT_MD, _markdown(result, summary, sheet is not None).encode())
    return json_value(payload)
