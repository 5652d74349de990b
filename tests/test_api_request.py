"""Reading the Videos API's request fields, without a server: typed values, and a 400 for each bad one."""

from __future__ import annotations

import io

import pytest

from kinema.api_request import FIELDS, ApiError, Fields, draft_create, draft_extend, unflatten


def test_unflatten_reads_the_sdks_nested_form_fields():
    items = [("prompt", "p"), ("video[id]", "video_x"), ("segments[][start]", "0"), ("segments[][start]", "2"),
             ("segments[][prompt]", "a"), ("segments[][prompt]", "b")]
    assert unflatten(items) == {"prompt": "p", "video": {"id": "video_x"},
                                "segments": [{"start": "0", "prompt": "a"}, {"start": "2", "prompt": "b"}]}


def test_unflatten_refuses_fields_that_do_not_fit_together():
    with pytest.raises(ApiError, match="does not fit") as err:
        unflatten([("video", "x"), ("video[id]", "video_x")])
    assert err.value.param == "video"


def test_create_fields_become_a_typed_draft():
    fields = Fields({"prompt": "a red ball", "size": " 224x128 ", "seconds": "2.5", "seed": "7", "loop": "true",
                     "cache": "0.2", "sampler": "heun", "noise_correlation": "0.3",
                     "noise_drift": "0.2", "window_camera": "false"}, FIELDS["create"])
    draft = draft_create(fields)
    assert (draft.prompt, draft.scalars["width"], draft.scalars["height"]) == ("a red ball", 224, 128)
    assert draft.scalars["seconds"] == 2.5 and draft.scalars["seed"] == 7 and draft.scalars["mode"] == "loop"
    assert draft.scalars["cache"] == 0.2 and draft.scalars["sampler"] == "heun"
    assert draft.scalars["noise_correlation"] == 0.3 and draft.scalars["noise_drift"] == 0.2
    assert draft.scalars["window_camera"] is False
    assert draft_create(Fields({"prompt": "a ball"}, FIELDS["create"])).scalars["window_camera"] is None  # the model's


@pytest.mark.parametrize(("values", "param", "words"), [
    ({"colour": "red"}, "colour", "unknown parameter"),
    ({"size": "big"}, "size", "not WIDTHxHEIGHT"),
    ({"seconds": "61"}, "seconds", "out of range"),
    ({"seed": "-1"}, "seed", r"integer from 0 to 9223372036854775807, got '-1'"),
    ({"steps": float("inf")}, "steps", "integer from 1 to 1000, got inf"),  # JSON's 1e309
    ({"steps": 3.7}, "steps", "integer from 1 to 1000, got 3.7"),
    ({"cache": "nan"}, "cache", "number from 0 to 1"),
    ({"noise_correlation": "1"}, "noise_correlation", "number from 0 to 0.99"),
    ({"noise_drift": "2"}, "noise_drift", "number from 0 to 1"),
    ({"sampler": "ddim"}, "sampler", "one of euler, heun"),
    ({"loop": "maybe"}, "loop", "true or false"),
    ({"window_camera": "sideways"}, "window_camera", "true or false"),
    ({"segments": "[]"}, "segments", "non-empty list"),
    ({"segments": [[0, 5]]}, "segments", "non-empty list"),  # 5 is not a prompt
    ({"segments": [[0, "a"], [99, "b"]]}, "segments", "a start of 99 s is outside 0 to 60 s"),
    ({"segments": [[2, "a"], [1, "b"]]}, "segments", "increasing order"),
])
def test_each_bad_create_field_is_a_400_naming_it(values, param, words):
    with pytest.raises(ApiError, match=words) as err:
        draft_create(Fields({"prompt": "p", **values}, FIELDS["create"]))
    assert (err.value.status, err.value.param) == (400, param)


def test_an_extension_adds_the_default_length_and_connects_only_forward():
    draft = draft_extend(Fields({"video": {"id": "video_" + "a" * 24}}, FIELDS["extend"]))
    assert (draft.scalars["seconds"], draft.scalars["frames"]) == (None, None)  # the pipeline's 4 s, as the CLI's
    fields = {"video": "video_" + "a" * 24, "seconds": "1", "connect_to": "video_" + "b" * 24, "direction": "backward"}
    with pytest.raises(ApiError, match="connect_to extends forward"):
        draft_extend(Fields(fields, FIELDS["extend"]))


def test_input_reference_may_be_a_data_url_and_other_forms_are_named():
    import base64

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 16), (10, 200, 30)).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    draft = draft_create(Fields({"prompt": "a ball", "input_reference": {"image_url": url}}, FIELDS["create"]))
    assert draft.scalars["mode"] == "i2v" and draft.sources["image"].file.read() == buffer.getvalue()
    for reference, words in (({"image_url": "https://example.com/a.png"}, "fetches no URLs"),
                             ({"image_url": "data:image/png;base64,%%%"}, "not base64"),
                             ({"image_url": "data:image/png,rawbytes"}, "base64 data: URL"),
                             ({"file_id": "file_123"}, "no Files API"),
                             ("a.png", "image file upload")):
        with pytest.raises(ApiError, match=words) as err:
            draft_create(Fields({"prompt": "a ball", "input_reference": reference}, FIELDS["create"]))
        assert (err.value.status, err.value.param) == (400, "input_reference")
