"""`kinema eval`: generate videos for prompts of the world's grammar and score them with the judge.

The report says how often a model's videos show what their prompts ask for, per attribute, on the
compositional hold-out (colour x shape x motion triples never rendered for training) and per aspect
ratio; it also carries the judge's own validation (true renders vs shuffled captions), so every number
can be read against what a perfect and a random video would score, and the VAE ceiling: the judge on the
model's VAE round trips of the prompts' true renders, the most any DiT on that VAE could score, the
word probe (kinema.probe): whether the DiT reads each attribute's words at all, and steering: whether the
direction words choose where an image-to-video clip's object goes, from the middle and from a start that
suggests the other way, and where a text-to-video clip's object goes.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kinema import judge, probe, world
from kinema.checkpoint import atomic_write
from kinema.errors import KinemaError
from kinema.modes import decoded_count, latent_count
from kinema.pipeline import Pipeline, Request, Video, frames_for
from kinema.sheets import save_grid

TARGETS = {"colour": 0.95, "shape": 0.90, "motion": 0.90, "count": 0.90}  # the bundled model's goals
PROMPT_SETS = ("heldout", "train")
MAX_PROMPTS = 10_000  # per aspect: already ~8 hours of CPU for the default model
VALIDATION_CLIPS = 200  # world clips the judge validates itself on in a full eval (issue #4: these go in every report)
PROBE_CLIPS = 32  # held-out clips for the word probe (kinema.probe): ~30 s for the bundled model on 2 cores
STEER_FRAMES = 6  # objects per steering check (middle, against, text), 4 clips each: ~30 s each for the default model


def prompts_for(kind: str, n: int, seed: int) -> list[str]:
    return [prompt for prompt, _ in scenes_for(kind, n, seed)]


def scenes_for(kind: str, n: int, seed: int) -> list[tuple[str, world.Scene]]:
    """n (prompt, scene) pairs of a prompt set."""
    if kind not in PROMPT_SETS:
        raise KinemaError(f"unknown prompt set {kind!r}; use one of {', '.join(PROMPT_SETS)}")
    pick = world.heldout_prompts if kind == "heldout" else world.train_prompts
    return pick(n, seed)


def vae_ceiling(pipe: Pipeline, pairs: list[tuple[str, world.Scene]], width: int, height: int,
                seconds: float = 2.0) -> dict[str, float]:
    """The judge's scores on the VAE's round trips of the scenes' true renders: a model whose DiT were
    perfect would score this, so it tells a weak VAE from a weak DiT."""
    fps, tf = pipe.cfg.fps, pipe.cfg.vae.temporal_factor
    frames = frames_for(seconds, fps)

    def round_trip(clip: np.ndarray) -> np.ndarray:
        return pipe.decode(Video(pipe.encode(clip), frames, fps, width, height))

    return judge_round_trips(round_trip, pairs, width, height, frames, fps, tf)


def judge_round_trips(round_trip: Callable[[np.ndarray], np.ndarray], pairs: list[tuple[str, world.Scene]],
                      width: int, height: int, frames: int, fps: int, temporal_factor: int) -> dict[str, float]:
    """The judge on `round_trip(clip)` (uint8 (T, H, W, 3) in and out) of each scene's true render, over its
    first `frames` frames. The VAE takes 1 + tf*k frames, so the render is that much longer."""
    rendered = decoded_count(latent_count(frames, temporal_factor), temporal_factor)
    results = []
    for prompt, scene in pairs:
        decoded = round_trip(world.render(scene, width, height, rendered, fps))  # (T, H, W, 3) uint8
        results.append(judge.judge(prompt, decoded[:frames], fps))
    return judge.score_many(results)


def evaluate(pipe: Pipeline, prompts: list[str], width: int, height: int, seconds: float = 2.0,
             seed: int = 0, progress=None, **tuning) -> tuple[list[dict], list[np.ndarray]]:
    """Judge one generated video per prompt; returns the per-clip verdicts and the videos.

    `tuning`: Request's sampling fields (steps, sampler, guidance, cache, noise_correlation, noise_drift,
    window_camera); None keeps the model's default.
    """
    results, videos = [], []
    for i, prompt in enumerate(prompts):
        video = pipe.generate(Request(prompt, width=width, height=height, seconds=seconds, seed=seed + i,
                                      expand=False, **tuning))
        frames = pipe.decode(video)
        results.append({"prompt": prompt, **judge.judge(prompt, frames, video.fps)})
        videos.append(frames)
        if progress:
            progress(i + 1, len(prompts))
    return results, videos


def run(model: str | None, out: str | Path, prompt_set: str = "heldout", n: int = 200, seed: int = 0,
        aspects: tuple[str, ...] = ("1:1",), aspect_n: int | None = None, validate_n: int | None = None,
        progress: Callable[[float, str], None] | None = None,
        steps: int | None = None, sampler: str | None = None, guidance: float | None = None,
        cache: float = 0.0, noise_correlation: float | None = None, noise_drift: float | None = None,
        window_camera: bool | None = None) -> dict:
    """Evaluate `model` and write report.json, README.md and samples.png into `out`. The judge's own validation
    judges `validate_n` world clips (default: as many as the eval's prompts, from 40 to 200; it is the same for every
    model, so a quick eval need not wait for a full one)."""
    from kinema.sizes import parse_aspect, size_for

    out = Path(out)
    aspects = tuple(dict.fromkeys(aspects))  # an aspect named twice is measured once
    if not aspects:
        raise KinemaError("no aspect ratio to evaluate; name at least one, e.g. --aspects 1:1,16:9")
    if seed < 0:
        raise KinemaError(f"the seed must be 0 or more, got {seed}")
    pipe = Pipeline.load(model)
    pairs = scenes_for(prompt_set, n, seed)
    prompts = [prompt for prompt, _ in pairs]
    tuning = {"steps": steps, "sampler": sampler, "guidance": guidance, "cache": cache,
              "noise_correlation": noise_correlation, "noise_drift": noise_drift, "window_camera": window_camera}
    resolved = pipe.resolve(Request(prompts[0], expand=False, **tuning))  # the model's defaults, checked
    report: dict = {"model": pipe.cfg.name, "source": pipe.model.source, "prompts": prompt_set, "n": n,
                    "steps": resolved.steps, "sampler": resolved.sampler, "guidance": resolved.guidance,
                    "cache": resolved.cache, "noise_correlation": resolved.noise_correlation,
                    "noise_drift": resolved.noise_drift, "window_camera": resolved.window_camera, "targets": TARGETS,
                    "aspects": {}}
    start = time.perf_counter()
    short = min(pipe.cfg.width, pipe.cfg.height)
    sizes = [size_for(parse_aspect(aspect), short) for aspect in aspects]  # every aspect checked before any work
    out.mkdir(parents=True, exist_ok=True)  # only once every argument is checked: a refused eval leaves nothing
    say = progress or (lambda fraction, stage: None)
    for number, (aspect, (width, height)) in enumerate(zip(aspects, sizes, strict=True)):
        count = n if aspect == aspects[0] else (aspect_n or n)

        def judged(i: int, total: int, number: int = number, aspect: str = aspect) -> None:  # the generation is ~2/3
            say((number + i / total) / len(aspects) * 0.7, f"{aspect}: judging {i}/{total}")

        results, videos = evaluate(pipe, prompts[:count], width, height, seed=seed, progress=judged, **tuning)
        report["aspects"][aspect] = {"size": f"{width}x{height}", "n": count,
                                     "scores": judge.score_many(results), "clips": results}
        if aspect == aspects[0]:
            samples = videos[:8], [r["prompt"] for r in results[:8]]  # written with the report, never before it
            say(0.7, "VAE ceiling")
            report["vae_ceiling"] = vae_ceiling(pipe, pairs, width, height)
    report["seconds"] = round(time.perf_counter() - start, 1)
    say(0.75, "word probe")
    report["word_gaps"] = probe.word_gaps(pipe, min(n, PROBE_CLIPS), seed)
    for share, (key, start) in zip((0.8, 0.85, 0.9), (("steering", "middle"), ("steering_against", "against"),
                                                      ("steering_text", "text")), strict=True):
        say(share, f"steering ({start})")
        report[key] = probe.steering(pipe, min(n, STEER_FRAMES), seed, start=start, **tuning)
    say(0.95, "judge validation")
    validate_n = validate_n or min(VALIDATION_CLIPS, max(n, 40))
    report["judge_validation"] = {"n": validate_n, **judge.validate(validate_n, seed)}
    main = report["aspects"][aspects[0]]["scores"]
    report["targets_met"] = {k: bool(main[k] >= v) for k, v in TARGETS.items()}
    # All three files at the end: an interrupted run leaves the last run's report whole, not mixed with this one's.
    with atomic_write(out / "report.json") as tmp:
        tmp.write_text(json.dumps(json_safe(report), indent=2, allow_nan=False))
    with atomic_write(out / "README.md") as tmp:
        tmp.write_text(markdown(report))
    save_grid(out / "samples.png", *samples)
    say(1.0, "done")
    return report


def json_safe(value: Any) -> Any:
    """`value` with numpy numbers made Python's and NaN (an attribute no prompt asked about) made null: standard
    JSON, which JavaScript's JSON.parse reads."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and not math.isfinite(value) else value


PAN_NOTE = (" Asked camera pans are made by sliding the frame across a wider generated scene (`window_camera`), so "
            "the pan column measures the pipeline, not the model; with `--no-window-camera` the model pans in none.")


def markdown(report: dict) -> str:
    """The report as a Markdown page: per-attribute accuracy per aspect, targets, word probe, judge validation."""
    asked = [name for name in judge.ATTRIBUTES  # a column for each attribute some prompt asks about (not NaN)
             if any(_asked(part["scores"].get(name)) for part in report["aspects"].values())]
    names = [*asked, "overall"]
    lines = [f"# Evaluation of {report['model']}", "",
             f"{report['n']} `{report['prompts']}` prompts, {report['steps']} {report['sampler']} "
             f"sampling steps, guidance {report['guidance']}"
             f"{f' (step cache {cache})' if (cache := report.get('cache')) else ''}"
             f"{f', noise correlation {rho}' if (rho := report.get('noise_correlation')) else ''}"
             f"{f', noise drift {drift}' if (drift := report.get('noise_drift')) else ''}, one video each "
             f"(seed = index), judged from the pixels by `kinema.judge`. Generating and judging took "
             f"{report['seconds']} s."
             f"{PAN_NOTE if report.get('window_camera') else ''}", "",
             "| aspect | size | n | " + " | ".join(names) + " | flicker | sharpness |",
             "|---|---|---|" + "---|" * (len(names) + 2)]
    for aspect, part in report["aspects"].items():
        s = part["scores"]
        cells = [_pct(s[k]) for k in names] + [f"{s['flicker']:.3f}", f"{s['sharpness']:.2f}"]
        lines.append(f"| {aspect} | {part['size']} | {part['n']} | " + " | ".join(cells) + " |")
    lines += ["", "## Targets (first aspect)", "",
              "The VAE ceiling is the judge on the model's VAE round trips of the same prompts' true renders: "
              "what this model would score with a perfect DiT.", "",
              "| attribute | target | result | VAE ceiling | met |", "|---|---|---|---|---|"]
    main = next(iter(report["aspects"].values()))["scores"]
    ceiling = report["vae_ceiling"]
    for k, v in report["targets"].items():
        met = "yes" if report["targets_met"][k] else "NO"
        lines.append(f"| {k} | {_pct(v)} | {_pct(main[k])} | {_pct(ceiling[k])} | {met} |")
    lines += ["", "## Does the DiT read each word? (kinema.probe)", "",
              "The DiT's loss on held-out clips with the true caption against the same caption with one attribute "
              f"changed, at the noise levels t = {', '.join(map(str, probe.TIMES))} where sampling decides layout and "
              "motion. A word the model reads raises the loss when changed (gap > 0) and the true caption "
              "predicts better in nearly every case; 50% is a coin flip. (A distilled model predicts a guided jump, "
              "not the velocity, so its gaps run larger; read the last column.)", "",
              "| changed | clips | gap | true caption better |", "|---|---|---|---|"]
    for name, row in report["word_gaps"].items():
        lines.append(f"| {name} | {row['n']} | {row['gap']:+.1f}% | {_pct(row['prefers'])} |")
    lines += ["", "## Do the direction words steer the video? (kinema.probe.steering)", "",
              f"{report['steering']['n']} objects, each alone, animated once per direction word; a clip counts when "
              "the object's centroid travels mostly the asked way (25% is a coin flip). In the first two rows the "
              "object is given as a first frame (image to video): in the middle, then where training clips start "
              "objects going the other way (`probe.AGAINST`), where a model that reads the way off the start "
              "position, not the words, scores near 0. In the last row only the prompt is given (text to video).",
              "", "| object starts | " + " | ".join(probe.STEER) + " | all |",
              "|---|" + "---|" * (len(probe.STEER) + 1)]
    rows = {"in the middle": "steering", "against the way": "steering_against",
            "where the model puts it": "steering_text"}
    for label, key in rows.items():
        cells = [_pct(report[key][way]) for way in (*probe.STEER, "asked way")]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    val = report["judge_validation"]
    lines += ["", "## The judge's own validation", "",
              f"{val['n']} world renders judged against their own captions (true) and against another clip's "
              "(shuffled):",
              "", "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for row in ("true", "shuffled"):
        lines.append(f"| {row} | " + " | ".join(_pct(val[row][k]) for k in names) + " |")
    lines += ["", "![samples](samples.png)", ""]
    return "\n".join(lines)


def _asked(score: float | None) -> bool:
    return score is not None and score == score


def _pct(value: float) -> str:
    return "n/a" if value != value else f"{100 * value:.1f}%"
