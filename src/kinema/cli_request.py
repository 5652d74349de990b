"""`kinema generate`'s arguments as a pipeline Request: the mode they choose, the input files they name, prompts
over time, and what the output file can hold (checked before any work)."""

from __future__ import annotations

import math
import os
from pathlib import Path

from kinema.errors import KinemaError


def check_writable(path: Path, option: str = "-o") -> None:
    """A file `path` (given as `option`) of a type Kinema writes can be written, tried before any work."""
    if path.is_dir():
        raise KinemaError(f"cannot write {path}: it is a folder; give a file name such as {path / 'video.mp4'}")
    parent = path.resolve().parent
    if not parent.is_dir():
        raise KinemaError(f"cannot write {path}: folder {parent} does not exist; create it or choose another {option}")
    if not can_write_in(parent) or (path.exists() and not os.access(path, os.W_OK)):
        raise KinemaError(f"cannot write {path}: permission denied; choose another {option}")
    if path.suffix.lower() not in (".mp4", ".gif", ".webm", ".png"):
        raise KinemaError(f"unknown output type {path.suffix or '(none)'!r}; use .mp4, .gif, .webm or .png")


def check_filmstrip(path: Path, out: Path) -> None:
    """The contact sheet is a PNG of its own, beside (never over) the video."""
    if path.suffix.lower() != ".png":
        raise KinemaError(f"--filmstrip {path}: the contact sheet is a PNG; give a name ending in .png")
    if path.resolve() == out.resolve():
        raise KinemaError(f"--filmstrip {path} is the output itself; give the contact sheet its own name")
    check_writable(path, "--filmstrip")


def can_write_in(folder: Path) -> bool:
    """Whether a file can be made in `folder`, tried: permission bits say yes to root on a read-only mount or /proc."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def check_output_fits(out: Path, resolved) -> None:
    """What the output's type cannot hold fails before the work, not when its video is written: a PNG holds one
    frame, a GIF plays at most GIF_MAX_FPS."""
    from kinema.io import GIF_MAX_FPS

    joined = resolved.mode in ("extend", "extend_backward", "loop", "connect", "sequence")  # never one frame
    if out.suffix.lower() == ".png" and (resolved.frames > 1 or joined):
        made = "a video" if joined else f"{resolved.frames} frames"
        raise KinemaError(f"{out.name}: a PNG holds one image and this request makes {made}; use .mp4 or .gif, "
                          "or --seconds 0 for a single image")
    if out.suffix.lower() == ".gif" and resolved.fps > GIF_MAX_FPS:
        raise KinemaError(f"{out.name}: GIF cannot play {resolved.fps} fps (at most {GIF_MAX_FPS}); lower --fps or "
                          "write .mp4")


def generate_request(args, out: Path):
    """The pipeline Request the generate arguments describe, its input files by field, and their headers as
    io.probe_input reads them (a missing or corrupt file fails before the model loads); their pixels are read by
    `Pipeline.read_inputs`, at the size the request resolves to."""
    from kinema.io import probe_input
    from kinema.pipeline import Request
    from kinema.request_checks import check_input_seconds
    from kinema.sizes import parse_size

    mode = _generate_mode(args)
    width, height = parse_size(args.size) if args.size else (None, None)
    files = _input_files(args, mode)
    written = {out.resolve(): "-o", **({Path(args.filmstrip).resolve(): "--filmstrip"} if args.filmstrip else {})}
    probes = {}
    for name, path in files.items():
        if option := written.get(path.resolve()):  # the file would be written over the input, which would be lost
            raise KinemaError(f"{option} {path.name} is also an input video or image, which it would write over; "
                              f"give {option} another file name")
        probes[name] = probe_input(path, still=name == "image")
        if rate := probes[name][1]:  # said of the file here: the pipeline would call an edit's length a duration
            check_input_seconds(name, probes[name][0][0], rate, path.name)
    segments = None
    if mode == "sequence":
        segments = parse_segments(args.segments) if args.segments else prompt_at(args.prompt, args.prompt_at)
        if args.segments and args.prompt.strip():
            raise KinemaError("--segments holds every prompt; leave out the prompt before it, or start from it with "
                              "--prompt-at instead (kinema generate \"a red ball\" --prompt-at \"2=a blue ball\")")
    seconds = args.seconds
    if seconds is None and args.frames is None and mode == "t2v" and out.suffix.lower() == ".png":
        seconds = 0  # kinema generate "..." -o x.png: an image; other lengths default in Pipeline.resolve
    return Request(prompt=args.prompt, negative_prompt=args.negative_prompt, width=width, height=height,
                   aspect=args.aspect, seconds=seconds, frames=args.frames, fps=args.fps, steps=args.steps,
                   guidance=args.guidance, sampler=args.sampler, seed=args.seed, expand=args.expand, mode=mode,
                   strength=args.strength, window=args.window, context=args.context, cache=args.cache,
                   noise_correlation=args.noise_correlation, noise_drift=args.noise_drift,
                   window_camera=args.window_camera, segments=segments), files, probes


def _input_files(args, mode: str) -> dict[str, Path]:
    """The input files of a generate mode, by Request field."""
    if mode == "i2v":
        return {"image": Path(args.image)}
    if mode in ("extend", "extend_backward", "edit"):
        return {"video": Path(args.extend or args.edit)}
    if mode == "connect":
        return {"video": Path(args.connect[0]), "video_b": Path(args.connect[1])}
    return {}


def _generate_mode(args) -> str:
    given = {"--image": args.image, "--extend": args.extend, "--loop": args.loop, "--connect": args.connect,
             "--edit": args.edit, "--segments": args.segments, "--prompt-at": args.prompt_at}
    chosen = [flag for flag, value in given.items() if value]
    if len(chosen) > 1:
        raise KinemaError(f"{' and '.join(chosen)} are different modes; choose one")
    if args.backward and not args.extend:
        raise KinemaError("--backward goes with --extend VIDEO; add --extend or leave out --backward")
    if args.strength is not None and not args.edit:
        raise KinemaError("--strength goes with --edit VIDEO; add --edit or leave out --strength")
    mode = {"--image": "i2v", "--extend": "extend", "--loop": "loop", "--connect": "connect", "--edit": "edit",
            "--segments": "sequence", "--prompt-at": "sequence"}[chosen[0]] if chosen else "t2v"
    return "extend_backward" if args.backward else mode


def parse_segments(text: str) -> list[tuple[float, str]]:
    """"0:a red ball;2:a blue ball" -> [(0.0, "a red ball"), (2.0, "a blue ball")]."""
    segments = []
    for part in filter(str.strip, text.split(";")):
        start, sep, prompt = part.partition(":")
        segments.append(_segment(start, prompt, sep, part, "--segments \"0:a red ball;2:a blue ball\""))
    return segments


def prompt_at(prompt: str, items: list[str]) -> list[tuple[float, str]]:
    """The positional prompt from 0 s, then each --prompt-at T=PROMPT."""
    segments = [(0.0, prompt)] if prompt.strip() else []
    for item in items:
        start, sep, text = item.partition("=")
        segments.append(_segment(start, text, sep, item, "--prompt-at \"2=a blue ball\""))
        if segments[-1][0] == 0 and prompt.strip():
            raise KinemaError(f"--prompt-at {item.strip()!r}: the prompt before it already starts at 0 s; give a later "
                              "time, or make it the prompt")
    if not prompt.strip() and min(start for start, _ in segments) > 0:  # nothing would play before the first
        item = items[min(range(len(items)), key=lambda i: segments[i][0])].strip()  # without a prompt, one a segment
        raise KinemaError(f"--prompt-at {item!r} leaves the start without a prompt; give the opening prompt before "
                          f"--prompt-at (kinema generate \"a red ball\" --prompt-at \"{item}\")")
    return sorted(segments, key=lambda s: s[0])


def _segment(start: str, prompt: str, sep: str, part: str, example: str) -> tuple[float, str]:
    try:
        seconds = float(start)
    except ValueError:
        seconds = -1.0
    if not sep or not 0 <= seconds < math.inf or not prompt.strip():  # NaN fails too
        raise KinemaError(f"cannot read segment {part.strip()!r}: write SECONDS then the prompt, e.g. {example}")
    return seconds, prompt.strip()
