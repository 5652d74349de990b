"""Kinema's procedural world: clips with captions and structured ground truth, for training and judging.

No video data set can be downloaded, so Kinema learns from a world it can draw: 1-3 flat-coloured
shapes (8 shapes, 8 colours, 3 sizes) moving in 13 ways over solid, gradient or textured backgrounds,
with an optional camera pan. Everything is deterministic from a numpy Generator and independent of any
model. This module is the public face; the parts live in world_scene (vocabulary, ground truth,
sampling), world_render (pixels) and world_text (captions and prompt parsing).

    rng = np.random.default_rng(0)
    scene = sample_scene(rng)                   # holdout=True: the first object is a HELDOUT triple
    frames = render(scene, 128, 128, 17, 8.0)   # uint8 (T, H, W, 3)
    text = caption(scene, rng)                  # parse_prompt(text) reads the attributes back
"""

from __future__ import annotations

import numpy as np

from kinema.world_render import render
from kinema.world_scene import (
    BACKGROUND_COLOURS,
    BACKGROUND_KINDS,
    DIRECTIONS,
    HELDOUT,
    MOTIONS,
    OBJECT_COLOURS,
    SHAPES,
    SIZES,
    WHOLE_WORLD,
    Background,
    Obj,
    Scene,
    SceneMix,
    is_heldout,
    sample_scene,
)
from kinema.world_text import ObjectSpec, PromptSpec, caption, count_beyond, parse_prompt, spec_of

__all__ = [
    "BACKGROUND_COLOURS", "BACKGROUND_KINDS", "DIRECTIONS", "HELDOUT", "MOTIONS", "OBJECT_COLOURS", "SHAPES", "SIZES",
    "WHOLE_WORLD",
    "Background", "Obj", "ObjectSpec", "PromptSpec", "Scene", "SceneMix", "caption", "count_beyond", "heldout_prompts",
    "is_heldout",
    "parse_prompt", "render", "sample_scene", "spec_of", "train_prompts",
]


def _prompts(n: int, seed: int, holdout: bool, duration: float) -> list[tuple[str, Scene]]:
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        scene = sample_scene(rng, holdout=holdout, duration=duration)
        pairs.append((caption(scene, rng), scene))
    return pairs


def train_prompts(n: int, seed: int, duration: float = 2.0) -> list[tuple[str, Scene]]:
    """n (caption, scene) pairs from the training distribution (no HELDOUT triple anywhere)."""
    return _prompts(n, seed, False, duration)


def heldout_prompts(n: int, seed: int, duration: float = 2.0) -> list[tuple[str, Scene]]:
    """n (caption, scene) pairs whose first object is a HELDOUT triple, for compositional evaluation."""
    return _prompts(n, seed, True, duration)
