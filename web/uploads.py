"""Files a visitor sends and files the app keeps: uploads, dataset zips, the work folder, downloads.

A zip is unpacked with bounded size and count, and no entry may leave its
folder or be a link. Unpacked datasets and reports live in work folders
whose total size is bounded, oldest pruned first; descriptor files for the
download button are named by content and bounded in number. Server-side
datasets are offered only from under the data root, links included.
Messages use the name the visitor knows a file by, never a server path.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import zipfile
from pathlib import Path

from descriptors import DescriptorError
from explain.errors import first_line
from web.settings import Settings


def file_path(value) -> str | None:
    """A file path from whatever a Gradio file or image input delivers (path, dict or FileData)."""
    if value is None:
        return None
    if isinstance(value, (str, Path)):
        return str(value)
    if isinstance(value, dict):
        return value.get("path")
    return getattr(value, "path", None)


def upload_name(value) -> str:
    """The name the visitor's file had on their machine (Gradio keeps it beside the stored copy)."""
    original = value.get("orig_name") if isinstance(value, dict) else getattr(value, "orig_name", None)
    return original or Path(file_path(value) or "image").name


def shown_path(text: str, folder: Path | None, shown: str) -> str:
    """`text` with the server's dataset folder written as the name the visitor knows it by."""
    if folder is None:
        return text
    for form in {str(folder), str(Path(folder).resolve())}:
        text = text.replace(form, shown)
    return text


def work_folder(settings: Settings, kind: str) -> Path:
    """A new folder for one evaluation's files, after pruning the oldest so the total stays bounded."""
    prune_work(settings)
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=settings.work_dir))


def prune_work(settings: Settings, max_bytes: int | None = None, keep: int | None = None) -> None:
    """Delete the oldest work folders until the rest fit in `max_bytes`, never the `keep` newest."""
    work = settings.work_dir
    if not work.is_dir():
        return
    limit = settings.max_work_bytes if max_bytes is None else max_bytes
    keep = settings.keep_work_folders if keep is None else keep
    folders = sorted((p for p in work.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    sizes = {p: sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink()) for p in folders}
    total = sum(sizes.values())
    for folder in reversed(folders[keep:]):  # oldest first
        if total <= limit:
            break
        shutil.rmtree(folder, ignore_errors=True)
        total -= sizes[folder]


def extract_zip(settings: Settings, path: str, target: Path) -> Path:
    """Unpack an uploaded zip safely: bounded size and count, no path may leave `target`, no links."""
    if Path(path).stat().st_size > settings.max_zip_bytes:
        raise DescriptorError(f"the zip is larger than {settings.max_zip_bytes // 2**20} MB")
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise DescriptorError("the upload is not a zip file") from None
    root = target.resolve()
    with archive:
        _check_members(settings, archive.infolist(), root)
        try:
            archive.extractall(root)
        except (
            zipfile.BadZipFile,
            zipfile.LargeZipFile,
            NotImplementedError,
            EOFError,
            OSError,
            RuntimeError,
        ) as error:
            # A directory that lies about sizes or checksums, an unsupported method, a password.
            shutil.rmtree(root, ignore_errors=True)
            raise DescriptorError(f"the zip is damaged or unsupported ({first_line(error)})") from None
    # A zip of one top folder holding the class folders is common: step into it.
    entries = [p for p in root.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir() and any(child.is_dir() for child in entries[0].iterdir()):
        return entries[0]
    return root


def _check_members(settings: Settings, members: list[zipfile.ZipInfo], root: Path) -> None:
    if len(members) > settings.max_zip_files:
        raise DescriptorError(f"the zip holds {len(members)} files; the limit is {settings.max_zip_files}")
    if sum(member.file_size for member in members) > settings.max_unzipped_bytes:
        raise DescriptorError(f"the zip would unpack to more than {settings.max_unzipped_bytes // 2**20} MB")
    for member in members:
        destination = (root / member.filename).resolve()
        if not destination.is_relative_to(root):
            raise DescriptorError(f"the zip entry {member.filename!r} points outside the upload folder")
        if (member.external_attr >> 16) & 0o170000 == 0o120000:
            raise DescriptorError(f"the zip entry {member.filename!r} is a symbolic link")


def data_folder(settings: Settings, name: str) -> Path:
    """A folder under the data root; nothing outside that root can be reached, links included."""
    if settings.data_root is None:
        raise DescriptorError("no server folder is offered: set DESCRY_DATA_ROOT when starting the app")
    root = settings.data_root.resolve()
    folder = (root / (name or "")).resolve()
    if not folder.is_relative_to(root) or not folder.is_dir():
        raise DescriptorError(f"{name!r} is not a folder under the data root")
    return folder


def data_folders(settings: Settings) -> list[str]:
    """The dataset folders offered under the data root (one level down)."""
    if settings.data_root is None or not settings.data_root.is_dir():
        return []
    root = settings.data_root.resolve()
    return sorted(
        p.name for p in root.iterdir() if not p.name.startswith(".") and p.is_dir() and p.resolve().is_relative_to(root)
    )


def download_file(settings: Settings, descriptors: dict) -> str:
    """The session's descriptor set as a JSON file for the download button.

    This runs after every edit, so files are named by content: an unchanged
    set reuses its file instead of leaving a new folder behind each time,
    and only the newest `settings.max_downloads` are kept.
    """
    text = json.dumps(descriptors, ensure_ascii=False, indent=2) + "\n"
    folder = settings.downloads / hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()
    path = folder / "descriptors.json"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        folders = sorted((p for p in settings.downloads.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
        for old in folders[: max(0, len(folders) - settings.max_downloads)]:
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)
    return str(path)
