"""The `kinema` command: argument parsing and one-line errors for people.

Every subcommand turns its arguments into a call of the same Python functions the
HTTP API uses; a `KinemaError` is printed as one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from kinema.cli_request import can_write_in, check_filmstrip, check_output_fits, check_writable, generate_request
from kinema.errors import KinemaError

EXAMPLES = """examples:
  kinema generate "a small red circle moves to the right over a dark blue gradient" -o ball.mp4
  kinema generate "a yellow star spins on a snowy field" --size 224x128 --seconds 4 -o star.gif
  kinema generate "a green square" --seconds 0 -o square.png          (text to image)
  kinema train --config configs/small.toml                            (train your own model)
  kinema eval --model path/to/model --prompts heldout --n 200         (judge a model)
  kinema verify video.mp4                                             (was it made by Kinema?)

Models: with no --model, the bundled kinema-small-fast is used (trained by this project, then distilled
to 8 steps without CFG); kinema-small is the model it was distilled from (16 steps with CFG). --model also
takes a preset (debug: tiny random weights, for tests) or a folder (Kinema or diffusers Wan2.1 layout).
"""


class Parser(argparse.ArgumentParser):
    """argparse, with its errors in one line as every other Kinema error (not after the whole usage block)."""

    commands: dict[str, argparse.ArgumentParser] = {}  # the top-level parser's subcommands, by name

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")

    def parse_args(self, args=None, namespace=None):
        """argparse's, with words no option took blamed on the subcommand that was given them (argparse blames
        `kinema`), and the likely fix: the option meant, or quotes around a prompt of several words."""
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            command = self.commands.get(getattr(parsed, "command", None), self)
            command.error(unrecognized(command, parsed, extra))
        return parsed


def unrecognized(command: argparse.ArgumentParser, parsed, extra: list[str]) -> str:
    """argparse's message for `extra` words, with the option closest to the first unknown one, or quoting."""
    import difflib

    said = f"unrecognized arguments: {' '.join(extra)}"
    for word in extra:
        if word.startswith("--") and (close := difflib.get_close_matches(word.partition("=")[0],
                                                                          command._option_string_actions, n=1)):
            return f"{said} (did you mean {close[0]}?)"
    positionals = [action.dest for action in command._actions if not action.option_strings]
    words = [word for word in extra if not word.startswith("-")]
    if words and "prompt" in positionals:  # kinema generate a red ball: the shell split the prompt into words
        prompt = " ".join([parsed.prompt, *words]) if positionals == ["prompt"] else "a red ball"
        return f"{said}; quote a prompt of several words: {command.prog} \"{prompt}\" ..."
    return said


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="kinema", description="Kinema: open text-to-video that runs offline on a laptop CPU.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_generate(sub)
    _add_train(sub)
    _add_serve(sub)
    _add_eval(sub)
    _add_bench(sub)
    for command in sub.choices.values():  # "--mode extend" must not be taken for "--model extend"
        command.allow_abbrev = False
    parser.commands = sub.choices
    return parser


GENERATE_EXAMPLES = """modes:
  kinema generate "a yellow star spins on a snowy field" --seconds 4 -o star.mp4       text to video
  kinema generate "a big green square on a brick wall" -o square.png                  text to image
  kinema generate "a red circle moves right" --aspect 16:9 --seconds 60 -o long.mp4    any size, up to 60 s
  kinema generate "a red circle moves right" --image first.png -o moving.mp4           image to video
  kinema generate "a red circle moves right" --extend clip.mp4 --seconds 2 -o more.mp4  (--backward: before it)
  kinema generate "a blue heart bounces" --loop --seconds 3 -o loop.gif                seamless loop
  kinema generate "a red circle moves right" --connect a.mp4 b.mp4 -o joined.mp4       bridge from a to b
  kinema generate "a red square turns blue" --connect first.png last.png -o fl.mp4     first and last frame
  kinema generate "a blue circle moves right" --edit clip.mp4 --strength 0.7 -o blue.mp4
  kinema generate --segments "0:a red circle moves right;2:a red circle moves up" --seconds 4 -o story.mp4

camera moves (--no-window-camera: as the model draws them):
  kinema generate "a red ball on a snowy field, the camera pans left" -o pan.mp4       pans and tilts
  kinema generate "a yellow star spins, the camera slowly zooms in" -o zoom.mp4        zooms in and out
  kinema generate "the camera zooms out" --extend clip.mp4 --seconds 2 -o wider.mp4   from its last frame
  kinema generate "a cat, the camera pans right" --image cat.jpg -o pan.mp4           opens on the photo
  kinema generate --segments "0:a red ball on a snowy field;2:the camera pans left" --seconds 4 -o story.mp4
"""


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="make a video (or an image) from a text prompt",
                       description="Generate a video from a text prompt, optionally from an image or video. "
                       "Output type follows the file suffix: .mp4, .gif, .webm, or .png for a single image.",
                       epilog=GENERATE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("prompt", nargs="?", default="",
                   help="what the video shows, e.g. \"a red ball bounces left\" (optional with --segments)")
    p.add_argument("-o", "--output", "--out", default="kinema.mp4",  # --out as eval, bench and train spell it
                   help="output file (default kinema.mp4)")
    p.add_argument("--model", default=None, help="bundled name, preset or model folder (default: kinema-small-fast)")
    p.add_argument("--seed", type=int, default=None, help="the same seed, prompt and settings give the same video "
                   "(default: a new random one each run, printed at the end)")
    p.add_argument("--negative-prompt", default="", help="what the video should not show")
    p.add_argument("--filmstrip", default=None, help="also save a PNG contact sheet of the frames here")
    _add_c2pa_options(p, "the output")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    for add in (_add_size_options, _add_mode_options, _add_sampling_options, _add_expansion_options):
        add(p)
    p.set_defaults(func=cmd_generate)


def _add_size_options(parser) -> None:
    shape = parser.add_argument_group("size and duration")
    shape.add_argument("--size", default=None, help="WIDTHxHEIGHT, even, 1:4 to 4:1, at most 1920x1080's pixels "
                       "(e.g. 224x128, 1080x1920)")
    shape.add_argument("--aspect", default=None,
                       help="aspect ratio at the model's size: 16:9, 9:16, 1:1, 4:3, 3:4, 21:9 or any W:H")
    shape.add_argument("--seconds", type=float, default=None,
                       help="duration, up to 60; 0 for an image (default 4; with --extend/--connect: added)")
    shape.add_argument("--frames", type=int, default=None, help="exact frame count instead of --seconds")
    shape.add_argument("--fps", type=int, default=None, help="frames per second (default: the model's, or the "
                       "input video's)")


def _add_mode_options(parser) -> None:
    modes = parser.add_argument_group("modes (choose one; default: text to video)")
    modes.add_argument("--image", metavar="IMAGE", help="image to video: start from this PNG/JPEG")
    modes.add_argument("--extend", metavar="VIDEO", help="continue this video by --seconds")
    modes.add_argument("--backward", action="store_true", help="with --extend: add the new part before it")
    modes.add_argument("--loop", action="store_true", help="a seamless loop: the end runs into the start")
    modes.add_argument("--connect", nargs=2, metavar=("A", "B"),
                       help="a bridge of --seconds from video A to B (or image A to image B: first and last frame)")
    modes.add_argument("--edit", metavar="VIDEO", help="video to video: redo this video to follow the prompt")
    modes.add_argument("--strength", type=float, default=None,
                       help="with --edit: the share of the sampling schedule run again; 0 keeps the input, "
                            "1 ignores it (default 0.7)")
    modes.add_argument("--segments", default=None, metavar="'T:PROMPT;T:PROMPT'",
                       help="prompts over time from 0 s, e.g. \"0:a red circle moves right;2:a red circle moves up\" "
                            "(without --seconds: 4 s past the last start)")
    modes.add_argument("--prompt-at", action="append", default=[], metavar="T=PROMPT",
                       help="a prompt from second T on (repeatable); the positional prompt starts at 0")


def _add_sampling_options(parser) -> None:
    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--steps", type=int, default=None, help="sampling steps (more = slower, finer)")
    sampling.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (1 = off)")
    sampling.add_argument("--sampler", choices=["euler", "heun"], default=None, help="ODE solver (default euler)")
    _add_noise_options(sampling, "(a scene drawn around a given image or clip where the move needs more): in text or "
                       "image to video, in each segment of --segments and in extensions, and zooms in edits")
    sampling.add_argument("--window", type=int, default=None,
                          help="latent frames the model sees at once in long videos, 3-32 (default 5)")
    sampling.add_argument("--context", type=int, default=None,
                          help="latent frames each window carries over from the one before, at most --window - 2 "
                               "(default 2)")
    _add_cache_option(sampling, "faster: skip model calls while the latents barely change (0.1 when given "
                                "alone; larger skips more, 0 = off)")


def _add_expansion_options(parser) -> None:
    prompts = parser.add_argument_group("prompt expansion")
    prompts.add_argument("--expand", action=argparse.BooleanOptionalAction, default=None,
                         help="rewrite the prompt into the detailed captions the model was trained on "
                         "(default: on for the bundled models)")
    prompts.add_argument("--prompt-api", default=None, metavar="URL",
                         help="OpenAI-compatible endpoint that rewrites prompts, e.g. http://localhost:8000/v1 "
                         "(or KINEMA_PROMPT_API_BASE; the key is read from KINEMA_PROMPT_API_KEY)")
    prompts.add_argument("--prompt-model", default=None, help="model name for --prompt-api "
                         "(or KINEMA_PROMPT_MODEL)")


def _add_noise_options(parser, camera_where: str) -> None:
    parser.add_argument("--noise-correlation", type=float, default=None, metavar="RHO",
                        help="0-0.99: how alike neighbouring frames' starting noise is; steadier colours and "
                             "counts, less travel (default: the model's; 0 = independent)")
    parser.add_argument("--noise-drift", type=float, default=None, metavar="SPEED",
                        help="0-1: short sides per second the starting noise travels the way the prompt's lone "
                             "object goes (\"moves left\"), which sends it that way more often (default: the "
                             "model's; 0 = off)")
    parser.add_argument("--window-camera", action=argparse.BooleanOptionalAction, default=None,
                        help="make a camera pan, tilt or zoom the prompt asks for (\"the camera pans left\", \"zooms "
                             f"in\") by moving the frame over what the model drew {camera_where} (default: the "
                             "model's; on for the bundled models, which do not move the camera by themselves)")


def _add_cache_option(group, help_text: str) -> None:
    # const is accel.DEFAULT_CACHE_THRESHOLD, spelled out: importing accel here would import torch before
    # main() sets the OpenMP wait policy (tests/test_cli.py checks the two agree).
    group.add_argument("--cache", type=float, nargs="?", const=0.1, default=0.0, metavar="THRESHOLD",
                       help=help_text)


def _add_serve(sub) -> None:
    from kinema.config import CONCURRENCY, MAX_QUEUE, RETENTION_HOURS  # the server's defaults

    p = sub.add_parser("serve", help="serve the OpenAI-compatible Videos API and the web page",
                       description="Serve Kinema over HTTP: the Videos API at /v1 (point the openai SDK's "
                       "base_url here) and a web page at /. Jobs survive restarts (SQLite in --data).")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--data", default="kinema-data", help="folder for the job store and videos (default ./kinema-data)")
    p.add_argument("--model", default=None,
                   help="default model: bundled name, preset or folder (default: kinema-small-fast)")
    p.add_argument("--extra-model", action="append", default=[], metavar="NAME=FOLDER",
                   help="also serve this model under NAME (repeatable)")
    p.add_argument("--api-keys-file", default=None, help="file of bearer keys, one per line (also KINEMA_API_KEYS)")
    p.add_argument("--concurrency", type=int, default=CONCURRENCY,
                   help=f"jobs run at once (default {CONCURRENCY}; 0 = accept but do not run)")
    p.add_argument("--max-queue", type=int, default=MAX_QUEUE,
                   help=f"queued jobs before new ones get 429 (default {MAX_QUEUE})")
    p.add_argument("--retention-hours", type=float, default=RETENTION_HOURS,
                   help=f"how long finished videos are kept (default {RETENTION_HOURS:g}, a week)")
    _add_c2pa_options(p, "every finished video")
    p.set_defaults(func=cmd_serve)


def _add_c2pa_options(p, what: str) -> None:
    p.add_argument("--c2pa-cert", default=None, metavar="PEM",
                   help=f"sign {what} with C2PA content credentials: the certificate chain, leaf first "
                   "(also KINEMA_C2PA_CERT; needs c2pa-python)")
    p.add_argument("--c2pa-key", default=None, metavar="PEM", help="the leaf's PKCS#8 key (also KINEMA_C2PA_KEY)")


def c2pa_signer(args):
    """The C2PA credentials the flags (else the environment) name, tried once: a bad pair fails before any work."""
    from kinema.provenance import C2paSigner

    if bool(args.c2pa_cert) != bool(args.c2pa_key):
        raise KinemaError("give both --c2pa-cert (the certificate chain) and --c2pa-key (its key), or neither")
    return C2paSigner.load(args.c2pa_cert, args.c2pa_key) if args.c2pa_cert else C2paSigner.from_env()


def cmd_serve(args) -> None:
    from kinema import server

    models = {}
    for item in args.extra_model:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise KinemaError(f"--extra-model {item!r} is not NAME=FOLDER; write e.g. --extra-model mine=runs/x/model")
        models[name] = folder
    server.serve(args.host, args.port, args.data, args.model, server.load_api_keys(args.api_keys_file),
                 args.concurrency, args.max_queue, models=models, retention_s=args.retention_hours * 3600,
                 signer=c2pa_signer(args))


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="generate videos for world prompts and score them with the judge",
                       description="Evaluate a model: one video per prompt, judged from the pixels; writes "
                       "report.json, README.md (a table) and samples.png into --out.")
    p.add_argument("--model", default=None, help="preset or model folder (default: the bundled kinema-small-fast)")
    p.add_argument("--prompts", choices=["heldout", "train"], default="heldout",
                   help="heldout: compositional hold-out never seen in training (default)")
    p.add_argument("--n", type=int, default=200, help="number of prompts (default 200)")
    p.add_argument("--aspects", default="1:1", help="comma-separated aspect ratios, e.g. 1:1,16:9,9:16")
    p.add_argument("--aspect-n", type=int, default=None, help="prompts per extra aspect (default --n)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    p.add_argument("--sampler", choices=["euler", "heun"], default=None, help="ODE solver (default: the model's)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance (default: the model's)")
    _add_noise_options(p, "in each prompt's video, so the report's pan column measures this, not the model")
    _add_cache_option(p, "judge the step cache's videos (as kinema generate --cache; default off)")
    p.add_argument("--seed", type=int, default=0, help="picks the prompts; prompt i is generated with seed + i "
                   "(default 0)")
    p.add_argument("--out", default="eval", help="report folder (default ./eval)")
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("verify", help="check a video or image for Kinema's watermark, tags and C2PA credentials",
                       description="Look for the invisible watermark every Kinema output carries, its AI-disclosure "
                       "tags and a C2PA manifest. The file is read as what its content is, whatever its name says. "
                       "Exit status: 0 when the watermark is found, 1 when it is not, 2 on an error (a missing or "
                       "unreadable file).")
    p.add_argument("file", help="a video or image: MP4, MOV, WEBM, MKV, AVI, GIF, PNG, JPEG, WEBP or BMP")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.set_defaults(func=cmd_verify)
    p = sub.add_parser("judge", help="score one video against a prompt of the world's grammar",
                       description="Judge a video against a prompt of the world's grammar: prints JSON with a "
                       "verdict per attribute the prompt names (true/false; null where it names none, except pan: a "
                       "prompt that names no pan asks for a still camera), overall, "
                       "flicker and sharpness, and under 'seen' what was read from the pixels.")
    p.add_argument("prompt", help="e.g. \"a red circle moves to the right over a navy background\"")
    p.add_argument("video", help="an MP4, GIF or PNG")
    p.set_defaults(func=cmd_judge)


def cmd_eval(args) -> None:
    from kinema import evaluate

    for name, value in (("--n", args.n), ("--aspect-n", args.aspect_n)):
        if value is not None and not 1 <= value <= evaluate.MAX_PROMPTS:
            raise KinemaError(f"{name} must be from 1 to {evaluate.MAX_PROMPTS}, got {value}")
    check_folder(Path(args.out), "--out")
    aspects = tuple(a.strip() for a in args.aspects.split(",") if a.strip())
    with progress_bar(False) as report:
        result = evaluate.run(args.model, args.out, args.prompts, args.n, args.seed, aspects, args.aspect_n,
                              progress=report, steps=args.steps,
                              sampler=args.sampler, guidance=args.guidance, cache=args.cache,
                              noise_correlation=args.noise_correlation, noise_drift=args.noise_drift,
                              window_camera=args.window_camera)
    for aspect, row in result["aspects"].items():
        print(f"{aspect}: " + " ".join(f"{k}={v:.3f}" for k, v in row["scores"].items()
                                       if k in evaluate.TARGETS or k == "overall"))
    print(f"wrote {args.out}/report.json, README.md and samples.png")


def cmd_judge(args) -> None:
    import json

    from kinema.evaluate import json_safe
    from kinema.io import read_video
    from kinema.judge import judge

    if not Path(args.video).exists() and Path(args.prompt).is_file():
        raise KinemaError(f"{args.video!r} is not a file but {args.prompt!r} is: the prompt comes first, "
                          f"kinema judge PROMPT VIDEO")
    frames, fps = read_video(args.video)
    print(json.dumps(json_safe(judge(args.prompt, frames, fps)), indent=2, allow_nan=False))  # NaN: null


def cmd_verify(args) -> int:
    import json

    from kinema import provenance

    result = provenance.verify(args.file)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        for line in provenance.describe(result):
            print(line)
    return 0 if result["watermark"]["detected"] else 1


def _add_bench(sub) -> None:
    from kinema.config import BENCH_SECTIONS  # not kinema.bench: it imports torch, before main sets its threads

    p = sub.add_parser("bench", help="measure speed and memory; writes JSON and a Markdown table",
                       description="Benchmark Kinema on this machine (DiT vs diffusers' Wan, end-to-end "
                       "generation, VAE, peak memory, training throughput); results go to --out.")
    p.add_argument("--out", default="bench/results",
                   help="folder for bench.json and bench.md (bench-quick.* with --quick; default bench/results)")
    p.add_argument("--model", default=None, help="model folder or preset (default: the bundled kinema-small-fast)")
    p.add_argument("--quick", action="store_true", help="tiny debug shapes, one repetition (seconds)")
    p.add_argument("--sections", default=None, help=f"comma-separated subset of {','.join(BENCH_SECTIONS)}")
    p.add_argument("--repeat", type=int, default=None, help="repetitions per timed call (default 5, quick 1)")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> None:
    from kinema import bench

    check_folder(Path(args.out), "--out")
    results = bench.run(args.out, model=args.model, quick=args.quick, sections=args.sections,
                        repeat=args.repeat, log=print)
    print(f"wrote {args.out}/bench{'-quick' if args.quick else ''}.md in {results['meta']['wall_s']:.0f} s")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model on the procedural world or your own videos",
                       description="Train the VAE, cache latents and train the DiT, as a recipe file says. "
                       "Checkpoints are atomic; --resume continues where a run stopped (Ctrl-C saves). Under torchrun, "
                       "--stage dit trains on every rank with the DiT sharded by FSDP2.")
    p.add_argument("--config", required=True,
                   help="recipe TOML file, e.g. configs/small.toml, or a bundled recipe's name, e.g. small")
    p.add_argument("--stage", choices=["vae", "cache", "dit", "all"], default="all",
                   help="train the VAE, cache latents with it, train the DiT on the cache, or all in turn and export "
                   "(default all)")
    p.add_argument("--out", default=None, help="run folder (default runs/<recipe name>)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.add_argument("--export", default=None, help="after training, write a model folder here")
    p.add_argument("--device", default="auto",
                   help="where to train: auto (the GPU if there is one), cpu, cuda")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a recipe value, e.g. --set vae.steps=8000 --set dit.lr=6e-4 (TOML values)")
    p.set_defaults(func=cmd_train)


def cmd_generate(args) -> None:
    from kinema.checkpoint import load_config
    from kinema.pipeline import Pipeline, is_bundled, resolve_request, with_stand_ins
    from kinema.prompting import Rewriter
    from kinema.provenance import check_signable

    out = Path(args.output)
    check_writable(out)
    if args.filmstrip:
        check_filmstrip(Path(args.filmstrip), out)
    req, files, probes = generate_request(args, out)
    signer = c2pa_signer(args)
    check_signable(out, signer)
    cfg, source = load_config(args.model)  # the request is checked against it before the model spends seconds loading
    check_output_fits(out, resolve_request(with_stand_ins(req, probes, cfg.fps)[0], cfg, is_bundled(source)))
    pipe = Pipeline.load(args.model, signer=signer)
    if (args.prompt_api or args.prompt_model) and req.expand is False:
        print("note: --prompt-api and --prompt-model have no effect with --no-expand")
    elif args.prompt_api or args.prompt_model:
        env = Rewriter.from_env()
        pipe.rewriter = Rewriter(args.prompt_api or env.api_base, env.api_key, args.prompt_model or env.model)
    req, fitted = pipe.read_inputs(req, files, probes)
    with progress_bar(args.quiet) as report:
        video = pipe.generate(req, progress=report)
        pipe.save(video, out, filmstrip=args.filmstrip, progress=report)
        report(1.0, "done")
    for note in [*(f"{files[name].name}: {what}" for name, what in fitted.items()), *video.notes]:
        print(f"note: {note}")
    if video.frames == 1 and out.suffix.lower() in (".mp4", ".webm"):
        print(f"note: one frame makes a one-frame video; for an image file write {out.with_suffix('.png').name}")
    shape = "an image" if video.frames == 1 else f"{video.frames} frames at {video.fps} fps"
    print(f"wrote {out} ({video.width}x{video.height}, {shape}, seed {video.meta['seed']})"
          f"{f' and its contact sheet {args.filmstrip}' if args.filmstrip else ''}")


def parse_override(item: str) -> tuple[str, object]:
    """'dit.steps=4000' -> ('dit.steps', 4000): the value is read as TOML, else kept as a string."""
    import tomllib

    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise KinemaError(f"--set {item!r} needs KEY=VALUE, e.g. --set dit.steps=4000")
    try:
        return key.strip(), tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        return key.strip(), value.strip()


def cmd_train(args) -> None:
    from kinema import train

    overrides = dict(parse_override(item) for item in args.overrides)
    if args.export and args.stage not in ("dit", "all"):
        raise KinemaError(f"--export writes the trained model, which --stage {args.stage} does not finish; export with "
                          "--stage dit or all")
    if args.export:
        from kinema.checkpoint import check_model_target

        check_folder(Path(args.export), "--export")  # before training, not after it
        check_model_target(Path(args.export))
    if args.out:
        check_folder(Path(args.out), "--out")
    run_dir = train.run(args.config, stage=args.stage, out=args.out, resume=args.resume, overrides=overrides,
                        device=args.device)
    if int(os.environ.get("RANK", "0")):  # under torchrun the first rank speaks and exports for all
        return
    print(f"training run in {run_dir}")
    if args.export:
        train.export(run_dir, args.export)
        print(f"exported model to {args.export}")


def check_folder(path: Path, option: str) -> None:
    """A folder can be written at `path` (given as `option`): it is a folder or can become one."""
    if path.exists() and not path.is_dir():
        raise KinemaError(f"cannot write to {path}: it is a file; give {option} a folder name")
    existing = next(p for p in [path, *path.absolute().parents] if p.exists())
    if not existing.is_dir() or not can_write_in(existing):
        raise KinemaError(f"cannot write to {path}: {existing} is not a folder you can write; choose another "
                          f"{option}")


class progress_bar:
    """A tqdm bar driven by the pipeline's (fraction, stage) progress reports.

    The bar is drawn at the first report, so an error found before any work starts (a bad model, aspect or
    request) is one line, not a bar cut short by it.
    """

    def __init__(self, quiet: bool):
        self.quiet, self.bar = quiet, None

    def __enter__(self):
        if self.quiet:
            return lambda frac, stage: None
        from tqdm import tqdm

        def report(frac: float, stage: str) -> None:
            if self.bar is None:
                self.bar = tqdm(total=100, unit="%",  # elapsed<remaining: a 1080p video takes minutes on a CPU
                                bar_format="{desc:<24} {bar} {percentage:3.0f}% [{elapsed}<{remaining}]")
            self.bar.set_description_str(stage)
            self.bar.update(round(100 * frac) - self.bar.n)

        return report

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()


def main(argv: list[str] | None = None) -> int:
    # Spinning OpenMP threads cost 5-10x on a busy 2-core CPU (bench/results/bench.md, "threads"); the wait
    # policy only takes effect if set before torch is imported, which subcommands do lazily.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as done:  # --help, or a usage error already printed: its status is main's
            return int(done.code or 0)
        if not getattr(args, "func", None):
            parser.print_help()
            return 0
        from kinema.accel import configure_threads

        configure_threads()
        return args.func(args) or 0
    except KinemaError as err:
        if err.code == "interrupted":  # Ctrl-C or SIGTERM in training: saved, and said so
            print(f"kinema: {err}", file=sys.stderr)
            return 130
        print(f"kinema: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kinema: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away ("kinema judge ... | head"): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail again
        return 141


if __name__ == "__main__":
    sys.exit(main())
