"""Video and image reading and writing (PyAV and Pillow); pictures of videos are in kinema.sheets.

Frames at this edge are uint8 (T, H, W, 3) RGB; inside Kinema videos are float (3, T, H, W) in
[-1, 1] (`to_uint8` / `from_uint8` convert). Writers consume frames one at a time, so a long video
streamed from the VAE decoder never sits in memory whole, and every file is written to a temporary
name beside the destination and renamed into place, so a failed write leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, ImageSequence, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from kinema import __version__, gif
from kinema.errors import KinemaError
from kinema.filetypes import sniff_file

WRITE_SUFFIXES = (".mp4", ".webm", ".gif", ".png")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".m4v", ".avi", ".gif")
MP4_CRF = 18  # visually lossless for H.264; the VAE's own error is far larger
WEBM_CRF = 30  # VP9's scale differs from x264's: 30 is its "high quality" setting
GIF_MAX_FPS = 50  # GIF delays are whole centiseconds and viewers clamp anything shorter than 2
IMAGE_FPS = 1.0  # an image read as a video without a recorded rate

Frames = np.ndarray | torch.Tensor | Iterable[np.ndarray | torch.Tensor]


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

def write_video(path: str | Path, frames: Frames, fps: float, metadata: dict[str, Any] | None = None) -> None:
    """Write uint8 RGB frames to `path`, the format chosen by its suffix (.mp4, .webm, .gif, .png).

    `frames` is a (T, H, W, 3) array/tensor or an iterable of (T_i, H, W, 3) chunks consumed as they
    arrive. `metadata` (prompt, seed, model...) goes into the container tags (mp4/webm), the PNG text
    chunks or the GIF comment, together with a `software` tag naming Kinema.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITE_SUFFIXES:
        raise KinemaError(f"cannot write {path}: unsupported suffix {suffix or '(none)'!r}; "
                          f"use one of {', '.join(WRITE_SUFFIXES)}")
    if not fps > 0:
        raise KinemaError(f"fps must be positive, got {fps}")
    if suffix == ".gif" and fps > GIF_MAX_FPS:
        raise KinemaError(f"GIF cannot play {fps} fps (at most {GIF_MAX_FPS}); lower fps or write .mp4")
    tags = _tags(metadata)
    with atomic_path(path) as tmp:
        if suffix == ".png":
            _write_png(tmp, _iter_frames(frames), fps, tags)
        elif suffix == ".gif":
            gif.write(tmp, _iter_frames(frames), fps, tags)
        else:
            _write_av(tmp, _iter_frames(frames), fps, tags, suffix)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` and rename it over `path` only if the body succeeds."""
    if not path.parent.is_dir():
        raise KinemaError(f"cannot write {path}: {path.parent} is not an existing folder; create it first")
    if path.is_dir():
        raise KinemaError(f"cannot write {path}: it is a folder; give a file name such as {path / 'out.mp4'}")
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        # Creating the file up front turns every permission problem into one clear error, and
        # unlike mkstemp it keeps the umask's permissions for the final file.
        open(tmp, "xb").close()
        mode = tmp.stat().st_mode
        yield tmp
        # Some writers replace the file with a private one (safetensors: 0600, which other users could not load).
        tmp.chmod(mode)
        with open(tmp, "rb") as written:  # on disk before the rename: a power cut leaves the old file or the new
            os.fsync(written.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise KinemaError(f"cannot write {path}: {err.strerror or err}; choose a writable path",
                          code="storage_error") from None
    finally:
        tmp.unlink(missing_ok=True)


def _tags(metadata: dict[str, Any] | None) -> dict[str, str]:
    """Metadata as string tags; non-strings (seeds, lists) are stored as JSON."""
    tags = {"software": f"kinema {__version__}"}
    for key, value in (metadata or {}).items():
        tags[str(key)] = value if isinstance(value, str) else json.dumps(value)
    return tags


def _iter_frames(frames: Frames) -> Iterator[np.ndarray]:
    """Yield validated (H, W, 3) uint8 frames from an array, a tensor or an iterable of chunks."""
    chunks = [frames] if isinstance(frames, np.ndarray | torch.Tensor) else frames
    size = None
    for chunk in chunks:
        chunk = as_uint8_array(chunk)
        for frame in chunk if chunk.ndim == 4 else chunk[None]:
            if size is None:
                size = frame.shape
            elif frame.shape != size:
                raise KinemaError(f"frame size changed from {size[1]}x{size[0]} to "
                                  f"{frame.shape[1]}x{frame.shape[0]}; all frames of a video must match")
            yield np.ascontiguousarray(frame)
    if size is None:
        raise KinemaError("no frames to write; the video is empty")


def as_uint8_array(chunk: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(chunk, torch.Tensor):
        chunk = chunk.detach().cpu().numpy()
    chunk = np.ascontiguousarray(chunk)  # a flipped view (img[..., ::-1], BGR to RGB) has strides torch refuses
    if chunk.dtype != np.uint8:
        raise KinemaError(f"frames must be uint8, got {chunk.dtype}; convert with kinema.io.to_uint8")
    if chunk.ndim not in (3, 4) or chunk.shape[-1] != 3:
        raise KinemaError(f"frames must be (T, H, W, 3) RGB, got shape {tuple(chunk.shape)}")
    return chunk


def _write_av(tmp: Path, frames: Iterator[np.ndarray], fps: float, tags: dict[str, str], suffix: str) -> None:
    """Encode H.264 (.mp4) or VP9 (.webm) in yuv420p with an exact frame rate."""
    import av  # here, not at the top: training and benchmark hosts may lack PyAV

    rate = Fraction(fps).limit_denominator(1001)
    first = next(frames)
    height, width = first.shape[:2]
    if suffix == ".mp4":
        # No B-frames and no MB-tree: with either, x264 encodes the same frames differently from run to run
        # (B-frames at some sizes, 9:16's 128x224 among them; MB-tree in ~1 of 10 runs even with one thread), so
        # one seed would not give one file. B-frames saved 1-3% of the size; MB-tree saves up to half on
        # near-still clips, a price paid for reproducible files.
        fmt, codec, options = "mp4", "libx264", {"crf": str(MP4_CRF), "x264-params": "bframes=0:mbtree=0"}
        # faststart puts the index first so browsers can play while downloading; use_metadata_tags
        # keeps arbitrary keys (prompt, seed) that the mp4 muxer would otherwise drop.
        container_options = {"movflags": "+faststart+use_metadata_tags"}
    else:
        fmt, codec, options = "webm", "libvpx-vp9", {"crf": str(WEBM_CRF), "b": "0", "row-mt": "1"}
        container_options = {}
    with av.open(str(tmp), mode="w", format=fmt, options=container_options) as container:
        container.metadata.update(tags)
        stream = container.add_stream(codec, rate=rate, options=options)
        # yuv420p halves chroma resolution, so odd sizes are padded by repeating the last row/column.
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = "yuv420p"
        stream.time_base = 1 / rate
        for index, frame in enumerate(itertools.chain([first], frames)):
            video_frame = av.VideoFrame.from_ndarray(_pad_even(frame), format="rgb24")
            video_frame.pts, video_frame.time_base = index, 1 / rate
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode())


def _pad_even(frame: np.ndarray) -> np.ndarray:
    height, width = frame.shape[:2]
    if height % 2 == 0 and width % 2 == 0:
        return frame
    return np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")


def _write_png(tmp: Path, frames: Iterator[np.ndarray], fps: float, tags: dict[str, str]) -> None:
    first = next(frames)
    if next(frames, None) is not None:
        raise KinemaError("a .png holds one frame but the video has more; write .mp4 or .gif, "
                          "or save a filmstrip with kinema.io.contact_sheet")
    Image.fromarray(first).save(tmp, format="PNG", pnginfo=_png_info({**tags, "fps": str(fps)}))


def png_metadata(metadata: dict[str, Any]) -> PngInfo:
    """A PNG's text chunks for `metadata`, as every PNG Kinema writes carries them (with the software's name)."""
    return _png_info(_tags(metadata))


def _png_info(tags: dict[str, str]) -> PngInfo:
    info = PngInfo()
    for key, value in tags.items():
        info.add_itxt(key, value)
    return info


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------

def read_video(path: str | Path, max_frames: int | None = None, max_seconds: float | None = None,
               fit: tuple[int, int] | None = None, fps: float | None = None) -> tuple[np.ndarray, float]:
    """Read a video or image as (uint8 (T, H, W, 3) RGB frames, fps); an image is a 1-frame video.

    Images report the fps Kinema recorded in them, or IMAGE_FPS. GIFs are sampled along their timeline at one rate
    (Kinema's recorded fps, else their median frame's), so a frame a GIF holds longer is repeated. A video longer than
    `max_seconds` is an error, raised as soon as decoding passes it (not after holding every frame of a long
    video). `fit` = (width, height) fits each frame as it is decoded (fit_image), so memory holds frames of that
    size, not the source's. `fps` resamples the frames to that rate (`resampled_count` of them; the fps returned
    is then `fps`) unless the video's rate rounds to it, so a clip keeps its speed beside frames made at `fps`.
    """
    if max_frames is not None and max_frames < 1:
        raise KinemaError(f"max_frames must be at least 1, got {max_frames}")
    path, suffix = _existing(path, IMAGE_SUFFIXES + VIDEO_SUFFIXES)
    shape = (lambda frame: frame) if fit is None else (lambda frame: fit_image(frame, *fit)[0])
    if suffix in IMAGE_SUFFIXES:
        with _open_image(path) as image:
            return shape(_rgb(image))[None], _positive_float(image.info.get("fps")) or IMAGE_FPS
    if suffix == ".gif":
        decoded, rate = _read_gif(path)
        _check_length(path, len(decoded), rate, max_seconds)
        step, frames = _step(rate, fps), []
        for index, frame in enumerate(decoded):
            if shown := _times_shown(index, step):
                frames += [shape(frame)] * shown
    else:
        frames, rate = _read_av(path, max_frames, max_seconds, shape, fps)
    return np.stack(frames[:max_frames]), rate if _same_rate(rate, fps) else fps


def resampled_count(count: int, rate: float, fps: float | None) -> int:
    """How many frames `count` frames at `rate` become at `fps` (read_video's `fps`): as many as the clip's duration
    holds, at least one; unchanged when the rates round alike."""
    return count if _same_rate(rate, fps) else max(1, math.ceil(count * fps / rate - 1e-9))


def _same_rate(rate: float, fps: float | None) -> bool:
    """No resampling asked, or none needed: 23.976 fps plays as 24."""
    return fps is None or round(rate) == round(fps)


def _step(rate: float, fps: float | None) -> float:
    """Source frames per output frame: 1 when no resampling is asked or needed."""
    return 1.0 if _same_rate(rate, fps) else rate / fps


def _times_shown(index: int, step: float) -> int:
    """How many output frames show source frame `index`: those k whose time k / fps falls in its span, i.e.
    floor(k * step) == index (0 when resampling down skips it)."""
    return math.ceil((index + 1) / step - 1e-9) - math.ceil(index / step - 1e-9)


def _check_length(path: Path, frames: int, fps: float, max_seconds: float | None) -> None:
    if max_seconds is not None and frames > math.floor(max_seconds * fps + 1e-6) + 1:
        raise KinemaError(f"{path} runs over {max_seconds:g} s, the longest video Kinema takes; trim it "
                          f"(e.g. ffmpeg -i {path.name} -t {max_seconds:g} short{path.suffix})")


def _unreadable(path: Path, err: Exception) -> KinemaError:
    """A decoder's error in one line: FFmpeg's reason, without its error number and the path it repeats."""
    reason = getattr(err, "strerror", None) or str(err)
    return KinemaError(f"cannot read {path}: corrupt or not a video ({reason}); re-export it as .mp4")


def read_image(path: str | Path) -> np.ndarray:
    """Read an image (or the first frame of a video) as uint8 (H, W, 3) RGB; alpha is composited on white."""
    path, suffix = _existing(path, IMAGE_SUFFIXES + VIDEO_SUFFIXES)
    if suffix not in IMAGE_SUFFIXES:
        return read_video(path, max_frames=1)[0][0]
    with _open_image(path) as image:
        return _rgb(image)


def see_through(path: str | Path) -> bool:
    """Whether an image file has pixels that are not fully opaque, which read_image lays on white."""
    path, suffix = _existing(path, IMAGE_SUFFIXES + VIDEO_SUFFIXES)
    if suffix not in IMAGE_SUFFIXES + (".gif",):  # FFmpeg's videos: read_image takes their frames as they are
        return False
    with _open_image(path) as image:
        alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
        return alpha and image.convert("RGBA").getextrema()[3][0] < 255


def read_as(path: Path) -> str:
    """The suffix a file is read as: its content's type (a video named .png is a video, as `kinema verify` reads
    it), else its name's."""
    return sniff_file(path) or path.suffix.lower()


def _existing(path: str | Path, suffixes: tuple[str, ...]) -> tuple[Path, str]:
    """`path` and the suffix it is read as (`read_as`)."""
    path = Path(path)
    if path.is_dir():
        raise KinemaError(f"{path} is a folder; give the video or image file in it")
    if not path.is_file():
        raise KinemaError(f"{path} not found; check the path")
    suffix = read_as(path)
    if suffix not in suffixes:
        said = (f"unsupported suffix {path.suffix or '(none)'!r}" if suffix == path.suffix.lower()
                else f"it holds a {suffix[1:].upper()} file")
        raise KinemaError(f"cannot read {path}: {said}; use one of {', '.join(suffixes)}")
    return path, suffix


@contextlib.contextmanager
def _open_image(path: Path) -> Iterator[Image.Image]:
    try:
        with Image.open(path) as image:
            image.load()
            yield image
    except Image.DecompressionBombError:
        raise KinemaError(f"{path} is over {Image.MAX_IMAGE_PIXELS * 2:,} pixels, too large to open safely; scale it "
                          "down (Kinema's outputs are at most 1920x1080)") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise KinemaError(f"cannot read {path}: corrupt or not an image ({err}); re-export it") from None


def _rgb(image: Image.Image) -> np.ndarray:
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit greys: RGB conversion would clip at 255
        image = Image.fromarray((np.asarray(image, dtype=np.float64) / 257).round().clip(0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def _read_gif(path: Path) -> tuple[np.ndarray, float]:
    with _open_image(path) as image:
        frames, durations = [], []
        for frame in ImageSequence.Iterator(image):  # one pass: each frame is decoded once
            frames.append(_rgb(frame))
            durations.append(gif.frame_duration(frame))
        index, rate = gif.timeline(durations, _recorded_fps(image))
    return np.stack([frames[i] for i in index]), rate


def _positive_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _recorded_fps(image: Image.Image) -> float | None:
    """The exact frame rate Kinema records in a GIF's comment; None for other GIFs."""
    return _positive_float(gif.tags(image.info.get("comment", b"")).get("fps"))


def _read_av(path: Path, max_frames: int | None, max_seconds: float | None,
             shape: Callable[[np.ndarray], np.ndarray], fps: float | None) -> tuple[list[np.ndarray], float]:
    """Decoded frames, fitted by `shape` as they come and resampled to `fps` (see read_video), and the video's rate."""
    import av  # here, not at the top: training and benchmark hosts may lack PyAV

    frames, count = [], 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise KinemaError(f"{path} has no video stream; give a video file")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = float(stream.average_rate or stream.guessed_rate or 0) or IMAGE_FPS
            step = _step(rate, fps)
            for frame in container.decode(stream):
                count += 1
                _check_length(path, count, rate, max_seconds)
                if shown := _times_shown(count - 1, step):  # decoded and fitted only if some output frame shows it
                    square = _square_pixels(frame.to_ndarray(format="rgb24"), stream.sample_aspect_ratio)
                    frames += [shape(np.rot90(square, _quarter_turns(frame)))] * shown
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except (av.FFmpegError, OSError) as err:
        raise _unreadable(path, err) from None
    if not count:
        raise KinemaError(f"{path} contains no frames; re-export it")
    if len({frame.shape for frame in frames}) > 1:
        raise KinemaError(f"{path} changes its frame size midway; re-export it at one size")
    return frames, rate


def read_frames(path: str | Path, indices: Iterable[int]) -> np.ndarray:
    """uint8 (len(indices), H, W, 3): a video's frames at these 0-based indices, counted at its average rate; an
    index past the end gives the last frame. Decodes from the keyframe before the first index and keeps only the
    frames asked for, so time and memory do not grow with the video's length (training reads windows of long
    videos this way)."""
    wanted = np.asarray(list(indices), dtype=np.int64)
    path, suffix = _existing(path, VIDEO_SUFFIXES)
    if suffix == ".gif":
        frames, _ = _read_gif(path)
        return frames[np.minimum(wanted, len(frames) - 1)]
    import av  # here, not at the top: training and benchmark hosts may lack PyAV

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise KinemaError(f"{path} has no video stream; give a video file")
            picked = _pick_frames(container, container.streams.video[0], np.unique(wanted))
    except (av.FFmpegError, OSError) as err:
        raise _unreadable(path, err) from None
    if not picked:
        raise KinemaError(f"{path} contains no frames; re-export it")
    return np.stack([picked[i] for i in wanted])


def _pick_frames(container: Any, stream: Any, wanted: np.ndarray, seek: bool = True) -> dict[int, np.ndarray]:
    """{index: upright RGB frame} for the ascending `wanted` indices. The frame for an index is the first decoded
    at or after its time (a frame a seek skips over takes the next one); indices past the end, or past where a
    cut-short file stops decoding, take the last."""
    import av

    rate = float(stream.average_rate or stream.guessed_rate or 0)
    origin = stream.start_time or 0
    timed = rate > 0 and stream.time_base is not None
    if seek and timed and wanted[0] > 0:  # to the keyframe at or before the first wanted frame
        container.seek(origin + int(wanted[0] / rate / stream.time_base), stream=stream)
    picked: dict[int, np.ndarray] = {}
    position, next_wanted, frame = -1, 0, None
    try:
        for frame in container.decode(stream):
            timed_here = timed and frame.pts is not None
            position = round((frame.pts - origin) * stream.time_base * rate) if timed_here else position + 1
            if wanted[next_wanted] <= position:
                next_wanted = _fill(picked, wanted, next_wanted, position, frame, stream.sample_aspect_ratio)
                if next_wanted == len(wanted):
                    break
    except av.FFmpegError:  # a cut-short file's last packet; read_video's threaded decoding drops it unsaid
        if frame is None and not seek:
            raise
    if frame is None and seek:  # the seek went into the part a cut-short file lacks: read it from the start
        container.seek(origin, stream=stream)
        return _pick_frames(container, stream, wanted, seek=False)
    if frame is not None and next_wanted < len(wanted):
        _fill(picked, wanted, next_wanted, wanted[-1], frame, stream.sample_aspect_ratio)
    return picked


def _fill(picked: dict[int, np.ndarray], wanted: np.ndarray, start: int, position: int, frame: Any,
          sample_aspect: Any) -> int:
    """Give `frame` to every wanted index from `start` up to `position`; returns the next unfilled one."""
    image = np.rot90(_square_pixels(frame.to_ndarray(format="rgb24"), sample_aspect), _quarter_turns(frame))
    while start < len(wanted) and wanted[start] <= position:
        picked[int(wanted[start])] = image
        start += 1
    return start


def _quarter_turns(frame: Any) -> int:
    """Counterclockwise quarter turns that show a decoded frame upright. Phones store portrait video on its side
    with a display matrix, which players (and FFmpeg's autorotate) apply; mirrored matrices are not undone."""
    return round(frame.rotation / 90) % 4


def _exif_turned(image: Image.Image) -> bool:
    """Whether a photo's EXIF orientation turns it a quarter (as phones held upright write it)."""
    return image.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8)


def _turned_on_its_side(path: Path) -> bool:
    """Whether a video's display matrix turns it a quarter, so its shown size swaps width and height."""
    import av  # here, not at the top: training and benchmark hosts may lack PyAV

    with av.open(str(path)) as container:
        first = next(container.decode(video=0), None)
    return first is not None and _quarter_turns(first) % 2 == 1


def video_metadata(path: str | Path) -> dict[str, Any]:
    """Width, height, fps, frame count, codec, pix_fmt and tags (lower-case keys) of a video or image, as
    read_video and read_image give it: stood upright, at its display aspect, an image as one frame."""
    import av  # here, not at the top: training and benchmark hosts may lack PyAV

    path, suffix = _existing(path, IMAGE_SUFFIXES + VIDEO_SUFFIXES)
    if suffix in IMAGE_SUFFIXES:  # Kinema's rate and tags are where FFmpeg does not look (and it sizes some as 0x0)
        with _open_image(path) as image:
            tags = dict(getattr(image, "text", {}))
            width, height = image.size[::-1] if _exif_turned(image) else image.size  # read_image stands it up
            return {"width": width, "height": height, "fps": _positive_float(tags.get("fps")) or IMAGE_FPS,
                    "frames": 1, "codec": (image.format or suffix[1:]).lower(), "pix_fmt": image.mode, "tags": tags}
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise KinemaError(f"{path} has no video stream; give a video file")
            stream = container.streams.video[0]
            # Matroska/WebM store no frame count: count packets, which needs no decoding.
            frames = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
            info = {
                "width": _display_width(stream.codec_context.width, stream.sample_aspect_ratio),
                "height": stream.codec_context.height,
                "fps": float(stream.average_rate or stream.guessed_rate or 0),
                "frames": frames,
                "codec": stream.codec_context.name,
                "pix_fmt": stream.codec_context.pix_fmt,
                "tags": {key.lower(): value for key, value in container.metadata.items()},
            }
        turned = suffix != ".gif" and _turned_on_its_side(path)
    except (av.FFmpegError, OSError) as err:
        raise _unreadable(path, err) from None
    if suffix == ".gif":  # Kinema's rate and tags are in the GIF's comment
        info["tags"] |= {key: str(value) for key, value in gif.tags(info["tags"].get("comment", "")).items()}
        with _open_image(path) as image:  # the frames read_video gives, not those the GIF stores
            durations = [gif.frame_duration(frame) for frame in ImageSequence.Iterator(image)]
            index, info["fps"] = gif.timeline(durations, _recorded_fps(image))
            info["frames"] = len(index)
    if turned:  # the size as shown, which is the size of the frames read_video and read_image return
        info["width"], info["height"] = info["height"], info["width"]
    return info


def _display_width(width: int, sample_aspect: Any) -> int:
    """A frame's width as shown: anamorphic video (DV, some broadcast and phone formats) stores wide pixels."""
    if not sample_aspect or sample_aspect <= 0 or sample_aspect == 1:
        return width
    return max(2, round(width * float(sample_aspect) / 2) * 2)


def _square_pixels(frame: np.ndarray, sample_aspect: Any) -> np.ndarray:
    """A decoded (H, W, 3) frame stretched to its display width (see _display_width); as it is if already."""
    width = _display_width(frame.shape[1], sample_aspect)
    if width == frame.shape[1]:
        return frame
    return np.asarray(Image.fromarray(frame).resize((width, frame.shape[0]), Image.Resampling.LANCZOS))


def probe_input(path: str | Path, still: bool) -> tuple[tuple[int, ...], float | None]:
    """The array shape read_image ((H, W, 3), `still`) or read_video ((T, H, W, 3)) will give a file, and a
    video's frame rate, from its header: a missing or corrupt file fails here, before a video is decoded.
    A single frame (e.g. a photo given as a video) has no rate of its own: None, so the output keeps the model's."""
    path, suffix = _existing(path, IMAGE_SUFFIXES + VIDEO_SUFFIXES)
    if still and suffix in IMAGE_SUFFIXES:
        with _open_image(path) as image:
            width, height = image.size[::-1] if _exif_turned(image) else image.size
        return (height, width, 3), None
    info = video_metadata(path)
    frame = (info["height"], info["width"], 3)
    return (frame, None) if still else ((info["frames"], *frame), info["fps"] if info["frames"] > 1 else None)


# ---------------------------------------------------------------------------------------------
# Conversions
# ---------------------------------------------------------------------------------------------

def to_uint8(video: torch.Tensor) -> np.ndarray:
    """(B, 3, T, H, W) (batch item 0 is taken) or (3, T, H, W) in [-1, 1] -> uint8 (T, H, W, 3)."""
    video = torch.as_tensor(video)
    if video.ndim == 5:
        video = video[0]
    if video.ndim != 4 or video.shape[0] != 3:
        raise KinemaError(f"expected a video (B, 3, T, H, W) or (3, T, H, W), got shape {tuple(video.shape)}")
    pixels = (torch.nan_to_num(video.detach().float().cpu()).clamp(-1, 1) + 1) * 127.5
    return pixels.round().to(torch.uint8).permute(1, 2, 3, 0).contiguous().numpy()


def from_uint8(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float32 (3, T, H, W) in [-1, 1]; `to_uint8` inverts it exactly."""
    frames = as_uint8_array(frames)
    frames = torch.from_numpy(frames if frames.flags.writeable else frames.copy())  # torch warns on read-only
    if frames.ndim == 3:
        frames = frames[None]
    return (frames.permute(3, 0, 1, 2).float() / 127.5 - 1).contiguous()


def fit_image(image: np.ndarray, width: int, height: int) -> tuple[np.ndarray, str]:
    """Resize keeping the aspect ratio until the image covers width x height, then center-crop.

    Returns the uint8 (height, width, 3) image and a message saying what was done.
    """
    image = as_uint8_array(image)
    if image.ndim != 3:
        raise KinemaError(f"fit_image needs one (H, W, 3) image, got shape {image.shape}")
    src_height, src_width = image.shape[:2]
    if (src_width, src_height) == (width, height):
        return image, f"image is already {width}x{height}"
    new_width, new_height = _cover(src_width, src_height, width, height)
    left, top = (new_width - width) // 2, (new_height - height) // 2
    # Resize only the part that is kept (the crop in source coordinates): a 1x8000 strip never becomes 1024000x128.
    sx, sy = new_width / src_width, new_height / src_height
    box = (left / sx, top / sy, (left + width) / sx, (top + height) / sy)
    fitted = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS, box=box)).copy()
    return fitted, fit_message(src_width, src_height, width, height)


def fit_message(src_width: int, src_height: int, width: int, height: int) -> str:
    """What fit_image does to a src_width x src_height image, in words."""
    new_width, new_height = _cover(src_width, src_height, width, height)
    if (new_width, new_height) == (src_width, src_height):  # already covers it: only cut
        return f"center-cropped {src_width}x{src_height} to {width}x{height}"
    message = f"resized {src_width}x{src_height} to {new_width}x{new_height}"
    if (new_width, new_height) != (width, height):
        message += f" and center-cropped to {width}x{height}"
    return message


def _cover(src_width: int, src_height: int, width: int, height: int) -> tuple[int, int]:
    """The smallest size of the source's aspect ratio that covers width x height."""
    scale = max(width / src_width, height / src_height)
    return max(width, round(src_width * scale)), max(height, round(src_height * scale))
