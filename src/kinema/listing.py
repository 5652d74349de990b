"""A user's videos as rows of (path, caption): a .jsonl, a .csv, or a folder of media files with same-named .txt
captions. Column names of other tools are taken too (Hugging Face's metadata.jsonl, Open-Sora's CSV), and every
bad row is named by its file and line."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kinema.errors import KinemaError
from kinema.io import IMAGE_SUFFIXES, VIDEO_SUFFIXES


@dataclass
class Row:
    path: Path
    caption: str
    where: str  # "listing.jsonl line 7", for errors

    @property
    def is_image(self) -> bool:
        return self.path.suffix.lower() in IMAGE_SUFFIXES


def read_listing(spec: Path) -> list[Row]:
    """Rows of (path, caption) from a .jsonl, a .csv, or a folder holding one of them or
    media files with same-named .txt captions. Relative paths are relative to the listing."""
    if not spec.exists():
        raise KinemaError(f"data source {spec} not found; set [data] source to \"world\" or an existing "
                          "folder, .jsonl or .csv")
    if spec.is_dir():
        listings = sorted([*spec.glob("*.jsonl"), *spec.glob("*.csv")])
        if len(listings) > 1:
            raise KinemaError(f"{spec} holds several listings ({', '.join(p.name for p in listings)}); "
                              "point [data] source at one of them")
        rows = _read_file(listings[0]) if listings else _read_sidecars(spec)
        if not listings and not rows:
            raise KinemaError(f"{spec} holds no video or image files; put clips there, each with its caption in a "
                              "same-named .txt file (clip.mp4, clip.txt), or a captions .jsonl or .csv")
    elif spec.suffix.lower() in (".jsonl", ".csv"):
        rows = _read_file(spec)
    else:
        raise KinemaError(f"data source {spec} is not a folder, .jsonl or .csv; list (path, caption) rows in one")
    if not rows:
        raise KinemaError(f"{spec} lists no clips; add rows of (path, caption)")
    return rows


def _read_text(path: Path) -> str:
    """A captions file as UTF-8 (-sig: spreadsheets' byte-order mark); another encoding is an error, not mojibake."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise KinemaError(f"{path} is not UTF-8 text (byte {err.start}); save it as UTF-8") from None


def _read_file(listing: Path) -> list[Row]:
    text = _read_text(listing)
    pairs = _jsonl_pairs(listing, text) if listing.suffix.lower() == ".jsonl" else _csv_pairs(listing, text)
    rows = []
    for line, path, caption in pairs:
        where = f"{listing} line {line}"
        if not isinstance(path, str) or not path or not isinstance(caption, str) or not caption.strip():
            raise KinemaError(f"{where}: needs a non-empty path and caption (named {' / '.join(PATH_KEYS)} and "
                              f"{' / '.join(CAPTION_KEYS)}); fix or delete the row")
        full = Path(path) if Path(path).is_absolute() else listing.parent / path
        if not full.is_file():
            raise KinemaError(f"{where}: {full} not found; fix the path or delete the row")
        rows.append(Row(full, caption.strip(), where))
    return rows


# Column names a listing may use (Kinema's own, Hugging Face's metadata.jsonl, Open-Sora's CSV...), first match wins.
PATH_KEYS = ("path", "file_name", "file", "video")
CAPTION_KEYS = ("caption", "text", "prompt")


def _jsonl_pairs(listing: Path, text: str) -> list[tuple[int, Any, Any]]:
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise KinemaError(f"{listing} line {number}: not valid JSON ({err.msg}); fix the row") from None
        if not isinstance(row, dict):
            raise KinemaError(f"{listing} line {number}: expected an object with \"path\" and \"caption\"")
        pairs.append((number, _first(row, PATH_KEYS), _first(row, CAPTION_KEYS)))
    return pairs


def _first(row: dict[str, Any], keys: tuple[str, ...]) -> Any:
    return next((row[key] for key in keys if key in row), None)


def _csv_pairs(listing: Path, text: str) -> list[tuple[int, Any, Any]]:
    """Rows of (path, caption); with a header naming its columns (path/caption, file_name/text, ...) other columns
    may follow, without one each row is exactly path,caption. Quoted captions may hold commas and newlines."""
    reader = csv.reader(io.StringIO(text), delimiter=_delimiter(text))
    header: tuple[int, int] | None = None
    pairs, ended = [], 0
    for row in reader:
        number, ended = ended + 1, reader.line_num  # the line a record starts on: a caption may span lines
        if not any(cell.strip() for cell in row):
            continue
        if not pairs and header is None:
            if (header := _header_columns(row)) is not None:
                continue
            if not Path(row[0].strip()).suffix:  # no file has a name like "filename" or "video path"
                raise KinemaError(_not_a_header(listing, number, row))
        if header is None and len(row) != 2:
            raise KinemaError(f"{listing} line {number}: expected 2 columns (path, caption), got {len(row)}; quote "
                              "captions that contain commas, or name the columns in a header (path,caption,...)")
        path_column, caption_column = header or (0, 1)
        if max(path_column, caption_column) >= len(row):
            raise KinemaError(f"{listing} line {number}: {len(row)} columns, fewer than the header's; fix the row")
        pairs.append((number, row[path_column].strip(), row[caption_column]))
    return pairs


def _delimiter(text: str) -> str:
    """Comma, or the semicolon or tab a spreadsheet in another locale exports with: the one that splits the first
    line into a header or a media file and more."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    for delimiter in (",", ";", "\t"):
        cells = next(csv.reader([first], delimiter=delimiter))
        media = Path(cells[0].strip()).suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES
        if len(cells) >= 2 and (_header_columns(cells) is not None or media):
            return delimiter
    return ","


def _not_a_header(listing: Path, number: int, row: list[str]) -> str:
    """Why a first line that names no media file is not read as a header either: the column it lacks."""
    names = [cell.strip().lower() for cell in row]
    for keys, kind in ((PATH_KEYS, "path"), (CAPTION_KEYS, "caption")):
        if not set(names) & set(keys) and set(names) & set(PATH_KEYS + CAPTION_KEYS):
            others = [name for name in names if name not in PATH_KEYS + CAPTION_KEYS]
            return (f"{listing} line {number} names its columns without a {kind} column; call one of "
                    f"{', '.join(map(repr, others))} {' / '.join(keys)}")
    return (f"{listing} line {number}: {row[0].strip()!r} is not a media file; if this line names the columns, call "
            f"them {' / '.join(PATH_KEYS)} and {' / '.join(CAPTION_KEYS)}")


def _header_columns(row: list[str]) -> tuple[int, int] | None:
    """(path column, caption column) when `row` is a header naming both, else None."""
    names = [cell.strip().lower() for cell in row]
    found = [next((names.index(key) for key in keys if key in names), None) for keys in (PATH_KEYS, CAPTION_KEYS)]
    return (found[0], found[1]) if None not in found else None


def _read_sidecars(folder: Path) -> list[Row]:
    rows = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES:
            sidecar = path.with_suffix(".txt")
            if not sidecar.is_file():
                raise KinemaError(f"{path} has no caption; write it to {sidecar.name} or list the folder's "
                                  "clips in a captions.jsonl")
            caption = _read_text(sidecar).strip()
            if not caption:
                raise KinemaError(f"{sidecar} is empty; write {path.name}'s caption in it, or move the clip out")
            rows.append(Row(path, caption, str(sidecar)))
    return rows
