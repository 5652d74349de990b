"""Requests to the Videos API: fields read with types, OpenAI-style errors, and the jobs they describe.

`read_fields` takes a body as the SDK sends it (multipart, urlencoded or JSON), `Fields` reads each value
with its type and range (every problem is a 400 naming the field), and `draft_*` turn the fields of each
endpoint into a `Draft`: the job as the client described it, before the pipeline checks it.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.datastructures import FormData, UploadFile
from starlette.requests import ClientDisconnect

from kinema import request_checks as rc
from kinema import sampling
from kinema.config import MAX_NOISE_CORRELATION, MAX_NOISE_DRIFT
from kinema.errors import BAD_REQUEST, KinemaError
from kinema.jobs import MAX_UPLOAD_BYTES, Job, valid_id
from kinema.modes import CONTEXT, EDIT_STRENGTH, MAX_WINDOW, WINDOW
from kinema.sizes import parse_size

MAX_PROMPT_CHARS = 4000
MAX_JSON_BYTES = 16 << 20  # fields, and an image as a data: URL; larger files come as multipart uploads
MAX_FORM_BYTES = 2 * MAX_UPLOAD_BYTES + (1 << 20)  # two videos (connect) and the fields
SAMPLERS = sampling.METHODS
ALLOWED = {
    "size": "WIDTHxHEIGHT, both even and at least 16, from 1:4 to 4:1, at most 1920x1080's pixels "
            "(e.g. 128x128, 256x144, 1280x720, 1920x1080)",
    "seconds": f"a number of seconds from 0 (a single frame) to {rc.MAX_SECONDS:g}",
}
EXTRA_FIELDS = {
    "negative_prompt": "what the video should not show (the unconditional side of guidance)",
    "seed": "integer; the same seed, prompt and settings give the same video (default: a random one, kept with "
            "the video: a remix reuses it)",
    "steps": f"sampling steps, 1–{rc.MAX_STEPS} (more is slower and finer; default: the model's)",
    "guidance": "classifier-free guidance scale (1 = off; default: the model's)",
    "sampler": "ODE solver: \"euler\" or \"heun\" (default: the model's)",
    "noise_correlation": f"0–{MAX_NOISE_CORRELATION}: how alike neighbouring frames' starting noise is (steadier "
                         "colours and counts; default: the model's)",
    "noise_drift": f"0–{MAX_NOISE_DRIFT:g}: short sides per second the starting noise travels the way the prompt's "
                   "lone object goes (it goes that way more often; default: the model's)",
    "window_camera": "true/false: make a camera pan, tilt or zoom the prompt asks for by moving the frame over what "
                     "the model drew (text or image to video, extensions and each segment of a sequence, with the "
                     "scene drawn around a given image or clip where the move needs more; zooms also in edits; "
                     "default: the model's, on for the bundled models)",
    "cache": "0–1: skip model calls while the latents barely change (faster; 0 = off, the default; try 0.1)",
    "fps": f"frames per second, 1–{rc.MAX_FPS} (default: the model's; an edit or extension: the input's)",
    "frames": "an exact frame count instead of seconds (create; extensions: the frames to add)",
    "window": f"long videos: latent frames the model sees at once, 3–{MAX_WINDOW} (default {WINDOW})",
    "context": f"long videos: latent frames each window carries over from the one before, at most window - 2 "
               f"(default {CONTEXT}, or what a smaller window leaves room for)",
    "aspect": "instead of size (create): an aspect ratio like 16:9 at the model's resolution",
    "expand": "true/false: rewrite the prompt into the training captions' style (default: on for the bundled "
              "model)",
    "loop": "true makes a video that ends where it starts (create)",
    "segments": "a prompt sequence (create): a JSON list of {\"start\": seconds, \"prompt\": text}",
    "strength": f"edits and remixes: the share of the sampling schedule run again; 0 keeps the input, 1 ignores "
                f"it (default {EDIT_STRENGTH})",
    "direction": "extensions: \"forward\" continues the end (default), \"backward\" leads into the start",
    "connect_to": "extensions: a video (file upload, or the id of a completed video) the new part ends on",
}
TUNING = {"negative_prompt", "seed", "steps", "guidance", "expand", "sampler", "cache", "noise_correlation",
          "noise_drift", "window_camera", "window", "context"}
COMMON = TUNING | {"model"}
FIELDS = {
    "create": COMMON | {"prompt", "seconds", "frames", "size", "aspect", "input_reference", "fps", "loop", "segments"},
    "edit": COMMON | {"prompt", "video", "strength", "size", "fps"},
    "extend": COMMON | {"prompt", "seconds", "frames", "video", "direction", "connect_to", "size", "fps"},
    "remix": TUNING | {"prompt", "strength"},
}


class ApiError(Exception):
    """An error answered in OpenAI's schema: {"error": {"message", "type", "param", "code"}}. A 400 without a more
    telling code gets the one every bad field gets, the pipeline's too (KinemaError's default)."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        code = code or (BAD_REQUEST if status == 400 else None)
        self.status, self.param, self.code, self.kind = status, param, code, kind

    @classmethod
    def from_kinema(cls, err: KinemaError) -> ApiError:
        # A size the pipeline refuses is shown what sizes look like; its length errors each give their own bounds
        # (an extension's room left, a loop's least), which the general range would contradict.
        hint = f"; allowed: {ALLOWED['size']}" if err.param == "size" else ""
        return cls(413 if err.code == "request_too_large" else 400, f"{err}{hint}", param=err.param, code=err.code)


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   kind: str = "invalid_request_error", headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def check_text(name: str, text: str) -> None:
    """The pipeline's text check (JSON's \\ud800 escapes can carry half a character), answered as a 400 when a field
    is read."""
    try:
        rc.check_text(name, text)
    except KinemaError as err:
        raise ApiError.from_kinema(err) from None


# ---------------------------------------------------------------------------------------------
# Reading request fields
# ---------------------------------------------------------------------------------------------

async def read_fields(request: Request, kind: str) -> Fields:
    """The body as fields and uploads: multipart/urlencoded forms (what the SDK sends) or JSON."""
    content_type = request.headers.get("content-type", "").lower()  # media types are case-insensitive
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        values = unflatten((await read_form(request, MAX_FORM_BYTES)).multi_items())
    else:
        body = await _read_limited(request, MAX_JSON_BYTES)
        try:
            values = json.loads(body or b"{}")
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
            raise ApiError(400, "the body is not valid JSON; send JSON or multipart/form-data") from None
        if not isinstance(values, dict):
            raise ApiError(400, "the JSON body must be an object of fields")
    return Fields(values, FIELDS[kind])


async def read_form(request: Request, limit: int) -> FormData:
    """The multipart or urlencoded form, refused with 413 once it passes `limit` bytes: at once when its
    Content-Length says so, else as soon as that many have arrived (a chunked form spools no more than that)."""
    too_big = ApiError(413, f"the request is larger than {limit >> 20} MiB; each file may be at most "
                       f"{MAX_UPLOAD_BYTES >> 20} MiB", code="request_too_large")
    try:
        return await _limited(request, limit, too_big).form()
    except ClientDisconnect:  # the client went away mid-upload: nobody to answer, nothing to log as an error
        raise ApiError(400, "the client disconnected before the request was complete") from None


async def _read_limited(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` bytes (whatever Content-Length claims)."""
    too_big = ApiError(413, f"the JSON body is larger than {limit >> 20} MiB; send files as multipart/form-data "
                       "uploads", code="request_too_large")
    return await _limited(request, limit, too_big).body()


def _limited(request: Request, limit: int, too_big: ApiError) -> Request:
    """The same request, whose body raises `too_big` once more than `limit` bytes of it have been received."""
    if int(request.headers.get("content-length") or 0) > limit:
        raise too_big
    received = 0

    async def receive() -> dict[str, Any]:
        nonlocal received
        message = await request.receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise too_big
        return message

    return Request(request.scope, receive)


def unflatten(items: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Form fields to nested values the way the SDK flattens them: `video[id]`, `segments[][start]`."""
    values: dict[str, Any] = {}
    for key, value in items:
        match = re.fullmatch(r"(\w+)\[(\w*)\](?:\[(\w+)\])?", key)
        if match is None:
            if key in values:  # last-wins would drop one without a word (two prompts, two images)
                raise ApiError(400, f"form field {key!r} is given twice; send it once", param=key)
            values[key] = value
            continue
        name, member, item_member = match.groups()
        try:
            if member and not item_member:
                values.setdefault(name, {})[member] = value
            elif not member and item_member:
                # The SDK sends all `start`s, then all `prompt`s: the n-th of a member is the n-th object's.
                objects = values.setdefault(name, [])
                index = sum(item_member in item for item in objects)
                if index == len(objects):
                    objects.append({})
                objects[index][item_member] = value
            else:
                raise TypeError
        except (TypeError, AttributeError):
            raise ApiError(400, f"form field {key!r} does not fit the other {name} fields", param=name) from None
    return values


class Fields:
    """A request's fields read with types; every problem is a 400 naming the field and what it takes."""

    def __init__(self, values: dict[str, Any], allowed: set[str]):
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise ApiError(400, f"unknown parameter {unknown[0]!r}; this endpoint takes "
                           f"{', '.join(sorted(allowed))}", param=unknown[0], code="unknown_parameter")
        self.values = values

    def text(self, name: str, default: str | None = None, limit: int = MAX_PROMPT_CHARS) -> str | None:
        value = self.values.get(name)
        if value is None:
            return default
        if not isinstance(value, str):
            raise ApiError(400, f"{name} must be a string", param=name)
        if len(value) > limit:
            raise ApiError(400, f"{name} is {len(value)} characters long; the limit is {limit}", param=name)
        check_text(name, value)
        return value

    def number(self, name: str, cast: type, low: float, high: float, default: Any = None) -> Any:
        value = self.values.get(name)
        if value is None or value == "":
            return default
        try:
            fractional = cast is int and isinstance(value, float) and not value.is_integer()  # 3.7 steps: no
            number = None if isinstance(value, bool) or fractional else cast(value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: int(1e309), which JSON reads as inf
            number = None
        if number is None or not math.isfinite(number) or not low <= number <= high:
            kind, bounds = ("an integer", f"{low} to {high}") if cast is int else ("a number", f"{low:g} to {high:g}")
            raise ApiError(400, f"{name} must be {kind} from {bounds}, got {value!r}", param=name)
        return number

    def flag(self, name: str) -> bool:
        value = self.values.get(name, False)
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off", ""):
            return value.lower() in ("true", "1", "yes", "on")
        raise ApiError(400, f"{name} must be true or false, got {value!r}", param=name)

    def choice(self, name: str, options: tuple[str, ...]) -> str:
        value = self.text(name, options[0])
        if value not in options:
            raise ApiError(400, f"{name} must be one of {', '.join(options)}, got {value!r}", param=name)
        return value

    def video_source(self, name: str, required: bool = True) -> UploadFile | str | None:
        """A video given as a file upload or as {"id": "video_..."} of a completed video."""
        value = self.values.get(name)
        if isinstance(value, dict) and set(value) == {"id"} and isinstance(value["id"], str):
            if not valid_id(value["id"]):
                raise ApiError(400, f"{name}: {value['id']!r} is not a video id (video_ and 24 hex digits)",
                               param=name)
            return value["id"]
        if isinstance(value, str) and valid_id(value):
            return value
        if isinstance(value, UploadFile) or (value is None and not required):
            return value
        raise ApiError(400, f"{name} must be a video file upload or {{\"id\": \"video_...\"}} of a completed "
                       "video", param=name)

    def size(self) -> tuple[int | None, int | None]:
        text = self.text("size")
        if text is None:
            return None, None
        try:
            return parse_size(text)
        except KinemaError as err:
            raise ApiError.from_kinema(err) from None

    def seconds(self, default: float | None) -> float | None:
        value = self.values.get("seconds")
        if value is None or value == "":
            return default
        try:
            if isinstance(value, bool):  # JSON's true would read as 1
                raise TypeError
            seconds = float(value)
        except (TypeError, ValueError):
            raise ApiError(400, f"seconds must be a number of seconds, e.g. \"4\", got {value!r}; allowed: "
                           f"{ALLOWED['seconds']}", param="seconds") from None
        if not 0 <= seconds <= rc.MAX_SECONDS:
            raise ApiError(400, f"seconds {value!r} is out of range; allowed: {ALLOWED['seconds']}",
                           param="seconds")
        return seconds

    def segments(self) -> list[list] | None:
        """Prompt sequence: [{"start": s, "prompt": p}] or [[s, p]], as a list or a JSON string."""
        value = self.values.get("segments")
        if value is None or value == "":
            return None
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                value = None
        try:
            pairs = [(item["start"], item["prompt"]) if isinstance(item, dict) else tuple(item) for item in value]
            segments = [[float(start), text.strip()] for start, text in pairs]  # a prompt must be text
        except (TypeError, KeyError, ValueError, AttributeError):
            segments = []
        for _, text in segments:
            check_text("segments", text)
        if not segments or not all(text for _, text in segments):
            raise ApiError(400, "segments must be a non-empty list of {\"start\": seconds, \"prompt\": text}, "
                           "each prompt non-empty", param="segments")
        for start, _ in segments:
            if not 0 <= start <= rc.MAX_SECONDS:
                raise ApiError(400, f"segments: a start of {start:g} s is outside 0 to {rc.MAX_SECONDS:g} s",
                               param="segments")
        starts = [start for start, _ in segments]
        if starts != sorted(starts):
            raise ApiError(400, "segments: put the starts in increasing order", param="segments")
        return segments


# ---------------------------------------------------------------------------------------------
# Jobs from requests
# ---------------------------------------------------------------------------------------------

@dataclass
class Draft:
    """A job as the client described it, before inputs are stored and the pipeline checks it."""

    prompt: str
    model: str | None
    scalars: dict[str, Any]  # Request fields
    sources: dict[str, UploadFile | str] = field(default_factory=dict)  # Request field -> upload or video id
    remixed_from: str | None = None


def reference_image(value: Any) -> UploadFile:
    """input_reference as the SDK sends it (a file upload) or in OpenAI's other form, {"image_url": a data: URL}."""
    if isinstance(value, UploadFile):
        return value
    reference = value if isinstance(value, dict) else {}
    url = reference.get("image_url")
    if isinstance(url, str) and url.startswith("data:"):
        header, _, data = url.partition(",")
        if not header.endswith(";base64"):
            raise ApiError(400, "input_reference.image_url must be a base64 data: URL (data:image/png;base64,...)",
                           param="input_reference")
        try:
            return UploadFile(io.BytesIO(base64.b64decode(data, validate=True)), filename="input_reference")
        except binascii.Error:
            raise ApiError(400, "input_reference.image_url holds data that is not base64; encode the image file "
                           "with base64", param="input_reference") from None
    if url is not None:
        raise ApiError(400, "input_reference.image_url: this server fetches no URLs; send the image as a data: URL "
                       "or a file upload", param="input_reference")
    if "file_id" in reference:
        raise ApiError(400, "input_reference.file_id: this server has no Files API; send the image as a file upload "
                       "or a data: URL", param="input_reference")
    raise ApiError(400, "input_reference must be an image file upload (multipart/form-data) or {\"image_url\": "
                   "\"data:image/png;base64,...\"}", param="input_reference")


def common_scalars(f: Fields) -> dict[str, Any]:
    return {"negative_prompt": f.text("negative_prompt", ""), "seed": f.number("seed", int, 0, rc.MAX_SEED),
            "steps": f.number("steps", int, 1, rc.MAX_STEPS),
            "guidance": f.number("guidance", float, 0, rc.MAX_GUIDANCE),
            "expand": f.flag("expand") if f.values.get("expand") is not None else None,
            "sampler": f.choice("sampler", SAMPLERS) if "sampler" in f.values else None,
            "cache": f.number("cache", float, 0, 1, 0.0),
            "noise_correlation": f.number("noise_correlation", float, 0, MAX_NOISE_CORRELATION),
            "noise_drift": f.number("noise_drift", float, 0, MAX_NOISE_DRIFT),
            "window_camera": f.flag("window_camera") if f.values.get("window_camera") is not None else None,
            "window": f.number("window", int, 3, MAX_WINDOW), "context": f.number("context", int, 1, MAX_WINDOW - 2)}


def shape_scalars(f: Fields) -> dict[str, Any]:
    """Size, rate and length; None leaves each to the pipeline (the model's, or the input's)."""
    width, height = f.size()
    return {"width": width, "height": height, "fps": f.number("fps", int, 1, rc.MAX_FPS), "seconds": f.seconds(None),
            "frames": f.number("frames", int, 1, int(rc.MAX_SECONDS * rc.MAX_FPS))}


def draft_create(f: Fields) -> Draft:
    scalars = {**common_scalars(f), **shape_scalars(f), "aspect": f.text("aspect", limit=16)}
    sources: dict[str, UploadFile | str] = {}
    image = f.values.get("input_reference")
    if image is not None:
        sources["image"] = reference_image(image)
    segments = f.segments()
    loop = f.flag("loop")
    if segments and loop:
        raise ApiError(400, "choose either loop or segments, not both", param="segments")
    scalars["mode"] = "sequence" if segments else "loop" if loop else "i2v" if image is not None else "t2v"
    scalars["segments"] = segments
    return Draft(f.text("prompt", ""), f.text("model"), scalars, sources)


def draft_edit(f: Fields) -> Draft:
    scalars = {**common_scalars(f), **shape_scalars(f), "mode": "edit",
               "strength": f.number("strength", float, 0, 1, EDIT_STRENGTH)}
    return Draft(f.text("prompt", ""), f.text("model"), scalars, {"video": f.video_source("video")})


def draft_extend(f: Fields) -> Draft:
    direction = f.choice("direction", ("forward", "backward"))
    shape = shape_scalars(f)  # without seconds or frames: 4 s more, as the CLI adds
    sources = {"video": f.video_source("video")}
    connect_to = f.video_source("connect_to", required=False)
    if connect_to is not None:
        if direction == "backward":
            raise ApiError(400, "connect_to extends forward; leave out direction", param="direction")
        sources["video_b"] = connect_to
    mode = "connect" if connect_to is not None else "extend" if direction == "forward" else "extend_backward"
    scalars = {**common_scalars(f), **shape, "mode": mode}
    return Draft(f.text("prompt", ""), f.text("model"), scalars, sources)


def draft_remix(f: Fields, source: Job) -> Draft:
    """A remix edits the source video with a new prompt, keeping its size, length, rate and seed."""
    if source.status != "completed" or source.expired:
        raise ApiError(400, f"{source.id} is {'expired' if source.expired else source.status}; only a completed "
                       "video can be remixed", param="video_id")
    width, height = (int(side) for side in source.size.split("x"))
    scalars = {key: source.params[key] for key in TUNING if key in source.params}
    scalars |= {key: value for key, value in common_scalars(f).items() if key in f.values}
    scalars |= {"mode": "edit", "width": width, "height": height,
                "strength": f.number("strength", float, 0, 1, EDIT_STRENGTH)}
    return Draft(f.text("prompt", ""), source.model, scalars, {"video": source.id}, remixed_from=source.id)
