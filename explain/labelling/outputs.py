"""Label rows on disk: small atomic parts as they are done, then one file in the chosen format.

`WRITERS` is the one table of output formats; the CLI's `--format`
choices and what a format needs of the rows come from it, so a new format
is one function and one row. Parts (`OUT/parts/part-TIME-PID-TAG.jsonl`)
are written to a temporary name and renamed, so a part is either whole or
absent, and no two writers can pick one name; a re-run reads them to skip
what is done. The final file is assembled from all parts, also atomically:
`labels.parquet` (typed columns, lists of structs), `labels.csv` (the top K
flattened into columns, the descriptor scores as JSON), or FiftyOne's
`FiftyOneImageClassificationDataset` layout (`labels.json`, a `data.json`
manifest of file paths, and `errors.json`). Every format carries how its
labels were made (`recipe.provenance`): inside labels.parquet's metadata,
and as `provenance.json` beside the files.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable
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


ORDERS = ("input", "margin", "probability", "review")  # review: margin, lowest first


def ordered(rows: list[dict], order: str) -> list[dict]:
    """Rows as written (input), or lowest margin or probability first (review = margin), so that the calls
    closest to a coin toss come first; rows without a label (unreadable) go last."""
    if order == "input":
        return rows
    key = "margin" if order in ("margin", "review") else "probability"
    if order not in ORDERS:
        raise ValueError(f"order {order!r} is not one of {', '.join(ORDERS)}")
    return sorted(rows, key=lambda row: (row["error"] is not None, row[key] if row[key] is not None else 0.0))


def review_tags(row: dict, review_margin: float) -> list[str]:
    """What a reviewer should look at first: abstained rows, and rows whose margin is below `review_margin`."""
    tags = ["descry:abstained"] if row.get("abstained") else []
    if row["margin"] is not None and row["margin"] < review_margin:
        tags.append("descry:low-margin")
    return tags


def assemble(out: Path, fmt: str, record: dict, order: str = "input") -> list[Path]:
    """The final file(s) in format `fmt`, from every part in `out`, with `record` (the provenance) beside
    them: in labels.parquet's metadata, and as provenance.json in every folder written."""
    rows = ordered(read_parts(out), order)
    files = WRITERS[fmt].write(out, rows, record)
    for folder in dict.fromkeys(path.parent for path in files):
        files.append(_json(folder / "provenance.json", record))
    return files


def write_recipe(out: Path, record: dict) -> None:
    """The recipe of the rows in `out`'s parts, so that a re-run can check it adds rows made the same way."""
    parts_folder(out).mkdir(parents=True, exist_ok=True)
    _json(parts_folder(out) / "recipe.json", record)


def read_recipe(out: Path) -> dict | None:
    path = parts_folder(out) / "recipe.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable: treated as made another way, never silently as the same


def _json(path: Path, value) -> Path:
    write_atomically(path, lambda handle: handle.write(json.dumps(value, ensure_ascii=False, indent=1)), "w")
    return path


def _parquet(path: Path, rows: list[dict], record: dict) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    fields = [
        ("path", pa.string()),
        ("label", pa.string()),
        ("probability", pa.float64()),
        (
            "top",
            pa.list_(pa.struct([("class", pa.string()), ("score", pa.float64()), ("probability", pa.float64())])),
        ),
        ("baseline_label", pa.string()),
        ("baseline_probability", pa.float64()),
        ("margin", pa.float64()),
        (
            "descriptors",
            pa.list_(pa.struct([("class", pa.string()), ("descriptor", pa.string()), ("score", pa.float64())])),
        ),
        ("labels", pa.list_(pa.struct([("class", pa.string()), ("probability", pa.float64())]))),
        ("abstained", pa.bool_()),
        ("abstain_reason", pa.string()),
        ("error", pa.string()),
    ]
    # Everything about how the labels were made travels inside the file, readable with any Parquet reader.
    schema = pa.schema(fields, metadata={"descry": json.dumps(record, ensure_ascii=False)})
    table = pa.Table.from_pylist(rows, schema=schema)
    write_atomically(path, lambda handle: pq.write_table(table, handle), "wb")
    return path


def _csv(path: Path, rows: list[dict], top: int) -> Path:
    columns = ["path", "label", "probability", "baseline_label", "baseline_probability", "margin"]
    columns += [f"top{k}_{what}" for k in range(1, top + 1) for what in ("class", "score", "probability")]
    columns += ["descriptors", "labels", "abstained", "abstain_reason", "error"]

    def flat(row: dict) -> dict:
        out = {key: row.get(key) for key in columns[:6]}
        for k, entry in enumerate(row["top"][:top], 1):
            for what in ("class", "score", "probability"):
                out[f"top{k}_{what}"] = entry[what]
        out["descriptors"] = json.dumps(row["descriptors"], ensure_ascii=False) if row["descriptors"] else ""
        out["labels"] = "|".join(entry["class"] for entry in row.get("labels") or [])
        out["abstained"] = "true" if row.get("abstained") else "false"
        out["abstain_reason"] = row.get("abstain_reason") or ""
        out["error"] = row.get("error") or ""
        return out

    def write(handle) -> None:
        write_rows(handle, columns, (flat(row) for row in rows))  # no cell a spreadsheet would run

    write_atomically(path, write, "w", newline="")
    return path


def fiftyone_label(row: dict, multi_label: bool = False) -> dict | list[dict] | None:
    """A row as FiftyOne's `Classification`: `label` and `confidence` in its own fields, and the explanation
    as attributes, with `logits` (every class score, in the provenance's class order) among them, which is
    where FiftyOne's importer looks for it. With `multi_label`, a list (FiftyOne's `Classifications`), one
    per label with its own probability. None for a row without a label (unreadable, or abstained: FiftyOne
    has no label without a class, so the review tags and the reason travel beside it)."""
    if row["label"] is None:
        return None
    attributes = {
        "logits": row.get("logits"),
        "top": row["top"],
        "baseline_label": row["baseline_label"],
        "baseline_probability": row["baseline_probability"],
        "margin": row["margin"],
        "descriptors": row["descriptors"],
    }
    if multi_label:
        return [{"label": e["class"], "confidence": e["probability"], "attributes": attributes} for e in row["labels"]]
    return {"label": row["label"], "confidence": row["probability"], "attributes": attributes}


def _fiftyone(folder: Path, rows: list[dict], record: dict) -> list[Path]:
    """FiftyOne's FiftyOneImageClassificationDataset: labels.json ({"classes", "labels": {uuid: label}}), a
    data.json manifest ({uuid: file path}) and errors.json ({file path: why it has no label}), for
    `fo.Dataset.from_dir(dataset_dir=folder, dataset_type=fo.types.FiftyOneImageClassificationDataset,
    data_path="data.json", label_field="descry")`, or `explain.fiftyone_model.load_labels(folder)`."""
    folder.mkdir(parents=True, exist_ok=True)
    labels, data, errors, review = {}, {}, {}, {}
    for row in rows:
        uuid = hashlib.sha1(row["path"].encode("utf-8")).hexdigest()[:20]
        data[uuid] = str(Path(row["path"]).resolve())
        labels[uuid] = fiftyone_label(row, record.get("multi_label", False))
        if row["error"]:
            errors[data[uuid]] = row["error"]
        elif tags := review_tags(row, record.get("review_margin", 0.0)):
            review[data[uuid]] = {"tags": tags, "margin": row["margin"], "abstain_reason": row.get("abstain_reason")}
    return [
        _json(folder / "labels.json", {"classes": record["classes"], "labels": labels}),
        _json(folder / "data.json", data),
        _json(folder / "errors.json", errors),
        _json(folder / "review.json", review),
    ]


@dataclass(frozen=True)
class Writer:
    """One output format: how rows become files in OUT, and whether its rows need every class score."""

    write: Callable[[Path, list[dict], dict], list[Path]]  # (out, rows, provenance) -> files
    keeps_logits: bool = False  # each row carries `logits`, every class's score (large for big class lists)


WRITERS = {
    "parquet": Writer(lambda out, rows, record: [_parquet(out / "labels.parquet", rows, record)]),
    "csv": Writer(lambda out, rows, record: [_csv(out / "labels.csv", rows, record["top"])]),
    "fiftyone": Writer(lambda out, rows, record: _fiftyone(out / "fiftyone", rows, record), keeps_logits=True),
}
FORMATS = tuple(WRITERS)
