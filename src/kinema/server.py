"""`kinema serve`: OpenAI's Videos API and a web page over the same pipeline as the CLI.

Point the official `openai` SDK at the server and change nothing else:

    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="any, or one of KINEMA_API_KEYS")
    video = client.videos.create_and_poll(prompt="a red ball bounces", size="128x128", seconds="2")
    client.videos.download_content(video.id).write_to_file("ball.mp4")

Routes: POST /v1/videos (create; multipart or JSON), GET /v1/videos (list: after, limit, order),
GET and DELETE /v1/videos/{id}, GET /v1/videos/{id}/content?variant=video|thumbnail|spritesheet,
POST /v1/videos/{id}/remix, POST /v1/videos/edits, POST /v1/videos/extensions; the page is at /.
`size` takes any WIDTHxHEIGHT the model can make and `seconds` any duration up to 60, not only
Sora's values; `model` may be a Sora name (meaning the default model) or a model this server offers.
With API keys, each key sees only the videos it made (and those made before the server had keys).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import logging
import math
import os
import shutil
import sqlite3
import string
import tempfile
from collections.abc import Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from anyio import from_thread
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.routing import Match

from kinema import filetypes, io, provenance
from kinema import pipeline as pl
from kinema import request_checks as rc
from kinema.api_request import (
    EXTRA_FIELDS,
    FIELDS,
    MAX_PROMPT_CHARS,
    ApiError,
    Draft,
    draft_create,
    draft_edit,
    draft_extend,
    draft_remix,
    error_response,
    read_fields,
    read_form,
)
from kinema.config import (
    CONCURRENCY,
    MAX_NOISE_CORRELATION,
    MAX_NOISE_DRIFT,
    MAX_QUEUE,
    RETENTION_HOURS,
)
from kinema.errors import BAD_REQUEST, KinemaError
from kinema.jobs import (
    INPUT_PARAMS,
    MAX_UPLOAD_BYTES,
    VARIANTS,
    Job,
    JobStore,
    Models,
    QueueFull,
    Worker,
    new_id,
    save_upload,
    valid_id,
)

log = logging.getLogger(__name__)
WEB_DIR = Path(__file__).parent / "web"
EXTRAS_MD = "".join(f"\n- `{name}`: {text}" for name, text in EXTRA_FIELDS.items())  # for the API's own docs
SHUTDOWN_GRACE_S = 10  # open requests get this long to finish when the server is stopped
POLL_AFTER_MS = 200  # the SDK's poll helper waits this long between retrieves


class Service:
    """What the routes do, in plain Python (called from the threadpool: it reads files and loads models). `owner` is
    the caller's (bearer_check): a job it may not see (JobStore's visible) answers exactly as a missing one."""

    def __init__(self, store: JobStore, models: Models, worker: Worker, max_queue: int):
        self.store, self.models, self.worker, self.max_queue = store, models, worker, max_queue

    def job(self, video_id: str, owner: str, param: str = "video_id") -> Job:
        job = self.store.get(video_id, owner) if valid_id(video_id) else None
        if job is None:
            raise ApiError(404, f"no video with id {video_id!r}", param=param, code="video_not_found")
        return job

    def page(self, after: str | None, limit: int, order: str, owner: str) -> dict[str, Any]:
        """One page of the list of `owner`'s videos, as OpenAI's list endpoints answer."""
        if not 0 <= limit <= 100:
            raise ApiError(400, f"limit must be from 0 to 100, got {limit}", param="limit")
        if order not in ("asc", "desc"):
            raise ApiError(400, f"order must be asc or desc, got {order!r}", param="order")
        if after is not None and not self.store.known(after, owner):
            raise ApiError(404, f"after: no video with id {after!r}; page on with the last_id of the previous page",
                           param="after", code="video_not_found")
        jobs, has_more = self.store.page(after, limit, order, owner)
        data = [job.to_api() for job in jobs]
        return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None, "has_more": has_more}

    def output(self, video_id: str, variant: str, owner: str) -> tuple[Path, Job]:
        """The file of a finished video's `variant`, or the error saying why there is none (yet, or any more)."""
        if variant not in VARIANTS:
            raise ApiError(400, f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}", param="variant")
        job = self.job(video_id, owner)
        if job.expired:
            raise ApiError(404, f"the files of {job.id} expired at {job.expires_at}", code="video_expired")
        path = self.store.output_path(job.id, variant)
        if job.status == "failed":
            raise ApiError(400, f"{job.id} failed ({job.error_code}), so it has no files; see its error, and submit it "
                           "again", param="video_id", code="video_failed")
        if job.status != "completed":
            raise ApiError(400, f"{job.id} is {job.status}; download it once its status is completed",
                           param="video_id", code="video_not_ready")
        if not path.is_file():
            raise files_missing(job, "video_id")
        return path, job

    def submit(self, draft: Draft, owner: str, gone: Callable[[], bool] = lambda: False) -> dict[str, Any]:
        """Store the inputs, check the request with the pipeline, then commit `owner`'s job row: only then answer.
        `gone` says whether the client has left meanwhile (a model's first load takes seconds): then nothing is
        committed, and the retry its SDK sends does not make a second job."""
        try:
            model = self.models.name_for(draft.model)
            pipe = self.models.pipeline(model)
        except KinemaError as err:
            raise ApiError.from_kinema(err) from None
        video_id = new_id()
        inputs = self.store.input_dir(video_id)
        try:
            files, probes = self._store_inputs(draft.sources, inputs, owner)
            job = self._job(video_id, draft, pipe, files, probes, model, owner)
            if gone():
                raise ApiError(400, "the client disconnected before the video was submitted; nothing was queued")
            self.store.add(job, self.max_queue)
        except QueueFull:
            shutil.rmtree(inputs, ignore_errors=True)
            raise ApiError(429, f"the queue is full ({self.max_queue} jobs waiting); retry in a little while",
                           code="queue_full", kind="rate_limit_error") from None
        except (OSError, sqlite3.Error) as err:  # the server's disk, not the request
            shutil.rmtree(inputs, ignore_errors=True)
            log.error("could not store a new job: %s", err)
            raise ApiError(507, "the server could not store this request (its disk is full or not writable); retry "
                           "later", code="storage_error", kind="server_error") from None
        except BaseException:
            shutil.rmtree(inputs, ignore_errors=True)
            raise
        self.worker.wake()
        return job.to_api()

    def _job(self, video_id: str, draft: Draft, pipe: pl.Pipeline, files: dict[str, str],
             probes: dict[str, tuple[tuple[int, ...], float | None]], model: str, owner: str) -> Job:
        """Check the request as the pipeline will see it, with zero-cost stand-ins of the inputs' pixels
        (sizes and lengths follow the inputs, resampled to the output's rate as the worker will read them); the
        job keeps the client's values and the seed drawn for it when it gave none, resolved again when it runs."""
        scalars = dict(draft.scalars)
        try:  # at the frame rate the worker's read_inputs will choose
            standing, shapes = pl.with_stand_ins(pl.Request(prompt=draft.prompt, **scalars), probes, pipe.cfg.fps)
            resolved = pipe.resolve(standing)
        except KinemaError as err:
            raise ApiError.from_kinema(err) from None
        frames = resolved.frames
        if resolved.mode in rc.EXTENDING:
            # the output holds the given clips around the new frames: report the stitched total, as Sora does
            frames += sum(shape[0] for name, shape in shapes.items() if name != "image")
        return Job(id=video_id, prompt=resolved.prompt, model=model, size=f"{resolved.width}x{resolved.height}",
                   seconds=f"{frames / resolved.fps:g}", params=scalars | {"seed": resolved.seed, "inputs": files},
                   remixed_from=draft.remixed_from, owner=owner)

    def _store_inputs(self, sources: dict[str, UploadFile | str], folder: Path, owner: str
                      ) -> tuple[dict[str, str], dict[str, tuple[tuple[int, ...], float | None]]]:
        """Write every input into the job's folder (synced) and check its header. Returns the file names and
        each input's (pixel array shape, frame rate), as io.probe_input reads them."""
        files: dict[str, str] = {}
        probes: dict[str, tuple[tuple[int, ...], float | None]] = {}
        for name, source in sources.items():
            param = INPUT_PARAMS[name]
            path = self._copy_source(source, folder, name, param, owner)
            try:
                probes[name] = io.probe_input(path, still=name == "image")
            except KinemaError:
                raise ApiError(400, f"{param} is not a readable {'image' if name == 'image' else 'video'}; "
                               f"upload {filetypes.IMAGE_TYPES}, or {filetypes.VIDEO_TYPES}", param=param) from None
            files[name] = path.name
        return files, probes

    def _copy_source(self, source: UploadFile | str, folder: Path, name: str, param: str, owner: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        if isinstance(source, str):  # a completed video of this server, by id
            job = self.job(source, owner, param)
            original = self.store.output_path(source)
            if job.status != "completed" or job.expired:
                raise ApiError(400, f"{param}: {source} is {'expired' if job.expired else job.status}; give the id "
                               "of a completed video", param=param)
            if not original.is_file():
                raise files_missing(job, param)
            path = folder / f"{name}.mp4"
            try:
                os.link(original, path)  # cheap, and the input survives the source's deletion
            except OSError:
                shutil.copyfile(original, path)
            return path
        try:
            return save_upload(source.file, folder, name, param)
        except KinemaError as err:
            raise ApiError.from_kinema(err) from None


def files_missing(job: Job, param: str) -> ApiError:
    """A completed job whose files are gone from the data folder: deleted outside the server, or a kinema.db restored
    from a backup that the files were not."""
    return ApiError(404, f"{job.id} is completed but its files are missing from the server's data folder (deleted "
                    "outside the server, or its database restored from a backup); generate it again", param=param,
                    code="video_files_missing")


# ---------------------------------------------------------------------------------------------
# The app
# ---------------------------------------------------------------------------------------------

def load_api_keys(path: str | Path | None = None) -> list[str]:
    """API keys from KINEMA_API_KEYS (comma-separated) and a file (one per line, # comments); none = open."""
    keys = [key.strip() for key in os.environ.get("KINEMA_API_KEYS", "").split(",")]
    if path is not None:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as err:
            raise KinemaError(f"cannot read the API key file {path} ({err.strerror}); check the path") from None
        except UnicodeDecodeError:
            raise KinemaError(f"the API key file {path} is not UTF-8 text; write one key per line") from None
        from_file = [line.split("#", 1)[0].strip() for line in lines]
        if not any(from_file):  # the server would run open while its owner believes it locked
            raise KinemaError(f"the API key file {path} lists no keys; add one per line, or leave out --api-keys-file")
        keys += from_file
    if "KINEMA_API_KEYS" in os.environ and not any(keys):
        raise KinemaError("KINEMA_API_KEYS is set but holds no keys; give comma-separated keys, or unset it")
    return [key for key in keys if key]


def key_owner(key: str, salt: bytes) -> str:
    """The owner id of the jobs a key makes: a short scrypt digest with the store's own salt, so kinema.db never holds
    the key itself, and a copy of it cannot be searched for short keys quickly (~50 ms a guess, paid once a key when
    the server starts) nor with a table made for another store."""
    digest = hashlib.scrypt(key.encode(), salt=salt, n=2**14, r=8, p=1, dklen=8)
    return "k_" + digest.hex()


def bearer_check(api_keys: Iterable[str], salt: bytes) -> Callable[[Request], str]:
    """A dependency answering 401 unless the request carries one of the keys (any request when none). It returns the
    request's owner: its key's key_owner, or '' on an open server, where every caller sees every job."""
    keys = [(key.encode(), key_owner(key, salt)) for key in api_keys]

    def check(request: Request) -> str:
        if not keys:
            return ""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        # compare against every key in constant time, so timing tells nothing about the keys
        owners = [owner for key, owner in keys if hmac.compare_digest(token.strip().encode(), key)]
        if scheme.lower() != "bearer" or not owners:
            raise ApiError(401, "missing or wrong API key; send the header \"Authorization: Bearer <key>\" "
                           "with a key from the server's KINEMA_API_KEYS", code="invalid_api_key")
        return owners[0]

    return check


def api_routes(service: Service, check_key: Callable[[Request], str]) -> APIRouter:
    """The /v1 routes. Each that takes `owner` gets it from the router's own key check (FastAPI runs it once)."""
    router = APIRouter(prefix="/v1", dependencies=[Depends(check_key)])

    async def submit(request: Request, draft: Draft, owner: str) -> dict[str, Any]:
        return await run_in_threadpool(service.submit, draft, owner, lambda: from_thread.run(request.is_disconnected))

    @router.post("/videos", description=f"Create a video. Fields: prompt, model, seconds, size, input_reference "
                 f"(image file: image to video). Kinema's extra fields:{EXTRAS_MD}")
    async def create_video(request: Request, owner: str = Depends(check_key)):
        fields = await read_fields(request, "create")
        return await submit(request, draft_create(fields), owner)

    @router.get("/videos")
    def list_videos(after: str | None = None, limit: int = 20, order: str = "desc", owner: str = Depends(check_key)):
        """Videos newest first (order=desc) or oldest first (asc), `limit` (0-100) after the id `after`."""
        return service.page(after, limit, order, owner)

    @router.post("/videos/characters", include_in_schema=False)
    @router.get("/videos/characters/{character_id}", include_in_schema=False)
    def characters():
        """The SDK's create_character / get_character: Sora's cameos, which Kinema does not have."""
        raise ApiError(404, "this server has no characters (Sora's cameos); describe the subject in the prompt, or "
                       "give it as input_reference", code="not_supported")

    @router.get("/videos/{video_id}")
    def retrieve_video(video_id: str, owner: str = Depends(check_key)):
        """The video job; the `openai-poll-after-ms` header tells the SDK's poll helper how soon to ask again."""
        return JSONResponse(service.job(video_id, owner).to_api(),
                            headers={"openai-poll-after-ms": str(POLL_AFTER_MS)})

    @router.delete("/videos/{video_id}")
    def delete_video(video_id: str, owner: str = Depends(check_key)):
        """Delete a video and its files; a queued or running job is cancelled."""
        service.store.delete(service.job(video_id, owner).id)
        return {"id": video_id, "object": "video.deleted", "deleted": True}

    @router.get("/videos/{video_id}/content")
    @router.head("/videos/{video_id}/content", include_in_schema=False)  # a download's size, without it
    def download_video(video_id: str, variant: str = "video", owner: str = Depends(check_key)):
        """The MP4 (variant=video), a WEBP middle frame (thumbnail) or a JPEG contact sheet (spritesheet)."""
        path, job = service.output(video_id, variant, owner)
        name, media_type = VARIANTS[variant]
        return FileResponse(path, media_type=media_type, filename=f"{job.id}-{name}",
                            content_disposition_type="inline")

    @router.post("/videos/{video_id}/remix", description="Remix a completed video with a new prompt: an edit "
                 f"of it that keeps its size, length and seed. Fields: {', '.join(sorted(FIELDS['remix']))}.")
    async def remix_video(video_id: str, request: Request, owner: str = Depends(check_key)):
        fields = await read_fields(request, "remix")
        source = await run_in_threadpool(service.job, video_id, owner)
        return await submit(request, draft_remix(fields, source), owner)

    @router.post("/videos/edits", description="Edit a video (file upload, or {\"id\"} / video[id] of a completed "
                 f"video) to follow a prompt. Fields: {', '.join(sorted(FIELDS['edit']))}.")
    async def edit_video(request: Request, owner: str = Depends(check_key)):
        fields = await read_fields(request, "edit")
        return await submit(request, draft_edit(fields), owner)

    @router.post("/videos/extensions", description="Extend a video by `seconds`; `seconds` in the answer is the "
                 f"stitched total. Fields: {', '.join(sorted(FIELDS['extend']))}.")
    async def extend_video(request: Request, owner: str = Depends(check_key)):
        fields = await read_fields(request, "extend")
        return await submit(request, draft_extend(fields), owner)

    @router.post("/provenance", description="Check an uploaded video or image (multipart field `file`) for "
                 "Kinema's invisible watermark, its disclosure tags and a C2PA manifest, as `kinema verify` does; "
                 "`summary` says it in a line per mark. Not part of OpenAI's API.")
    async def check_provenance(request: Request):
        upload = (await read_form(request, MAX_UPLOAD_BYTES + (1 << 20))).get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "send the video or image to check as the multipart form field file", param="file")
        return await run_in_threadpool(verify_upload, upload)

    return router


def verify_upload(upload: UploadFile) -> dict:
    """provenance.verify of an upload, read from a scratch folder that is gone when the answer is."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = save_upload(upload.file, Path(folder), "upload", "file")
        except KinemaError as err:
            raise ApiError.from_kinema(err) from None
        try:
            result = provenance.verify(path)
        except KinemaError:  # its message would name the scratch path
            raise ApiError(400, f"file is not a readable video or image; upload {filetypes.VIDEO_TYPES} or "
                           f"{filetypes.IMAGE_TYPES}", param="file") from None
    result["file"] = upload.filename
    return {**result, "summary": provenance.describe(result)}


def create_app(data_dir: str | Path, model: str | None = None, api_keys: Iterable[str] = (),
               concurrency: int = CONCURRENCY, max_queue: int = MAX_QUEUE, *,
               models: dict[str, str] | None = None, retention_s: float = RETENTION_HOURS * 3600,
               signer: provenance.C2paSigner | None = None) -> FastAPI:
    """The API and page as an ASGI app. `model` is the default model (None: the bundled one), `models` more
    names clients may ask for; concurrency 0 accepts jobs without running them (they run after a restart)."""
    if concurrency < 0 or max_queue < 1:
        raise KinemaError(f"concurrency ({concurrency}) must be 0 or more and max queue ({max_queue}) 1 or more")
    if not 0 < retention_s < math.inf:
        raise KinemaError(f"retention must be a positive number of hours, got {retention_s / 3600:g}")
    served = Models(model, models, signer)  # a missing model fails before the data folder is taken
    store = JobStore(data_dir)
    try:
        served.pipeline(served.default)  # loaded before the first request, which would otherwise wait for it
    except BaseException:
        store.close()
        raise
    worker = Worker(store, served, concurrency, retention_s)
    service = Service(store, worker.models, worker, max_queue)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.start()
        yield
        await run_in_threadpool(worker.stop)
        store.close()

    app = FastAPI(title="Kinema", description=f"{__doc__}\nKinema's extra fields:{EXTRAS_MD}", version="1",
                  lifespan=lifespan)
    app.state.service = service
    check_key = bearer_check(api_keys, store.owner_salt)
    app.include_router(api_routes(service, check_key))
    app.mount("/web", StaticFiles(directory=WEB_DIR), name="web")

    html = page_html()

    @app.get("/", include_in_schema=False)
    def page():
        return HTMLResponse(html)

    install_error_handlers(app, check_key)
    return app


def page_html() -> str:
    """The web page, with the same bounds the pipeline and the API enforce written into its fields and text, and the
    API's extra fields described as the API's own docs describe them (EXTRA_FIELDS)."""
    template = string.Template((WEB_DIR / "index.html").read_text(encoding="utf-8"))
    fields = "\n".join(f"      <dt>{name}</dt><dd>{html.escape(text, quote=False)}</dd>"
                       for name, text in EXTRA_FIELDS.items())
    return template.substitute(max_seed=rc.MAX_SEED, max_upload_bytes=MAX_UPLOAD_BYTES, max_steps=rc.MAX_STEPS,
                               max_guidance=f"{rc.MAX_GUIDANCE:g}", max_fps=rc.MAX_FPS,
                               max_seconds=f"{rc.MAX_SECONDS:g}", max_noise_correlation=MAX_NOISE_CORRELATION,
                               max_noise_drift=f"{MAX_NOISE_DRIFT:g}", max_pixels=f"{rc.MAX_PIXELS:,}", fields=fields,
                               max_prompt_chars=MAX_PROMPT_CHARS)


def install_error_handlers(app: FastAPI, check_key: Callable[[Request], str]) -> None:
    """Every error, ours or the framework's, answers in OpenAI's schema so SDK clients parse it."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError):
        headers = {"retry-after": "1"} if err.status == 429 else None
        return error_response(err.status, str(err), err.param, err.code, err.kind, headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        """Routing's own answers (no such path, or not with this method), worded as OpenAI words them. Under /v1 the
        key is checked first, as the routes check it, so a client without one learns nothing of what is there."""
        if request.url.path.startswith("/v1/") or request.url.path == "/v1":
            try:
                check_key(request)
            except ApiError as denied:
                return await api_error(request, denied)
        where = f"{request.method} {request.url.path}"
        headers = err.headers
        if err.status_code == 405 and (methods := allowed_methods(app, request)):  # routing names only the first
            headers = {"allow": ", ".join(methods)}  # route that matched the path: name them all
        allow = next((value for key, value in (headers or {}).items() if key.lower() == "allow"), "")
        message = {404: f"Invalid URL ({where}); this server offers the Videos API under /v1/videos (see /docs)",
                   405: f"Invalid method ({where}); this path takes {allow or 'other methods'}"
                   }.get(err.status_code, str(err.detail))
        return error_response(err.status_code, message, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError):
        first = err.errors()[0]
        param = str(first["loc"][-1]) if first.get("loc") else None
        return error_response(400, f"{param}: {first['msg']}", param=param, code=BAD_REQUEST)

    @app.exception_handler(Exception)
    async def server_error(request: Request, err: Exception):
        return error_response(500, f"internal server error ({type(err).__name__})", kind="server_error")


def allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method some route of `app` answers at the request's path."""
    methods = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")
    return [method for method in methods
            if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in app.router.routes)]


def serve(host: str = "127.0.0.1", port: int = 8000, data_dir: str | Path = "kinema-data", model: str | None = None,
          api_keys: Iterable[str] = (), concurrency: int = CONCURRENCY, max_queue: int = MAX_QUEUE,
          **options: Any) -> None:
    """Run the API and page with uvicorn until interrupted (`kinema serve`); options go to create_app."""
    import uvicorn

    check_address(host, port)  # before the model loads: a busy port is known at once
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")  # as uvicorn's
    api_keys = list(api_keys)
    app = create_app(data_dir, model, api_keys, concurrency, max_queue, **options)
    warn_if_open(host, port, api_keys)  # last before the address: where the eye falls
    print(f"Kinema: http://{host}:{port}/ (API at /v1, data in {Path(data_dir).resolve()})", flush=True)
    # A client that never finishes its upload must not hold a stop (Ctrl-C, SIGTERM) open for ever.
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=SHUTDOWN_GRACE_S)


def warn_if_open(host: str, port: int, api_keys: list[str]) -> None:
    """A WARNING when other machines may reach the server and it asks them for no key."""
    import ipaddress
    import socket

    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
    except OSError:  # check_address has said what is wrong with it
        return
    local = all(ipaddress.ip_address(address.split("%")[0]).is_loopback for address in addresses)
    if not api_keys and not local:
        log.warning("listening on %s:%d without API keys: anyone who can reach this port can create, read and delete "
                    "videos; set KINEMA_API_KEYS=key1,key2 or --api-keys-file FILE (one key per line), or serve on "
                    "--host 127.0.0.1", host, port)


def check_address(host: str, port: int) -> None:
    """One-line errors for a port out of range, or an address this machine cannot listen on (e.g. in use)."""
    import socket

    if not 1 <= port <= 65535:
        raise KinemaError(f"port {port} is not a TCP port; choose one from 1 to 65535, e.g. --port 8000")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            sock.bind(infos[0][4])
    except OSError as err:
        raise KinemaError(f"cannot listen on {host}:{port} ({err.strerror or err}); stop what uses it or choose "
                          "another --port / --host") from None
