"""Prompt expansion: a short prompt -> the detailed caption style the model was trained on.

The built-in rewriter reads the prompt with the world's parser, fills in what it leaves out with plain
defaults (a medium size, standing still, a plain gray background) and writes the scene back with the
world's caption grammar: "a red ball" -> e.g. "a medium red circle stands still over a gray background".
A prompt that names nothing the world knows is passed through unchanged.

An external OpenAI-compatible chat endpoint can do the rewriting instead (`KINEMA_PROMPT_API_BASE`,
`KINEMA_PROMPT_API_KEY`, `KINEMA_PROMPT_MODEL`, or the CLI's --prompt-api / --prompt-model): it is sent
the world's vocabulary and example captions. Any failure (timeout, HTTP error, odd reply) falls back to
the built-in rewriter with a warning, so generation never fails because of it.

`asked_direction` reads which way a prompt asks its lone object to travel, for starting noise that drifts that way;
`asked_camera` how it asks the camera to pan, tilt or zoom, for a move the pipeline makes with the frame (`camera`).
"""

from __future__ import annotations

import logging
import os
import zlib
from dataclasses import dataclass, replace

import numpy as np

from kinema import safety
from kinema.errors import KinemaError
from kinema.world import (
    BACKGROUND_COLOURS,
    DIRECTIONS,
    OBJECT_COLOURS,
    SHAPES,
    Background,
    Obj,
    ObjectSpec,
    PromptSpec,
    Scene,
    caption,
    parse_prompt,
    sample_scene,
)

log = logging.getLogger(__name__)

DEFAULT_SHAPE, DEFAULT_SIZE, DEFAULT_MOTION = "circle", "medium", "still"
DEFAULT_BACKGROUND, DEFAULT_BACKGROUND_COLOUR = "solid", "gray"
PAN_SPEED = 0.2  # su/s, mid-range of the world's pans
DEFAULT_API_MODEL = "gpt-4o-mini"
TIMEOUT_S = 10.0


def expand_builtin(prompt: str, still_camera: bool = False) -> str:
    """The prompt as a world caption with every attribute filled in; unchanged if it names no object.

    `still_camera` leaves an asked pan out, for when the pipeline makes it by moving the frame from a given image or
    clip: told to pan, the DiT shifts the given content itself and fights the frame's move (image to video on 40
    hold-out scenes: 52.6% overall and flicker 0.98 without the pan's words, 46.8% and 1.48 with; docs/MODEL.md,
    session 32)."""
    spec = parse_prompt(prompt)
    if spec is None or not spec.objects:
        return prompt
    rng = np.random.default_rng(zlib.crc32(prompt.encode()))  # the same prompt always reads the same
    scene = scene_for(spec)
    return caption(replace(scene, pan=0.0) if still_camera else scene, rng)


def asked_direction(prompt: str) -> tuple[float, float] | None:
    """The unit vector (x, y; y points down) of the way the prompt's one object travels ("a red circle moves
    left"); None when it does not travel in a line, or when the prompt names more than one object: noise drifting
    under several objects merged them (where one of two travelled, the default's count fell from 88 to 64%;
    docs/MODEL.md, session 27)."""
    spec = parse_prompt(prompt)
    if spec is None or len(spec.objects) != 1 or (spec.count or 1) > 1:
        return None
    return DIRECTIONS.get(spec.objects[0].motion or "")


def asked_camera(prompt: str) -> tuple[tuple[float, float] | None, str | None]:
    """How the prompt asks the camera to move: the unit vector (x, y; y points down) of the way it pans ("the camera
    pans left", "tilts up"; None: no pan), and "in" or "out" for a zoom ("the camera zooms in", "pulls back"; None:
    no zoom). A pan whose way is not said goes right, as the built-in rewriter writes it."""
    spec = parse_prompt(prompt)
    return (None, None) if spec is None else (_pan_way(spec), spec.zoom)


def _pan_way(spec: PromptSpec) -> tuple[float, float] | None:
    return None if spec.pan is None else DIRECTIONS["right" if spec.pan == "any" else spec.pan]


def scene_for(spec: PromptSpec) -> Scene:
    """A scene with what the prompt says and defaults for the rest; each object gets its own colour."""
    unused = [c for c in OBJECT_COLOURS if c not in {o.colour for o in spec.objects}]
    objects = [_object(o, unused) for o in spec.objects]
    kind = spec.background or DEFAULT_BACKGROUND
    colour = (spec.background_colour or DEFAULT_BACKGROUND_COLOUR) if kind in ("solid", "gradient") else None
    way = _pan_way(spec)
    pan = PAN_SPEED * way[0] if way else 0.0  # the world's camera pans sideways only: a tilt is left out
    return Scene(objects, Background(kind, colour), pan)


def _object(spec: ObjectSpec, unused: list[str]) -> Obj:
    colour = spec.colour or (unused.pop(0) if unused else "white")
    return Obj(spec.shape or DEFAULT_SHAPE, colour, spec.size or DEFAULT_SIZE, spec.motion or DEFAULT_MOTION,
               0.5, 0.5)


SYSTEM_EXAMPLES = 6  # world captions shown to an endpoint as the style to write in


def system_prompt() -> str:
    """Instructions for an external model: the vocabulary and a few captions of the training grammar."""
    rng = np.random.default_rng(0)
    samples = "\n".join(f"- {caption(sample_scene(rng), rng)}" for _ in range(SYSTEM_EXAMPLES))
    return ("Rewrite the user's video idea as ONE caption in the style below, for a small text-to-video model "
            "that only knows simple shapes moving over simple backgrounds. Use only these words: colours "
            f"{', '.join(OBJECT_COLOURS)}; shapes {', '.join(SHAPES)}; "
            "sizes small, medium, large; motions still, up, down, left, right, diagonal, bounce, spin, grow, "
            f"shrink; backgrounds a plain or gradient {', '.join(BACKGROUND_COLOURS)} background, a snowy "
            "field, a night sky with stars, a grassy meadow, a brick wall; camera pans left or right. Say "
            "colour, size, shape and motion of every object and the background. Reply with the caption "
            f"only.\nExamples:\n{samples}")


FALLBACK_NOTE = "the prompt expansion endpoint failed, so the built-in rewriter expanded the prompt instead"


@dataclass
class Rewriter:
    """Expands prompts with the built-in rewriter, or an OpenAI-compatible endpoint when `api_base` is set."""

    api_base: str | None = None  # e.g. http://localhost:8000/v1; POST {api_base}/chat/completions
    api_key: str | None = None
    model: str = DEFAULT_API_MODEL
    timeout: float = TIMEOUT_S

    def __post_init__(self) -> None:
        if self.api_base is not None and not self.api_base.startswith(("http://", "https://")):
            raise KinemaError(f"the prompt API {self.api_base!r} is not an http(s) URL; give one such as "
                              "http://localhost:8001/v1 (--prompt-api or KINEMA_PROMPT_API_BASE)")

    @classmethod
    def from_env(cls) -> Rewriter:
        return cls(os.environ.get("KINEMA_PROMPT_API_BASE") or None, os.environ.get("KINEMA_PROMPT_API_KEY"),
                   os.environ.get("KINEMA_PROMPT_MODEL") or DEFAULT_API_MODEL)

    def expand(self, prompt: str, still_camera: bool = False, notes: list[str] | None = None) -> str:
        """The caption for `prompt`; `still_camera`: the built-in rewriter leaves an asked pan out (an endpoint's
        caption is taken as it comes, unless the content policy refuses it: the prompt passed, its caption must too).
        An endpoint that fails is logged for the operator, and said in `notes` (a video's, which its maker sees)
        without its address or error, which may name hosts of the operator's."""
        if not self.api_base:
            return expand_builtin(prompt, still_camera)
        try:
            return self._ask(prompt)
        except Exception as err:  # any failure of someone else's service must not fail the job
            log.warning("prompt expansion at %s failed (%s: %s); using the built-in rewriter", self.api_base,
                        type(err).__name__, err)
            if notes is not None and FALLBACK_NOTE not in notes:  # once, however many prompts a sequence has
                notes.append(FALLBACK_NOTE)
            return expand_builtin(prompt, still_camera)

    def _ask(self, prompt: str) -> str:
        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        body = {"model": self.model, "temperature": 0,
                "messages": [{"role": "system", "content": system_prompt()}, {"role": "user", "content": prompt}]}
        reply = httpx.post(f"{self.api_base.rstrip('/')}/chat/completions", json=body, headers=headers,
                           timeout=self.timeout)
        reply.raise_for_status()
        text = " ".join(str(reply.json()["choices"][0]["message"]["content"]).split())
        if not text:
            raise ValueError("the reply's caption is empty")
        safety.check_prompt(text)
        return text
