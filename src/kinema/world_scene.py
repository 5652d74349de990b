"""The procedural world's vocabulary, scene ground truth and scene sampling.

Geometry is measured in *short-side units* (su): 1 su is the frame's shorter side in pixels, so a scene
looks the same at 128x128, 224x128 or 128x224. Start positions are fractions of the frame (x of the width,
y of the height, y pointing down); motion is in su per second, so fps changes sampling, never speed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from kinema.errors import KinemaError

# Saturated or extreme object colours; every background colour stays far from all of them (the judge
# segments objects by colour distance to the background).
OBJECT_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "orange": (255, 140, 20),
    "yellow": (250, 220, 30),
    "green": (40, 190, 60),
    "blue": (35, 90, 235),
    "purple": (150, 50, 210),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
# Muted mid-tone background colours for solid and gradient backgrounds.
BACKGROUND_COLOURS: dict[str, tuple[int, int, int]] = {
    "gray": (125, 125, 130),
    "navy": (30, 40, 100),
    "forest": (35, 90, 50),
    "brown": (110, 72, 42),
    "beige": (190, 175, 140),
    "teal": (30, 110, 115),
}
GRADIENT_SPREAD = 0.2  # a gradient runs from 0.8x to 1.2x its base colour, top to bottom or reverse
TEXTURES = ("snow", "night", "meadow", "brick")
BACKGROUND_KINDS = ("solid", "gradient", *TEXTURES)

SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross", "heart", "ring")
# Shapes that look the same at every angle cannot visibly rotate.
ROUND_SHAPES = ("circle", "ring")
# Circumscribed diameter as a fraction of the short side.
SIZES: dict[str, float] = {"small": 0.15, "medium": 0.22, "large": 0.32}

DIRECTIONS: dict[str, tuple[float, float]] = {  # unit vectors in image coordinates (y down)
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
    "up_left": (-math.sqrt(0.5), -math.sqrt(0.5)),
    "up_right": (math.sqrt(0.5), -math.sqrt(0.5)),
    "down_left": (-math.sqrt(0.5), math.sqrt(0.5)),
    "down_right": (math.sqrt(0.5), math.sqrt(0.5)),
}
MOTIONS = ("still", *DIRECTIONS, "bounce", "rotate", "grow", "shrink")

# Compositional hold-out: these (colour, shape, motion) triples never occur in training scenes, while every
# colour, shape and motion in them does occur in other combinations.
HELDOUT: tuple[tuple[str, str, str], ...] = (
    ("red", "star", "rotate"),
    ("blue", "heart", "bounce"),
    ("yellow", "square", "left"),
    ("green", "triangle", "grow"),
    ("purple", "circle", "down"),
    ("orange", "cross", "up"),
    ("white", "diamond", "shrink"),
    ("black", "ring", "right"),
    ("red", "triangle", "up_right"),
    ("blue", "cross", "still"),
)

OBJECT_GAP = 0.04  # su kept between any two objects at every moment, so they never touch
EDGE_MARGIN = 0.01  # su kept between objects and the frame border
# Aspect ratios (width, height in su) that placement is checked against, covering 9:16 to 16:9 frames.
CHECKED_ASPECTS = ((1.0, 1.0), (1.78, 1.0), (1.0, 1.78))


@dataclass
class Obj:
    """One object: what it is, where it starts and how it moves."""

    shape: str
    colour: str
    size: str
    motion: str
    x: float  # start centre, fraction of the frame width
    y: float  # start centre, fraction of the frame height
    speed: float = 0.0  # su/s along DIRECTIONS[motion]
    angle: float = 0.0  # start orientation, degrees counter-clockwise
    spin: float = 0.0  # degrees/s, positive counter-clockwise
    rate: float = 0.0  # d(log scale)/dt: positive grows, negative shrinks
    bounce_height: float = 0.0  # su
    bounce_period: float = 1.0  # s between floor contacts

    @property
    def radius(self) -> float:
        """Circumradius at scale 1, in su."""
        return SIZES[self.size] / 2

    def offsets(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Displacement (dx, dy) in su from the start position at times t (seconds)."""
        zero = np.zeros_like(t, dtype=np.float64)
        if self.motion in DIRECTIONS:
            ux, uy = DIRECTIONS[self.motion]
            return ux * self.speed * t + zero, uy * self.speed * t + zero
        if self.motion == "bounce":
            return zero, -self.bounce_height * np.abs(np.sin(np.pi * t / self.bounce_period))
        return zero, zero.copy()

    def scale(self, t: np.ndarray) -> np.ndarray:
        return np.exp(self.rate * np.asarray(t, dtype=np.float64))

    def angles(self, t: np.ndarray) -> np.ndarray:
        return self.angle + self.spin * np.asarray(t, dtype=np.float64)


@dataclass
class Background:
    kind: str  # one of BACKGROUND_KINDS
    colour: str | None = None  # a BACKGROUND_COLOURS name for solid and gradient backgrounds
    texture_seed: int = 0  # where the flecks, stars, grass and bricks fall
    light_on_top: bool = True  # gradient direction


@dataclass
class Scene:
    """Structured ground truth of one clip; `to_dict` is JSON-serialisable."""

    objects: list[Obj]
    background: Background
    pan: float = 0.0  # camera speed in su/s: positive pans right (the world slides left in the frame)

    @property
    def pan_direction(self) -> str | None:
        return None if self.pan == 0 else ("right" if self.pan > 0 else "left")

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict) -> Scene:
        try:
            objects = [Obj(**o) for o in data["objects"]]
            return Scene(objects, Background(**data["background"]), float(data.get("pan", 0.0)))
        except (KeyError, TypeError) as err:
            raise KinemaError(f"not a scene description ({err}); use a dict made by Scene.to_dict") from err


def is_heldout(obj: Obj) -> bool:
    return (obj.colour, obj.shape, obj.motion) in HELDOUT


def _motion_parameters(obj: Obj, rng: np.random.Generator, duration: float) -> None:
    """Fill in speeds and rates so the motion is clearly visible within `duration` seconds."""
    if obj.motion in DIRECTIONS:
        obj.speed = float(rng.uniform(0.3, 0.45)) / duration
    elif obj.motion == "rotate":
        obj.spin = float(rng.uniform(90, 150) * rng.choice([-1, 1]))
        obj.angle = float(rng.uniform(0, 360))
    elif obj.motion in ("grow", "shrink"):
        factor = math.log(rng.uniform(1.6, 1.9)) / duration
        obj.rate = factor if obj.motion == "grow" else -factor
    elif obj.motion == "bounce":
        obj.bounce_height = float(rng.uniform(0.15, 0.25))
        obj.bounce_period = float(rng.uniform(0.6, 0.9))


def _start_range(obj: Obj, pan: float, t: np.ndarray,
                 stay_in_frame: bool = True) -> tuple[tuple[float, float], tuple[float, float]]:
    """Start positions (as frame fractions) that keep the object inside the frame for all of t.

    Checked in su on a square frame; a wider or taller frame only adds room, because frame fractions
    stretch with the frame while motion in su does not. stay_in_frame=False places a moving object as if it
    stood still, so it may glide out of the frame: its start no longer tells which way it goes.
    """
    dx, dy = obj.offsets(t)
    if not stay_in_frame and obj.motion in DIRECTIONS:
        dx, dy = np.zeros_like(dx), np.zeros_like(dy)
    dx = dx - pan * t
    reach = obj.radius * obj.scale(t) + EDGE_MARGIN
    x_range = (float(np.max(reach - dx)), float(np.min(1 - reach - dx)))
    y_range = (float(np.max(reach - dy)), float(np.min(1 - reach - dy)))
    return x_range, y_range


def _apart(a: Obj, b: Obj, t: np.ndarray) -> bool:
    """Whether two objects keep OBJECT_GAP between them at all times t, on every checked aspect."""
    ax, ay = a.offsets(t)
    bx, by = b.offsets(t)
    need = (a.radius * a.scale(t) + b.radius * b.scale(t)) + OBJECT_GAP
    for width, height in CHECKED_ASPECTS:
        gap_x = (a.x - b.x) * width + ax - bx
        gap_y = (a.y - b.y) * height + ay - by
        if np.any(np.hypot(gap_x, gap_y) < need):
            return False
    return True


COUNT_ODDS = {1: 0.5, 2: 0.3, 3: 0.2}  # how often a scene holds 1, 2 or 3 objects
BACKGROUND_ODDS = {"solid": 0.3, "gradient": 0.3, "texture": 0.4}  # the textures share theirs equally
MIX_WORDS = {"objects": tuple(COUNT_ODDS), "colours": tuple(OBJECT_COLOURS), "shapes": SHAPES, "sizes": tuple(SIZES),
             "motions": MOTIONS, "backgrounds": BACKGROUND_KINDS}  # what a SceneMix may allow, in the world's order


@dataclass(frozen=True)
class SceneMix:
    """Which scenes `sample_scene` draws. The defaults are the whole world; a narrower mix (one object, only the
    directions, plain backgrounds...) makes a curriculum for the words a model has not learnt yet. Each tuple
    lists the allowed words (order does not matter); what is allowed keeps the world's odds among itself."""

    objects: tuple[int, ...] = (1, 2, 3)
    colours: tuple[str, ...] = tuple(OBJECT_COLOURS)
    shapes: tuple[str, ...] = SHAPES
    sizes: tuple[str, ...] = tuple(SIZES)
    motions: tuple[str, ...] = MOTIONS
    backgrounds: tuple[str, ...] = BACKGROUND_KINDS
    pan: bool = True  # textured backgrounds may pan
    # False lets objects that move in a straight line leave the frame (training data only: in frame, an object
    # moving right must start in the left part, so a given first frame tells the direction and the model learns
    # to ignore the words; the judge and the hold-out keep every object in frame).
    stay_in_frame: bool = True

    def __post_init__(self) -> None:
        for name, known in MIX_WORDS.items():
            given = getattr(self, name)
            unknown = [word for word in given if word not in known]
            if unknown or not given:
                problem = f"unknown {unknown[0]!r}" if unknown else "empty"
                words = ", ".join(map(str, known))
                raise KinemaError(f"scene mix {name} = {list(given)}: {problem}; use some of {words}")
        if len(self.colours) < max(self.objects):
            raise KinemaError(f"scene mix: {max(self.objects)} objects need as many colours (each object has its "
                              f"own), got {len(self.colours)}; allow more colours or fewer objects")
        if not any(not is_heldout(Obj(shape, colour, "small", motion, 0, 0))
                   for shape in self.shapes for motion in self.motions_for(shape) for colour in self.colours):
            raise KinemaError("scene mix: every allowed colour, shape and motion is a hold-out triple or a round "
                              "shape rotating; allow more colours, shapes or motions")

    def allowed(self, name: str) -> tuple:
        """The allowed words of one MIX_WORDS list, in the world's order (so the same draws for any order)."""
        return tuple(word for word in MIX_WORDS[name] if word in getattr(self, name))

    def motions_for(self, shape: str) -> list[str]:
        """The allowed motions that show on `shape` (a round shape cannot visibly rotate)."""
        return [m for m in self.allowed("motions") if not (m == "rotate" and shape in ROUND_SHAPES)]

    def describe(self) -> str:
        """What sets this mix apart from the whole world ("" for the whole world), for cache fingerprints."""
        narrowed = "".join(f" {name}={self.allowed(name)}" for name in MIX_WORDS
                           if self.allowed(name) != MIX_WORDS[name])
        return ("" if self.stay_in_frame else " leaving the frame") + ("" if self.pan else " no pan") + narrowed


WHOLE_WORLD = SceneMix()


def _sample_object(rng: np.random.Generator, colours: list[str], triple: tuple[str, str, str] | None,
                   holdout_ok: bool, mix: SceneMix) -> Obj:
    shapes = [s for s in mix.allowed("shapes") if mix.motions_for(s)]
    sizes = mix.allowed("sizes")
    while True:
        if triple is not None:
            colour, shape, motion = triple
        else:
            colour = str(rng.choice(colours))
            shape = str(rng.choice(shapes))
            motion = str(rng.choice(mix.motions_for(shape)))
        obj = Obj(shape, colour, str(rng.choice(sizes)), motion, 0.5, 0.5)
        if holdout_ok or not is_heldout(obj):
            return obj


def _sample_background(rng: np.random.Generator, duration: float, mix: SceneMix) -> tuple[Background, float]:
    draw = rng.uniform()
    seed = int(rng.integers(0, 2**31 - 1))
    textures = [t for t in mix.allowed("backgrounds") if t in TEXTURES]
    odds = {"solid": BACKGROUND_ODDS["solid"] * ("solid" in mix.backgrounds),
            "gradient": BACKGROUND_ODDS["gradient"] * ("gradient" in mix.backgrounds),
            "texture": BACKGROUND_ODDS["texture"] * len(textures) / len(TEXTURES)}
    draw *= sum(odds.values())  # the allowed kinds keep their odds among themselves
    if draw < odds["solid"]:
        return Background("solid", str(rng.choice(list(BACKGROUND_COLOURS))), seed), 0.0
    if draw < odds["solid"] + odds["gradient"]:
        colour = str(rng.choice(list(BACKGROUND_COLOURS)))
        return Background("gradient", colour, seed, bool(rng.uniform() < 0.5)), 0.0
    # Only a textured background shows a camera pan, so only those pan; 0.3-0.5 su over the clip.
    pan = float(rng.uniform(0.3, 0.5) / duration * rng.choice([-1, 1])) if mix.pan and rng.uniform() < 0.5 else 0.0
    return Background(str(rng.choice(textures)), None, seed), pan


def _place(obj: Obj, placed: list[Obj], pan: float, t: np.ndarray, rng: np.random.Generator,
           stay_in_frame: bool = True) -> bool:
    (x_lo, x_hi), (y_lo, y_hi) = _start_range(obj, pan, t, stay_in_frame)
    if x_lo > x_hi or y_lo > y_hi:
        return False
    for _ in range(30):
        obj.x, obj.y = float(rng.uniform(x_lo, x_hi)), float(rng.uniform(y_lo, y_hi))
        if all(_apart(obj, other, t) for other in placed):
            return True
    return False


SCENE_TRIES = 1000  # scenes drawn before a mix whose objects cannot be placed is reported


def sample_scene(rng: np.random.Generator, holdout: bool = False, duration: float = 2.0,
                 mix: SceneMix = WHOLE_WORLD) -> Scene:
    """A random scene of `mix` (the whole world by default) whose objects stay apart, clearly moving for
    `duration` seconds and, unless the mix lets them leave, in frame.

    holdout=False never produces an object matching a HELDOUT triple; holdout=True makes the first
    object a HELDOUT triple (the others are ordinary objects of the mix).
    """
    if duration <= 0:
        raise KinemaError(f"scene duration must be positive, got {duration}; pass seconds > 0")
    t = np.linspace(0.0, duration, 25)
    counts = mix.allowed("objects")
    odds = [COUNT_ODDS[c] for c in counts]
    for _ in range(SCENE_TRIES):
        count = int(rng.choice(counts, p=[o / sum(odds) for o in odds]))
        background, pan = _sample_background(rng, duration, mix)
        colours = list(mix.allowed("colours"))
        placed: list[Obj] = []
        for index in range(count):
            triple = HELDOUT[int(rng.integers(len(HELDOUT)))] if holdout and index == 0 else None
            for _ in range(20):
                obj = _sample_object(rng, colours, triple, triple is not None, mix)
                _motion_parameters(obj, rng, duration)
                if _place(obj, placed, pan, t, rng, mix.stay_in_frame):
                    placed.append(obj)
                    colours = [c for c in colours if c != obj.colour]
                    break
        if len(placed) == count:
            return Scene(placed, background, pan)
    raise KinemaError(f"scene mix: no scene of {max(mix.objects)} object(s) of sizes {list(mix.sizes)} fits the frame "
                      f"in {SCENE_TRIES} tries; allow fewer objects or smaller sizes")
