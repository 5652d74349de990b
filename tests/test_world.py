import json
import time

import numpy as np
import pytest

from kinema import world, world_scene
from kinema.errors import KinemaError
from kinema.world import (
    BACKGROUND_KINDS,
    HELDOUT,
    MOTIONS,
    OBJECT_COLOURS,
    SHAPES,
    Background,
    Obj,
    Scene,
    SceneMix,
    caption,
    parse_prompt,
    render,
    sample_scene,
    spec_of,
)
from kinema.world_scene import CHECKED_ASPECTS


def _scenes(count, seed=0, **kwargs):
    rng = np.random.default_rng(seed)
    return [sample_scene(rng, **kwargs) for _ in range(count)]


def _mask(frame, colour):
    """Pixels at least half covered by an object colour (objects are drawn exactly in their colour)."""
    return np.abs(frame.astype(int) - OBJECT_COLOURS[colour]).sum(axis=-1) < 30


def test_same_seed_same_scene_caption_and_pixels():
    first, second = np.random.default_rng(7), np.random.default_rng(7)
    a, b = sample_scene(first), sample_scene(second)
    assert a.to_dict() == b.to_dict()
    assert caption(a, first) == caption(b, second)
    assert np.array_equal(render(a, 128, 128, 17, 8), render(b, 128, 128, 17, 8))
    others = _scenes(5, seed=8)
    assert all(o.to_dict() != a.to_dict() for o in others)


@pytest.mark.parametrize("width,height,frames", [(128, 128, 17), (224, 128, 9), (128, 224, 5), (176, 128, 1),
                                                 (40, 24, 33)])
def test_render_honours_size_and_frame_count(width, height, frames):
    for scene in _scenes(3, seed=width + frames):
        video = render(scene, width, height, frames, 8.0)
        assert video.shape == (frames, height, width, 3) and video.dtype == np.uint8


def test_fps_changes_sampling_not_speed():
    for scene in _scenes(6, seed=3):
        slow = render(scene, 128, 128, 9, 4.0)
        fast = render(scene, 128, 128, 17, 8.0)
        assert np.array_equal(slow, fast[::2])  # the same instants, whatever the frame rate


@pytest.mark.parametrize("motion,axis,sign", [("right", 1, 1), ("down", 0, 1), ("up_left", 0, -1)])
def test_motion_speed_is_per_second_in_short_side_units(motion, axis, sign):
    obj = Obj("square", "red", "medium", motion, 0.5, 0.5, speed=0.2)
    expected = sign * 0.2 * 2.0 * 128 * (np.sqrt(0.5) if "_" in motion else 1)  # 2 s at 0.2 su/s; 1 su = 128 px
    for width, height in ((128, 128), (224, 128), (128, 224)):
        obj.x, obj.y = 0.5 - 0.2 * sign * (axis == 1), 0.5 - 0.2 * sign * (axis == 0)
        video = render(Scene([obj], Background("solid", "gray")), width, height, 17, 8.0)
        moved = [np.nonzero(_mask(frame, "red"))[axis].mean() for frame in video[[0, 16]]]
        assert moved[1] - moved[0] == pytest.approx(expected, abs=1.0)


def test_shapes_keep_their_proportions_on_every_aspect():
    for width, height in ((128, 128), (224, 128), (128, 224)):
        scene = Scene([Obj("circle", "blue", "large", "still", 0.5, 0.5)], Background("gradient", "beige"))
        ys, xs = np.nonzero(_mask(render(scene, width, height, 1, 8.0)[0], "blue"))
        assert np.ptp(xs) == np.ptp(ys) and np.ptp(xs) + 1 == pytest.approx(0.32 * 128, abs=1.5)


def test_camera_pan_slides_everything_including_the_texture():
    # 0.25 su/s at 8 fps on a 128 px short side is exactly 4 px per frame.
    obj = Obj("star", "yellow", "medium", "still", 0.5, 0.5)
    video = render(Scene([obj], Background("meadow", None, 5), pan=0.25), 160, 128, 3, 8.0)
    assert np.array_equal(video[1][:, :-4], video[0][:, 4:])
    assert not np.array_equal(video[1], video[0])


def test_objects_stay_in_frame_and_apart_for_the_sampled_duration():
    t = np.linspace(0, 2.0, 17)
    for scene in _scenes(150, seed=11):
        for width, height in CHECKED_ASPECTS:
            centres = []
            for obj in scene.objects:
                dx, dy = obj.offsets(t)
                x = obj.x * width + dx - scene.pan * t
                y = obj.y * height + dy
                radius = obj.radius * obj.scale(t)
                assert np.all(x - radius >= 0) and np.all(x + radius <= width)
                assert np.all(y - radius >= 0) and np.all(y + radius <= height)
                centres.append((x, y, radius))
            for i, (xa, ya, ra) in enumerate(centres):
                for xb, yb, rb in centres[i + 1:]:
                    assert np.all(np.hypot(xa - xb, ya - yb) > ra + rb)


def test_a_scene_mix_draws_only_what_it_allows_at_the_worlds_odds():
    mix = SceneMix(objects=(2, 3), colours=("red", "blue", "white"), shapes=("star", "ring"), sizes=("small",),
                   motions=("rotate", "up"), backgrounds=("gradient", "snow"), pan=False)
    scenes = _scenes(300, seed=3, mix=mix)
    objects = [obj for scene in scenes for obj in scene.objects]
    assert {obj.colour for obj in objects} == {"red", "blue", "white"}
    assert {(obj.shape, obj.motion) for obj in objects} == {("star", "rotate"), ("star", "up"), ("ring", "up")}
    assert {obj.size for obj in objects} == {"small"}
    assert {scene.background.kind for scene in scenes} == {"gradient", "snow"}
    assert all(scene.pan == 0 for scene in scenes)
    twos = np.mean([len(scene.objects) == 2 for scene in scenes])
    assert 0.5 < twos < 0.7  # the world's 3:2 odds of two objects to three
    gradients = np.mean([scene.background.kind == "gradient" for scene in scenes])
    assert 0.6 < gradients < 0.8  # gradient 0.3 against one of four textures' 0.4 / 4: 75%


def test_the_default_mix_is_the_whole_world():
    a, b = _scenes(50, seed=8), _scenes(50, seed=8, mix=SceneMix(shapes=tuple(reversed(SHAPES))))
    assert [s.to_dict() for s in a] == [s.to_dict() for s in b]  # the order of a mix's words does not matter
    assert SceneMix().describe() == ""


@pytest.mark.parametrize("kwargs, message", [
    ({"colours": ("pink",)}, "colours = \\['pink'\\]: unknown 'pink'; use some of red"),
    ({"objects": ()}, "objects = \\[\\]: empty"),
    ({"objects": (3,), "colours": ("red", "blue")}, "3 objects need as many colours"),
    ({"objects": (1,), "colours": ("red",), "shapes": ("star",), "motions": ("rotate",)},
     "every allowed colour, shape and motion"),
    ({"shapes": ("circle",), "motions": ("rotate",)}, "every allowed colour, shape and motion"),
])
def test_a_scene_mix_that_cannot_draw_a_scene_is_refused(kwargs, message):
    with pytest.raises(KinemaError, match=message):
        SceneMix(**kwargs)


def test_a_scene_mix_whose_objects_never_fit_says_so(monkeypatch):
    monkeypatch.setattr(world_scene, "SCENE_TRIES", 50)  # the real 1000 take 20 s to give up
    mix = SceneMix(objects=(3,), sizes=("large",), motions=("grow",))
    with pytest.raises(KinemaError, match="fits the frame in 50 tries; allow fewer objects or smaller sizes"):
        sample_scene(np.random.default_rng(0), duration=2.0, mix=mix)


def _side_shares(scenes):
    """Of the objects moving right and left: the share that starts in the right half of the frame."""
    starts = {"right": [], "left": []}
    for scene in scenes:
        for obj in scene.objects:
            if obj.motion in starts:
                starts[obj.motion].append(obj.x > 0.5)
    return {way: float(np.mean(flags)) for way, flags in starts.items()}


def test_in_frame_starts_give_the_direction_away_and_free_starts_do_not():
    kept = _side_shares(_scenes(600, seed=5))
    assert kept["right"] < 0.2 and kept["left"] > 0.8  # the first frame nearly tells the direction
    free = _scenes(600, seed=5, mix=SceneMix(stay_in_frame=False))
    shares = _side_shares(free)
    assert 0.35 < shares["right"] < 0.65 and 0.35 < shares["left"] < 0.65
    leaving = [obj for scene in free for obj in scene.objects if obj.motion in ("right", "left")
               and not 0 <= obj.x + obj.offsets(np.array([2.0]))[0][0] <= 1]
    assert leaving  # some centres end outside the (square) frame
    scene = next(scene for scene in free if any(obj in leaving for obj in scene.objects))
    video = render(scene, 128, 128, 17, 8.0)  # renders the object as it slides out
    colour = next(obj for obj in scene.objects if obj in leaving).colour
    assert _mask(video[0], colour).sum() > _mask(video[-1], colour).sum()


def test_scene_vocabulary_is_covered_and_colours_are_distinct_per_scene():
    scenes = _scenes(600, seed=2)
    objects = [o for s in scenes for o in s.objects]
    assert {o.shape for o in objects} == set(SHAPES) and {o.motion for o in objects} == set(MOTIONS)
    assert {o.colour for o in objects} == set(OBJECT_COLOURS)
    assert {s.background.kind for s in scenes} == set(BACKGROUND_KINDS)
    assert {len(s.objects) for s in scenes} == {1, 2, 3}
    assert {s.pan_direction for s in scenes} == {None, "left", "right"}
    for scene in scenes:
        assert len({o.colour for o in scene.objects}) == len(scene.objects)
        assert scene.pan == 0 or scene.background.kind not in ("solid", "gradient")  # pans need texture
    assert not any(o.motion == "rotate" and o.shape in ("circle", "ring") for o in objects)


def test_backgrounds_stay_far_from_object_colours():
    palette = np.array(list(OBJECT_COLOURS.values()), float)
    for kind in BACKGROUND_KINDS:
        for colour in (world.BACKGROUND_COLOURS if kind in ("solid", "gradient") else [None]):
            for light_on_top in (True, False):
                frame = render(Scene([], Background(kind, colour, 4, light_on_top)), 96, 96, 1, 8.0)[0]
                nearest = np.linalg.norm(frame[..., None, :].astype(float) - palette, axis=-1).min(axis=-1)
                # Snow flecks and stars are deliberately bright specks; everything else keeps its distance.
                assert np.mean(nearest > 55) > 0.95, (kind, colour)


def test_training_never_samples_a_heldout_triple_but_sees_all_its_pairs():
    objects = [o for s in _scenes(1500, seed=5) for o in s.objects]
    triples = {(o.colour, o.shape, o.motion) for o in objects}
    assert not triples & set(HELDOUT)
    for colour, shape, motion in HELDOUT:  # every pair of a held-out triple occurs in training
        assert any(c == colour and s == shape for c, s, _ in triples)
        assert any(s == shape and m == motion for _, s, m in triples)
        assert any(c == colour and m == motion for c, _, m in triples)
    held = _scenes(200, seed=6, holdout=True)
    assert all(world.is_heldout(s.objects[0]) for s in held)
    assert {(o.colour, o.shape, o.motion) for o in (s.objects[0] for s in held)} == set(HELDOUT)


def test_prompt_lists():
    train, held = world.train_prompts(40, seed=1), world.heldout_prompts(40, seed=1)
    assert len(train) == len(held) == 40 and train == world.train_prompts(40, seed=1)
    assert not any(world.is_heldout(o) for _, s in train for o in s.objects)
    for text, scene in held:
        assert world.is_heldout(scene.objects[0]) and parse_prompt(text).objects[0].colour == scene.objects[0].colour


def _recovers(text, scene):
    parsed, truth = parse_prompt(text), spec_of(scene)
    if parsed is None or len(parsed.objects) != len(truth.objects):
        return False
    same_scene = (parsed.background, parsed.background_colour, parsed.pan, parsed.count) == (
        truth.background, truth.background_colour, truth.pan, truth.count)
    same_objects = all(
        (p.colour, p.shape, p.motion) == (t.colour, t.shape, t.motion)
        and (p.size == t.size or (p.size is None and t.size == "medium"))  # "medium" may go unsaid
        for p, t in zip(parsed.objects, truth.objects, strict=True))
    return same_scene and same_objects


def test_caption_parse_round_trip_recovers_ground_truth():
    rng = np.random.default_rng(21)
    pairs = [(caption(s, rng), s) for s in _scenes(500, seed=20)]
    assert np.mean([_recovers(text, scene) for text, scene in pairs]) >= 0.99


def test_captions_vary():
    rng = np.random.default_rng(0)
    scene = _scenes(1, seed=30)[0]
    texts = [caption(scene, rng) for _ in range(100)]
    assert len(set(texts)) > 80
    words = " ".join(caption(s, rng) for s in _scenes(300, seed=31)).lower()
    for synonym in ("crimson", "disc", "tiny", "huge", "spins", "gradient", "snowy", "camera", "while"):
        assert synonym in words


def test_parse_free_prompts_best_effort():
    spec = parse_prompt("a red ball bounces across a snowy street, camera slowly panning")
    assert (spec.objects[0].colour, spec.objects[0].shape, spec.objects[0].motion) == ("red", "circle", "bounce")
    assert spec.background == "snow" and spec.pan == "any"
    spec = parse_prompt("A Blue square moves up-right and a tiny black heart spins, over a navy gradient")
    assert [(o.colour, o.shape, o.motion) for o in spec.objects] == [("blue", "square", "up_right"),
                                                                      ("black", "heart", "rotate")]
    assert spec.objects[1].size == "small" and (spec.background, spec.background_colour) == ("gradient", "navy")
    spec = parse_prompt("stars twinkle over a night sky with stars as the camera pans to the left")
    assert spec.background == "night" and spec.pan == "left"
    assert parse_prompt("a cat sleeping on a sofa") is None and parse_prompt("") is None


@pytest.mark.parametrize("prompt,pan,motion", [
    ("a red ball, the camera pans up", "up", None),  # "up" is the camera's, not the ball's
    ("a red ball moves up while the camera pans left", "left", "up"),
    ("a green square as the camera tilts downward", "down", None),
    ("a red ball moves up", None, "up"),
])
def test_the_camera_may_pan_up_or_down_though_the_world_pans_sideways(prompt, pan, motion):
    spec = parse_prompt(prompt)
    assert (spec.pan, spec.objects[0].motion) == (pan, motion)


def test_parse_counts_alike_objects_named_in_the_plural():
    spec = parse_prompt("two red circles fall over a navy background")
    assert [(o.colour, o.shape, o.motion) for o in spec.objects] == [("red", "circle", "down")] * 2
    assert spec.count == 2
    spec = parse_prompt("a blue star and a pair of tiny green hearts move left")
    assert [(o.colour, o.shape, o.size) for o in spec.objects] == [("blue", "star", None),
                                                                    *[("green", "heart", "small")] * 2]
    assert spec.count == 3 and spec.objects[2].motion == "left"
    assert parse_prompt("two red circle").count == 1  # no plural: the number is not about this shape


def test_parse_never_crashes():
    rng = np.random.default_rng(3)
    vocabulary = "a the red blue big star ring moves left up and , : while camera pans snowy gradient of 2 " \
                 "objects over navy plus sign spins - ! ' grows bigger rises toward lower right".split(" ")
    for _ in range(300):
        text = " ".join(rng.choice(vocabulary, size=int(rng.integers(0, 15))))
        parse_prompt(text)
    assert parse_prompt(None) is None


def test_scene_dict_round_trips_through_json():
    for scene in _scenes(5, seed=9):
        again = Scene.from_dict(json.loads(json.dumps(scene.to_dict())))
        assert again == scene
    with pytest.raises(KinemaError):
        Scene.from_dict({"objects": [{"shape": "circle"}]})


def test_bad_render_arguments_are_user_errors():
    scene = _scenes(1)[0]
    for args in ((8, 128, 17, 8.0), (128, 128, 0, 8.0), (128, 128, 17, 0.0)):
        with pytest.raises(KinemaError):
            render(scene, *args)
    with pytest.raises(KinemaError):
        sample_scene(np.random.default_rng(0), duration=0)


def test_render_is_fast():
    scenes = _scenes(10, seed=40)
    start = time.perf_counter()
    for scene in scenes:
        render(scene, 128, 128, 17, 8.0)
    assert (time.perf_counter() - start) / len(scenes) < 0.25  # ~15 ms unloaded; generous for shared CPUs
