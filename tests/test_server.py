"""The Videos API, driven by the official `openai` SDK against a real uvicorn on 127.0.0.1 (debug model)."""

from __future__ import annotations

import asyncio
import io as bytes_io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from kinema.errors import KinemaError
from kinema.jobs import EVERYONE, MAX_UPLOAD_BYTES, SCHEMA, Job, JobStore, new_id
from kinema.server import create_app, serve

API_KEY = "test-key"
TINY = {"size": "64x64", "seconds": "1", "extra_body": {"steps": 2, "fps": 8}}
DEADLINE_S = 120  # every wait in this file gives up after this long


class ServerThread:
    """uvicorn serving create_app(...) in a thread, on a socket bound before it starts (no port race)."""

    def __init__(self, data_dir: Path, api_keys: tuple[str, ...] = (API_KEY,), **options):
        import uvicorn

        self.app = create_app(data_dir, model="debug", api_keys=api_keys, **options)
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + DEADLINE_S
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(DEADLINE_S)

    def client(self, key: str = API_KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, timeout=60, max_retries=0)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A working server; a short queue so the load test meets 429s."""
    with ServerThread(tmp_path_factory.mktemp("served"), concurrency=1, max_queue=8) as running:
        yield running


@pytest.fixture(scope="module")
def paused(tmp_path_factory):
    """A server that accepts jobs but runs none (concurrency 0): queued jobs stay put."""
    with ServerThread(tmp_path_factory.mktemp("paused"), concurrency=0, max_queue=64) as running:
        yield running


@pytest.fixture(scope="module")
def finished(server):
    """One video made with create_and_poll, bounded in time."""
    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(server.client().videos.create_and_poll, prompt="a red ball moves right", **TINY)
        return job.result(timeout=DEADLINE_S)


def wait(client: openai.OpenAI, video_id: str):
    deadline = time.monotonic() + DEADLINE_S
    while (video := client.videos.retrieve(video_id)).status in ("queued", "in_progress"):
        assert time.monotonic() < deadline, f"{video_id} still {video.status} after {DEADLINE_S} s"
        time.sleep(0.1)
    return video


def png_bytes(size=(64, 64)) -> bytes:
    buffer = bytes_io.BytesIO()
    Image.new("RGB", size, (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


# ---- the SDK against a working server ---------------------------------------------------------

def test_create_and_poll_completes(finished):
    assert re.fullmatch(r"video_[0-9a-f]{24}", finished.id)
    assert (finished.object, finished.status, finished.progress) == ("video", "completed", 100)
    assert (finished.size, finished.seconds, finished.model) == ("64x64", "1", "debug")
    assert finished.prompt == "a red ball moves right" and finished.error is None
    assert finished.created_at <= finished.completed_at < finished.expires_at


def test_retrieve_tells_the_sdk_to_poll_fast(server, finished):
    raw = server.client().videos.with_raw_response.retrieve(finished.id)
    assert raw.headers["openai-poll-after-ms"] == "200"
    assert raw.parse().status == "completed"


def test_download_every_variant(server, finished):
    videos = server.client().videos
    raw = videos.with_raw_response.download_content(finished.id, variant="video")
    assert raw.headers["content-type"] == "video/mp4"
    with av.open(bytes_io.BytesIO(raw.content)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == 8 and frames[0].shape == (64, 64, 3)
    for variant, content_type, image_format in (("thumbnail", "image/webp", "WEBP"),
                                                 ("spritesheet", "image/jpeg", "JPEG")):
        raw = videos.with_raw_response.download_content(finished.id, variant=variant)
        assert raw.headers["content-type"] == content_type
        image = Image.open(bytes_io.BytesIO(raw.content))
        assert image.format == image_format
    assert Image.open(bytes_io.BytesIO(videos.download_content(finished.id, variant="thumbnail").read())).size == \
        (64, 64)


def test_remix_edit_extend_connect_and_image_to_video(server, finished):
    client = server.client()
    mp4 = client.videos.download_content(finished.id).read()
    remix = client.videos.remix(finished.id, prompt="the same ball, now green")
    assert remix.remixed_from_video_id == finished.id
    edit = client.videos.edit(prompt="a blue ball", video=("clip.mp4", mp4, "video/mp4"), extra_body={"steps": 2})
    extend = client.videos.extend(prompt="it keeps going", seconds="1", video=("clip.mp4", mp4, "video/mp4"),
                                  extra_body={"steps": 2})
    backward = httpx.post(f"{server.url}/v1/videos/extensions", headers={"Authorization": f"Bearer {API_KEY}"},
                          json={"prompt": "and before", "seconds": "1", "video": {"id": finished.id},
                                "direction": "backward", "steps": 2})
    assert backward.status_code == 200, backward.text
    connect = client.videos.extend(prompt="bridge", seconds="1", video=("a.mp4", mp4, "video/mp4"),
                                   extra_body={"steps": 2, "connect_to": finished.id})
    image = client.videos.create(prompt="the ball starts here", input_reference=("start.png", png_bytes()),
                                 **TINY)
    # seconds: the stitched total for extensions (clip + new part, + the clip connected to), as Sora reports
    expected = {remix.id: "1", edit.id: "1", extend.id: "2", backward.json()["id"]: "2", connect.id: "3",
                image.id: "1"}
    answered = {video.id: video.seconds for video in (remix, edit, extend, connect, image)}
    assert answered | {backward.json()["id"]: backward.json()["seconds"]} == expected
    for video_id, seconds in expected.items():
        video = wait(client, video_id)
        assert (video.status, video.size, video.seconds, video.error) == ("completed", "64x64", seconds, None)


def test_a_video_carries_the_notes_the_cli_prints(server, finished):
    client = server.client()
    assert finished.to_dict()["notes"] == []
    video = client.videos.create(prompt="a ball", input_reference=("start.png", png_bytes((96, 48))), size="64x64",
                                 seconds="1", extra_body={"steps": 2, "fps": 8, "guidance": 1,
                                                          "negative_prompt": "blurry"})
    notes = wait(client, video.id).to_dict()["notes"]
    assert notes[0] == "input_reference: resized 96x48 to 128x64 and center-cropped to 64x64"
    assert notes[1].startswith("negative prompt: no effect at guidance 1") and len(notes) == 2


def test_a_job_store_made_before_notes_opens_with_its_jobs(tmp_path):
    import sqlite3

    old = sqlite3.connect(tmp_path / "kinema.db")
    added = (",\n    notes TEXT NOT NULL DEFAULT '[]',  -- JSON list of strings\n"
             "    attempts INTEGER NOT NULL DEFAULT 0,  -- times a worker has started it\n"
             "    owner TEXT NOT NULL DEFAULT ''  -- the digest of the API key that made it; '' without keys")
    first = SCHEMA.replace(added, "")
    assert first != SCHEMA  # the store as the first release made it, without the columns added since
    old.executescript(first)
    old.execute("INSERT INTO jobs (id, status, progress, created_at, model, prompt, seconds, size, params) "
                "VALUES ('video_' || hex(randomblob(12)), 'completed', 100, 1, 'debug', 'kept', '1', '64x64', '{}')")
    old.commit()
    old.close()
    store = JobStore(tmp_path)
    (job,), _ = store.page(None, 10, "asc", EVERYONE)
    assert (job.prompt, job.status, job.notes, job.attempts, job.owner) == ("kept", "completed", [], 0, "")
    assert store.finish(job.id, "2", ["a note"], 60) and store.get(job.id, EVERYONE).notes == ["a note"]
    store.close()


def test_delete_removes_the_files(server, finished):
    client = server.client()
    video = client.videos.create(prompt="short-lived", **TINY)
    assert wait(client, video.id).status == "completed"
    deleted = client.videos.delete(video.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (video.id, True, "video.deleted")
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video.id)
    store = server.app.state.service.store
    assert not store.output_path(video.id).exists() and not store.input_dir(video.id).exists()
    assert client.videos.retrieve(finished.id).status == "completed"


def test_load_50_concurrent_creates_all_answered(server):
    """50 creates at once against an 8-job queue: each gets a job or a 429, and every job finishes."""

    async def run() -> tuple[list[httpx.Response], list[dict]]:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60) as http:
            fields = {"prompt": "a crowd of balls", "size": "64x64", "seconds": "0", "steps": "2"}  # 1 frame
            answers = await asyncio.gather(*(http.post("/v1/videos", files={"model": (None, "debug")},
                                                       data=fields) for _ in range(50)))
            ids = [a.json()["id"] for a in answers if a.status_code == 200]

            async def settle(video_id: str) -> dict:
                while (video := (await http.get(f"/v1/videos/{video_id}")).json())["status"] in (
                        "queued", "in_progress"):
                    await asyncio.sleep(0.3)
                return video

            return answers, await asyncio.wait_for(asyncio.gather(*map(settle, ids)), DEADLINE_S)

    answers, settled = asyncio.run(run())
    statuses = [a.status_code for a in answers]
    assert set(statuses) == {200, 429}, statuses
    for answer in answers:
        body = answer.json()
        if answer.status_code == 200:
            assert body["object"] == "video" and body["status"] in ("queued", "in_progress", "completed")
        else:
            assert body["error"]["code"] == "queue_full" and body["error"]["type"] == "rate_limit_error"
            assert answer.headers["retry-after"]
    assert [video["status"] for video in settled] == ["completed"] * len(settled)


# ---- validation, auth, listing (a paused server: nothing runs) --------------------------------

def test_list_pages_with_after_limit_order(paused):
    client = paused.client()
    ids = [client.videos.create(prompt=f"clip {i}", **TINY).id for i in range(5)]
    ascending = [v.id for v in client.videos.list(limit=2, order="asc") if v.id in ids]  # auto-paginates
    assert ascending == ids
    assert [v.id for v in client.videos.list(limit=3, order="desc") if v.id in ids] == ids[::-1]
    page = client.videos.list(after=ids[1], limit=2, order="asc")
    assert [v.id for v in page.data] == ids[2:4] and page.has_more
    assert {v.status for v in page.data} == {"queued"}


@pytest.mark.parametrize(("fields", "param", "says"), [
    ({"size": "65x64"}, "size", "both even"),
    ({"size": "big"}, "size", "both even"),
    ({"size": "4096x4096"}, "size", "1920x1080"),
    ({"size": "0x0"}, "size", "both sides above 0"),
    ({"size": "99999x99999"}, "size", "larger than 1920x1080"),  # not "odd; e.g. 99998": past the limit either way
    ({"extra_body": {"seconds": True}}, "seconds", "must be a number of seconds"),
    ({"extra_body": {"seconds": "4s"}}, "seconds", "must be a number of seconds"),
    ({"seconds": "61"}, "seconds", "from 0"),
    ({"seconds": "-1"}, "seconds", "from 0"),
    ({"seconds": "soon"}, "seconds", "from 0"),
    ({"prompt": "   "}, "prompt", "prompt is empty"),
    ({"model": "sora-9-ultra"}, "model", "debug"),
    ({"extra_body": {"steps": 0}}, "steps", "from 1 to 1000"),
    ({"extra_body": {"colour": "red"}}, "colour", "unknown parameter"),
    ({"extra_body": {"segments": "[]"}}, "segments", "start"),
    ({"extra_body": {"sampler": "rk4"}}, "sampler", "euler, heun"),
    ({"extra_body": {"cache": 2}}, "cache", "from 0 to 1"),
    ({"extra_body": {"window": 99}}, "window", "from 3 to 32"),
    ({"extra_body": {"frames": 9}}, "frames", "seconds 1 and frames 9 disagree"),
    ({"extra_body": {"segments": [{"start": 0, "prompt": "a red ball"}]}}, "prompt",
     "differs from the first segment's"),
])
def test_bad_requests_are_400_in_openai_schema(paused, fields, param, says):
    arguments = {"prompt": "a ball", "size": "64x64", "seconds": "1", **fields}
    with pytest.raises(openai.BadRequestError) as caught:
        paused.client().videos.create(**arguments)
    assert (caught.value.status_code, caught.value.param, caught.value.type) == (400, param, "invalid_request_error")
    # one code for a bad field, whichever layer found it; OpenAI's own for a model it does not have
    special = {"model": "model_not_found", "colour": "unknown_parameter"}
    assert caught.value.code == special.get(param, "invalid_request")
    assert says in caught.value.message


def test_malformed_requests_are_4xx_naming_what_is_wrong(paused, monkeypatch):
    headers = {"Authorization": f"Bearer {API_KEY}"}

    def post(path: str, **kwargs) -> httpx.Response:
        return httpx.post(f"{paused.url}/v1{path}", headers=headers | kwargs.pop("headers", {}), **kwargs)

    for path, body, param in (("/videos/edits", {"prompt": "x", "video": {"id": "abc"}}, "video"),
                              ("/videos/extensions", {"prompt": "x", "seconds": "1", "video": {"id": ""}}, "video"),
                              ("/videos/extensions", {"prompt": "x", "seconds": "1", "video": {"id": new_id()},
                                                      "connect_to": {"id": "../../etc"}}, "connect_to")):
        answer = post(path, json=body)
        assert (answer.status_code, answer.json()["error"]["param"]) == (400, param), answer.text
        assert "is not a video id (video_ and 24 hex digits)" in answer.json()["error"]["message"]
    for field, value in (("prompt", "a\ud800b"), ("negative_prompt", "\udc00"), ("segments", [[0, "a\ud800"]])):
        body = json.dumps({"prompt": "a ball", "size": "64x64", "seconds": "1", field: value})  # "\\ud800": valid JSON
        answer = post("/videos", content=body.encode(), headers={"content-type": "application/json"})
        assert (answer.status_code, answer.json()["error"]["param"]) == (400, field), answer.text
        assert "unpaired surrogate such as \\ud800" in answer.json()["error"]["message"]
    deep = post("/videos", content=b'{"prompt": "a", "segments": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                headers={"content-type": "application/json"})
    assert deep.status_code == 400 and "not valid JSON" in deep.json()["error"]["message"]
    assert deep.json()["error"]["code"] == "invalid_request"
    upper = post("/videos", files={"prompt": (None, "a ball"), "size": (None, "64x64"), "seconds": (None, "1")},
                 headers={"content-type": "Multipart/Form-Data"})
    assert upper.status_code in (200, 400) and "not valid JSON" not in upper.text  # read as the form it is
    twice = post("/videos", files=[("prompt", (None, "a")), ("prompt", (None, "b")), ("size", (None, "64x64"))])
    assert (twice.status_code, twice.json()["error"]["param"]) == (400, "prompt") and "given twice" in twice.text
    flags = post("/videos", json={"prompt": "a ball", "size": "64x64", "seconds": "1", "expand": None,
                                  "window_camera": None})
    assert flags.status_code == 200, flags.text  # null is "the default", as for every other optional field
    monkeypatch.setattr("kinema.jobs.MAX_UPLOAD_BYTES", 1000)
    noise = bytes_io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(noise, format="PNG")
    big = post("/videos", data={"prompt": "a ball", "size": "64x64", "seconds": "1"},
               files={"input_reference": ("big.png", noise.getvalue(), "image/png")})
    assert (big.status_code, big.json()["error"]["code"]) == (413, "request_too_large")
    monkeypatch.setattr("kinema.api_request.MAX_FORM_BYTES", 2000)  # refused on its Content-Length, before reading
    huge = post("/videos", data={"prompt": "a ball"}, files={"input_reference": ("big.png", b"x" * 5000, "image/png")})
    assert huge.status_code == 413 and "the request is larger than" in huge.json()["error"]["message"]
    unknown = httpx.get(f"{paused.url}/v1/foo", headers=headers)
    assert unknown.status_code == 404 and unknown.json()["error"]["message"].startswith("Invalid URL (GET /v1/foo)")
    wrong = httpx.put(f"{paused.url}/v1/videos", headers=headers)
    assert wrong.status_code == 405 and "Invalid method (PUT /v1/videos); this path takes" in wrong.text


def test_deleting_while_paging_through_the_list_reaches_every_video(paused):
    client = paused.client()
    ids = {client.videos.create(prompt=f"to go {i}", **TINY).id for i in range(5)}
    gone = {video.id for video in client.videos.list(limit=2, order="desc") if client.videos.delete(video.id)}
    assert ids <= gone and not client.videos.list(limit=100).data
    with pytest.raises(openai.NotFoundError) as caught:
        client.videos.list(after=new_id())
    assert caught.value.param == "after"


def test_an_input_video_over_a_minute_is_a_400_before_it_is_queued(paused, tmp_path):
    from kinema.io import write_video

    write_video(tmp_path / "long.mp4", np.zeros((8 * 61, 16, 16, 3), np.uint8), 8)
    queued = len(paused.client().videos.list(limit=100).data)
    with pytest.raises(openai.BadRequestError) as caught:
        paused.client().videos.extend(prompt="on and on", seconds="1",
                                      video=("long.mp4", (tmp_path / "long.mp4").read_bytes(), "video/mp4"))
    assert caught.value.param == "video" and "runs 61.0 s at 8 fps, over the 60 s Kinema takes" in caught.value.message
    assert len(paused.client().videos.list(limit=100).data) == queued


def test_an_api_key_file_or_variable_without_keys_is_refused(tmp_path, monkeypatch):
    from kinema.server import load_api_keys

    (tmp_path / "keys.txt").write_text("# mine\n\n")
    with pytest.raises(KinemaError, match="keys.txt lists no keys; add one per line"):
        load_api_keys(tmp_path / "keys.txt")  # else the server would run open while its owner thinks it locked
    (tmp_path / "latin.txt").write_bytes(b"cl\xe9\n")
    with pytest.raises(KinemaError, match="latin.txt is not UTF-8 text"):
        load_api_keys(tmp_path / "latin.txt")
    monkeypatch.setenv("KINEMA_API_KEYS", " , ")
    with pytest.raises(KinemaError, match="KINEMA_API_KEYS is set but holds no keys"):
        load_api_keys()
    monkeypatch.setenv("KINEMA_API_KEYS", "a, b")
    assert load_api_keys() == ["a", "b"]


def test_api_keys_are_checked(paused):
    with pytest.raises(openai.AuthenticationError) as caught:
        paused.client(key="wrong").videos.list()
    assert caught.value.status_code == 401 and caught.value.code == "invalid_api_key"
    bare = httpx.get(f"{paused.url}/v1/videos")
    assert bare.status_code == 401 and set(bare.json()["error"]) == {"message", "type", "param", "code"}
    for probe in (httpx.put(f"{paused.url}/v1/videos"), httpx.get(f"{paused.url}/v1/secret-admin")):
        assert probe.status_code == 401, probe.text  # not 405 / 404: without a key nothing says what exists
    assert httpx.get(f"{paused.url}/").status_code == 200  # the page itself is public; it asks for the key


def test_page_fields_take_the_ranges_the_api_takes(paused):
    from kinema import request_checks as rc
    from kinema.config import MAX_NOISE_CORRELATION, MAX_NOISE_DRIFT

    page = httpx.get(f"{paused.url}/").text
    assert "$" not in page  # every bound was filled in
    bounds = {m["id"]: m["max"] for m in re.finditer(r'<input id="(?P<id>[\w-]+)"[^>]*?max="(?P<max>[^"]+)"',
                                                     page, re.S)}
    assert int(bounds.pop("seed")) == rc.MAX_SEED  # exactly: a float would round 2**63 - 1 up, past the API's limit
    assert {name: float(value) for name, value in bounds.items()} == {
        "steps": rc.MAX_STEPS, "guidance": rc.MAX_GUIDANCE, "fps": rc.MAX_FPS, "cache": 1, "strength": 1,
        "noise-correlation": MAX_NOISE_CORRELATION, "noise-drift": MAX_NOISE_DRIFT}
    assert re.search(r'id="image"[^>]*data-max-bytes="(\d+)"', page, re.S)[1] == str(MAX_UPLOAD_BYTES)
    assert f"sampling steps, 1–{rc.MAX_STEPS}" in page and f"<code>seconds</code> is 0–{rc.MAX_SECONDS:g}." in page


def test_ids_are_validated_and_unknown_ids_404(paused):
    client = paused.client()
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve("video_" + "0" * 24)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    for path in ("/v1/videos/..%2F..%2Fkinema.db/content", "/v1/videos/video_../content",
                 "/v1/videos/%2Fetc%2Fpasswd"):
        answer = httpx.get(paused.url + path, headers=headers)
        assert answer.status_code == 404 and "error" in answer.json(), path


def test_kinema_modes_and_extras_are_accepted(paused):
    client = paused.client()
    loop = client.videos.create(prompt="a spinning star", extra_body={"loop": True, "seed": 3}, size="64x64")
    sequence = client.videos.create(prompt="a red ball", seconds="2", size="64x64", extra_body={
        "segments": [{"start": 0, "prompt": "a red ball"}, {"start": 1, "prompt": "a blue ball"}]})
    tuned = client.videos.create(prompt="a ball", size="64x64", extra_body={"sampler": "heun", "cache": 0.2,
                                                                            "noise_correlation": 0.3,
                                                                            "noise_drift": 0.2,
                                                                            "window_camera": False})
    assert (loop.status, sequence.status, sequence.seconds, tuned.status) == ("queued", "queued", "2", "queued")
    params = paused.app.state.service.store.get(tuned.id, EVERYONE).params
    assert (params["sampler"], params["cache"], params["noise_correlation"]) == ("heun", 0.2, 0.3)
    assert params["noise_drift"] == 0.2 and params["window_camera"] is False
    deleted = client.videos.delete(loop.id)  # cancelling a queued job
    assert deleted.deleted and not paused.app.state.service.store.input_dir(loop.id).exists()


def test_uploads_are_checked(paused):
    videos = paused.client().videos
    for upload, says in ((b"#!/bin/sh\nrm -rf /", "is not a PNG, JPEG, WEBP, BMP or GIF image"),
                         (png_bytes()[:40], "not a readable image")):
        with pytest.raises(openai.BadRequestError) as caught:
            videos.create(prompt="a ball", input_reference=("start.png", upload), **TINY)
        assert caught.value.param == "input_reference" and says in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        videos.extend(prompt="more", seconds="1", video=("clip.mp4", b"\x00\x00\x00\x18ftypisom", "video/mp4"))
    assert caught.value.param == "video"


def test_openapi_documents_the_extra_fields(paused):
    schema = httpx.get(f"{paused.url}/openapi.json").json()
    create = schema["paths"]["/v1/videos"]["post"]["description"]
    assert all(name in create for name in ("loop", "segments", "seed", "steps", "guidance", "negative_prompt"))


def test_oversized_json_body_is_413(paused, monkeypatch):
    monkeypatch.setattr("kinema.api_request.MAX_JSON_BYTES", 1 << 20)
    headers = {"Authorization": f"Bearer {API_KEY}", "content-type": "application/json"}
    body = json.dumps({"prompt": "a ball", "negative_prompt": "x" * (2 << 20)})
    answer = httpx.post(f"{paused.url}/v1/videos", content=body, headers=headers)
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "request_too_large"


def test_expired_assets_are_swept(paused):
    store: JobStore = paused.app.state.service.store
    job = Job(id=new_id(), prompt="old", model="debug", size="64x64", seconds="1", params={"inputs": {}},
              status="completed", progress=100, completed_at=1, expires_at=int(time.time()) - 1)
    store.output_path(job.id).parent.mkdir(parents=True)
    store.output_path(job.id).write_bytes(b"old video")
    store.add(job, max_queue=64)
    assert job.id in store.expire()
    assert not store.output_path(job.id).exists()
    with pytest.raises(openai.NotFoundError) as caught:
        paused.client().videos.download_content(job.id)
    assert caught.value.code == "video_expired"
    assert paused.client().videos.retrieve(job.id).expires_at == job.expires_at


# ---- restart safety: SIGKILL loses nothing ----------------------------------------------------

def start_process(data_dir: Path, port: int, concurrency: int) -> subprocess.Popen:
    code = (f"from kinema.server import serve; serve('127.0.0.1', {port}, {str(data_dir)!r}, 'debug', [], "
            f"{concurrency}, 64)")
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + DEADLINE_S
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/videos", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"server did not start: {process.stderr.read().decode()[-2000:]}")
        time.sleep(0.2)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_server_checks_its_models_and_limits_when_it_starts(tmp_path):
    for options, says in (({"model": "nosuch"}, "unknown model 'nosuch'"),
                          ({"model": "debug", "models": {"x": str(tmp_path / "gone")}}, "gone not found"),
                          ({"model": "debug", "concurrency": -1}, "must be 0 or more"),
                          ({"model": "debug", "max_queue": 0}, r"max queue \(0\) 1 or more"),
                          ({"model": "debug", "retention_s": float("nan")}, "positive number of hours")):
        with pytest.raises(KinemaError, match=says):
            create_app(tmp_path / "data", **options)
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(KinemaError, match="is a file; give --data a folder name"):
        create_app(tmp_path / "afile", model="debug")


def test_a_bad_or_busy_port_is_a_one_line_error_before_the_model_loads(tmp_path):
    with pytest.raises(KinemaError, match="port 99999 is not a TCP port; choose one from 1 to 65535"):
        serve("127.0.0.1", 99999, tmp_path, "no-such-model")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(KinemaError, match=f"cannot listen on 127.0.0.1:{port} .*; stop what uses it"):
            serve("127.0.0.1", port, tmp_path, "no-such-model")  # the model's error would come later
    assert not any(tmp_path.iterdir())  # nothing was created: the job store was not opened


def test_serving_other_machines_without_api_keys_warns_at_start(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("kinema.server.create_app", lambda *args, **kwargs: None)
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: None)
    for host, keys, warns in (("0.0.0.0", [], True), ("0.0.0.0", ["k"], False), ("127.0.0.1", [], False),
                              ("localhost", [], False)):
        caplog.clear()
        serve(host, port := free_port(), tmp_path, api_keys=keys)
        said = [(record.levelname, record.getMessage()) for record in caplog.records]
        assert said == ([("WARNING", f"listening on {host}:{port} without API keys: anyone who can reach this port can "
                          "create, read and delete videos; set KINEMA_API_KEYS=key1,key2 or --api-keys-file FILE (one "
                          "key per line), or serve on --host 127.0.0.1")] if warns else []), host


def test_kill_9_loses_no_job(tmp_path):
    port = free_port()
    first = start_process(tmp_path, port, concurrency=0)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", timeout=60, max_retries=0)
        queued = client.videos.create(prompt="waits in the queue", **TINY)
        running = client.videos.create(prompt="was running", **TINY)
        lost_inputs = client.videos.create(prompt="inputs vanish", input_reference=("a.png", png_bytes()), **TINY)
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait(DEADLINE_S)
    # Pretend the dead server was running two jobs, and that one of them lost its uploaded image.
    store = JobStore(tmp_path)
    assert [store.claim().id for _ in range(3)] == [queued.id, running.id, lost_inputs.id]
    store.requeue(queued.id)
    for child in store.input_dir(lost_inputs.id).iterdir():
        child.unlink()
    store.close()

    second = start_process(tmp_path, port, concurrency=1)
    try:
        assert wait(client, queued.id).status == "completed"
        assert wait(client, running.id).status == "completed"
        failed = wait(client, lost_inputs.id)
        assert failed.status == "failed" and failed.error.code == "inputs_missing"
    finally:
        second.terminate()
        second.wait(DEADLINE_S)


def test_the_server_also_offers_the_bundled_models():
    """Serving another default model keeps both bundled models one request away (by their names)."""
    from kinema.checkpoint import BUNDLED_MODELS
    from kinema.jobs import Models

    models = Models("debug")
    installed = [name for name, folder in BUNDLED_MODELS.items() if (folder / "config.json").exists()]
    assert models.default == "debug" and models.name_for(None) == "debug" and models.name_for("default") == "debug"
    assert list(models.specs) == [*installed, "debug"]
    assert all(models.name_for(name) == name for name in installed)


def test_a_signing_server_gives_every_video_c2pa_credentials(tmp_path):
    pytest.importorskip("c2pa")
    from kinema import provenance

    signer = provenance.C2paSigner.load(*provenance.make_test_certificate(tmp_path))
    with ServerThread(tmp_path / "signed", signer=signer) as running:
        client = running.client()
        video = wait(client, client.videos.create(prompt="a red ball moves right", **TINY).id)
        (tmp_path / "out.mp4").write_bytes(client.videos.download_content(video.id).read())
    result = provenance.verify(tmp_path / "out.mp4")
    assert result["metadata"]["prompt"] == "a red ball moves right"
    assert result["c2pa"] == {"issuer": "Kinema test", "validation_state": "Valid", "generator": "kinema"}


def test_provenance_endpoint_reads_the_marks_of_an_upload(server, finished, tmp_path):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    video = server.client().videos.download_content(finished.id).read()
    answer = httpx.post(f"{server.url}/v1/provenance", headers=headers, files={"file": ("mine.mp4", video)}).json()
    assert answer["file"] == "mine.mp4" and answer["metadata"]["prompt"] == "a red ball moves right"
    seed = server.app.state.service.store.get(finished.id, EVERYONE).params["seed"]  # none asked: drawn, kept
    assert finished.to_dict()["seed"] == seed  # and told to the client
    assert answer["summary"][1] == f"tags: ai_generated=true, model=debug, seed={seed}; prompt 'a red ball moves right'"
    photo = bytes_io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(photo, format="PNG")
    answer = httpx.post(f"{server.url}/v1/provenance", headers=headers, files={"file": ("p.png", photo.getvalue())})
    assert answer.json()["watermark"]["detected"] is False and answer.json()["metadata"] == {}
    for files, says in (({"file": ("x.mp4", b"\x00\x00\x00\x18ftypmp42" + b"x" * 500)}, "not a readable video"),
                        ({"other": ("x.png", b"x")}, "multipart form field file")):
        error = httpx.post(f"{server.url}/v1/provenance", headers=headers, files=files).json()["error"]
        assert error["param"] == "file" and says in error["message"] and "/tmp" not in error["message"]
    assert httpx.post(f"{server.url}/v1/provenance", files={"file": ("p.png", b"x")}).status_code == 401
