"""Training data: clip sources, size buckets, and the on-disk latent cache.

A source gives uint8 clips (T, H, W, 3) at a requested bucket size with a caption and a
JSON-able `meta` that can re-draw captions: the procedural world (scenes from its training
distribution only, never the held-out combinations) or a user's videos listed with captions (`kinema.listing`).

The latent cache holds, per bucket, fp16 safetensors shards of normalized VAE latent means,
each shard carrying its clips' metas in the file header. Shards are written atomically and
skipped when present, so an interrupted cache build continues where it stopped.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import math
import multiprocessing
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from kinema import world
from kinema.checkpoint import atomic_write
from kinema.config import ModelConfig
from kinema.errors import KinemaError
from kinema.io import fit_image, read_frames, read_video, video_metadata
from kinema.listing import Row, read_listing


@dataclass(frozen=True)
class Bucket:
    """One training size; every batch is drawn from a single bucket."""

    width: int
    height: int
    frames: int  # 1 = an image

    @property
    def name(self) -> str:
        return f"{self.width}x{self.height}x{self.frames}"

    def latent_shape(self, cfg: ModelConfig) -> tuple[int, int, int, int]:
        """(C, T', h, w) of one clip's latents."""
        sf, tf = cfg.vae.spatial_factor, cfg.vae.temporal_factor
        return cfg.vae.z_dim, 1 + (self.frames - 1) // tf, self.height // sf, self.width // sf

    def tokens(self, cfg: ModelConfig) -> int:
        return cfg.dit.tokens(*self.latent_shape(cfg)[1:])

    def batch_size(self, cfg: ModelConfig, batch_tokens: int, max_batch: int) -> int:
        """Batches hold about the same number of tokens, so images come many to a batch."""
        return max(1, min(max_batch, batch_tokens // self.tokens(cfg)))


def split_counts(total: int, weights: list[float]) -> list[int]:
    """`total` clips split over buckets in proportion to `weights`, at least one each where weight > 0."""
    raw = [total * w / sum(weights) for w in weights]
    return [max(1 if w > 0 else 0, round(r)) for r, w in zip(raw, weights, strict=True)]


@dataclass
class Clip:
    frames: np.ndarray  # (T, H, W, 3) uint8
    caption: str
    meta: dict[str, Any]  # JSON-able; `Source.caption(meta, rng)` draws a caption from it


class Source(Protocol):
    def clip(self, index: int, bucket: Bucket, stream: int = 0) -> Clip:
        """Clip number `index` of random stream `stream` at the bucket's size; deterministic."""

    def caption(self, meta: dict[str, Any], rng: np.random.Generator) -> str:
        """A caption for a clip from its meta (the world re-draws one from its grammar)."""

    def describe(self) -> str:
        """A fingerprint of the data, so a latent cache built from other data is never reused."""

    def held_out(self) -> Source | None:
        """The clips kept from training for evaluation (the same kind of source), or None when there are none."""


def open_source(spec: str, seed: int, fps: int, mix: world.SceneMix = world.WHOLE_WORLD,
                blend: tuple[float, world.SceneMix] = (0.0, world.WHOLE_WORLD), clip_frames: int = 1,
                buckets: int = 1) -> Source:
    """The world (its scenes drawn from `mix`, a `blend` share of them from another), or a folder / JSONL / CSV of
    videos with captions (`clip_frames`: the longest clip it must fill, for its warnings; `buckets`: how many
    buckets take its clips, each from its own share of the rows)."""
    if spec == "world":
        return WorldSource(seed, fps, mix=mix, blend=blend)
    return FolderSource(Path(spec), fps, clip_frames=clip_frames, buckets=buckets)


def to_video(clips: list[np.ndarray], device: torch.device | None = None) -> torch.Tensor:
    """uint8 clips [(T, H, W, 3)] -> float (B, 3, T, H, W) in [-1, 1] on `device`.

    Converted there: a GPU takes a quarter of float32's bytes and does the arithmetic, not the host's one process.
    """
    batch = torch.from_numpy(np.stack(clips)).to(device)  # (B, T, H, W, 3) uint8
    return batch.permute(0, 4, 1, 2, 3).float() / 127.5 - 1


def stable_seed(*parts: Any) -> int:
    """A stable 63-bit seed from any parts (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


# ---------------------------------------------------------------------------------------------
# The procedural world
# ---------------------------------------------------------------------------------------------

class WorldSource:
    """Scenes from the world's training distribution; `split` keeps evaluation clips apart."""

    def __init__(self, seed: int, fps: int, split: str = "train", mix: world.SceneMix = world.WHOLE_WORLD,
                 blend: tuple[float, world.SceneMix] = (0.0, world.WHOLE_WORLD)):
        self.seed, self.fps, self.split, self.mix, self.blend = seed, fps, split, mix, blend

    def clip(self, index: int, bucket: Bucket, stream: int = 0) -> Clip:
        rng = np.random.default_rng(stable_seed(self.seed, self.split, stream, index))
        share, blended = self.blend
        mix = blended if share and rng.random() < share else self.mix  # no draw unblended: the same scenes as ever
        # Motion is paced to the clip's duration, so it is visible (and, unless told otherwise, stays in frame).
        scene = world.sample_scene(rng, holdout=False, duration=bucket.frames / self.fps, mix=mix)
        frames = world.render(scene, bucket.width, bucket.height, bucket.frames, self.fps)
        return Clip(frames, world.caption(scene, rng), {"scene": scene.to_dict()})

    def caption(self, meta: dict[str, Any], rng: np.random.Generator) -> str:
        return world.caption(world.Scene.from_dict(meta["scene"]), rng)

    def held_out(self) -> WorldSource:
        return WorldSource(self.seed, self.fps, split="eval")

    def describe(self) -> str:
        share, blended = self.blend
        return (f"world seed={self.seed} fps={self.fps}" + self.mix.describe()
                + (f" blend {share}:{blended.describe() or ' whole world'}" if share else ""))


# ---------------------------------------------------------------------------------------------
# A user's videos: a folder, a JSONL or a CSV of (path, caption)
# ---------------------------------------------------------------------------------------------

MAX_WINDOWS = 16  # distinct windows taken from one video
HOLD_OUT_EVERY = 20  # one video in this many is kept from training to measure the VAE on; fewer videos keep none


class FolderSource:
    """Videos (and images, for 1-frame buckets) resized to cover each bucket and center-cropped.

    Every file is probed once, when the listing is read: one that cannot be read is skipped with a warning (so one
    corrupt download does not stop a run over thousands, and no held-out row is unreadable), and one too short for
    `clip_frames` frames at the model's `fps` is named. Clip `index` of a bucket takes the rows of the bucket's
    orientation (landscape, portrait; a square bucket takes all), row (start + index) % rows, and successive passes
    over the rows take successive windows of each video, resampled towards the model's fps. Of `buckets` buckets,
    bucket `stream` starts at its share of the rows (stream x rows / buckets), so buckets with fewer clips than rows
    take different rows; the starts do not move when a recipe asks for more clips, so a grown cache stays whole.
    """

    def __init__(self, spec: Path, fps: int, split: str = "train", clip_frames: int = 1,
                 scanned: tuple[list[Row], dict[Path, tuple[int, float, int, int]]] | None = None,
                 buckets: int = 1):
        self.listing, self.fps, self.split, self.clip_frames, self.buckets = spec, fps, split, clip_frames, buckets
        rows, self._info = scanned or self._scan(read_listing(spec))  # _info: file -> (frames, fps, width, height)
        self._scanned = rows, self._info
        kept = set(held_out_rows(rows))
        self.rows = [row for i, row in enumerate(rows) if (i in kept) == (split == "eval")]
        self.holds_out = bool(kept)
        self.unreadable: dict[Path, str] = {}  # file -> why, for rows whose frames failed to decode so far

    def _scan(self, rows: list[Row]) -> tuple[list[Row], dict[Path, tuple[int, float, int, int]]]:
        """The rows whose files can be read, and each file's (frames, fps, width, height); the rest are warned of."""
        info, readable = {}, []
        for row in tqdm(rows, desc="reading the listing", disable=len(rows) < 500, leave=False):
            if row.path not in info:
                meta = _probe(row.path, _stamp(row.path))
                if isinstance(meta, str):
                    _warn_once(f"skipping {row.where}: {meta}")
                    continue
                info[row.path] = max(1, meta["frames"]), meta["fps"] or self.fps, meta["width"], meta["height"]
                self._warn_if_short(row, *info[row.path][:2])
            readable.append(row)
        if rows and not readable:
            raise KinemaError(f"none of the {len(rows)} files {self.listing} lists can be read; check the files or "
                              "the listing's paths")
        return readable, info

    def _warn_if_short(self, row: Row, count: int, fps: float) -> None:
        if row.is_image or self.clip_frames <= 1:
            return
        if count < self.clip_frames:
            _warn_once(f"{row.where}: {row.path.name} has {count} frames, fewer than the longest bucket's "
                       f"{self.clip_frames}; its last frame is held to fill those clips")
        elif count / fps < (self.clip_frames - 1) / self.fps:
            _warn_once(f"{row.where}: {row.path.name} lasts {count / fps:.2g} s, shorter than the longest bucket's "
                       f"{(self.clip_frames - 1) / self.fps:.2g} s; it plays slower to fill those clips, so its motion "
                       "is learnt as slower")

    def clip(self, index: int, bucket: Bucket, stream: int = 0) -> Clip:
        """Clip `index`. A file whose frames fail to decode is skipped with a warning and the next row stands in."""
        rows = self._rows_for(bucket)
        place = max(stream, 0) * len(rows) // self.buckets + index  # the VAE's stream (-1) starts at the first row
        for offset in range(len(rows)):
            row = rows[(place + offset) % len(rows)]
            if row.path in self.unreadable:
                continue
            try:
                frames = self._window(row, place // len(rows), bucket)
            except KinemaError as err:
                self.unreadable[row.path] = f"{row.where}: {err}"
                _warn_once(f"skipping {row.where}: {err}")
                continue
            return Clip(frames, row.caption, {"caption": row.caption, "path": str(row.path)})
        first = next(iter(self.unreadable.values()))
        raise KinemaError(f"none of the {len(rows)} files {self.listing} lists for bucket {bucket.name} can be read "
                          f"({first}); check the files or the listing's paths")

    def _rows_for(self, bucket: Bucket) -> list[Row]:
        """The rows a bucket takes: images only for 1 frame, and a landscape or portrait bucket the files of its
        orientation (center-cropping a portrait clip to a landscape bucket would keep a third of it), if any."""
        rows = self.rows if bucket.frames == 1 else [r for r in self.rows if not r.is_image]
        if not rows:
            raise KinemaError(f"bucket {bucket.name} needs videos but {self.listing} lists only images; "
                              "remove video buckets from [data] buckets or add videos")
        if bucket.width == bucket.height:
            return rows
        wide = bucket.width > bucket.height
        same = [r for r in rows if (self._info[r.path][2] >= self._info[r.path][3]) == wide]
        return same or rows

    def _window(self, row: Row, window: int, bucket: Bucket) -> np.ndarray:
        """Pass `window` over the rows reads a different part of the video (images: the image)."""
        if row.is_image:
            video, _ = read_video(row.path)
            return fit_image(video[0], bucket.width, bucket.height)[0][None]
        count, fps = self._info[row.path][:2]
        stride = 1
        if bucket.frames > 1:
            # Resample towards the model's fps, more densely when the video is too short for that.
            stride = max(1, min(round(fps / self.fps), (count - 1) // (bucket.frames - 1)))
        span = stride * (bucket.frames - 1) + 1
        windows = max(1, min(MAX_WINDOWS, count // span))
        start = (window % windows) * (count // windows)
        # Only the window's frames are decoded and kept; a video shorter than the bucket holds its last frame.
        frames = read_frames(row.path, start + stride * np.arange(bucket.frames))
        return np.stack([fit_image(frame, bucket.width, bucket.height)[0] for frame in frames])

    def caption(self, meta: dict[str, Any], rng: np.random.Generator) -> str:
        return meta["caption"]

    def describe(self) -> str:
        """The listing, and every row's caption and file (its size and time): an edited caption or a replaced
        clip means another cache."""
        rows = hashlib.sha256()
        for row in self.rows:
            stat = row.path.stat() if row.path.exists() else None
            rows.update(repr((str(row.path), row.caption, stat and (stat.st_size, stat.st_mtime_ns))).encode())
        return (f"folder {self.listing.resolve()} rows={len(self.rows)} fps={self.fps} buckets={self.buckets} "
                f"{rows.hexdigest()[:16]}")

    def held_out(self) -> FolderSource | None:
        """The held-out rows, from the same scan of the listing."""
        if not self.holds_out:
            return None
        return FolderSource(self.listing, self.fps, "eval", self.clip_frames, scanned=self._scanned)


_WARNED: set[str] = set()  # what this process has warned of: the next stage reading the listing again stays quiet


def _warn_once(text: str) -> None:
    if text not in _WARNED:
        _WARNED.add(text)
        tqdm.write(f"kinema: warning: {text}", file=sys.stderr)  # above any bar


def _stamp(path: Path) -> tuple[int, int]:
    """(size, modification time): a file replaced since it was probed is probed again."""
    try:
        stat = path.stat()
    except OSError:
        return 0, 0
    return stat.st_size, stat.st_mtime_ns


@functools.cache
def _probe(path: Path, stamp: tuple[int, int]) -> dict[str, Any] | str:
    """The file's video_metadata as of `stamp`, or why it cannot be read. Each stage of a run reads the listing
    again; a listing of thousands of videos is probed once."""
    try:
        return video_metadata(path)
    except KinemaError as err:
        return str(err)


def held_out_rows(rows: list[Row]) -> list[int]:
    """Indices of the rows kept from training: every HOLD_OUT_EVERY-th video (images are not enough to measure a
    video VAE), none while there are fewer videos than that."""
    videos = [i for i, row in enumerate(rows) if not row.is_image]
    return videos[HOLD_OUT_EVERY - 1::HOLD_OUT_EVERY]


# ---------------------------------------------------------------------------------------------
# The latent cache
# ---------------------------------------------------------------------------------------------

SHARD_CLIPS = 64
Encoder = Callable[[torch.Tensor], torch.Tensor]  # video (B, 3, T, H, W) in [-1, 1] -> latents (B, C, T', h, w)


@dataclass
class CachedBucket:
    bucket: Bucket
    latents: torch.Tensor  # (N, C, T', h, w) fp16, normalized
    metas: list[dict[str, Any]]


def shard_path(folder: Path, bucket: Bucket, shard: int) -> Path:
    return folder / bucket.name / f"shard_{shard:05d}.safetensors"


def check_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write the cache's manifest, or refuse a cache that was built from another VAE or data."""
    path = folder / "manifest.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("fingerprint") != manifest["fingerprint"]:
            raise KinemaError(f"the latent cache in {folder} was built with another VAE or data source; "
                              "delete that folder to rebuild it, or train into a new --out")
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2))


def build_cache(folder: Path, source: Source, buckets: list[Bucket], counts: list[int], encode: Encoder,
                batch: int = 4, progress: bool = True, workers: int = 0, device: torch.device | None = None) -> None:
    """Render/read, encode (on `device`) and store `counts[i]` clips per bucket; existing shards are kept.

    With `workers` > 0 clips are rendered/decoded in that many processes, the next shard's while this one
    encodes and writes the last; a clip depends only on (bucket, index), so the cache is the same for any
    number of workers.
    """

    todo = []  # (indices, bucket, stream, path) of each shard still to build
    for stream, (bucket, count) in enumerate(zip(buckets, counts, strict=True)):
        for shard in range(math.ceil(count / SHARD_CLIPS)):
            indices = range(shard * SHARD_CLIPS, min(count, (shard + 1) * SHARD_CLIPS))
            path = shard_path(folder, bucket, shard)
            if _shard_length(path) != len(indices):  # missing, or the last shard before `clips` grew
                todo.append((indices, bucket, stream, path))
    bar = tqdm(total=sum(counts), desc="cache", disable=not progress, dynamic_ncols=True)
    bar.update(sum(counts) - sum(len(indices) for indices, *_ in todo))
    with _clip_reader(source, workers) as read:
        pending = read(*todo[0][:3]) if todo else []
        for n, (indices, _, _, path) in enumerate(todo):
            clips = list(pending)
            if n + 1 < len(todo):
                pending = read(*todo[n + 1][:3])  # starts rendering now, in the pool's processes
            _write_shard(path, clips, encode, batch, device)
            bar.update(len(indices))
    bar.close()


@contextlib.contextmanager
def render_pool(workers: int) -> Iterator[ProcessPoolExecutor | None]:
    """`workers` processes that render or decode clips (None for none: the caller does it itself).

    fork, not spawn: spawn re-runs the caller's main module (an unguarded script trains again), and the
    children only render with numpy or decode with PyAV, never touching torch's threads or CUDA.
    """
    if workers <= 0:
        yield None
        return
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        yield pool


@contextlib.contextmanager
def _clip_reader(source: Source, workers: int) -> Iterator[Callable[[range, Bucket, int], Iterable[Clip]]]:
    """A function (indices, bucket, stream) -> clips in order: rendered here as they are iterated, or submitted
    to a pool of processes at once (so they render while the caller does other work)."""
    with render_pool(workers) as pool:
        if pool is None:
            yield lambda indices, bucket, stream: (source.clip(i, bucket, stream) for i in indices)
            return

        def read(indices: range, bucket: Bucket, stream: int) -> Iterable[Clip]:
            chunk = max(1, len(indices) // (4 * workers))
            return pool.map(source.clip, indices, itertools.repeat(bucket), itertools.repeat(stream), chunksize=chunk)

        yield read


@torch.no_grad()
def _write_shard(path: Path, clips: list[Clip], encode: Encoder, batch: int, device: torch.device | None) -> None:
    latents = torch.cat([encode(to_video([c.frames for c in clips[i:i + batch]], device))
                         for i in range(0, len(clips), batch)])
    header = {"metas": json.dumps([{"caption": c.caption, **c.meta} for c in clips])}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        save_file({"latents": latents.to(torch.float16).contiguous()}, str(tmp), metadata=header)


def _shard_length(path: Path) -> int:
    """Clips in a shard; 0 when it is missing or unreadable (it is then written again)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.get_slice("latents").get_shape()[0]
    except (SafetensorError, OSError):
        return 0


def load_cache(folder: Path, buckets: list[Bucket], counts: list[int]) -> list[CachedBucket]:
    """Every bucket's cached latents, in memory (a 10k-clip cache at 128 px is under 1 GB)."""
    loaded = []
    for bucket, count in zip(buckets, counts, strict=True):
        parts, metas = [], []
        for shard in range(math.ceil(count / SHARD_CLIPS)):
            latents, shard_metas = _read_shard(shard_path(folder, bucket, shard))
            parts.append(latents)
            metas.extend(shard_metas)
        latents = torch.cat(parts) if parts else torch.empty(0)
        if len(metas) != count or len(latents) != count:
            raise KinemaError(f"latent cache {folder / bucket.name} holds {len(latents)} clips, the recipe "
                              f"wants {count}; run the cache stage (--stage cache) to complete it")
        loaded.append(CachedBucket(bucket, latents, metas))
    return loaded


def _read_shard(path: Path) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    if not path.exists():
        raise KinemaError(f"latent cache shard {path} is missing; run the cache stage (--stage cache) first")
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.get_tensor("latents"), json.loads(f.metadata()["metas"])
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as err:
        raise KinemaError(f"latent cache shard {path} is corrupt ({err}); delete it and rerun the "
                          "cache stage") from None
