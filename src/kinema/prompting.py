"""Prompt expansion: a short prompt -> the detailed caption style the model was trained on.

The built-in rewriter reads the prompt with the world's parser, fills in what it leaves out with plain
defaults (a medium size, standing still, a plain gray background) and writes the scene back with the
world's caption grammar: "a red ball" -> e.g. "a medium red circle stands still over a gray background".
Where a given image or video already shows the scene it fills in no look (`GIVEN_LOOKS`), and where a given clip
also shows how things move, no motion either (`GIVEN_MOTION`; an image's objects are still told to stand still).
A prompt that names nothing the world knows is passed through unchanged.

An external OpenAI-compatible chat endpoint can do the rewriting instead (`KINEMA_PROMPT_API_BASE`,
`KINEMA_PROMPT_API_KEY`, `KINEMA_PROMPT_MODEL`, or the CLI's --prompt-api / --prompt-model): it is sent
the world's vocabulary and example captions. Any failure (timeout, HTTP error, odd reply) falls back to
the built-in rewriter with a warning, so generation never fails because of it.

`asked_direction` reads which way a prompt asks its lone object to travel, for starting noise that drifts that way;
`asked_camera` how it asks the camera to pan, tilt or zoom, for a move the pipeline makes with the frame (`camera`).
"""

from __future__ import annotations

import json
import logging
import os
import re
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
from kinema.world_text import (
    BACKGROUND_COLOUR_WORDS,
    BACKGROUND_PHRASES,
    COLOUR_WORDS,
    COUNT_WORDS,
    DIRECTION_WORDS,
    GROUP_NOUNS,
    KIND_WORDS,
    LEADS,
    MOTION_PHRASES,
    PAN_AFTER,
    PAN_BEFORE,
    PREPOSITIONS,
    SHAPE_WORDS,
    SIZE_WORDS,
    _article,
    _join,
    _pick,
)

log = logging.getLogger(__name__)

DEFAULT_SHAPE, DEFAULT_SIZE, DEFAULT_MOTION = "circle", "medium", "still"
DEFAULT_BACKGROUND, DEFAULT_BACKGROUND_COLOUR = "solid", "gray"
PAN_SPEED = 0.2  # su/s, mid-range of the world's pans
DEFAULT_API_MODEL = "gpt-4o-mini"
TIMEOUT_S = 10.0


# Modes whose frames come from a given image or video, which already shows what a prompt leaves unsaid: defaults
# would contradict it (an edit told "over a slate gray backdrop" turned a navy clip gray; an extension drifted off
# its clip's background). An image (i2v) fixes how the scene looks but not how it moves, so an unsaid motion is still
# made still there; a clip to edit, extend or connect fixes its motion too. Text-only modes (t2v, loop, sequence)
# have nothing to keep, so everything is filled in.
GIVEN_LOOKS = frozenset({"i2v", "edit", "extend", "extend_backward", "connect"})
GIVEN_MOTION = GIVEN_LOOKS - {"i2v"}


def expand_builtin(prompt: str, still_camera: bool = False, mode: str = "t2v") -> str:
    """The prompt as a world caption with every attribute filled in (in `mode`s with given frames, only the looks it
    names, and with a given clip only the motions it names); unchanged if it names no object.

    `still_camera` leaves an asked pan out, for when the pipeline makes it by moving the frame from a given image or
    clip: told to pan, the DiT shifts the given content itself and fights the frame's move (image to video on 40
    hold-out scenes: 52.6% overall and flicker 0.98 without the pan's words, 46.8% and 1.48 with; docs/MODEL.md,
    session 32)."""
    spec = parse_prompt(prompt)
    if spec is None or not spec.objects:
        return prompt
    rng = np.random.default_rng(zlib.crc32(prompt.encode()))  # the same prompt always reads the same
    spec = replace(spec, pan=None) if still_camera else spec
    motion = None if mode in GIVEN_MOTION or may_ask_change(prompt) else DEFAULT_MOTION
    if mode in GIVEN_LOOKS:
        return named_caption(replace(spec, objects=[replace(o, motion=o.motion or motion) for o in spec.objects]), rng)
    spec = filled(spec, motion)
    if any(o.motion is None for o in spec.objects):  # `caption` always says a motion: write only what is said
        return named_caption(spec, rng)
    return caption(scene_for(spec), rng)


def _words(phrases) -> set[str]:
    """The words of the grammar's phrases, without their slots' names ("{c} {s}")."""
    return set(re.findall(r"[a-z]+", re.sub(r"\{\w+\}", " ", " ".join(phrases)).lower()))


# Words that say nothing about change: the caption grammar's for looks, places and the camera, and a few plain ones.
_PLAIN_WORDS = frozenset(
    _words(w for table in (COLOUR_WORDS, SHAPE_WORDS, SIZE_WORDS, BACKGROUND_COLOUR_WORDS, BACKGROUND_PHRASES,
                           PREPOSITIONS) for words in table.values() for w in words)
    | _words([*PAN_AFTER, *PAN_BEFORE, *LEADS, *COUNT_WORDS.values(), *GROUP_NOUNS])
    | {"and", "is", "are", "there", "its", "shape", "object", "thing", "item", "zoom", "zooms", "zooming", "tilt",
       "tilts", "tilting", "out", "closer", "pulls", "back"})
_MOTION_WORD = re.compile("|".join([*KIND_WORDS.values(), *DIRECTION_WORDS.values()]))


def may_ask_change(prompt: str) -> bool:
    """Whether the prompt has a word beyond the world's motions and its plain words for looks, places and the camera:
    it may ask for a change the world has no motion for ("turns blue", "explodes"). An object whose motion it does not
    name is then left without one: made still, it would contradict the prompt. Said of the whole prompt, not per
    object: an extra word can only leave a motion unsaid, never assert a wrong one."""
    return any(not _MOTION_WORD.fullmatch(w) and not _plain(w) for w in re.findall(r"[a-z]+", prompt.lower()))


def _plain(word: str) -> bool:
    """A plain word, or its plural ("circles", "boxes"); a stem is cut only where three letters stay ("cut" is not
    "c" + "ut")."""
    return any(stem in _PLAIN_WORDS for stem in (word, word[:-1], word[:-2]) if stem == word or len(stem) >= 3)


def named_caption(spec: PromptSpec, rng: np.random.Generator) -> str:
    """The world's plainest caption form ("<objects> <place><pan>") saying only what `spec` says: an object without
    a shape is "a shape", one without a motion has no verb, an unsaid place or pan is left out."""
    text = _join([_named_object(o, rng) for o in spec.objects])
    if spec.background:
        text += f" {_pick(rng, PREPOSITIONS[spec.background])} {_named_place(spec, rng)}"
    way = _pan_way(spec)
    if way and way[0]:  # the world's camera pans sideways only
        text += _pick(rng, PAN_AFTER).format(d="left" if way[0] < 0 else "right")
    return text


def _named_object(obj: ObjectSpec, rng: np.random.Generator) -> str:
    words = [_pick(rng, table[name]) for table, name in ((SIZE_WORDS, obj.size), (COLOUR_WORDS, obj.colour)) if name]
    phrase = " ".join([*words, _pick(rng, SHAPE_WORDS[obj.shape]) if obj.shape else "shape"])
    verb = f" {_pick(rng, MOTION_PHRASES[obj.motion][0])}" if obj.motion else ""
    return f"{_article(phrase)} {phrase}{verb}"


def _named_place(spec: PromptSpec, rng: np.random.Generator) -> str:
    place = _pick(rng, BACKGROUND_PHRASES[spec.background])
    if not spec.background_colour:  # "a gradient": its colour is the given frames'
        return place.replace("{c} ", "")
    colour = _pick(rng, BACKGROUND_COLOUR_WORDS[spec.background_colour])
    return place.replace("a {c}", f"{_article(colour)} {{c}}").format(c=colour)


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


def filled(spec: PromptSpec, motion: str | None = DEFAULT_MOTION) -> PromptSpec:
    """`spec` with defaults for what it leaves out (`motion` for an unsaid motion); each object gets its own colour."""
    unused = [c for c in OBJECT_COLOURS if c not in {o.colour for o in spec.objects}]
    objects = [ObjectSpec(o.colour or (unused.pop(0) if unused else "white"), o.shape or DEFAULT_SHAPE,
                          o.size or DEFAULT_SIZE, o.motion or motion) for o in spec.objects]
    kind = spec.background or DEFAULT_BACKGROUND
    colour = (spec.background_colour or DEFAULT_BACKGROUND_COLOUR) if kind in ("solid", "gradient") else None
    return replace(spec, objects=objects, background=kind, background_colour=colour)


def scene_for(spec: PromptSpec) -> Scene:
    """A scene with what the prompt says and defaults for the rest (`filled`)."""
    spec = filled(spec)
    objects = [Obj(o.shape, o.colour, o.size, o.motion, 0.5, 0.5) for o in spec.objects]
    way = _pan_way(spec)
    pan = PAN_SPEED * way[0] if way else 0.0  # the world's camera pans sideways only: a tilt is left out
    return Scene(objects, Background(spec.background, spec.background_colour), pan)


SYSTEM_EXAMPLES = 6  # world captions shown to an endpoint as the style to write in


def system_prompt(mode: str = "t2v") -> str:
    """Instructions for an external model: the vocabulary and a few captions of the training grammar; in `mode`s with
    given frames, to name only what the idea names, as the built-in rewriter does (`GIVEN_LOOKS`)."""
    rng = np.random.default_rng(0)
    samples = "\n".join(f"- {caption(sample_scene(rng), rng)}" for _ in range(SYSTEM_EXAMPLES))
    say = ("Name only what the idea names: a given video shows the rest." if mode in GIVEN_MOTION else
           "Name only the looks the idea names (a given image shows the rest), and a motion for every object."
           if mode in GIVEN_LOOKS else "Say colour, size, shape and motion of every object and the background.")
    return ("Rewrite the user's video idea as ONE caption in the style below, for a small text-to-video model "
            "that only knows simple shapes moving over simple backgrounds. Use only these words: colours "
            f"{', '.join(OBJECT_COLOURS)}; shapes {', '.join(SHAPES)}; "
            "sizes small, medium, large; motions still, up, down, left, right, diagonal, bounce, spin, grow, "
            f"shrink; backgrounds a plain or gradient {', '.join(BACKGROUND_COLOURS)} background, a snowy "
            f"field, a night sky with stars, a grassy meadow, a brick wall; camera pans left or right. {say} "
            "Leave out a change these words cannot say; never call it still. Reply with the caption "
            f"only.\nExamples:\n{samples}")


NOTE_PROMPT_CHARS = 120  # of a prompt or caption a note echoes: an 11,000-character prompt once made such a line


def shown(text: str) -> str:
    """Text as a note echoes it: quoted, and cut short after NOTE_PROMPT_CHARS characters."""
    return repr(text if len(text) <= NOTE_PROMPT_CHARS else text[:NOTE_PROMPT_CHARS].rstrip() + "…")


def expansion_note(prompt: str, caption: str) -> str:
    """What a video's maker is told when the rewriter changed the prompt, in words for the CLI, API and web page."""
    return (f"prompt {shown(prompt)} drawn as {shown(caption)}, the caption style the model was trained on; turn "
            "prompt expansion off (--no-expand; the API's expand=false; the page's Prompt expansion) to draw it as "
            "written")


FALLBACK_NOTE = "the prompt expansion endpoint failed, so the built-in rewriter expanded the prompt instead"


def failure_reason(err: Exception, timeout: float) -> str:
    """Why an endpoint failed, in a clause its video's maker may read: no address, host or reply text (they may name
    the operator's hosts)."""
    import httpx

    if isinstance(err, httpx.HTTPStatusError):
        return f"it answered HTTP {err.response.status_code}"
    if isinstance(err, httpx.TimeoutException):
        return f"it did not answer within {timeout:g} s"
    if isinstance(err, httpx.TransportError):
        return "the connection was refused" if "refused" in str(err).lower() else "the connection failed"
    if isinstance(err, json.JSONDecodeError):
        return "its reply was not JSON"
    if isinstance(err, KinemaError):  # safety.check_prompt on the caption
        return "the content policy refused its caption"
    if isinstance(err, (KeyError, IndexError, TypeError, ValueError)):
        return "its reply held no caption"
    return f"it raised {type(err).__name__}"


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

    def expand(self, prompt: str, still_camera: bool = False, notes: list[str] | None = None,
               mode: str = "t2v") -> str:
        """The caption for `prompt` in the request's `mode`; `still_camera`: the built-in rewriter leaves an asked pan
        out (an endpoint's caption is taken as it comes, unless the content policy refuses it: the prompt passed, its
        caption must too). An endpoint that fails is logged for the operator, and said in `notes` (a video's, which
        its maker sees) with why (`failure_reason`) but not its address or error text."""
        if not self.api_base:
            return expand_builtin(prompt, still_camera, mode)
        try:
            return self._ask(prompt, mode)
        except Exception as err:  # any failure of someone else's service must not fail the job
            log.warning("prompt expansion at %s failed (%s: %s); using the built-in rewriter", self.api_base,
                        type(err).__name__, err)
            if notes is not None and not any(n.startswith(FALLBACK_NOTE) for n in notes):  # once, however many prompts
                notes.append(f"{FALLBACK_NOTE}: {failure_reason(err, self.timeout)}")
            return expand_builtin(prompt, still_camera, mode)

    def _ask(self, prompt: str, mode: str) -> str:
        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        body = {"model": self.model, "temperature": 0, "messages": [
            {"role": "system", "content": system_prompt(mode)}, {"role": "user", "content": prompt}]}
        reply = httpx.post(f"{self.api_base.rstrip('/')}/chat/completions", json=body, headers=headers,
                           timeout=self.timeout)
        reply.raise_for_status()
        text = " ".join(str(reply.json()["choices"][0]["message"]["content"]).split())
        if not text:
            raise ValueError("the reply's caption is empty")
        safety.check_prompt(text)
        return text
