"""The `kinema` command: argument parsing and one-line errors for people.

Every subcommand turns its arguments into a call of the same Python functions the
HTTP API uses; a `KinemaError` is printed as one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from kinema.errors import KinemaError

EXAMPLES = """examples:
  kinema generate "a small red circle moves to the right over a dark blue gradient" -o ball.mp4
  kinema generate "a yellow star spins on a snowy field" --size 224x128 --seconds 4 -o star.gif
  kinema generate "a green square" --seconds 0 -o square.png          (text to image)
  kinema train --config configs/small.toml                            (train your own model)
  kinema eval --model path/to/model --prompts heldout --n 200         (judge a model)

Models: with no --model, the bundled model trained by this project is used. --model takes a
preset (debug: tiny random weights, for tests) or a folder (Kinema or diffusers Wan2.1 layout).
"""


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise KinemaError(f"size {text!r} is not WIDTHxHEIGHT; write e.g. --size 256x144") from None
    return w, h


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kinema", description="Kinema: open text-to-video that runs offline on a laptop CPU.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_generate(sub)
    _add_train(sub)
    return parser


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="make a video (or an image) from a text prompt",
                       description="Generate a video from a text prompt. Output type follows the file "
                       "suffix: .mp4, .gif, .webm, or .png for a single image (--seconds 0).")
    p.add_argument("prompt", help="what the video shows, e.g. \"a red ball bounces left\"")
    p.add_argument("-o", "--output", default="kinema.mp4", help="output file (default kinema.mp4)")
    p.add_argument("--model", default=None, help="preset name or model folder (default: the bundled model)")
    p.add_argument("--size", type=parse_size, default=None, help="WIDTHxHEIGHT, multiples of 16 (e.g. 128x128)")
    p.add_argument("--seconds", type=float, default=None, help="duration in seconds, 0 for an image (default 2)")
    p.add_argument("--frames", type=int, default=None, help="exact frame count instead of --seconds")
    p.add_argument("--fps", type=int, default=None, help="frames per second (default: the model's, 8)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (more = slower, finer)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (1 = off)")
    p.add_argument("--sampler", choices=["euler", "heun"], default=None, help="ODE solver (default euler)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same video")
    p.add_argument("--negative-prompt", default="", help="what the video should not show")
    p.add_argument("--filmstrip", default=None, help="also save a PNG contact sheet of the frames here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_generate)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model on the procedural world or your own videos",
                       description="Train the VAE, cache latents and train the DiT, as a recipe file says. "
                       "Checkpoints are atomic; --resume continues where a run stopped (Ctrl-C saves).")
    p.add_argument("--config", required=True, help="recipe TOML file, e.g. configs/small.toml")
    p.add_argument("--stage", choices=["vae", "cache", "dit", "all"], default="all")
    p.add_argument("--out", default=None, help="run folder (default runs/<recipe name>)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.add_argument("--export", default=None, help="after training, write a model folder here")
    p.set_defaults(func=cmd_train)


def cmd_generate(args) -> None:
    from kinema.pipeline import Pipeline, Request

    out = Path(args.output)
    check_writable(out)
    width, height = args.size if args.size else (None, None)
    pipe = Pipeline.load(args.model)
    req = Request(prompt=args.prompt, negative_prompt=args.negative_prompt, width=width, height=height,
                  seconds=2.0 if args.seconds is None and args.frames is None else args.seconds,
                  frames=args.frames, fps=args.fps, steps=args.steps, guidance=args.guidance,
                  sampler=args.sampler, seed=args.seed)
    with progress_bar(args.quiet) as report:
        video = pipe.generate(req, progress=report)
        pipe.save(video, out)
        report(1.0, "done")
    if args.filmstrip:
        from kinema.io import contact_sheet

        contact_sheet(pipe.decode(video)).save(args.filmstrip)
    print(f"wrote {out} ({video.width}x{video.height}, {video.frames} frames at {video.fps} fps)")


def cmd_train(args) -> None:
    from kinema import train

    run_dir = train.run(args.config, stage=args.stage, out=args.out, resume=args.resume)
    print(f"training run in {run_dir}")
    if args.export:
        train.export(run_dir, args.export)
        print(f"exported model to {args.export}")


def check_writable(path: Path) -> None:
    if path.is_dir():
        raise KinemaError(f"cannot write {path}: it is a folder; give a file name such as {path / 'video.mp4'}")
    parent = path.resolve().parent
    if not parent.is_dir():
        raise KinemaError(f"cannot write {path}: folder {parent} does not exist; create it or choose another -o")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise KinemaError(f"cannot write {path}: permission denied; choose another -o")
    if path.suffix.lower() not in (".mp4", ".gif", ".webm", ".png"):
        raise KinemaError(f"unknown output type {path.suffix or '(none)'!r}; use .mp4, .gif, .webm or .png")


class progress_bar:
    """A tqdm bar driven by the pipeline's (fraction, stage) progress reports."""

    def __init__(self, quiet: bool):
        self.quiet = quiet

    def __enter__(self):
        if self.quiet:
            return lambda frac, stage: None
        from tqdm import tqdm

        self.bar = tqdm(total=100, unit="%", bar_format="{desc:<24} {bar} {percentage:3.0f}% [{elapsed}]")

        def report(frac: float, stage: str) -> None:
            self.bar.set_description_str(stage)
            self.bar.update(round(100 * frac) - self.bar.n)

        return report

    def __exit__(self, *exc):
        if not self.quiet:
            self.bar.close()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        args.func(args)
    except KinemaError as err:
        print(f"kinema: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kinema: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
