"""Does the DiT read each word of the prompt? A counterfactual-caption probe, in seconds and without sampling.

The judge scores finished videos, so a low score cannot tell "never learned this word" from "learned it, but
sampling or the VAE lose it". The probe asks the DiT directly. For held-out world clips it compares the
rectified-flow loss of the true caption with that of the same caption with one attribute of the first object
changed (a colour for another colour, a direction for its opposite, ...), on the same latents, noise and times:

    gap     = mean relative loss increase with the changed caption (0: the word makes no difference)
    prefers = share of (clip, time) cases where the true caption predicts better (50%: a coin flip)

A model that reads a word prefers the true caption nearly always. Motion is also probed with the clip's first
frame given (image to video): the start is then known, so only the words can say where the object goes.

`steering` asks the same question of finished videos: image to video from one still frame (or text to video),
once per direction word, judged by where the object's centroid travels. `shape_words` asks it of text to image:
one large object per shape word, judged by the outline drawn.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from kinema import flow, world
from kinema.errors import KinemaError
from kinema.judge import STILL, centroid_path
from kinema.judge_measure import measure
from kinema.modes import decoded_count, latent_count
from kinema.pipeline import Pipeline, Request, frames_for
from kinema.world_scene import TEXTURES

# Noise levels probed. The world's flat shapes stay readable through the noise up to t ~ 0.95 (the DiT's x0
# estimate at t = 0.9 with the first frame given already has the object's true path, whatever the words say),
# so the words can only matter above that: where sampling decides layout and motion.
TIMES = (0.9, 0.95, 0.98)
PROBES = {  # probe name -> (attribute changed, first latent frame given)
    "colour": ("colour", False), "shape": ("shape", False), "motion": ("motion", False),
    "background": ("background", False), "motion, first frame given": ("motion", True),
}
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up", "up_left": "down_right",
            "down_right": "up_left", "up_right": "down_left", "down_left": "up_right", "grow": "shrink",
            "shrink": "grow"}  # still, bounce and rotate have no opposite to swap to
STEER = {"right": "moves to the right", "left": "moves to the left", "up": "rises", "down": "falls"}
STEER_COLOURS = ("red", "orange", "yellow", "green", "white", "purple")  # all far from the navy backdrop


def _next(names, current: str, taken: frozenset[str] = frozenset()) -> str:
    """The first name after `current` (cyclically) that is not taken."""
    names = list(names)
    start = names.index(current)
    return next(n for n in names[start + 1:] + names[:start] if n not in taken)


def counterfactual(scene: world.Scene, attribute: str) -> world.Scene | None:
    """The scene with one attribute of its first object (or its background) changed; None when the first
    object's motion has no opposite."""
    first, bg = scene.objects[0], scene.background
    if attribute == "background":
        changed_bg = (replace(bg, colour=_next(world.BACKGROUND_COLOURS, bg.colour)) if bg.colour
                      else replace(bg, kind=_next(TEXTURES, bg.kind)))
        return replace(scene, background=changed_bg)
    if attribute == "colour":
        value = _next(world.OBJECT_COLOURS, first.colour, frozenset(o.colour for o in scene.objects))
    elif attribute == "shape":
        value = _next(world.SHAPES, first.shape)
    elif first.motion in OPPOSITE:
        value = OPPOSITE[first.motion]
    else:
        return None
    return replace(scene, objects=[replace(first, **{attribute: value}), *scene.objects[1:]])


def _losses(pipe: Pipeline, x0: torch.Tensor, eps: torch.Tensor, captions: list[str], t: float,
            given: torch.Tensor) -> torch.Tensor:
    """Per-clip velocity loss (B,) over the frames not given, for latents x0 (B, C, T, h, w)."""
    device = pipe.device
    tokens, mask = pipe.model.text(captions)  # (B, L, D), (B, L)
    times = torch.where(given, 0.0, t)  # (B, T)
    x_t = flow.interpolate(x0, eps, times)
    with torch.no_grad(), pipe.autocast():
        v = pipe.model.dit(x_t.to(device), times.to(device), tokens.to(device), mask.to(device))
    err = (v.float().cpu() - flow.velocity_target(x0, eps)).pow(2).mean(dim=(1, 3, 4))  # (B, T)
    return (err * ~given).sum(1) / (~given).sum(1)


def word_gaps(pipe: Pipeline, n: int = 32, seed: int = 0) -> dict[str, dict[str, float]]:
    """Per probe: gap (mean relative loss increase, %), prefers (share of cases, 0..1) and n (clips); a probe
    with no clip to change is left out.

    Clips are the first `n` held-out scenes, 2 s at the model's default size; captions are drawn with the
    same random stream for the true and the changed scene, so they differ only in the changed words.
    """
    pairs = world.heldout_prompts(n, seed)
    tf = pipe.cfg.vae.temporal_factor
    frames = decoded_count(latent_count(frames_for(2.0, pipe.cfg.fps), tf), tf)
    x0 = torch.cat([pipe.encode(world.render(scene, pipe.cfg.width, pipe.cfg.height, frames, pipe.cfg.fps))
                    for _, scene in pairs])  # (n, C, T, h, w)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    true = [world.caption(scene, np.random.default_rng(i)) for i, (_, scene) in enumerate(pairs)]
    true_losses = {}  # first frame given -> (len(TIMES), n): the true captions' losses, shared by the probes
    for first_given in {given for _, given in PROBES.values()}:
        given = torch.zeros(len(pairs), x0.shape[2], dtype=torch.bool)
        given[:, 0] = first_given
        true_losses[first_given] = torch.stack([_losses(pipe, x0, eps, true, t, given) for t in TIMES])
    results = {}
    for name, (attribute, first_given) in PROBES.items():
        chosen = [(i, cf) for i, (_, scene) in enumerate(pairs) if (cf := counterfactual(scene, attribute)) is not None]
        if not chosen:  # e.g. no first object with an opposite motion among a few clips
            continue
        rows = [i for i, _ in chosen]
        changed = [world.caption(cf, np.random.default_rng(i)) for i, cf in chosen]
        given = torch.zeros(len(rows), x0.shape[2], dtype=torch.bool)
        given[:, 0] = first_given
        ratios = torch.stack([_losses(pipe, x0[rows], eps[rows], changed, t, given) for t in TIMES])
        ratios /= true_losses[first_given][:, rows]
        prefers = (ratios > 1).float() + 0.5 * (ratios == 1).float()  # a tie (the text has no effect) is a coin flip
        results[name] = {"gap": float(100 * (ratios.mean() - 1)), "prefers": float(prefers.mean()), "n": len(rows)}
    return results


# Where each way's object starts when `steering` places it against the way: where the in-frame world starts objects
# going the opposite way (world_scene keeps moving objects in frame, so a right-mover starts in the left part).
AGAINST = {"right": (0.7, 0.5), "left": (0.3, 0.5), "up": (0.5, 0.3), "down": (0.5, 0.7)}


STARTS = ("middle", "against", "text")  # where `steering` starts the object; "text": nowhere, text to video


def steering(pipe: Pipeline, n: int = 6, seed: int = 0, start: str = "middle", **tuning) -> dict[str, float]:
    """One medium object alone, n times (a colour and shape each), asked once per way of STEER: the share of clips
    whose object travels the asked way ("asked way"), and per way (25% is a coin flip).

    start="middle": image to video from a world frame with the object in the middle. The frame fixes what the
    object is and where it starts; only the words can say where it goes.
    start="against": the object starts where the training world starts objects going the other way (AGAINST):
    a model that reads the way off the start position, not the words, scores near 0.
    start="text": text to video, no frame; the model places the object too, and only the words say where it goes.
    `tuning`: Request's sampling fields, as for `kinema eval`."""
    if start not in STARTS:
        raise KinemaError(f"steering start {start!r} is not one of {', '.join(STARTS)}")
    rng = np.random.default_rng(seed)
    places = {way: AGAINST[way] if start == "against" else (0.5, 0.5) for way in STEER}
    hits: dict[str, list[bool]] = {way: [] for way in STEER}
    for i in range(n):
        colour, shape = str(rng.choice(STEER_COLOURS)), str(rng.choice(world.SHAPES))
        firsts = {}  # start -> the still frame (H, W, 3); from the middle, one serves every way; text needs none
        for x, y in set(places.values()) if start != "text" else ():
            scene = world.Scene([world.Obj(shape, colour, "medium", "still", x, y)], world.Background("solid", "navy"))
            firsts[x, y] = world.render(scene, pipe.cfg.width, pipe.cfg.height, 1, pipe.cfg.fps)[0]
        for way, phrase in STEER.items():
            image = None if start == "text" else firsts[places[way]]
            request = Request(f"a medium {colour} {shape} {phrase} over a navy background", image=image,
                              seconds=2.0, seed=seed + i, expand=False, **tuning)
            hits[way].append(travel(pipe.decode(pipe.generate(request)), colour, pipe.cfg.fps) == way)
    return {"asked way": float(np.mean(list(hits.values()))), **{way: float(np.mean(h)) for way, h in hits.items()},
            "n": n}


def shape_words(pipe: Pipeline, n: int = 4, seed: int = 0, **tuning) -> dict[str, float]:
    """Text to image, one large still object per shape word of the world, n seeds each: the share of stills whose
    object the judge reads as the asked shape ("asked shape"), and per shape (1/8 is chance). The words alone say
    what to draw; a model that draws the seed's blob whatever the word (docs/MODEL.md, session 15) scores near
    chance. `tuning`: Request's sampling fields, as for `kinema eval`."""
    hits: dict[str, list[bool]] = {shape: [] for shape in world.SHAPES}
    for i in range(n):
        colour = STEER_COLOURS[i % len(STEER_COLOURS)]
        for shape in world.SHAPES:
            request = Request(f"a large {colour} {shape} stays still over a navy background", frames=1,
                              seed=seed + i, expand=False, **tuning)
            hits[shape].append(drawn_shape(pipe.decode(pipe.generate(request)), pipe.cfg.fps) == shape)
    return {"asked shape": float(np.mean(list(hits.values()))), **{s: float(np.mean(h)) for s, h in hits.items()},
            "n": n}


def drawn_shape(frames: np.ndarray, fps: float) -> str:
    """The judge's shape class of the largest object in frames (T, H, W, 3), a still too; "none" when there is
    no object."""
    tracks = measure(frames, fps).tracks
    return max(tracks, key=lambda t: np.nanmax(t.area)).shape if tracks else "none"


def travel(frames: np.ndarray, colour: str, fps: float) -> str:
    """Which way the `colour` object went (T, H, W, 3): the main axis of its centroid's travel (pan-corrected, as
    the judge reads it) and its sign; "still" under the judge's STILL, "lost" when no track has that colour."""
    found = measure(frames, fps)
    tracks = [t for t in found.tracks if t.colour == colour and t.seen.sum() >= 2]
    if not tracks:
        return "lost"
    x, y = centroid_path(max(tracks, key=lambda t: t.seen.sum()), found)
    dx, dy = x[-1] - x[0], y[-1] - y[0]
    if max(abs(dx), abs(dy)) < STILL:
        return "still"
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"  # image y points down
