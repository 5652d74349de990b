from types import SimpleNamespace

import numpy as np
import pytest

from kinema import world
from kinema.checkpoint import BUNDLED
from kinema.errors import KinemaError
from kinema.pipeline import Pipeline, Request
from kinema.probe import (
    OPPOSITE,
    PROBES,
    STARTS,
    STEER,
    counterfactual,
    drawn_shape,
    shape_words,
    steering,
    travel,
    word_gaps,
)
from kinema.world import OBJECT_COLOURS, Background, Obj, Scene, render


@pytest.mark.parametrize("attribute", ["colour", "shape", "motion", "background"])
def test_counterfactual_caption_differs_in_that_attribute_only(attribute):
    changed_any = 0
    for i, (_, scene) in enumerate(world.heldout_prompts(40, seed=1)):
        cf = counterfactual(scene, attribute)
        if cf is None:
            assert attribute == "motion" and scene.objects[0].motion not in OPPOSITE
            continue
        true = world.parse_prompt(world.caption(scene, np.random.default_rng(i)))
        other = world.parse_prompt(world.caption(cf, np.random.default_rng(i)))
        if attribute == "background":
            assert (true.background, true.background_colour) != (other.background, other.background_colour)
            assert true.objects == other.objects
        else:
            assert getattr(true.objects[0], attribute) != getattr(other.objects[0], attribute)
            for name in {"colour", "shape", "motion"} - {attribute}:
                assert getattr(true.objects[0], name) == getattr(other.objects[0], name)
            assert true.objects[1:] == other.objects[1:] and true.background == other.background
        changed_any += 1
    assert changed_any >= 20


def test_colour_change_picks_a_colour_no_other_object_has():
    scene = world.Scene([world.Obj("circle", "red", "small", "still", 0.3, 0.5),
                         world.Obj("square", "orange", "small", "still", 0.7, 0.5)], world.Background("solid", "navy"))
    assert counterfactual(scene, "colour").objects[0].colour == "yellow"


def test_every_probe_reports_its_clips(debug_pipe):
    gaps = word_gaps(debug_pipe, n=6)
    assert set(gaps) == set(PROBES)
    assert all(0.0 <= row["prefers"] <= 1.0 and np.isfinite(row["gap"]) for row in gaps.values())
    movers = sum(scene.objects[0].motion in OPPOSITE for _, scene in world.heldout_prompts(6, 0))
    assert gaps["colour"]["n"] == gaps["background"]["n"] == 6
    assert gaps["motion"]["n"] == gaps["motion, first frame given"]["n"] == movers
    # The debug DiT's text path starts at zero: every caption predicts alike, which is a coin flip, not a preference
    assert all(row["gap"] == 0.0 and row["prefers"] == 0.5 for row in gaps.values()), gaps


@pytest.mark.skipif(not (BUNDLED / "config.json").exists(), reason="needs the bundled model")
def test_bundled_model_reads_colour_and_background_words():
    gaps = word_gaps(Pipeline.load("kinema-small"), n=12)
    assert gaps["background"]["prefers"] >= 0.95 and gaps["background"]["gap"] > 10
    assert gaps["colour"]["prefers"] >= 0.8 and gaps["colour"]["gap"] > 2


@pytest.mark.skipif(not (BUNDLED / "config.json").exists(), reason="needs the bundled model")
def test_bundled_model_reads_direction_words_given_the_first_frame():
    # Session 16's kinema-small preferred the true direction word in 76% of the eval's clips; session 20's, which also
    # reads MiniLM's token embeddings, in 83% of the training probe's 48 (docs/MODEL.md).
    gaps = word_gaps(Pipeline.load("kinema-small"), n=12)
    assert gaps["motion, first frame given"]["prefers"] >= 0.8


def _moving(way: str, colour: str = "red", shape: str = "square") -> np.ndarray:
    """A world clip (16, 128, 128, 3) of one medium object leaving the middle the given way."""
    scene = Scene([Obj(shape, colour, "medium", way, 0.5, 0.5, speed=0.15)], Background("solid", "navy"))
    return render(scene, 128, 128, 16, 8)


@pytest.mark.parametrize("way", ["right", "left", "up", "down", "still"])
def test_travel_reads_which_way_an_object_went(way):
    assert travel(_moving(way), "red", 8) == way
    assert travel(_moving(way), "green", 8) == "lost"  # no green object to follow


class ScriptedPipe:
    """Stands in for a model: its 'video' is a world render of the asked object going the way `go` picks from
    the asked way and the first frame's object centre (x, y as frame fractions)."""

    cfg = SimpleNamespace(width=128, height=128, fps=8)

    def __init__(self, go):
        self.go = go

    def generate(self, request):
        return request

    def decode(self, request):
        colour, shape = request.prompt.split()[2:4]  # "a medium <colour> <shape> <motion> ..."
        asked = next(way for way, phrase in STEER.items() if phrase in request.prompt)
        if request.image is None:  # text to video: the model chooses the start, here the middle
            return _moving(self.go(asked, None), colour, shape)
        assert request.image.shape == (128, 128, 3)  # image to video: the still frame rides along
        ys, xs = np.nonzero(np.abs(request.image.astype(int) - OBJECT_COLOURS[colour]).sum(axis=-1) < 30)
        return _moving(self.go(asked, (xs.mean() / 128, ys.mean() / 128)), colour, shape)


def _from_the_start(asked, start):
    """What a model that reads the way off the start does: away from the nearer edge, as the world moves objects.
    With no start (text to video) it has nothing to read, and always goes right."""
    if start is None:
        return "right"
    x, y = start
    if abs(x - 0.5) >= abs(y - 0.5) and abs(x - 0.5) > 0.05:
        return "right" if x < 0.5 else "left"
    if abs(y - 0.5) > 0.05:
        return "down" if y < 0.5 else "up"
    return asked  # from the middle the start says nothing, so the words decide


@pytest.mark.parametrize("start", STARTS)
def test_steering_tells_a_model_that_obeys_the_words_from_one_that_ignores_them(start):
    obeys = steering(ScriptedPipe(lambda asked, start: asked), n=3, start=start)
    assert obeys["asked way"] == 1.0 and obeys["n"] == 3
    ignores = steering(ScriptedPipe(lambda asked, start: "right"), n=3, start=start)
    assert ignores["asked way"] == 0.25 and ignores["right"] == 1.0 and ignores["left"] == 0.0


def test_steering_against_the_start_catches_a_model_that_reads_the_start():
    assert steering(ScriptedPipe(_from_the_start), n=2)["asked way"] == 1.0  # from the middle it looks obedient
    assert steering(ScriptedPipe(_from_the_start), n=2, start="against")["asked way"] == 0.0
    assert steering(ScriptedPipe(_from_the_start), n=2, start="text")["asked way"] == 0.25  # no start to read
    with pytest.raises(KinemaError, match="steering start 'left' is not one of middle, against, text"):
        steering(ScriptedPipe(_from_the_start), start="left")


@pytest.mark.slow
@pytest.mark.skipif(not (BUNDLED / "config.json").exists(), reason="needs the bundled model")
@pytest.mark.parametrize("model", ["kinema-small", "kinema-small-fast"])
def test_bundled_models_let_direction_words_steer_image_to_video(model):
    # Session 20's kinema-small and its student go the asked way in 24 and 23 of 24 clips; session 16's models in 16 and
    # 18, the models before session 9 in 5 (a coin flip is 6).
    assert steering(Pipeline.load(model), n=6)["asked way"] >= 0.75


@pytest.mark.slow
@pytest.mark.skipif(not (BUNDLED / "config.json").exists(), reason="needs the bundled model")
@pytest.mark.parametrize("model", ["kinema-small", "kinema-small-fast"])
def test_bundled_models_steer_against_the_start(model):
    # From where training used to start objects going the other way, session 20's kinema-small and its student go the
    # asked way in 23 and 19 of 24 clips (21 and 17 from session 23's correlated noise); session 16's models, the first
    # trained on objects that may leave the frame, in 13; session 9's, which read the start, in 5.
    assert steering(Pipeline.load(model), n=6, start="against")["asked way"] >= 0.6


@pytest.mark.slow
@pytest.mark.skipif(not (BUNDLED / "config.json").exists(), reason="needs the bundled model")
@pytest.mark.parametrize("model", ["kinema-small", "kinema-small-fast"])
def test_bundled_models_let_direction_words_steer_text_to_video(model):
    # With no first frame the model places the object too. Session 20's models, which also read MiniLM's token
    # embeddings, went the asked way in 15 and 12 of 24 clips; session 17's student in 9 (a coin flip is 6).
    # Since session 23 both start from correlated noise, which keeps colour and count but favours an object that
    # stays put: 12 and 9 of these 24 clips (41% of 96 for the student, against 47% from independent noise).
    # Since session 27 the student's noise also drifts the asked way: 14 of 24.
    least = {"kinema-small": 0.4, "kinema-small-fast": 0.35}[model]
    assert steering(Pipeline.load(model), n=6, start="text")["asked way"] >= least


@pytest.mark.slow
@pytest.mark.skipif(not (BUNDLED / "config.json").exists(), reason="needs the bundled model")
def test_drifting_noise_sends_text_to_video_the_asked_way():
    # The default's starting noise drifts the way a lone object is asked to go (0.125 short sides a second, session
    # 27): on 96 clips it went the asked way in 69% against 40% from noise that stays in place; these 24: 14 and 9.
    pipe = Pipeline.load(None)
    assert pipe.resolve(Request("a red circle moves left")).noise_drift == 0.125
    drifting = steering(pipe, n=6, start="text")["asked way"]
    assert drifting >= 0.5 and drifting >= steering(pipe, n=6, start="text", noise_drift=0.0)["asked way"] + 0.15


class ScriptedStills:
    """Stands in for a model in text to image: its 'still' is a world render of one large object of the asked
    colour, in the shape `draw` picks from the asked shape, at a place set by the seed."""

    cfg = SimpleNamespace(width=128, height=128, fps=8)

    def __init__(self, draw):
        self.draw = draw

    def generate(self, request):
        return request

    def decode(self, request):
        assert request.frames == 1
        colour, shape = request.prompt.split()[2:4]  # "a large <colour> <shape> stays still ..."
        x = 0.35 + 0.1 * (request.seed % 3)
        scene = Scene([Obj(self.draw(shape), colour, "large", "still", x, 0.5)], Background("solid", "navy"))
        return render(scene, 128, 128, 1, 8)


def test_shape_words_tell_a_model_that_draws_the_word_from_one_that_draws_a_blob():
    obeys = shape_words(ScriptedStills(lambda asked: asked), n=3)
    assert obeys["asked shape"] == 1.0 and obeys["n"] == 3 and obeys["star"] == 1.0
    ignores = shape_words(ScriptedStills(lambda asked: "circle"), n=2)
    assert ignores["asked shape"] == 1 / len(world.SHAPES) and ignores["circle"] == 1.0 and ignores["heart"] == 0.0


def test_drawn_shape_reads_a_single_still_and_an_empty_one():
    heart = Scene([Obj("heart", "red", "large", "still", 0.5, 0.5)], Background("solid", "gray"))
    assert drawn_shape(render(heart, 128, 128, 1, 8), 8) == "heart"
    empty = Scene([], Background("solid", "gray"))
    assert drawn_shape(render(empty, 128, 128, 1, 8), 8) == "none"


@pytest.mark.skipif(not (BUNDLED / "config.json").exists(), reason="needs the bundled model")
@pytest.mark.xfail(strict=True, reason="the bundled models draw the seed's blob whatever the shape word: "
                   "9-25%, chance 12.5% (docs/MODEL.md, session 15); the DiT needs GPU-scale training to draw "
                   "a shape at every place")
def test_bundled_model_draws_the_asked_shape_in_text_to_image():
    assert shape_words(Pipeline.load(), n=2)["asked shape"] >= 0.5
