import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kinema.checkpoint import BUNDLED
from kinema.errors import KinemaError
from kinema.pipeline import Request
from kinema.prompting import (
    FALLBACK_NOTE,
    GIVEN_LOOKS,
    Rewriter,
    asked_camera,
    asked_direction,
    expand_builtin,
    expansion_note,
    system_prompt,
)
from kinema.world import parse_prompt


@pytest.mark.parametrize("prompt", ["a red ball", "a blue star spins", "a large green square on a snowy field",
                                    "a small red circle moves to the right over a dark blue gradient"])
def test_builtin_rewriter_keeps_what_is_said_and_fills_in_the_rest(prompt):
    expanded = expand_builtin(prompt)
    asked, got = parse_prompt(prompt), parse_prompt(expanded)
    defaults = {"colour": None, "shape": "circle", "size": "medium", "motion": "still"}  # captions may omit medium
    for field, default in defaults.items():
        said = getattr(asked.objects[0], field) or default
        assert (getattr(got.objects[0], field) or default) == said
    assert got.background == (asked.background or "solid")
    assert expand_builtin(prompt) == expanded  # deterministic


def test_builtin_rewriter_fills_the_example_and_passes_unknown_prompts_through():
    spec = parse_prompt(expand_builtin("a red ball"))
    assert (spec.objects[0].colour, spec.objects[0].shape, spec.objects[0].size, spec.objects[0].motion) == (
        "red", "circle", "medium", "still")
    assert (spec.background, spec.background_colour) == ("solid", "gray")
    assert expand_builtin("a cat playing piano") == "a cat playing piano"


@pytest.mark.parametrize("mode", sorted(GIVEN_LOOKS))
def test_modes_with_given_frames_add_nothing_the_prompt_leaves_out(mode):
    # the audit's edit: 'a moderately sized blue disc gliding right over a slate gray backdrop' grayed a navy clip
    spec = parse_prompt(expand_builtin("a blue circle moves right", mode=mode))
    assert (spec.background, spec.background_colour, spec.pan) == (None, None, None)
    assert [(o.colour, o.shape, o.size, o.motion) for o in spec.objects] == [("blue", "circle", None, "right")]
    named = parse_prompt(expand_builtin("a big ball spins over a dark blue gradient", mode=mode))  # said: kept
    assert (named.objects[0].size, named.objects[0].colour, named.background_colour) == ("large", None, "navy")
    # an image fixes how the scene looks, not how it moves: only there is an unsaid motion still made still
    still = parse_prompt(expand_builtin("a red ball", mode=mode)).objects[0].motion
    assert still == ("still" if mode == "i2v" else None)


@pytest.mark.parametrize("mode", ["t2v", "loop", "sequence"])
def test_text_only_modes_fill_in_the_rest(mode):
    spec = parse_prompt(expand_builtin("a blue circle moves right", mode=mode))
    assert (spec.background, spec.background_colour, spec.objects[0].size) == ("solid", "gray", "medium")


@pytest.mark.parametrize("prompt", ["a red square turns blue", "a red ball explodes", "an exploding red ball",
                                    "a blue star melts on a snowy field", "a red circle cut in two",
                                    "a red square, dim"])  # "cut", "dim": no stems of the grammar's slot names
def test_a_change_the_world_has_no_word_for_is_not_made_still(prompt):
    spec = parse_prompt(expand_builtin(prompt))  # was "... hovers motionless", "... rests in place"
    assert spec.objects[0].motion is None and spec.objects[0].size == "medium" and spec.background is not None


@pytest.mark.parametrize("prompt", ["a red ball", "two big red squares on a snowy field",
                                    "a red ball, the camera pans left", "video of a tiny blue heart over a brick wall"])
def test_a_prompt_that_says_nothing_of_change_is_drawn_still(prompt):
    assert {o.motion for o in parse_prompt(expand_builtin(prompt)).objects} == {"still"}


def test_the_note_names_the_switch_and_shortens_a_long_prompt():
    note = expansion_note("a red ball", "a red ball stands still over a gray background")
    assert note == ("prompt 'a red ball' drawn as 'a red ball stands still over a gray background', the caption style "
                    "the model was trained on; turn prompt expansion off (--no-expand; the API's expand=false; the "
                    "page's Prompt expansion) to draw it as written")
    long = expansion_note("a red ball bounces " * 580, "a red ball bounces")  # the audit's 11,000 characters
    assert len(long) < 400 and "prompt 'a red ball bounces a red ball" in long and "…' drawn as" in long
    assert expansion_note("a red ball", "a big red ball " * 50).count("a big red ball") == 8  # 120 characters


@pytest.mark.parametrize(("prompt", "direction"), [
    ("a red circle moves to the left", (-1.0, 0.0)),
    ("a small crimson disc sinks over a dark blue gradient", (0.0, 1.0)),
    ("a green heart drifts up and to the right", (0.5**0.5, -(0.5**0.5))),
    ("a red circle moves left while a blue square stands still", None),  # two objects: drift merges them
    ("two red circles fall", None),
    ("a red circle and a blue square move left", None),
    ("two objects, a red circle and a blue square, move left", None),
    ("a blue star spins", None),
    ("a dog runs to the left", None),  # no object the world knows
])
def test_asked_direction_is_the_way_a_lone_object_travels(prompt, direction):
    assert asked_direction(prompt) == (None if direction is None else pytest.approx(direction))


@pytest.mark.parametrize("prompt,pan,zoom", [
    ("a red circle over a snowy field while the camera pans left", (-1, 0), None),
    ("As the camera pans to the right, a blue star spins", (1, 0), None),
    ("a red ball bounces across a snowy street, camera slowly panning", (1, 0), None),  # the way not said: right
    ("the camera tilts up over a brick wall", (0, -1), None),
    ("a red circle moves left", None, None),  # the object moves; the camera stays
    ("the camera slowly zooms in on a yellow star", None, "in"),
    ("zoom out from a red star", None, "out"),
    ("a blue heart spins as the camera pulls back", None, "out"),
    ("the camera moves closer to a green square", None, "in"),  # not a pan
    ("the camera pans left and zooms in on a brick wall", (-1, 0), "in"),
    ("a red ball zooms in from the left", None, None),  # the ball is quick; the camera stays
])
def test_asked_camera_is_how_the_camera_pans_and_zooms(prompt, pan, zoom):
    assert asked_camera(prompt) == (pan, zoom)


def test_a_zoom_leaves_the_caption_the_model_reads():
    spec = parse_prompt("the camera zooms in on a red ball that moves left")
    assert (spec.zoom, spec.objects[0].colour, spec.objects[0].motion) == ("in", "red", "left")
    assert "zoom" not in expand_builtin("the camera zooms in on a red ball that moves left")  # the world has no zoom


def test_a_pan_the_pipeline_makes_from_a_given_frame_leaves_the_caption():
    prompt = "a red ball moves left over a brick wall, the camera pans right"
    kept, left_out = expand_builtin(prompt), expand_builtin(prompt, still_camera=True)
    assert parse_prompt(kept).pan == "right" and parse_prompt(left_out).pan is None
    assert parse_prompt(left_out).objects[0].motion == "left" and parse_prompt(left_out).background == "brick"
    assert Rewriter().expand(prompt, still_camera=True) == left_out


class FakeChat(BaseHTTPRequestHandler):
    """An OpenAI-compatible /chat/completions that records requests; `mode` picks its behaviour."""

    mode = "ok"
    seen: list = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeChat.seen.append((self.path, self.headers.get("Authorization"), body))
        if FakeChat.mode == "slow":
            time.sleep(1.0)
        status, reply = {"ok": (200, {"choices": [{"message": {"content": "  a large blue star spins\n"}}]}),
                         "error": (500, {"error": "boom"}), "slow": (200, {}),
                         "odd": (200, {"choices": []}), "html": (200, "<html>502 Bad Gateway</html>"),
                         "unsafe": (200, {"choices": [{"message": {"content": "a gory massacre"}}]})}[FakeChat.mode]
        data = reply.encode() if isinstance(reply, str) else json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except BrokenPipeError:  # "slow": the rewriter stopped waiting, as it should
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeChat)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeChat.mode, FakeChat.seen = "ok", []
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/"
    server.shutdown()
    server.server_close()


def test_external_endpoint_rewrites_the_prompt(endpoint):
    rewriter = Rewriter(endpoint, "sk-test", "tiny-llm")
    assert rewriter.expand("a blue star") == "a large blue star spins"
    path, auth, body = FakeChat.seen[0]
    assert path == "/v1/chat/completions" and auth == "Bearer sk-test" and body["model"] == "tiny-llm"
    assert body["messages"][0]["role"] == "system" and "circle" in body["messages"][0]["content"]
    assert body["messages"][1] == {"role": "user", "content": "a blue star"}
    rewriter.expand("a blue star", mode="edit")  # the edited clip shows what the idea leaves out
    assert FakeChat.seen[1][2]["messages"][0]["content"] == system_prompt("edit") != system_prompt()
    assert "Name only what the idea names" in system_prompt("edit")


@pytest.mark.parametrize("mode,why", [("error", "it answered HTTP 500"), ("slow", "it did not answer within 0.3 s"),
                                      ("odd", "its reply held no caption"), ("html", "its reply was not JSON"),
                                      ("unsafe", "the content policy refused its caption")])
def test_endpoint_failures_fall_back_to_the_builtin_rewriter(endpoint, mode, why, caplog, monkeypatch):
    monkeypatch.delenv("KINEMA_SAFETY", raising=False)
    FakeChat.mode = mode  # "unsafe": a caption the content policy refuses, for a prompt it passed
    rewriter = Rewriter(endpoint, None, "tiny-llm", timeout=0.3)
    with caplog.at_level(logging.WARNING, logger="kinema.prompting"):
        assert rewriter.expand("a red ball") == expand_builtin("a red ball")
    assert "using the built-in rewriter" in caplog.text
    assert mode != "unsafe" or "refused by the content policy (graphic violence)" in caplog.text
    notes: list[str] = []  # a video's notes, which its maker sees: without the operator's address
    for prompt in ("a red ball", "a blue ball"):
        assert rewriter.expand(prompt, notes=notes) == expand_builtin(prompt)
    assert notes == [f"{FALLBACK_NOTE}: {why}"] and endpoint not in notes[0]  # said once, with why
    assert FakeChat.seen[0][1] is None  # no key, no Authorization header


def test_unreachable_endpoint_falls_back(caplog):
    notes: list[str] = []
    with caplog.at_level(logging.WARNING, logger="kinema.prompting"):
        rewriter = Rewriter("http://127.0.0.1:9/v1", timeout=0.3)
        assert rewriter.expand("a red ball", notes=notes) == expand_builtin("a red ball")
    assert "ConnectError" in caplog.text and notes == [f"{FALLBACK_NOTE}: the connection was refused"]


def test_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("KINEMA_PROMPT_API_BASE", "http://localhost:8000/v1")
    monkeypatch.setenv("KINEMA_PROMPT_API_KEY", "k")
    monkeypatch.setenv("KINEMA_PROMPT_MODEL", "m")
    assert Rewriter.from_env() == Rewriter("http://localhost:8000/v1", "k", "m")
    monkeypatch.delenv("KINEMA_PROMPT_API_BASE")
    assert Rewriter.from_env().api_base is None
    monkeypatch.setenv("KINEMA_PROMPT_API_BASE", "localhost:8001")  # no scheme: named at once, not on every prompt
    with pytest.raises(KinemaError, match="the prompt API 'localhost:8001' is not an http\\(s\\) URL"):
        Rewriter.from_env()


def test_pipeline_expands_when_asked_and_by_default_only_for_the_bundled_model(debug_pipe, monkeypatch):
    assert not debug_pipe.expands_by_default
    video = debug_pipe.generate(Request("a red ball", width=32, height=32, frames=1, steps=1, expand=True))
    assert video.meta["caption"] == expand_builtin("a red ball")
    assert video.notes == [expansion_note("a red ball", expand_builtin("a red ball"))]
    plain = debug_pipe.generate(Request("a red ball", width=32, height=32, frames=1, steps=1))
    assert "caption" not in plain.meta and plain.notes == []
    monkeypatch.setattr(debug_pipe.model, "source", str(BUNDLED))
    assert debug_pipe.expands_by_default
