"""The job store and worker behind `kinema serve`: what survives a crash, a full disk, a damaged folder, a second
server and a restart with other models."""

from __future__ import annotations

import time

import pytest

from kinema.errors import KinemaError
from kinema.jobs import Job, JobStore, Models, Worker, new_id


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
    assert store.get(job.id).status == "queued" and store.get(job.id).attempts == 2
    store.claim()
    store.requeue(job.id, stopped_cleanly=True)  # a clean stop (Ctrl-C) does not count
    assert store.get(job.id).attempts == 2
    store.claim()
    store.recover(retention_s=60)  # the third death: the job may be what kills the server
    failed = store.get(job.id)
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
    while store.get(job.id).status in ("queued", "in_progress") and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.stop()
    return store.get(job.id)


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
