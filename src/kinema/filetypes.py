"""What a file is, read from its first bytes rather than its name.

A file is read as what its content says, whatever its name says (a download saved without a suffix, a PNG named .mp4):
kinema.io's readers (so `kinema generate`'s inputs), `kinema verify`, POST /v1/provenance and the server's uploads all
go by it, so they take the same files.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from kinema.errors import KinemaError

# The first bytes of each type Kinema reads, and the suffix kinema.io reads it by.
MAGIC = ((b"\x89PNG", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"GIF8", ".gif"), (b"\x1a\x45\xdf\xa3", ".webm"),
         (b"BM", ".bmp"))
IMAGE_TYPES, VIDEO_TYPES = "a PNG, JPEG, WEBP, BMP or GIF image", "an MP4, MOV, WEBM, MKV, AVI or GIF video"


def sniff_suffix(head: bytes) -> str | None:
    """The type of a file from its first 16 bytes, as the suffix kinema.io reads it by; None for other files."""
    if head[:4] == b"RIFF":
        return {b"WEBP": ".webp", b"AVI ": ".avi"}.get(head[8:12])
    if head[4:8] == b"ftyp":
        return ".mp4"
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"):  # QuickTime from before ftyp
        return ".mov"
    return next((suffix for magic, suffix in MAGIC if head.startswith(magic)), None)


def sniff_file(path: Path) -> str | None:
    """`sniff_suffix` of a file's first bytes; a missing, unreadable or empty file fails in one line."""
    try:
        with open(path, "rb") as file:
            head = file.read(16)
    except OSError as err:
        why = {FileNotFoundError: "not found; check the path", IsADirectoryError: "is a folder; give the video or "
               "image file in it"}.get(type(err), f"cannot be read ({err.strerror or err}); check its permissions")
        raise KinemaError(f"{path} {why}") from None
    if not head:  # a download or export that never finished
        raise KinemaError(f"{path} is empty (0 bytes); save or download the video or image again")
    return sniff_suffix(head)


@contextlib.contextmanager
def by_content(path: Path) -> Iterator[Path]:
    """`path`, or a link to it named for what its content is: kinema.provenance's checks go by the suffix."""
    suffix = sniff_file(path)
    if suffix is None:
        raise KinemaError(f"{path} is neither {IMAGE_TYPES} nor {VIDEO_TYPES}; give one of those")
    if path.suffix.lower() == suffix:
        yield path
        return
    with tempfile.TemporaryDirectory() as folder:
        link = Path(folder) / f"file{suffix}"
        try:
            link.symlink_to(path.resolve())
        except OSError:  # a system without symlinks: a copy reads the same
            try:
                shutil.copyfile(path, link)
            except OSError as err:
                raise KinemaError(f"cannot read {path} as a {suffix} file: {err.strerror or err}; rename it to end "
                                  f"in {suffix}") from None
        try:
            yield link
        except KinemaError as err:  # its message would name the link
            raise KinemaError(str(err).replace(str(link), str(path)), code=err.code, param=err.param) from None
