"""The job store and worker behind the Videos API: SQLite rows, files in a data folder, worker threads.

Layout of the data folder (every path is built from a validated id, never from client text):

    kinema.db                          one row per job (SQLite in WAL mode)
    inputs/<id>/                       uploads and copied source videos the job reads
    videos/<id>/video.mp4              outputs, with thumbnail.webp (middle frame) and spritesheet.jpg

A job's inputs are written and its row committed before the API answers, so killing the server
(even with SIGKILL) loses no submitted job: on start, queued jobs run and interrupted ones run again.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from kinema import filetypes, io, provenance, sheets
from kinema.checkpoint import BUNDLED_MODELS, DEFAULT_MODEL, atomic_write, locate_model, lock_folder
from kinema.config import CONCURRENCY, RETENTION_HOURS, SWEEP_S
from kinema.errors import KinemaError
from kinema.pipeline import Pipeline, Request

log = logging.getLogger("kinema.server")

ID_PATTERN = re.compile(r"video_[0-9a-f]{24}")
VARIANTS = {  # download variant -> (file name in videos/<id>/, content type)
    "video": ("video.mp4", "video/mp4"),
    "thumbnail": ("thumbnail.webp", "image/webp"),
    "spritesheet": ("spritesheet.jpg", "image/jpeg"),
}
INPUT_PARAMS = {"image": "input_reference", "video": "video", "video_b": "connect_to"}  # Request field -> API field
MAX_UPLOAD_BYTES = 256 * 1024 * 1024
STORE_RETRY_S = 5.0  # a worker whose store failed (a full disk) waits this long before it tries again
PROGRESS_WRITE_INTERVAL_S = 0.25  # progress arrives per sampling step; the DB needs far fewer writes
SPRITESHEET_FRAMES = 16
# Model names the OpenAI SDK and Sora clients send; they mean "the server's default model".
SORA_MODELS = {"sora-2", "sora-2-pro", "sora-2-2025-10-06", "sora-2-pro-2025-10-06", "sora-2-2025-12-08"}


def new_id() -> str:
    return "video_" + secrets.token_hex(12)


def valid_id(video_id: str) -> bool:
    return ID_PATTERN.fullmatch(video_id) is not None


class QueueFull(Exception):
    """More jobs are waiting than the server accepts."""


class JobGone(Exception):
    """The running job was deleted; its work is thrown away."""


class ShuttingDown(Exception):
    """The server is stopping; the running job goes back to the queue."""


@dataclass
class Job:
    id: str
    prompt: str
    model: str
    size: str
    seconds: str
    params: dict[str, Any]  # Request's scalar fields, plus "inputs": {Request field: file name}
    status: str = "queued"
    progress: int = 0
    created_at: int = field(default_factory=lambda: int(time.time()))
    completed_at: int | None = None
    expires_at: int | None = None
    remixed_from: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    expired_files: bool = False  # the sweep has deleted its files
    notes: list[str] = field(default_factory=list)  # what the pipeline did to the request, for people
    attempts: int = 0  # times a worker has started it
    owner: str = ""  # the digest of the API key that made it; '' when made without keys (see visible)

    @property
    def expired(self) -> bool:
        """Past its expires_at, whether or not the sweep (every SWEEP_S) has deleted its files yet."""
        return self.expired_files or (self.expires_at is not None and self.expires_at <= time.time())

    def to_api(self) -> dict[str, Any]:
        """The OpenAI `Video` object, with Kinema's `notes` and `seed` (drawn when the request gave none; a job stored
        before seeds were drawn may have none)."""
        error = {"code": self.error_code, "message": self.error_message} if self.error_code else None
        return {"id": self.id, "object": "video", "status": self.status, "progress": self.progress,
                "created_at": self.created_at, "completed_at": self.completed_at, "expires_at": self.expires_at,
                "model": self.model, "prompt": self.prompt, "seconds": self.seconds, "size": self.size,
                "remixed_from_video_id": self.remixed_from, "error": error, "notes": self.notes,
                "seed": self.params.get("seed")}


SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- submission order, for listing and the queue
    id TEXT UNIQUE NOT NULL, status TEXT NOT NULL, progress INTEGER NOT NULL,
    created_at INTEGER NOT NULL, completed_at INTEGER, expires_at INTEGER,
    model TEXT NOT NULL, prompt TEXT NOT NULL, seconds TEXT NOT NULL, size TEXT NOT NULL,
    remixed_from TEXT, error_code TEXT, error_message TEXT, params TEXT NOT NULL,
    expired INTEGER NOT NULL DEFAULT 0,
    notes TEXT NOT NULL DEFAULT '[]',  -- JSON list of strings
    attempts INTEGER NOT NULL DEFAULT 0,  -- times a worker has started it
    owner TEXT NOT NULL DEFAULT ''  -- the digest of the API key that made it; '' without keys
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, seq);
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);  -- the store's own, e.g. its salt
"""
COLUMNS = ("id", "status", "progress", "created_at", "completed_at", "expires_at", "model", "prompt", "seconds",
           "size", "remixed_from", "error_code", "error_message", "params", "expired", "notes", "attempts", "owner")
JSON_COLUMNS = {"params": dict, "notes": list}  # columns stored as JSON, and what each holds
FIELDS = {"expired": "expired_files"}  # columns whose Job field has another name
# Columns added since the first release, with their definitions: a store made before them gains them on open.
ADDED_COLUMNS = {"notes": "TEXT NOT NULL DEFAULT '[]'", "attempts": "INTEGER NOT NULL DEFAULT 0",
                 "owner": "TEXT NOT NULL DEFAULT ''"}
MAX_ATTEMPTS = 3  # a job the server stopped during this often is failed, not run again: it may be what stops it


class JobStore:
    """Jobs in SQLite and their files under one data folder; safe to share between threads."""

    def __init__(self, data_dir: str | Path):
        self.root = Path(data_dir).resolve()
        if self.root.exists() and not self.root.is_dir():
            raise KinemaError(f"the data folder {data_dir} is a file; give --data a folder name")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise KinemaError(f"cannot make the data folder {self.root} ({err.strerror or err}); give --data a "
                              "writable folder") from None
        self._owner = lock_folder(self.root, f"the data folder {self.root} is in use by another kinema serve; stop "
                                             "it, or give --data another folder")
        try:
            self._open(self.root / "kinema.db")
        except BaseException:
            self._owner.close()  # a store that failed to open must not keep the folder from the next try
            raise
        self._lock = threading.Lock()

    def _open(self, database: Path) -> None:
        try:
            if not (database.is_file() and database.stat().st_size) and _job_folders(self.root):
                raise KinemaError(f"{database} is missing or empty, but {self.root} holds the files of earlier jobs; "
                                  "restore kinema.db from a backup, or give --data a new folder")
            self._db = sqlite3.connect(database, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # an answered submit must survive a crash
            self._db.executescript(SCHEMA)
            have = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
            for name, definition in ADDED_COLUMNS.items():
                if name not in have:
                    self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {definition}")
            # Drawn once a store: the same key gets another owner id in another data folder, so one table of digests
            # of short keys does not serve every kinema.db (server.key_owner).
            self._db.execute("INSERT OR IGNORE INTO settings VALUES ('owner_salt', ?)", (secrets.token_hex(16),))
            salt = self._db.execute("SELECT value FROM settings WHERE name = 'owner_salt'").fetchone()[0]
            self.owner_salt = bytes.fromhex(salt)
        except (sqlite3.Error, OSError) as err:
            raise KinemaError(f"cannot open the job store in {self.root} ({err}); check that the folder is writable "
                              "and kinema.db is not damaged (restore it from a backup, or give --data a new "
                              "folder)") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self._owner.close()  # the folder's lock goes with it

    # -- paths: only ever built from a validated id ---------------------------------------------
    def input_dir(self, video_id: str) -> Path:
        return self._job_dir("inputs", video_id)

    def output_path(self, video_id: str, variant: str = "video") -> Path:
        return self._job_dir("videos", video_id) / VARIANTS[variant][0]

    def _job_dir(self, kind: str, video_id: str) -> Path:
        if not valid_id(video_id):
            raise ValueError(f"invalid video id {video_id!r}")
        return self.root / kind / video_id

    def remove_files(self, video_id: str) -> None:
        self.remove_inputs(video_id)
        self.remove_outputs(video_id)

    def remove_inputs(self, video_id: str) -> None:
        shutil.rmtree(self.input_dir(video_id), ignore_errors=True)

    def remove_outputs(self, video_id: str) -> None:
        shutil.rmtree(self._job_dir("videos", video_id), ignore_errors=True)

    # -- rows --------------------------------------------------------------------------------
    def add(self, job: Job, max_queue: int) -> None:
        """Commit a new queued job, or raise QueueFull when `max_queue` jobs are already waiting."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                (waiting,) = self._db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'").fetchone()
                if waiting >= max_queue:
                    raise QueueFull
                values = [json.dumps(getattr(job, c)) if c in JSON_COLUMNS else getattr(job, FIELDS.get(c, c))
                          for c in COLUMNS]
                self._db.execute(f"INSERT INTO jobs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                                 values)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def get(self, video_id: str, owner: str) -> Job | None:
        """The job, unless it is deleted or not `owner`'s to see (visible)."""
        mine, args = visible(owner)
        rows = self._query(f"SELECT {', '.join(COLUMNS)} FROM jobs WHERE id = ? AND status != 'deleted' AND {mine}",
                           (video_id, *args))
        return rows[0] if rows else None

    def known(self, video_id: str, owner: str) -> bool:
        """Whether the id was ever given out to `owner`, deleted or not: a list may page on after a deleted id."""
        mine, args = visible(owner)
        with self._lock:
            row = self._db.execute(f"SELECT 1 FROM jobs WHERE id = ? AND {mine}", (video_id, *args)).fetchone()
        return row is not None

    def page(self, after: str | None, limit: int, order: str, owner: str) -> tuple[list[Job], bool]:
        """Up to `limit` of the jobs `owner` sees, in submission order ("asc") or newest first ("desc"), after the
        job `after`."""
        direction, compare = ("ASC", ">") if order == "asc" else ("DESC", "<")
        mine, args = visible(owner)
        where = f"WHERE status != 'deleted' AND {mine}"
        if after is not None:  # a deleted `after` keeps its place: deleting while paging through a list works
            where, args = f"{where} AND seq {compare} (SELECT seq FROM jobs WHERE id = ?)", (*args, after)
        rows = self._query(f"SELECT {', '.join(COLUMNS)} FROM jobs {where} ORDER BY seq {direction} LIMIT ?",
                           (*args, limit + 1))
        return rows[:limit], len(rows) > limit

    def claim(self) -> Job | None:
        """Atomically move the oldest queued job to in_progress and return it."""
        rows = self._query(
            "UPDATE jobs SET status = 'in_progress', progress = 0, attempts = attempts + 1 WHERE seq = "
            "(SELECT seq FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1) "
            f"RETURNING {', '.join(COLUMNS)}", ())
        return rows[0] if rows else None

    def set_progress(self, video_id: str, progress: int) -> bool:
        """False when the job is no longer running here (it was deleted, or finished elsewhere)."""
        return self._update(video_id, "progress = ?", progress, only="status = 'in_progress'")

    def finish(self, video_id: str, seconds: str, notes: list[str], retention_s: float) -> bool:
        now = int(time.time())
        return self._update(video_id, "status = 'completed', progress = 100, seconds = ?, notes = ?, "
                            "completed_at = ?, expires_at = ?", seconds, json.dumps(notes), now,
                            now + int(retention_s))

    def fail(self, video_id: str, code: str, message: str, retention_s: float) -> bool:
        now = int(time.time())
        failed = self._update(video_id, "status = 'failed', error_code = ?, error_message = ?, completed_at = ?, "
                              "expires_at = ?", code, message, now, now + int(retention_s))
        if failed:  # every way a job fails passes here (a bug or a full disk is also logged where it is caught)
            log.warning("job %s failed (%s): %s", video_id, code, message)
        return failed

    def requeue(self, video_id: str, stopped_cleanly: bool = False) -> bool:
        """Back to the queue; a clean stop (the job saw it coming) does not count as one of its attempts."""
        return self._update(video_id, "status = 'queued', progress = 0, attempts = attempts - ?",
                            int(stopped_cleanly))

    def delete(self, video_id: str) -> Job | None:
        """Remove a job's files and all it said, keeping only its id and place (for paging after it); a worker
        running it notices on its next progress report."""
        job = self.get(video_id, EVERYONE)
        if job is not None:
            self._update(video_id, "status = 'deleted', prompt = '', params = '{}', notes = '[]', error_message = "
                         "NULL")
            self.remove_files(video_id)
        return job

    def recover(self, retention_s: float) -> None:
        """On start: jobs a previous process was running go back to the queue, or fail if inputs are gone; files
        no job owns (an upload cut off by a crash, a half-written output's temporary file) are removed."""
        with self._lock:
            live = {row[0] for row in self._db.execute("SELECT id FROM jobs WHERE status != 'deleted'")}
        for folder in _job_folders(self.root):
            if folder.name not in live:
                shutil.rmtree(folder, ignore_errors=True)
        for leftover in (self.root / "videos").glob("*/.*.tmp.*"):
            leftover.unlink(missing_ok=True)
        for job in self._query(f"SELECT {', '.join(COLUMNS)} FROM jobs WHERE status = 'in_progress'", ()):
            missing = [name for name in job.params.get("inputs", {}).values()
                       if not (self.input_dir(job.id) / name).is_file()]
            if missing:
                self.fail(job.id, "inputs_missing", f"the server restarted while this job ran and its input "
                          f"files ({', '.join(missing)}) are gone; submit the job again", retention_s)
            elif job.attempts >= MAX_ATTEMPTS:  # fail() logs it
                self.fail(job.id, "interrupted", f"the server stopped {job.attempts} times while running this job, "
                          "so it is not run again; submit it again, perhaps smaller or shorter", retention_s)
            else:
                log.info("re-running %s, interrupted by a restart", job.id)
                self.requeue(job.id)

    def expire(self) -> list[str]:
        """Delete the files of finished jobs past their expires_at; their rows stay, marked expired."""
        now = int(time.time())
        rows = self._query(f"SELECT {', '.join(COLUMNS)} FROM jobs WHERE expired = 0 AND expires_at <= ? "
                           "AND status IN ('completed', 'failed')", (now,))
        for job in rows:
            self.remove_files(job.id)
            self._update(job.id, "expired = 1")
        return [job.id for job in rows]

    def _update(self, video_id: str, assignments: str, *args: Any, only: str = "status != 'deleted'") -> bool:
        """False when the job is not there, or not as `only` says (by default: deleted)."""
        with self._lock:
            cursor = self._db.execute(f"UPDATE jobs SET {assignments} WHERE id = ? AND {only}", (*args, video_id))
        return cursor.rowcount > 0

    def _query(self, sql: str, args: tuple) -> list[Job]:
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [_job_from_row(row) for row in rows]


EVERYONE = ""  # the owner that sees every job: an open server's callers, and the server's own work (no default:
# a caller that forgot its owner would see other keys' videos)


def visible(owner: str) -> tuple[str, tuple[str, ...]]:
    """The SQL condition (and its arguments) for the jobs `owner` may see. Owner '' (an open server, or the server's
    own work) sees every job; an API key's owner sees its own, and the jobs made before the server had keys (owner
    ''), which no key can be told to own: hiding them would lose them to everyone."""
    return ("1", ()) if not owner else ("owner IN (?, '')", (owner,))


def _job_folders(root: Path) -> list[Path]:
    """The folders of jobs' inputs and outputs under a data folder."""
    return [folder for kind in ("inputs", "videos") if (root / kind).is_dir()
            for folder in (root / kind).iterdir() if folder.is_dir() and valid_id(folder.name)]


DAMAGED = "damaged_job"
_logged_damage: set[tuple[str, str]] = set()  # (id, column): a list polled every second logs each damaged row once


def _job_from_row(row: tuple) -> Job:
    """The Job of a row; a JSON column that does not parse (a hand-edited or half-restored kinema.db) costs that job
    its notes, or with its params (what would run) its status: it reads as failed, and every other job still lists."""
    values = {FIELDS.get(c, c): value for c, value in zip(COLUMNS, row, strict=True)}
    values["expired_files"] = bool(values["expired_files"])
    for name, kind in JSON_COLUMNS.items():
        try:
            values[name] = json.loads(values[name])
            if not isinstance(values[name], kind):
                raise ValueError(f"a JSON {type(values[name]).__name__}, not a JSON {kind.__name__}")
        except (ValueError, TypeError) as err:
            values[name] = kind()
            if (values["id"], name) not in _logged_damage:
                _logged_damage.add((values["id"], name))
                log.error("job %s: its %s in kinema.db are damaged (%s)%s", values["id"], name, err,
                          "; it reads as failed" if name == "params" else "")
            if name == "params":
                values |= {"status": "failed", "error_code": DAMAGED, "error_message": "this job's stored parameters "
                           "are damaged, so it cannot run or be remixed; delete it and submit it again"}
    return Job(**values)


class Models:
    """Public model names -> pipelines, each loaded on first use and then shared by all jobs."""

    def __init__(self, default: str | None = None, extra: dict[str, str] | None = None,
                 signer: provenance.C2paSigner | None = None):
        self.default = public_name(default)
        self.signer = signer  # every model's outputs are signed with it
        bundled = {name: name for name, folder in BUNDLED_MODELS.items() if (folder / "config.json").exists()}
        if self.default == DEFAULT_MODEL and DEFAULT_MODEL not in bundled:
            raise KinemaError("the bundled model is not installed; serve another with --model (a model folder, "
                              "or debug: tiny random weights for trying the API)")
        self.specs: dict[str, str | None] = {**bundled, self.default: default, **(extra or {})}
        for spec in self.specs.values():
            locate_model(spec)  # a server with a missing model fails at start, not at each request
        self._pipelines: dict[str, Pipeline] = {}
        self._lock = threading.Lock()

    def name_for(self, requested: str | None) -> str:
        """The model a request asked for; empty, "default" and Sora's names mean the default model."""
        if not requested or requested == "default" or requested in SORA_MODELS:
            return self.default
        if requested not in self.specs:
            raise KinemaError(f"unknown model {requested!r}; this server offers {', '.join(self.specs)}",
                              param="model", code="model_not_found")
        return requested

    def pipeline(self, name: str) -> Pipeline:
        if name not in self.specs:  # a job queued before a restart that dropped its model
            raise KinemaError(f"model {name!r} is no longer served here (this server offers {', '.join(self.specs)}); "
                              "submit the job again", code="model_not_found")
        with self._lock:  # one load per model even when requests race; loading is rare
            if name not in self._pipelines:
                log.info("loading model %s", name)
                self._pipelines[name] = Pipeline.load(self.specs[name], signer=self.signer)
            return self._pipelines[name]


def public_name(spec: str | None) -> str:
    """The name clients see for a model spec: the preset name or the folder's name."""
    if spec is None or spec in ("", "default", DEFAULT_MODEL):
        return DEFAULT_MODEL
    return Path(spec).name if Path(spec).is_dir() else str(spec)


def request_for(job: Job, inputs: Path, pipe: Pipeline) -> tuple[Request, list[str]]:
    """The pipeline Request of a job, its input pixels read from the files in `inputs` at the job's size, and
    notes on how they were fitted, each naming its API field."""
    params = {k: v for k, v in job.params.items() if k != "inputs"}
    if params.get("segments") is not None:
        params["segments"] = [(float(start), text) for start, text in params["segments"]]
    files = {name: inputs / file_name for name, file_name in job.params.get("inputs", {}).items()}
    request, fitted = pipe.read_inputs(Request(prompt=job.prompt, **params), files)
    return request, [f"{INPUT_PARAMS[name]}: {what}" for name, what in fitted.items()]


class Worker:
    """Threads that run queued jobs one at a time each, reporting progress into the store."""

    def __init__(self, store: JobStore, models: Models, concurrency: int = CONCURRENCY,
                 retention_s: float = RETENTION_HOURS * 3600):
        self.store, self.models = store, models
        self.concurrency, self.retention_s = concurrency, retention_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self.store.recover(self.retention_s)
        self.store.expire()
        targets = [self._run_jobs] * self.concurrency + [self._sweep]
        for i, target in enumerate(targets):
            thread = threading.Thread(target=target, name=f"kinema-worker-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the threads; a job still running is put back in the queue for the next start."""
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)

    def wake(self) -> None:
        """Tell idle workers a job was queued."""
        self._wake.set()

    def _run_jobs(self) -> None:
        while not self._stop.is_set():
            try:
                self._wake.clear()  # before claiming: a job queued after this point sets it again
                job = self.store.claim()
                if job is None:
                    self._wake.wait(timeout=1.0)
                else:
                    self.run(job)
            except Exception:  # the store itself failed (a full disk): this thread must outlive it
                log.exception("the job store failed; the worker tries again in %g s", STORE_RETRY_S)
                self._stop.wait(STORE_RETRY_S)

    def _sweep(self) -> None:
        while not self._stop.wait(SWEEP_S):
            expired = self.store.expire()
            if expired:
                log.info("deleted the expired files of %d jobs", len(expired))

    def run(self, job: Job) -> None:
        if job.error_code == DAMAGED:  # its row says nothing that could run
            self.store.fail(job.id, job.error_code, job.error_message, self.retention_s)
            return
        started = time.monotonic()
        try:
            seconds, notes = self._generate(job)
        except JobGone:
            self.store.remove_files(job.id)
        except ShuttingDown:
            self.store.requeue(job.id, stopped_cleanly=True)
        except KinemaError as err:
            if err.code == "storage_error":  # the server's disk, not the request: no path, no partial files
                log.error("job %s could not be stored: %s", job.id, err)
                self.store.remove_outputs(job.id)
                err = KinemaError("the server could not store this video (its disk is full or not writable); "
                                  "submit it again later", code="storage_error")
            self.store.fail(job.id, err.code, str(err), self.retention_s)
        except Exception as err:  # a bug, but one job's failure must not kill the worker
            log.exception("job %s failed", job.id)
            self.store.fail(job.id, "internal_error", f"generation failed: {type(err).__name__}: {err}",
                            self.retention_s)
        else:
            if not self.store.finish(job.id, seconds, notes, self.retention_s):
                self.store.remove_files(job.id)  # deleted in the last moments
            else:  # a finished video is all its remixes and extensions read: its uploads need not wait for expiry
                self.store.remove_inputs(job.id)
                log.info("job %s completed: %s s of video in %.1f s", job.id, seconds, time.monotonic() - started)

    def _generate(self, job: Job) -> tuple[str, list[str]]:
        """Run the pipeline exactly as the CLI does; returns the output's duration in seconds and the notes the CLI
        would print."""
        pipe = self.models.pipeline(job.model)
        request, notes = request_for(job, self.store.input_dir(job.id), pipe)
        report = self._progress_writer(job.id)
        video = pipe.generate(request, progress=report)
        path = self.store.output_path(job.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        pipe.save(video, path, progress=report)
        write_previews(path, video.frames, self.store.output_path(job.id, "thumbnail"),
                       self.store.output_path(job.id, "spritesheet"))
        return f"{video.seconds:g}", [*notes, *video.notes]

    def _progress_writer(self, video_id: str):
        last = {"time": 0.0, "percent": -1}

        def report(fraction: float, stage: str) -> None:
            if self._stop.is_set():
                raise ShuttingDown
            percent = min(99, int(100 * fraction))  # 100 only once the files are written
            now = time.monotonic()
            if percent != last["percent"] and now - last["time"] >= PROGRESS_WRITE_INTERVAL_S:
                if not self.store.set_progress(video_id, percent):
                    raise JobGone
                last.update(time=now, percent=percent)

        return report


def save_upload(source: BinaryIO, folder: Path, name: str, param: str) -> Path:
    """Copy an uploaded file to `folder`/`name`.<its real type>, synced to disk, refusing unknown types."""
    source.seek(0)
    suffix = filetypes.sniff_suffix(source.read(16))  # what `kinema verify` reads a file as, too
    if suffix is None:
        image, video = filetypes.IMAGE_TYPES, filetypes.VIDEO_TYPES
        wanted = image if name == "image" else video if name.startswith("video") else f"{image} or {video}"
        raise KinemaError(f"{param} is not {wanted}", param=param)
    source.seek(0)
    path = folder / f"{name}{suffix}"
    size = 0
    with open(path, "wb") as out:
        while chunk := source.read(1 << 20):
            size += len(chunk)
            if size > MAX_UPLOAD_BYTES:
                raise KinemaError(f"{param} is larger than {MAX_UPLOAD_BYTES >> 20} MiB; send a shorter or smaller "
                                  "file", param=param, code="request_too_large")
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return path


def write_previews(video_path: Path, frames: int, thumbnail: Path, spritesheet: Path) -> None:
    """A middle-frame thumbnail and a contact sheet, from only those frames of the MP4 (io.read_frames; an encoder
    that dropped trailing frames gives the last one instead). Both carry the MP4's disclosure tags (as XMP: WebP and
    JPEG have no text tags) and its watermark: the thumbnail is one of its marked frames, and the sheet, whose tiles'
    marks are not on its own grid, is marked whole with the video's payload."""
    sheet_picks = sheets.even_picks(frames, SPRITESHEET_FRAMES)
    picked = io.read_frames(video_path, [frames // 2, *sheet_picks])
    tags = {name: value for name, value in io.video_metadata(video_path)["tags"].items()
            if name in (*provenance.DISCLOSURE_TAGS, "watermark")}
    xmp = provenance.xmp(tags)
    with atomic_write(thumbnail) as tmp:
        Image.fromarray(picked[0]).save(tmp, format="WEBP", quality=90, xmp=xmp)
    sheet = np.asarray(sheets.contact_sheet(picked[1:], columns=4, max_frames=SPRITESHEET_FRAMES))
    if "watermark_payload" in tags:
        sheet = provenance.embed(sheet, bytes.fromhex(tags["watermark_payload"]))
    with atomic_write(spritesheet) as tmp:
        Image.fromarray(sheet).save(tmp, format="JPEG", quality=90, xmp=xmp)
