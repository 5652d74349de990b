"""The job store and worker behind `kinema serve`: what survives a crash, a full disk, a damaged folder, a second
server and a restart with other models."""

from __future__ import annotations

import re
import time

import pytest

from kinema.errors import KinemaError
from kinema.jobs import EVERYONE, Job, JobStore, Models, Worker, new_id


def _job(**fields) -> Job:
    return Job(**{"id": new_id(), "prompt": "a red ball", "model": "debug", "size": "64x64", "seconds": "1",
                  "params": {"width": 64, "height": 64, "seconds": 1.0, "steps": 1, "inputs": {}}, **fields})


def test_one_server_per_data_folder(tmp_path):
    first = JobStore(tmp_path / "data")
    with pytest.raises(KinemaError, match="is in use by another kinema serve; stop it, or give --data another"):
        JobStore(tmp_path / "data")
    first.close()
    JobStore(tmp_path / "data").close()  # the lock goes with the store


def test_a_damaged_job_store_is_a_one_line_error_and_never_silently_empty(tmp_path):
    store = JobStore(tmp_path / "data")
    job = _job()
    store.add(job, max_queue=8)
    store.output_path(job.id).parent.mkdir(parents=True)
    store.output_path(job.id).write_bytes(b"a video")
    store.close()
    database = tmp_path / "data" / "kinema.db"
    database.write_bytes(b"\x00" * 100 + b"not a database" * 500)
    with pytest.raises(KinemaError, match="cannot open the job store in .*kinema.db is not damaged") as caught:
        JobStore(tmp_path / "data")
    assert "\n" not in str(caught.value)
    database.write_bytes(b"")  # an empty file would open as a new store and hide the earlier jobs
    with pytest.raises(KinemaError, match="kinema.db is missing or empty, but .* holds the files of earlier jobs"):
        JobStore(tmp_path / "data")


def test_a_restart_removes_files_no_job_owns(tmp_path):
    store = JobStore(tmp_path / "data")
    kept, orphan = _job(), new_id()
    store.add(kept, max_queue=8)
    for video_id in (kept.id, orphan):
        store.input_dir(video_id).mkdir(parents=True)
        (store.input_dir(video_id) / "video.mp4").write_bytes(b"upload")
    half_written = store.output_path(kept.id).parent / ".video.mp4.1a2b3c4d.tmp.mp4"
    half_written.parent.mkdir(parents=True)
    half_written.write_bytes(b"cut off by a crash")
    store.recover(retention_s=60)
    assert (store.input_dir(kept.id) / "video.mp4").is_file()
    assert not store.input_dir(orphan).exists() and not half_written.exists()
    store.close()


def test_a_job_the_server_keeps_dying_on_is_not_run_for_ever(tmp_path):
    store = JobStore(tmp_path / "data")
    job = _job()
    store.add(job, max_queue=8)
    for _ in range(2):  # started, then the process died; recover() puts it back each time
        assert store.claim().id == job.id
        store.recover(retention_s=60)
    assert store.get(job.id, EVERYONE).status == "queued" and store.get(job.id, EVERYONE).attempts == 2
    store.claim()
    store.requeue(job.id, stopped_cleanly=True)  # a clean stop (Ctrl-C) does not count
    assert store.get(job.id, EVERYONE).attempts == 2
    store.claim()
    store.recover(retention_s=60)  # the third death: the job may be what kills the server
    failed = store.get(job.id, EVERYONE)
    assert (failed.status, failed.error_code) == ("failed", "interrupted")
    assert "stopped 3 times while running this job" in failed.error_message
    store.close()


def test_a_download_past_its_expiry_is_expired_before_the_sweep():
    assert _job(status="completed", expires_at=int(time.time()) - 1).expired
    assert not _job(status="completed", expires_at=int(time.time()) + 60).expired
    assert _job(expired_files=True).expired


def _run_one(store: JobStore, models: Models, job: Job, timeout: float = 60.0) -> Job:
    worker = Worker(store, models)
    store.add(job, max_queue=8)
    worker.start()
    worker.wake()
    deadline = time.monotonic() + timeout
    while store.get(job.id, EVERYONE).status in ("queued", "in_progress") and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.stop()
    return store.get(job.id, EVERYONE)


def test_a_finished_job_lets_go_of_its_uploads(tmp_path):
    import numpy as np
    from PIL import Image

    store = JobStore(tmp_path / "data")
    job = _job(params={"width": 64, "height": 64, "seconds": 1.0, "steps": 1, "inputs": {"image": "image.png"}})
    store.input_dir(job.id).mkdir(parents=True)
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(store.input_dir(job.id) / "image.png")
    done = _run_one(store, Models("debug"), job)
    assert done.status == "completed" and store.output_path(job.id).is_file()
    assert not store.input_dir(job.id).exists()  # the video is what remixes and extensions read
    store.close()


def test_the_worker_outlives_a_failing_store(tmp_path, monkeypatch):
    store = JobStore(tmp_path / "data")
    claim, calls = store.claim, []

    def full_disk_once():
        calls.append(1)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        return claim()

    monkeypatch.setattr(store, "claim", full_disk_once)
    monkeypatch.setattr("kinema.jobs.STORE_RETRY_S", 0.05)
    done = _run_one(store, Models("debug"), _job())
    assert done.status == "completed" and len(calls) >= 2  # the thread tried again and ran the job
    store.close()


def test_a_full_disk_fails_the_job_without_a_path_or_partial_files(tmp_path, monkeypatch):
    store = JobStore(tmp_path / "data")

    def no_space(self, video, path, **kwargs):
        path.write_bytes(b"half a video")
        raise KinemaError(f"cannot write {path}: No space left on device; choose a writable path",
                          code="storage_error")

    monkeypatch.setattr("kinema.pipeline.Pipeline.save", no_space)
    failed = _run_one(store, Models("debug"), _job())
    assert (failed.status, failed.error_code) == ("failed", "storage_error")
    assert str(tmp_path) not in failed.error_message and "disk is full or not writable" in failed.error_message
    assert not store.output_path(failed.id).parent.exists()
    store.close()


def test_a_job_whose_model_is_no_longer_served_fails_clearly(tmp_path):
    store = JobStore(tmp_path / "data")
    gone = _run_one(store, Models("debug"), _job(model="a-model-served-before-the-restart"))
    assert (gone.status, gone.error_code) == ("failed", "model_not_found")
    assert "is no longer served here" in gone.error_message
    store.close()


def test_previews_carry_the_videos_tags_and_watermark(tmp_path):
    """The thumbnail (WebP) and spritesheet (JPEG) tell what `kinema verify` and POST /v1/provenance read: the
    video's disclosure tags and its watermark (the sheet marked whole: its tiles' marks are not on its grid)."""
    from kinema import io, provenance
    from kinema.jobs import write_previews
    from test_provenance import world_clip

    meta = provenance.metadata("a red ball", "debug", 7)
    io.write_video(tmp_path / "video.mp4", provenance.embed(world_clip(33, 128, 128),
                                                            bytes.fromhex(meta["watermark_payload"])), 8, metadata=meta)
    write_previews(tmp_path / "video.mp4", 33, tmp_path / "thumbnail.webp", tmp_path / "spritesheet.jpg")
    for name in ("thumbnail.webp", "spritesheet.jpg"):
        result = provenance.verify(tmp_path / name)
        assert result["watermark"]["detected"] and result["watermark"]["bit_accuracy"] == 1.0, name
        assert result["metadata"] == {key: str(meta[key]) for key in provenance.DISCLOSURE_TAGS}, name


def test_a_row_with_damaged_json_reads_as_failed_without_breaking_the_list(tmp_path, caplog):
    store = JobStore(tmp_path / "data")
    damaged, fine, chatty = _job(), _job(), _job(status="completed")
    for job in (damaged, fine, chatty):
        store.add(job, max_queue=8)
    store._db.execute("UPDATE jobs SET params = '{\"seed\": 1' WHERE id = ?", (damaged.id,))
    store._db.execute("UPDATE jobs SET notes = '\"a string\"' WHERE id = ?", (chatty.id,))
    for _ in range(3):  # clients poll the list: each damaged row is logged once
        listed = {job.id: job for job in store.page(None, 10, "desc", EVERYONE)[0]}
    assert len(listed) == 3 and listed[fine.id].status == "queued"
    assert (listed[damaged.id].status, listed[damaged.id].error_code) == ("failed", "damaged_job")
    assert "delete it and submit it again" in listed[damaged.id].to_api()["error"]["message"]
    assert (listed[chatty.id].status, listed[chatty.id].notes) == ("completed", [])  # only its notes are lost
    damage = [record.getMessage() for record in caplog.records if "damaged" in record.getMessage()]
    assert sorted(damage) == sorted([f"job {chatty.id}: its notes in kinema.db are damaged (a JSON str, not a JSON "
                                     "list)", f"job {damaged.id}: its params in kinema.db are damaged (Expecting ',' "
                                     "delimiter: line 1 column 11 (char 10)); it reads as failed"])
    worker = Worker(store, Models("debug"))
    worker.run(store.claim())  # the damaged job is first in the queue: it fails rather than run on half a request
    assert store.get(damaged.id, EVERYONE).status == "failed" and store.get(fine.id, EVERYONE).status == "queued"
    store.close()


def test_the_log_has_a_line_for_each_job_that_completes_or_fails(tmp_path, caplog):
    caplog.set_level("INFO", logger="kinema.server")
    store = JobStore(tmp_path / "data")
    done = _run_one(store, Models("debug"), _job())
    failed = _run_one(store, Models("debug"), _job(model="gone"))
    lines = [(record.levelname, record.getMessage()) for record in caplog.records]
    assert [line for line in lines if done.id in line[1]] == [
        ("INFO", next(m for _, m in lines if re.fullmatch(rf"job {done.id} completed: 1 s of video in \d+\.\d s", m)))]
    assert [line for line in lines if failed.id in line[1]] == [
        ("WARNING", f"job {failed.id} failed (model_not_found): {failed.error_message}")]
    store.close()


# The jobs table as it was before jobs had owners (with the columns added before that), written out by hand.
SCHEMA_BEFORE_OWNERS = """
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, status TEXT NOT NULL, progress INTEGER NOT NULL,
    created_at INTEGER NOT NULL, completed_at INTEGER, expires_at INTEGER, model TEXT NOT NULL, prompt TEXT NOT NULL,
    seconds TEXT NOT NULL, size TEXT NOT NULL, remixed_from TEXT, error_code TEXT, error_message TEXT,
    params TEXT NOT NULL, expired INTEGER NOT NULL DEFAULT 0, notes TEXT NOT NULL DEFAULT '[]',
    attempts INTEGER NOT NULL DEFAULT 0
);
"""


def test_a_store_made_before_owners_gains_the_column_and_keeps_every_row(tmp_path):
    import sqlite3

    (tmp_path / "data").mkdir()
    old = sqlite3.connect(tmp_path / "data" / "kinema.db")
    old.executescript(SCHEMA_BEFORE_OWNERS)
    kept = [new_id(), new_id()]
    for video_id, status in zip(kept, ("completed", "queued"), strict=True):
        old.execute("INSERT INTO jobs (id, status, progress, created_at, model, prompt, seconds, size, params, notes, "
                    "attempts) VALUES (?, ?, 0, 1, 'debug', 'kept', '1', '64x64', '{}', '[\"a note\"]', 1)",
                    (video_id, status))
    old.commit()
    old.close()
    store = JobStore(tmp_path / "data")
    listed, has_more = store.page(None, 10, "asc", EVERYONE)
    assert [(job.id, job.status, job.notes, job.attempts, job.owner) for job in listed] == [
        (kept[0], "completed", ["a note"], 1, ""), (kept[1], "queued", ["a note"], 1, "")] and not has_more
    assert [job.id for job in store.page(None, 10, "asc", owner="k_a")[0]] == kept  # made before keys: every key's
    theirs = _job(owner="k_b")
    store.add(theirs, max_queue=8)
    assert store.get(theirs.id, "k_a") is None and not store.known(theirs.id, "k_a")
    assert store.get(theirs.id, "k_b").owner == "k_b" and store.get(theirs.id, EVERYONE).owner == "k_b"
    assert [job.id for job in store.page(None, 10, "desc", owner="k_a")[0]] == kept[::-1]
    store.close()
    reopened = JobStore(tmp_path / "data")  # the column is there now: opening again adds nothing and loses nothing
    assert [job.id for job in reopened.page(None, 10, "asc", EVERYONE)[0]] == [*kept, theirs.id]
    reopened.close()
