"""The Videos API's routes at their edges, as OpenAI's reference and SDK define them: list limits, HEAD, 405's
Allow, the SDK's character calls, chunked forms, a failed video's files, a client that gives up, and lengths, sizes
and rates read as the CLI reads them."""

from __future__ import annotations

import base64
import json
import re
import time

import httpx
import numpy as np
import openai
import pytest

from kinema.io import write_video
from kinema.jobs import EVERYONE, VARIANTS, Job, JobStore, Models, new_id
from kinema.server import key_owner
from test_server import API_KEY, TINY, ServerThread, png_bytes

HEADERS = {"Authorization": f"Bearer {API_KEY}"}
KEY_A, KEY_B = "alice-secret-key-0001", "bob-secret-key-0002"


@pytest.fixture(scope="module")
def paused(tmp_path_factory):
    """A server that accepts jobs but runs none (concurrency 0)."""
    with ServerThread(tmp_path_factory.mktemp("routes"), concurrency=0, max_queue=64) as running:
        yield running


def stored_job(server: ServerThread, status: str, **fields) -> Job:
    """A job written straight into the server's store, as the worker would have left it."""
    store: JobStore = server.app.state.service.store
    job = Job(id=new_id(), prompt="stored", model="debug", size="64x64", seconds="1", params={"inputs": {}},
              status=status, **fields)
    store.add(job, max_queue=64)
    return job


@pytest.fixture()
def two_keys(tmp_path):
    """A server with two keys, A's and B's, that accepts jobs but runs none."""
    with ServerThread(tmp_path / "data", api_keys=(KEY_A, KEY_B), concurrency=0, max_queue=64) as running:
        yield running


def finished_job(server: ServerThread, owner: str) -> Job:
    """A completed job of `owner`'s with every variant's file, its video a real MP4 (a remix reads it)."""
    job = stored_job(server, "completed", progress=100, completed_at=1, expires_at=int(time.time()) + 3600,
                     owner=owner)
    store: JobStore = server.app.state.service.store
    store.output_path(job.id).parent.mkdir(parents=True)
    write_video(store.output_path(job.id), np.zeros((8, 64, 64, 3), np.uint8), fps=8)
    for variant in ("thumbnail", "spritesheet"):
        store.output_path(job.id, variant).write_bytes(variant.encode())
    return job


def test_list_takes_a_limit_of_zero(paused):
    paused.client().videos.create(prompt="one", **TINY)
    page = httpx.get(f"{paused.url}/v1/videos", params={"limit": 0}, headers=HEADERS).json()
    assert page["data"] == [] and page["has_more"] is True and page["first_id"] is None
    too_many = httpx.get(f"{paused.url}/v1/videos", params={"limit": 101}, headers=HEADERS)
    assert too_many.status_code == 400 and "from 0 to 100" in too_many.json()["error"]["message"]


def test_head_of_a_download_answers_its_length_without_the_body(paused):
    job = stored_job(paused, "completed", progress=100, completed_at=1, expires_at=int(time.time()) + 3600)
    output = paused.app.state.service.store.output_path(job.id)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(b"\x00" * 1234)
    head = httpx.head(f"{paused.url}/v1/videos/{job.id}/content", headers=HEADERS)
    assert head.status_code == 200 and head.headers["content-length"] == "1234" and head.content == b""
    assert head.headers["content-type"] == "video/mp4"


def test_a_failed_video_says_it_failed_instead_of_not_ready(paused):
    job = stored_job(paused, "failed", error_code="interrupted", error_message="the server stopped three times")
    with pytest.raises(openai.BadRequestError) as caught:
        paused.client().videos.download_content(job.id)
    assert caught.value.code == "video_failed" and "failed (interrupted)" in caught.value.message


def test_405_names_every_method_the_path_takes(paused):
    wrong = httpx.put(f"{paused.url}/v1/videos", headers=HEADERS)
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, POST"
    assert "this path takes GET, POST" in wrong.json()["error"]["message"]
    patch = httpx.patch(f"{paused.url}/v1/videos/{new_id()}", headers=HEADERS)
    assert patch.status_code == 405 and patch.headers["allow"] == "DELETE, GET"


def test_the_sdks_character_calls_are_told_there_are_none(paused):
    for call in (lambda v: v.create_character(name="me", video=("me.mp4", b"\x00")),
                 lambda v: v.get_character("char_123")):
        with pytest.raises(openai.NotFoundError) as caught:
            call(paused.client().videos)
        assert caught.value.code == "not_supported" and "no characters" in caught.value.message


def test_a_chunked_form_is_read_and_counted_as_it_arrives(paused, monkeypatch):
    boundary = "kinemaboundary"
    form = f"multipart/form-data; boundary={boundary}"

    def chunked(*fields):  # a generator body: httpx sends it chunked, with no Content-Length
        for name, value in fields:
            yield f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n".encode()
        yield f"--{boundary}--\r\n".encode()

    fields = [("prompt", "a ball"), ("size", "64x64"), ("seconds", "1")]
    answer = httpx.post(f"{paused.url}/v1/videos", content=chunked(*fields), headers=HEADERS | {"content-type": form})
    assert answer.status_code == 200, answer.text
    assert paused.app.state.service.store.get(answer.json()["id"], EVERYONE).prompt == "a ball"
    monkeypatch.setattr("kinema.api_request.MAX_FORM_BYTES", 4000)  # no header to refuse it on: it is counted
    long = httpx.post(f"{paused.url}/v1/videos", content=chunked(*fields, *[("metadata", "x" * 1000)] * 5),
                      headers=HEADERS | {"content-type": form})
    assert long.status_code == 413 and long.json()["error"]["code"] == "request_too_large"


def test_input_reference_as_a_data_url_makes_image_to_video(paused):
    url = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    answer = httpx.post(f"{paused.url}/v1/videos", headers=HEADERS,
                        json={"prompt": "a red square", "size": "64x64", "seconds": "1",
                              "input_reference": {"image_url": url}})
    assert answer.status_code == 200, answer.text
    job = paused.app.state.service.store.get(answer.json()["id"], EVERYONE)
    assert job.params["mode"] == "i2v" and list(job.params["inputs"]) == ["image"]


def test_a_client_that_gives_up_while_a_model_loads_leaves_no_job(tmp_path, monkeypatch):
    load = Models.pipeline

    def slow(self, name):
        if name == "slow":
            time.sleep(1.5)
        return load(self, name)

    monkeypatch.setattr(Models, "pipeline", slow)
    with ServerThread(tmp_path / "data", concurrency=0, models={"slow": "debug"}) as server:
        assert "debug" in server.app.state.service.models._pipelines  # the default is loaded before any request
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, timeout=0.5, max_retries=0)
        with pytest.raises(openai.APITimeoutError):
            client.videos.create(prompt="a ball", model="slow", **TINY)
        time.sleep(2)  # the load finishes; the request then finds its client gone
        assert server.client().videos.list().data == []
        assert server.client().videos.create(prompt="a ball", model="slow", **TINY).status == "queued"


def test_405_outside_the_api_keeps_a_useful_message(paused):
    answer = httpx.post(f"{paused.url}/web/app.js")
    assert answer.status_code == 405 and "this path takes " in answer.json()["error"]["message"]
    assert answer.headers.get("allow", "GET") != ""  # never an empty list of methods


def test_lengths_sizes_and_rates_are_read_as_the_cli_reads_them(paused, tmp_path):
    client, store = paused.client(), paused.app.state.service.store
    plain = client.videos.create(prompt="a ball", size="64x64")  # no seconds: 4, as Sora's and the CLI's
    story = client.videos.create(prompt="", size="64x64", extra_body={  # 4 s past the last start, as the CLI
        "segments": [{"start": 0, "prompt": "a red ball"}, {"start": 5, "prompt": "a blue ball"}]})
    exact = client.videos.create(prompt="a ball", size="64x64", extra_body={"frames": 9, "fps": 8, "window": 4,
                                                                             "context": 1})
    assert (plain.seconds, story.seconds, story.prompt, exact.seconds) == ("4", "9", "a red ball", "1.125")
    assert {k: store.get(exact.id, EVERYONE).params[k] for k in ("frames", "window", "context")} == {
        "frames": 9, "window": 4, "context": 1}
    write_video(tmp_path / "clip.mp4", np.zeros((9, 64, 64, 3), np.uint8), fps=8)
    clip = ("clip.mp4", (tmp_path / "clip.mp4").read_bytes(), "video/mp4")
    edit = client.videos.edit(prompt="a blue ball", video=clip, extra_body={"size": "32x32", "fps": 4})
    extend = httpx.post(f"{paused.url}/v1/videos/extensions", headers=HEADERS, files={"video": clip},
                        data={"prompt": "it goes on", "frames": "8", "size": "32x32"})
    assert extend.status_code == 200, extend.text
    assert (edit.size, edit.seconds, extend.json()["size"]) == ("32x32", "1.25", "32x32")  # 9 frames read at 4 fps: 5
    assert extend.json()["seconds"] == "2.125"  # the clip's 9 frames and 8 more, at 8 fps


def test_a_completed_video_whose_files_are_gone_says_so_everywhere(paused):
    """Deleted outside the server, or a kinema.db restored from a backup: neither "not ready" nor "not completed"."""
    job = stored_job(paused, "completed", progress=100, completed_at=1, expires_at=int(time.time()) + 3600)
    calls = [("GET", f"videos/{job.id}/content", None), ("POST", f"videos/{job.id}/remix", {"prompt": "blue"}),
             ("POST", "videos/edits", {"prompt": "blue", "video": {"id": job.id}}),
             ("POST", "videos/extensions", {"prompt": "on", "video": {"id": job.id}, "connect_to": {"id": job.id}})]
    for method, path, body in calls:
        answer = httpx.request(method, f"{paused.url}/v1/{path}", headers=HEADERS, json=body)
        error = answer.json()["error"]
        assert (answer.status_code, error["code"]) == (404, "video_files_missing"), (path, error)
        assert f"{job.id} is completed but its files are missing" in error["message"]
        assert error["message"].endswith("generate it again")


def test_the_list_answers_with_a_damaged_row_among_its_jobs(paused):
    store = paused.app.state.service.store
    job = stored_job(paused, "completed")
    store._db.execute("UPDATE jobs SET params = 'not json' WHERE id = ?", (job.id,))
    answer = httpx.get(f"{paused.url}/v1/videos", params={"limit": 100}, headers=HEADERS)
    assert answer.status_code == 200, answer.text
    listed = next(video for video in answer.json()["data"] if video["id"] == job.id)
    assert (listed["status"], listed["error"]["code"]) == ("failed", "damaged_job")
    assert httpx.delete(f"{paused.url}/v1/videos/{job.id}", headers=HEADERS).status_code == 200  # and it can go


def test_the_provenance_endpoint_reads_previews_and_what_kinema_verify_reads(paused, tmp_path):
    """The API's previews carry the video's tags; files are read by their content, AVI too, as on the CLI."""
    import av

    from kinema import provenance
    from kinema.jobs import write_previews

    meta = provenance.metadata("a red ball", "debug", 7)
    write_video(tmp_path / "video.mp4", np.full((9, 64, 64, 3), 90, np.uint8), 8, metadata=meta)
    write_previews(tmp_path / "video.mp4", 9, tmp_path / "thumbnail.webp", tmp_path / "spritesheet.jpg")
    with av.open(str(tmp_path / "clip.avi"), "w") as container:
        stream = container.add_stream("mpeg4", rate=8, width=64, height=64)
        container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")))
        container.mux(stream.encode())
    for name, sent_as in (("thumbnail.webp", "thumb"), ("spritesheet.jpg", "sheet.mp4"), ("clip.avi", "clip.avi")):
        answer = httpx.post(f"{paused.url}/v1/provenance", headers=HEADERS,
                            files={"file": (sent_as, (tmp_path / name).read_bytes())})
        assert answer.status_code == 200, (name, answer.text)
        tags = answer.json()["summary"][1]
        assert tags == ("tags: none (stripped, or never written)" if name == "clip.avi" else
                        "tags: ai_generated=true, model=debug, seed=7; prompt 'a red ball'"), name


def test_another_keys_video_answers_as_a_missing_one_everywhere(two_keys):
    a, b = two_keys.client(KEY_A), two_keys.client(KEY_B)
    salt = two_keys.app.state.service.store.owner_salt
    queued, done = a.videos.create(prompt="alice's", **TINY), finished_job(two_keys, key_owner(KEY_A, salt))
    bobs = finished_job(two_keys, key_owner(KEY_B, salt))  # B's own, to extend and connect from
    requests = [lambda v: ("GET", f"videos/{v}", None), lambda v: ("DELETE", f"videos/{v}", None),
                *[lambda v, variant=variant: ("GET", f"videos/{v}/content?variant={variant}", None)
                  for variant in VARIANTS],
                lambda v: ("POST", f"videos/{v}/remix", {"prompt": "blue"}),
                lambda v: ("POST", "videos/edits", {"prompt": "blue", "video": {"id": v}}),
                lambda v: ("POST", "videos/extensions", {"prompt": "on", "video": {"id": v}}),
                lambda v: ("POST", "videos/extensions", {"prompt": "on", "video": {"id": bobs.id},
                                                         "connect_to": {"id": v}}),
                lambda v: ("GET", f"videos?after={v}", None)]
    missing = new_id()
    for request in requests:
        for video_id in (queued.id, done.id):
            method, path, body = request(video_id)
            theirs = httpx.request(method, f"{two_keys.url}/v1/{path}", headers={"Authorization": f"Bearer {KEY_B}"},
                                   json=body)
            method, path, body = request(missing)
            absent = httpx.request(method, f"{two_keys.url}/v1/{path}", headers={"Authorization": f"Bearer {KEY_B}"},
                                   json=body)
            assert (theirs.status_code, theirs.json()["error"]["code"]) == (404, "video_not_found"), (path, theirs.text)
            assert theirs.json() == json.loads(absent.text.replace(missing, video_id)), path  # word for word
    assert [video.id for video in b.videos.list()] == [bobs.id]  # and B's tries queued nothing
    assert a.videos.retrieve(queued.id).status == "queued" and a.videos.retrieve(done.id).status == "completed"
    for variant in VARIANTS:
        path = two_keys.app.state.service.store.output_path(done.id, variant)
        assert a.videos.download_content(done.id, variant=variant).read() == path.read_bytes()
    remix = a.videos.remix(done.id, prompt="the same, in green")
    assert remix.remixed_from_video_id == done.id
    assert [video.id for video in a.videos.list()] == [remix.id, done.id, queued.id]
    assert a.videos.delete(done.id).deleted and [video.id for video in a.videos.list()] == [remix.id, queued.id]


def test_a_keys_list_pages_through_its_own_videos_among_anothers(two_keys):
    a, b = two_keys.client(KEY_A), two_keys.client(KEY_B)
    mine, theirs = [], []
    for i in range(5):  # interleaved: every page of A's reaches past B's
        mine.append(a.videos.create(prompt=f"a {i}", **TINY).id)
        theirs.append(b.videos.create(prompt=f"b {i}", **TINY).id)
    assert [video.id for video in a.videos.list(limit=2, order="asc")] == mine  # the SDK pages on with last_id
    assert [video.id for video in b.videos.list(limit=2, order="desc")] == theirs[::-1]

    def page(**params) -> tuple[list[str], str | None, str | None, bool]:
        answer = httpx.get(f"{two_keys.url}/v1/videos", params=params, headers={"Authorization": f"Bearer {KEY_A}"})
        body = answer.json()
        return [video["id"] for video in body["data"]], body["first_id"], body["last_id"], body["has_more"]

    assert page(limit=2, order="asc") == (mine[:2], mine[0], mine[1], True)
    assert page(limit=2, order="asc", after=mine[1]) == (mine[2:4], mine[2], mine[3], True)
    assert page(limit=2, order="asc", after=mine[3]) == ([mine[4]], mine[4], mine[4], False)  # B's b 4 is after it
    assert page(limit=1, order="desc", after=mine[1]) == ([mine[0]], mine[0], mine[0], False)
    assert page(limit=5) == (mine[::-1], mine[4], mine[0], False)  # 10 jobs, 5 of them A's: no more


def test_an_open_server_sees_every_video_and_every_key_those_made_without_keys(tmp_path):
    with ServerThread(tmp_path / "data", api_keys=(), concurrency=0) as open_server:
        before = open_server.client().videos.create(prompt="made before keys", **TINY).id
    with ServerThread(tmp_path / "data", api_keys=(KEY_A, KEY_B), concurrency=0) as keyed:
        made = {key: keyed.client(key).videos.create(prompt=key, **TINY).id for key in (KEY_A, KEY_B)}
        for key in (KEY_A, KEY_B):
            client = keyed.client(key)
            assert [video.id for video in client.videos.list(order="asc")] == [before, made[key]]
            assert client.videos.retrieve(before).prompt == "made before keys"
    with ServerThread(tmp_path / "data", api_keys=(), concurrency=0) as reopened:  # the keys taken away again
        client = reopened.client()
        assert [video.id for video in client.videos.list(order="asc")] == [before, made[KEY_A], made[KEY_B]]
        assert client.videos.retrieve(made[KEY_B]).prompt == KEY_B
        assert client.videos.delete(made[KEY_A]).deleted


def test_the_store_keeps_a_digest_of_the_key_never_the_key(two_keys):
    video = two_keys.client(KEY_A).videos.create(prompt="whose?", **TINY)
    store: JobStore = two_keys.app.state.service.store
    owner = store.get(video.id, EVERYONE).owner
    assert re.fullmatch(r"k_[0-9a-f]{16}", owner)
    assert owner == key_owner(KEY_A, store.owner_salt) != key_owner(KEY_B, store.owner_salt)
    written = b"".join(path.read_bytes() for path in store.root.glob("kinema.db*"))  # the database and its WAL
    assert owner.encode() in written and KEY_A.encode() not in written


def test_each_store_salts_its_owner_ids_and_keeps_its_salt(tmp_path):
    first, second = JobStore(tmp_path / "one"), JobStore(tmp_path / "two")
    salts = first.owner_salt, second.owner_salt
    first.close(), second.close()
    assert len(salts[0]) == 16 and salts[0] != salts[1]  # one key, another owner id in another data folder
    assert key_owner(KEY_A, salts[0]) != key_owner(KEY_A, salts[1])
    reopened = JobStore(tmp_path / "one")  # and the same one after a restart: its videos stay the key's
    assert reopened.owner_salt == salts[0]
    reopened.close()
