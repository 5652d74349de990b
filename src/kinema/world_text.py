"""Captions for world scenes and the parser that reads them (and people's prompts) back.

The caption grammar varies synonyms, word order, motion phrasing (finite verb, participle or adjective),
background and camera phrasing, so the text model cannot learn one fixed template. `parse_prompt`
inverts every caption exactly and reads free prompts best-effort: it removes the camera and background
phrases first (their words would otherwise look like object words), then splits the rest into clauses and
reads colour, shape, size and motion words per clause.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from kinema.world_scene import Obj, Scene

COLOUR_WORDS = {
    "red": ("red", "crimson", "scarlet", "cherry red"),
    "orange": ("orange", "tangerine", "amber"),
    "yellow": ("yellow", "golden", "lemon yellow"),
    "green": ("green", "emerald", "lime green"),
    "blue": ("blue", "azure", "cobalt blue"),
    "purple": ("purple", "violet", "amethyst"),
    "white": ("white", "ivory", "pearl white"),
    "black": ("black", "jet black", "ebony", "coal black"),
}
SHAPE_WORDS = {
    "circle": ("circle", "disc", "disk", "ball", "dot", "orb"),
    "square": ("square", "box", "block", "tile"),
    "triangle": ("triangle", "pyramid"),
    "star": ("star", "five pointed star"),
    "diamond": ("diamond", "rhombus", "lozenge"),
    "cross": ("cross", "plus sign", "plus"),
    "heart": ("heart", "heart shape"),
    "ring": ("ring", "donut", "hoop", "doughnut"),
}
SIZE_WORDS = {
    "small": ("small", "tiny", "little", "petite"),
    "medium": ("medium sized", "medium", "mid sized", "moderately sized"),
    "large": ("large", "big", "huge", "giant"),
}
BACKGROUND_COLOUR_WORDS = {
    "gray": ("gray", "grey", "slate gray", "ash grey"),
    "navy": ("navy", "navy blue", "dark blue", "midnight blue"),
    "forest": ("forest green", "dark green", "deep green"),
    "brown": ("brown", "chocolate brown", "chestnut"),
    "beige": ("beige", "sand coloured", "tan", "cream"),
    "teal": ("teal", "dark teal", "dark cyan"),
}
# Object colours people may put on a background; mapped to the nearest background colour where one exists.
OBJECT_TO_BACKGROUND_COLOUR = {"blue": "navy", "green": "forest", "gray": "gray", "grey": "gray"}

# Motion vocabulary for parsing. Kinds win over directions ("bounces up and down" is a bounce).
KIND_WORDS = {
    "bounce": r"bounc\w*|hops?|hopping|bob|bobs|bobbing",
    "rotate": r"spin|spins|spinning|rotat\w*|twirl\w*|whirl\w*|revolv\w*",
    "grow": r"grow|grows|growing|expand\w*|swell\w*|inflat\w*|enlarg\w*|bigger|larger",
    "shrink": r"shrink\w*|contract\w*|dwindl\w*|deflat\w*|smaller",
    "still": r"still|motionless|stationary|unmoving|static|idle|stays put|staying put|rests|resting"
             r"|does not move|doesn t move|not moving",
}
DIRECTION_WORDS = {
    "up": r"up|upward|upwards|rises|rising|rise|ascends|ascending|climbs|climbing|top|upper|skyward",
    "down": r"down|downward|downwards|falls|falling|fall|sinks|sinking|drops|dropping|descends|descending"
            r"|bottom|lower",
    "left": r"left|leftward|leftwards",
    "right": r"right|rightward|rightwards",
}

# Caption phrasing of each motion: finite verbs, participles, and adjectives (empty: no adjective form).
MOTION_PHRASES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "still": (("stays still", "sits motionless", "rests in place", "stands still", "does not move",
               "remains stationary", "hovers motionless"),
              ("sitting still", "resting motionless", "staying put", "holding still"),
              ("motionless", "stationary", "still", "unmoving")),
    "up": (("rises", "moves up", "floats upward", "drifts upwards", "climbs", "ascends"),
           ("rising", "moving up", "floating upward", "climbing"), ("rising", "ascending")),
    "down": (("falls", "moves down", "sinks", "drops", "descends", "slides downward"),
             ("falling", "sinking", "moving down", "dropping"), ("falling", "sinking", "descending")),
    "bounce": (("bounces", "bounces up and down", "hops", "bounces in place", "keeps bouncing"),
               ("bouncing", "bouncing up and down", "hopping"), ("bouncing", "hopping")),
    "rotate": (("spins in place", "rotates", "spins", "twirls", "rotates slowly", "whirls around"),
               ("spinning", "rotating", "twirling", "spinning in place"), ("spinning", "rotating", "twirling")),
    "grow": (("grows", "grows larger", "expands", "gets bigger", "swells", "inflates", "grows in size"),
             ("growing", "expanding", "swelling", "getting bigger"), ("growing", "expanding", "swelling")),
    "shrink": (("shrinks", "gets smaller", "contracts", "dwindles", "shrinks away", "deflates"),
               ("shrinking", "contracting", "dwindling", "getting smaller"),
               ("shrinking", "contracting", "dwindling")),
}
for _side in ("left", "right"):
    MOTION_PHRASES[_side] = (
        (f"moves to the {_side}", f"drifts {_side}", f"slides {_side}ward", f"glides to the {_side}",
         f"travels {_side}", f"heads {_side}"),
        (f"moving {_side}", f"drifting to the {_side}", f"sliding {_side}ward", f"gliding {_side}"), ())
for _vertical, (_verb, _part, _end) in {"up": ("rises", "rising", "top"),
                                        "down": ("falls", "falling", "bottom")}.items():
    for _side in ("left", "right"):
        MOTION_PHRASES[f"{_vertical}_{_side}"] = (
            (f"moves {_vertical} and to the {_side}", f"drifts diagonally {_vertical} and {_side}",
             f"{_verb} toward the {'upper' if _vertical == 'up' else 'lower'} {_side}",
             f"heads to the {_end} {_side} corner", f"moves diagonally {_vertical} and {_side}"),
            (f"moving {_vertical} and to the {_side}", f"{_part} toward the {_end} {_side}",
             f"drifting diagonally {_vertical} and {_side}"), ())

BACKGROUND_PHRASES = {
    "solid": ("a {c} background", "a plain {c} background", "a solid {c} backdrop", "a flat {c} background",
              "a {c} backdrop"),
    "gradient": ("a {c} gradient", "a soft {c} gradient", "a {c} gradient background", "a smooth {c} gradient"),
    "snow": ("a snowy field", "a snow-covered field", "a field of snow", "snowy ground", "a snowy landscape"),
    "night": ("a night sky with stars", "a starry night sky", "a starlit sky", "the night sky"),
    "meadow": ("a grassy meadow", "a green meadow", "a lawn", "a field of grass"),
    "brick": ("a brick wall", "a red brick wall", "a wall of bricks", "an old brick wall"),
}
PREPOSITIONS = {
    "solid": ("over", "on", "against", "in front of"),
    "gradient": ("over", "on", "against", "in front of"),
    "snow": ("on", "across", "over"),
    "night": ("against", "under", "in front of", "across"),
    "meadow": ("on", "over", "across"),
    "brick": ("in front of", "against", "before"),
}
PAN_AFTER = (", while the camera pans {d}", " as the camera pans {d}", ", with the camera panning {d}",
             "; the camera slowly pans to the {d}", ", camera panning {d}", " while the view pans to the {d}",
             ", in a slow pan to the {d}")
PAN_BEFORE = ("The camera pans {d} as", "As the camera pans to the {d},", "Panning {d},",
              "While the camera pans {d},")
LEADS = ("video of", "a clip of", "footage of", "an animation of", "there is")
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
GROUP_NOUNS = ("objects", "shapes", "things", "figures")


@dataclass
class ObjectSpec:
    """What a prompt says about one object; None where it says nothing."""

    colour: str | None = None
    shape: str | None = None
    size: str | None = None
    motion: str | None = None


@dataclass
class PromptSpec:
    """What a prompt asks for: the Scene-like reading of a caption."""

    objects: list[ObjectSpec] = field(default_factory=list)
    background: str | None = None  # a BACKGROUND_KINDS entry
    background_colour: str | None = None
    # "left", "right", "any" (direction not said) or None (static camera); also "up" and "down", which the world
    # never renders (its camera pans sideways only), so the judge reads them as no pan
    pan: str | None = None
    count: int | None = None
    zoom: str | None = None  # "in" or "out"; the world never renders a zoom, so the judge does not read it


def spec_of(scene: Scene) -> PromptSpec:
    """The ground truth of a scene in the parser's terms."""
    objects = [ObjectSpec(o.colour, o.shape, o.size, o.motion) for o in scene.objects]
    return PromptSpec(objects, scene.background.kind, scene.background.colour, scene.pan_direction, len(objects))


# ---------------------------------------------------------------- captions


def _pick(rng: np.random.Generator, options) -> str:
    return str(options[int(rng.integers(len(options)))])


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _noun_phrase(obj: Obj, rng: np.random.Generator, adjective: str | None = None) -> str:
    words = []
    if obj.size != "medium" or rng.uniform() < 0.5:  # medium is the unsaid default half the time
        words.append(_pick(rng, SIZE_WORDS[obj.size]))
    if adjective:
        words.append(adjective)
    colour, shape = _pick(rng, COLOUR_WORDS[obj.colour]), _pick(rng, SHAPE_WORDS[obj.shape])
    if rng.uniform() < 0.15:
        phrase = " ".join([*words, shape, "in", colour])
    else:
        phrase = " ".join([*words, colour, shape])
    return f"{_article(phrase)} {phrase}"


def _with_motion(obj: Obj, rng: np.random.Generator, finite: bool) -> str:
    """A noun phrase carrying the object's motion: with a verb (finite) or a participle/adjective."""
    verbs, participles, adjectives = MOTION_PHRASES[obj.motion]
    if finite:
        return f"{_noun_phrase(obj, rng)} {_pick(rng, verbs)}"
    if adjectives and rng.uniform() < 0.4:
        return _noun_phrase(obj, rng, _pick(rng, adjectives))
    return f"{_noun_phrase(obj, rng)} {_pick(rng, participles)}"


def _background_phrase(scene: Scene, rng: np.random.Generator) -> str:
    background = scene.background
    template = _pick(rng, BACKGROUND_PHRASES[background.kind])
    if background.colour is not None:
        colour = _pick(rng, BACKGROUND_COLOUR_WORDS[background.colour])
        template = template.replace("a {c}", f"{_article(colour)} {{c}}").format(c=colour)
    return f"{_pick(rng, PREPOSITIONS[background.kind])} {template}"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """A random caption of the scene from the grammar; parse_prompt recovers the scene's attributes."""
    objects, place = scene.objects, _background_phrase(scene, rng)
    pan = scene.pan_direction
    pan_after = _pick(rng, PAN_AFTER).format(d=pan) if pan else ""
    form = int(rng.integers(5 if len(objects) == 1 else 4))
    if pan and rng.uniform() < 0.25:  # the camera leads the sentence
        lead = _pick(rng, PAN_BEFORE).format(d=pan)
        text = f"{lead} {_join([_with_motion(o, rng, True) for o in objects])} {place}"
    elif form == 0:
        text = f"{_join([_with_motion(o, rng, True) for o in objects])} {place}{pan_after}"
    elif form == 1:
        text = f"{place[0].upper()}{place[1:]}, {_join([_with_motion(o, rng, True) for o in objects])}{pan_after}"
    elif form == 2 and len(objects) > 1:
        group = f"{COUNT_WORDS[len(objects)]} {_pick(rng, GROUP_NOUNS)}"
        text = f"{group} {place}: {_join([_with_motion(o, rng, False) for o in objects])}{pan_after}"
    elif form == 2:
        text = f"{_pick(rng, LEADS)} {_with_motion(objects[0], rng, False)} {place}{pan_after}"
    elif form == 3:
        first, *rest = objects
        verbs = MOTION_PHRASES[first.motion][0]
        head = f"{_noun_phrase(first, rng)} {place} {_pick(rng, verbs)}"
        text = " while ".join([head, *[_with_motion(o, rng, True) for o in rest]]) + pan_after
    else:
        text = f"{_with_motion(objects[0], rng, False)} {place}{pan_after}"
    text = text[0].upper() + text[1:] if rng.uniform() < 0.5 else text
    return text + "." if rng.uniform() < 0.5 else text


# ---------------------------------------------------------------- parsing


def _alternation(phrases, plural: str = "") -> str:
    ordered = sorted(set(phrases), key=len, reverse=True)  # longest first: "dark blue" before "blue"
    return r"\b(?:" + "|".join(re.escape(p).replace(r"\ ", r"\s+") for p in ordered) + rf"){plural}\b"


def _lexicon(table: dict[str, tuple[str, ...]], plural: str = "") -> tuple[re.Pattern, dict[str, str]]:
    lookup = {phrase: name for name, phrases in table.items() for phrase in phrases}
    return re.compile(_alternation(lookup, plural)), lookup


_COLOURS, _COLOUR_OF = _lexicon(COLOUR_WORDS)
_SHAPES, _SHAPE_OF = _lexicon(SHAPE_WORDS, plural="(?:s|es)?")  # people write "two squares"
_SIZES, _SIZE_OF = _lexicon(SIZE_WORDS)
_BG_COLOURS, _BG_COLOUR_OF = _lexicon(BACKGROUND_COLOUR_WORDS)
_ANY_COLOUR = _alternation([*_COLOUR_OF, *OBJECT_TO_BACKGROUND_COLOUR])
_MOTIONS = re.compile("|".join(rf"(?P<{name}>\b(?:{words})\b)" for name, words in
                               [*KIND_WORDS.items(), *DIRECTION_WORDS.items()]))

_BG_NOUN = r"(?:background|backdrop|canvas)"
_BACKGROUNDS = [
    ("snow", re.compile(r"\b(?:(?:snowy|snow\s+covered|snowbound|frozen|wintry)\s+(?:field|ground|landscape|plain"
                        r"|street|road|scene|hills?|hillside|meadow|park)|field\s+of\s+snow|snowfield|snow)\b")),
    ("night", re.compile(r"\b(?:(?:starry|starlit|dark)\s+)?night(?:\s+sky)?(?:\s+(?:with|full\s+of|dotted\s+with)"
                         r"\s+(?:twinkling\s+)?stars)?\b|\b(?:starry|starlit)\s+sky\b|\bsky\s+full\s+of\s+stars\b")),
    ("meadow", re.compile(r"\b(?:(?:green|grassy|lush)\s+)?(?:meadow|lawn|grassland)\b|\bfield\s+of\s+grass\b"
                          r"|\bgrassy\s+(?:field|ground|hill|park)\b|\bgrass\b")),
    ("brick", re.compile(r"\b(?:(?:red|old)\s+)?brick\s+wall\b|\bwall\s+of\s+(?:red\s+)?bricks\b|\bbrickwork\b"
                         r"|\bbricks?\b")),
    ("gradient", re.compile(rf"(?:\b(?:soft|smooth)\s+)?(?P<c>{_BG_COLOURS.pattern}|{_ANY_COLOUR})?\s*\bgradient"
                            rf"(?:\s+{_BG_NOUN})?\b|\bgradient\s+(?:of|in)\s+(?P<c2>{_BG_COLOURS.pattern})")),
    ("solid", re.compile(rf"(?:\b(?:plain|solid|flat|simple|uniform)\s+)?(?P<c>{_BG_COLOURS.pattern}|{_ANY_COLOUR})"
                         rf"\s+{_BG_NOUN}\b|\b{_BG_NOUN}\s+of\s+(?:solid\s+|plain\s+)?(?P<c2>{_BG_COLOURS.pattern})")),
]
_PAN_ADVERBS = r"(?:slowly|slow|gently|steadily|smoothly|quickly|fast|also|then|is|starts|begins)"
_PAN_TAIL = (r"(?:\s+(?:slowly|gently|steadily|smoothly|to|toward|towards|the|over|across))*"
             r"\s*(?P<d>left|right|up|down)?(?:wards?)?\b")
_PANS = [
    re.compile(rf"\b(?:camera|view|shot)\s+(?:{_PAN_ADVERBS}\s+){{0,2}}(?:pans|pan|panning|panned|moves|moving"
               rf"|sweeps|sweeping|tracks|tracking|glides|gliding|slides|sliding|drifts|drifting|trucks"
               rf"|trucking|turns|turning|tilts|tilt|tilting|tilted)\b{_PAN_TAIL}"),
    re.compile(rf"\b(?:pans|pan|panning|panned)\b{_PAN_TAIL}"),
]
_ZOOM_TAIL = r"(?:\s+(?:slowly|gently|steadily|smoothly))?\s+(?P<d>in|out|closer|back|away)\b"
_ZOOMS = [  # "zooms in" or "pulls back" said of the camera; "zoom in" alone; not "a ball zooms in from the left"
    re.compile(rf"\b(?:camera|view|shot|lens)\s+(?:{_PAN_ADVERBS}\s+){{0,2}}(?:zooms|zoom|zooming|zoomed|pushes"
               rf"|push|pushing|pulls|pull|pulling|dollies|dolly|dollying|moves|moving){_ZOOM_TAIL}"),
    re.compile(rf"\b(?:zooms|zoom|zooming|zoomed|dollies|dolly|dollying){_ZOOM_TAIL}"
               r"(?!\s+from\s+(?:the\s+)?(?:left|right|above|below|top|bottom|side|sides|behind)\b)"),
]
_ZOOM_WAY = {"in": "in", "closer": "in", "out": "out", "back": "out", "away": "out"}
_COUNT_WORD = r"\b(?P<n>one|two|three|1|2|3|a\s+pair\s+of|a\s+couple\s+of)\s+"
_COUNT = re.compile(_COUNT_WORD + r"(?:\w+\s+)?(?:objects|shapes|things|figures|items)\b")
_PLURAL_SHAPE = re.compile(_COUNT_WORD + r"(?:\w+\s+){0,3}?" + _alternation(_SHAPE_OF, plural="(?:s|es)"))
_CLAUSE_BREAK = re.compile(r"[,;:.!?]|\b(?:and|while|whereas|as|meanwhile|but|then|with|plus\s+a)\b")
_COUNT_VALUES = {"one": 1, "two": 2, "three": 3, "1": 1, "2": 2, "3": 3}
_NOT_BETWEEN = (r"(?!(?:s|secs?|seconds?|frames?|times|px|pixels|fps|and|or|to|of|the|for|over|in|on|at|by|with"
                r"|beside|next|near|between)\b)")  # "for 5 seconds beside two squares" asks for no five
_MANY = re.compile(r"(?<![\d:.])\b(?P<n>four|five|six|seven|eight|nine|ten|eleven|twelve|dozens?(?:\s+of)?|many"
                   r"|several|lots\s+of|[4-9]|[1-9]\d+)\s+(?:" + _NOT_BETWEEN + r"\w+\s+){0,3}?"
                   r"(?:(?:objects|shapes|things|figures|items)\b|" + _alternation(_SHAPE_OF, plural="(?:s|es)") + ")")


def _normalise(text: str) -> str:
    text = text.lower().replace("-", " ").replace("'", " ").replace("\u2019", " ")
    return re.sub(r"\s+", " ", text)


def _cut(text: str, match: re.Match) -> str:
    return text[:match.start()] + " " + text[match.end():]


def _take_pan(text: str) -> tuple[str | None, str]:
    for pattern in _PANS:
        match = pattern.search(text)
        if match:
            return match.group("d") or "any", _cut(text, match)
    return None, text


def _take_zoom(text: str) -> tuple[str | None, str]:
    for pattern in _ZOOMS:
        match = pattern.search(text)
        if match:
            return _ZOOM_WAY[match.group("d")], _cut(text, match)
    return None, text


def _background_colour(match: re.Match) -> str | None:
    words = next((w for w in (match.groupdict().get("c"), match.groupdict().get("c2")) if w), None)
    if words is None:
        return None
    words = re.sub(r"\s+", " ", words)
    if words in _BG_COLOUR_OF:
        return _BG_COLOUR_OF[words]
    return OBJECT_TO_BACKGROUND_COLOUR.get(_COLOUR_OF.get(words, words))


def _take_background(text: str) -> tuple[str | None, str | None, str]:
    """The earliest background phrase sets the background; every background phrase is cut out."""
    found = []
    for kind, pattern in _BACKGROUNDS:
        found += [(m.start(), kind, m) for m in pattern.finditer(text) if m.group().strip()]
    if not found:
        return None, None, text
    found.sort(key=lambda item: item[0])
    _, kind, first = found[0]
    colour = _background_colour(first) if kind in ("solid", "gradient") else None
    for _, _, match in sorted(found, key=lambda item: -item[0]):  # cut from the end so spans stay valid
        text = text[:match.start()] + " " + text[match.end():]
    return kind, colour, text


def _count_of(match: re.Match) -> int:
    """The number a _COUNT_WORD match names ("a pair of", "a couple of": 2)."""
    return _COUNT_VALUES.get(re.sub(r"\s+", " ", match.group("n")), 2)


def _take_count(text: str) -> tuple[int | None, str]:
    match = _COUNT.search(text)
    return (_count_of(match), _cut(text, match)) if match else (None, text)


def _motion(hits: list[tuple[str, str]]) -> str | None:
    """The motion named by a clause's motion words: a kind if any, else the combined direction."""
    kinds = [name for name, _ in hits if name in KIND_WORDS]
    if kinds:
        return kinds[0]
    vertical = next((name for name, _ in hits if name in ("up", "down")), None)
    horizontal = next((name for name, _ in hits if name in ("left", "right")), None)
    if vertical and horizontal:
        return f"{vertical}_{horizontal}"
    return vertical or horizontal


def _first(pattern: re.Pattern, lookup: dict[str, str], text: str) -> str | None:
    match = pattern.search(text)
    if not match:
        return None
    words = re.sub(r"\s+", " ", match.group())
    singular = (words, words[:-1], words[:-2])  # "square", "squares", "boxes"
    return next(lookup[w] for w in singular if w in lookup)


def _copies(clause: str) -> int:
    """How many alike objects a clause names: 2 for "two red circles", 1 for "a red circle"."""
    match = _PLURAL_SHAPE.search(clause)
    return _count_of(match) if match else 1


def _read_objects(text: str) -> list[ObjectSpec]:
    objects: list[ObjectSpec] = []
    motion_words: list[list[tuple[str, str]]] = []
    for clause in _CLAUSE_BREAK.split(text):
        colour, shape = _first(_COLOURS, _COLOUR_OF, clause), _first(_SHAPES, _SHAPE_OF, clause)
        hits = [(m.lastgroup, m.group()) for m in _MOTIONS.finditer(clause)]
        if colour or shape:
            alike = [ObjectSpec(colour, shape, _first(_SIZES, _SIZE_OF, clause)) for _ in range(_copies(clause))]
            objects += alike
            motion_words += [hits] * len(alike)
        elif objects:  # "... moves up and to the left": a clause of motion words continues the last object
            motion_words[-1] += hits
    for obj, hits in zip(objects, motion_words, strict=True):
        obj.motion = _motion(hits)
    return objects


def count_beyond(text: str, spec: PromptSpec | None = None) -> str | None:
    """What in a prompt asks for more objects than the world draws (one to three), if anything: a number word
    ("five", "12", "many"), or the number of objects it lists. `spec`: the prompt already parsed, if it was."""
    if not isinstance(text, str):
        return None
    if match := _MANY.search(_normalise(text)):
        return match.group("n")
    spec = spec or parse_prompt(text)
    return str(len(spec.objects)) if spec is not None and len(spec.objects) > 3 else None


def parse_prompt(text: str) -> PromptSpec | None:
    """Read colours, shapes, sizes, motions, background and camera pan and zoom from a prompt.

    Every caption of the grammar is read back exactly; other prompts are read best-effort, with None for
    whatever they do not say. Returns None when the prompt names nothing the world knows.
    """
    if not isinstance(text, str):
        return None
    normal = _normalise(text)
    zoom, normal = _take_zoom(normal)  # first: "the camera moves closer" is a zoom, not a pan
    pan, normal = _take_pan(normal)
    background, background_colour, normal = _take_background(normal)
    count, normal = _take_count(normal)
    objects = _read_objects(normal)
    if not objects and background is None and pan is None and zoom is None:
        return None
    return PromptSpec(objects, background, background_colour, pan, count or (len(objects) or None), zoom)
