"""Label rows on disk: small atomic parts as they are done, then one file in the chosen format.

`WRITERS` is the one table of output formats; the CLI's `--format`
choices and what a format needs of the rows come from it, so a new format
is one function and one row. Parts (`OUT/parts/part-TIME-PID-TAG.jsonl`)
are written to a temporary name and renamed, so a part is either whole or
absent, and no two writers can pick one name; a re-run reads them to skip
what is done. The final file is assembled from all parts, also atomically:
`labels.parquet` (typed columns, lists of structs), `labels.csv` (the top K
flattened into columns, the descriptor scores as JSON), or FiftyOne's
`FiftyOneImageClassificationDataset` layout (`labels.json` and a
`data.json` manifest of file paths).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from descriptors.store import write_atomically
from explain.spreadsheet import write_rows


def parts_folder(out: Path) -> Path:
    return out / "parts"


def done_paths(out: Path) -> set[str]:
    """Every path that a finished part already holds; clears what a killed run left half-written."""
    folder = parts_folder(out)
    for stale in folder.glob(".part-*.tmp") if folder.is_dir() else []:
        stale.unlink(missing_ok=True)
    return {row["path"] for row in read_parts(out)}


def read_parts(out: Path) -> list[dict]:
    rows, seen = [], set()
    folder = parts_folder(out)
    for part in sorted(folder.glob("part-*.jsonl")) if folder.is_dir() else []:
        for line in part.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if row["path"] not in seen:
                seen.add(row["path"])
                rows.append(row)
    return rows


def write_part(out: Path, rows: list[dict]) -> Path:
    """One part, whole or not at all, under a name no other writer can take: the time in nanoseconds, the
    process and a random tag (so parts sort in the order they were written, and two runs can never replace
    each other's part, even without the lock `run` holds)."""
    folder = parts_folder(out)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"part-{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}.jsonl"
    write_atomically(
        path, lambda handle: handle.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)), "w"
    )
    return path


def assemble(out: Path, fmt: str, classes: Iterable[str], top: int) -> list[Path]:
    """The final file(s) in format `fmt`, from every part in `out`."""
    return WRITERS[fmt].write(out, read_parts(out), list(classes), top)


def _parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("path", pa.string()),
            ("label", pa.string()),
            ("probability", pa.float64()),
            ("top", pa.list_(pa.struct([("class", pa.string()), ("probability", pa.float64())]))),
            ("baseline_label", pa.string()),
            ("baseline_probability", pa.float64()),
            ("margin", pa.float64()),
            ("descriptors", pa.list_(pa.struct([("descriptor", pa.string()), ("score", pa.float64())]))),
            ("error", pa.string()),
        ]
    )
    table = pa.Table.from_pylist(rows, schema=schema)
    write_atomically(path, lambda handle: pq.write_table(table, handle), "wb")
    return path


def _csv(path: Path, rows: list[dict], top: int) -> Path:
    columns = ["path", "label", "probability", "baseline_label", "baseline_probability", "margin"]
    columns += [f"top{k}_{what}" for k in range(1, top + 1) for what in ("class", "probability")] + [
        "descriptors",
        "error",
    ]

    def flat(row: dict) -> dict:
        out = {key: row.get(key) for key in columns[:6]}
        for k, entry in enumerate(row["top"][:top], 1):
            out[f"top{k}_class"], out[f"top{k}_probability"] = entry["class"], entry["probability"]
        out["descriptors"] = json.dumps(row["descriptors"], ensure_ascii=False) if row["descriptors"] else ""
        out["error"] = row.get("error") or ""
        return out

    def write(handle) -> None:
        write_rows(handle, columns, (flat(row) for row in rows))  # no cell a spreadsheet would run

    write_atomically(path, write, "w", newline="")
    return path


def _fiftyone(folder: Path, rows: list[dict], classes: list[str]) -> list[Path]:
    """FiftyOne's FiftyOneImageClassificationDataset: labels.json ({"classes", "labels": {uuid: label}}) and a
    data.json manifest ({uuid: file path}), for `fo.Dataset.from_dir(dataset_dir=folder,
    dataset_type=fo.types.FiftyOneImageClassificationDataset, data_path="data.json")`."""
    folder.mkdir(parents=True, exist_ok=True)
    labels, data = {}, {}
    for row in rows:
        uuid = hashlib.sha1(row["path"].encode("utf-8")).hexdigest()[:20]
        data[uuid] = str(Path(row["path"]).resolve())
        if row["label"] is None:
            labels[uuid] = None
        else:
            labels[uuid] = {
                "label": row["label"],
                "confidence": row["probability"],
                "logits": row.get("logits"),
                "attributes": {"baseline_label": row["baseline_label"], "margin": row["margin"]},
            }
    written = [folder / "labels.json", folder / "data.json"]
    write_atomically(
        written[0],
        lambda h: h.write(json.dumps({"classes": classes, "labels": labels}, ensure_ascii=False, indent=1)),
        "w",
    )
    write_atomically(written[1], lambda h: h.write(json.dumps(data, ensure_ascii=False, indent=1)), "w")
    return written


@dataclass(frozen=True)
class Writer:
    """One output format: how rows become files in OUT, and whether its rows need every class score."""

    write: Callable[[Path, list[dict], list[str], int], list[Path]]  # (out, rows, classes, top) -> files
    keeps_logits: bool = False  # each row carries `logits`, every class's score (large for big class lists)


WRITERS = {
    "parquet": Writer(lambda out, rows, classes, top: [_parquet(out / "labels.parquet", rows)]),
    "csv": Writer(lambda out, rows, classes, top: [_csv(out / "labels.csv", rows, top)]),
    "fiftyone": Writer(lambda out, rows, classes, top: _fiftyone(out / "fiftyone", rows, classes), keeps_logits=True),
}
FORMATS = tuple(WRITERS)
