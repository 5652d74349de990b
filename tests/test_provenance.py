"""Provenance: the watermark is invisible, survives H.264 crf 23 and a 0.5x resize, never fires on
unmarked content; metadata discloses AI generation; C2PA manifests sign and read back."""

import hashlib

import numpy as np
import pytest
import skimage.data
from PIL import Image

from kinema import filetypes, io, provenance
from kinema.errors import KinemaError

PAYLOAD = 0x4B494E454D41_0001  # "KINEMA" + 1


def world_clip(frames: int, height: int, width: int, snow: bool = False, seed: int = 0) -> np.ndarray:
    """Kinema-world-like video: a vertical gradient, a disc drifting right, optionally falling snow specks."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    top, bottom = rng.uniform(30, 200, 3), rng.uniform(30, 200, 3)
    background = top + (bottom - top) * (y / height)[..., None]
    flakes = rng.uniform(0, 1, (int(height * width / 60), 2)) * (height, width)
    video = []
    for t in range(frames):
        frame = background.copy()
        inside = (x - width * (0.3 + 0.02 * t)) ** 2 + (y - height / 2) ** 2 < (0.15 * min(height, width)) ** 2
        frame[inside] = (225, 35, 35)
        if snow:
            fy, fx = ((flakes + (1.5 * t, 0.3 * t)) % (height, width)).astype(int).T
            frame[fy, fx] = 245
        video.append(frame)
    return np.clip(np.rint(video), 0, 255).astype(np.uint8)


def photo_clip(name: str, frames: int, height: int, width: int, pan: int = 2) -> np.ndarray:
    """A skimage photo resized to the frame, panning `pan` pixels a frame."""
    image = getattr(skimage.data, name)()
    image = np.stack([image] * 3, -1) if image.ndim == 2 else image[..., :3]
    wide = np.asarray(Image.fromarray(image).resize((width + pan * frames, height), Image.LANCZOS))
    return np.stack([wide[:, pan * t:pan * t + width] for t in range(frames)])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def h264_crf23(tmp_path, frames: np.ndarray, monkeypatch) -> np.ndarray:
    monkeypatch.setattr(io, "MP4_CRF", 23)
    path = tmp_path / "crf23.mp4"
    io.write_video(path, frames, 16)
    return io.read_video(path)[0]


def half(frames: np.ndarray) -> np.ndarray:
    height, width = frames.shape[1:3]
    return np.stack([np.asarray(Image.fromarray(f).resize((width // 2, height // 2), Image.BILINEAR))
                     for f in frames])


@pytest.mark.parametrize("shape", [(1, 16, 16), (3, 128, 128), (2, 128, 224), (2, 224, 128), (1, 1088, 1920)])
def test_mark_is_invisible(shape):
    video = world_clip(*shape)
    marked = provenance.embed(video, PAYLOAD)
    assert marked.dtype == np.uint8 and marked.shape == video.shape
    assert not np.array_equal(marked, video)
    assert psnr(video, marked) >= 40
    # Luminance only: R, G and B move together, so colours do not shift.
    delta = marked.astype(int) - video.astype(int)
    unclipped = (video > 8).all(-1) & (video < 247).all(-1)
    assert (delta[..., 0] == delta[..., 2])[unclipped].all()


CLIPS = {
    "world 128": lambda: world_clip(17, 128, 128),
    "world snow 128": lambda: world_clip(17, 128, 128, snow=True),
    "photo 256": lambda: photo_clip("astronaut", 9, 256, 256),
}


@pytest.mark.parametrize("name", list(CLIPS))
def test_mark_survives_crf23_and_half_size(tmp_path, monkeypatch, name):
    marked = provenance.embed(CLIPS[name](), PAYLOAD)
    for attacked in (h264_crf23(tmp_path, marked, monkeypatch), half(marked)):
        result = provenance.detect(attacked, expected=PAYLOAD)
        assert result["detected"], result
        assert result["p_value"] < 1e-6
        assert result["bit_accuracy"] >= 0.85, result


def test_mark_survives_enlargement_to_any_size():
    """A 128 px clip enlarged to 720p or 1080p before it is shared: the grid it was marked on keeps its cells (the
    bundled 224x128 "16:9" at 1280x720 or 1920x1080 is one cell shorter along its long side)."""
    marked = provenance.embed(world_clip(9, 128, 224), PAYLOAD)
    for width, height in ((448, 256), (1280, 720), (1920, 1080), (300, 171)):
        enlarged = np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BICUBIC)) for f in marked])
        result = provenance.detect(enlarged, expected=PAYLOAD)
        assert result["detected"] and result["bit_accuracy"] >= 0.95, (width, result)


def test_unmark_takes_out_what_embed_put_in():
    clip = world_clip(9, 96, 128)
    restored, found = provenance.unmark(provenance.embed(clip, PAYLOAD))
    assert found and np.array_equal(restored, clip)  # no pixel of this clip clips at 0 or 255
    untouched, found = provenance.unmark(clip)
    assert not found and untouched is clip


def test_single_frame_png_reads_back_exactly(tmp_path):
    path = tmp_path / "still.png"
    io.write_video(path, provenance.embed(world_clip(1, 128, 128, seed=3), PAYLOAD), 1)
    result = provenance.detect(io.read_image(path), expected=PAYLOAD)
    assert result["detected"] and result["payload"] == PAYLOAD, result
    assert result["payload_hex"] == f"{PAYLOAD:016x}" and result["bit_confidence"] > 0.99


def test_stream_matches_whole_video_and_detect_takes_chunks():
    video = world_clip(9, 64, 96)
    chunks = [video[:1], video[1:5], video[5:]]
    streamed = list(provenance.embed_stream(iter(chunks), PAYLOAD.to_bytes(8, "big")))
    assert [len(c) for c in streamed] == [1, 4, 4]
    whole = provenance.embed(video, PAYLOAD)
    np.testing.assert_array_equal(np.concatenate(streamed), whole)
    assert provenance.detect(iter(streamed))["z"] == pytest.approx(provenance.detect(whole)["z"], rel=1e-4)


def test_short_payloads_and_keys():
    video = world_clip(5, 128, 128)
    marked = provenance.embed(video, 0xBEEF, key="studio", payload_bits=16)
    result = provenance.detect(marked, key="studio", payload_bits=16)
    assert result["detected"] and result["payload"] == 0xBEEF and result["payload_hex"] == "beef"
    assert not provenance.detect(marked)["detected"]  # another key sees nothing


def test_chip_layout_is_frozen():
    """Marks made today must read back in later releases: the keyed layout may never change."""
    signs, owner = provenance._layout("kinema", (8, 12), 64)
    assert hashlib.sha256(signs.tobytes() + owner.tobytes()).hexdigest()[:16] == "3861b5460fd3e511"
    assert (owner < 0).sum() == 48 and set(owner[owner >= 0].tolist()) == set(range(48))


def negatives() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    videos = [rng.integers(0, 256, (3, size, size, 3), dtype=np.uint8) for size in (16, 64, 128, 256)]
    for height, width in ((128, 128), (128, 224), (256, 256)):
        ramp = np.linspace(0, 255, width)[None, None, :, None] * np.ones((2, height, 1, 3))
        videos += [ramp.astype(np.uint8), np.full((2, height, width, 3), 128, np.uint8)]
    for name, size in [("astronaut", 128), ("camera", 256), ("coffee", 128), ("chelsea", 256), ("rocket", 128),
                       ("moon", 128), ("brick", 256), ("grass", 128), ("gravel", 128), ("coins", 256),
                       ("page", 128), ("clock", 128), ("hubble_deep_field", 256), ("immunohistochemistry", 128)]:
        videos.append(photo_clip(name, 3, size, size, pan=0))
    videos += [world_clip(9, 128, 128, snow=snow, seed=seed) for seed, snow in ((4, False), (5, True))]
    return videos


def test_no_false_positives_on_unmarked_content():
    videos = negatives()
    assert len(videos) >= 20
    scores = [provenance.detect(video) for video in videos]
    assert not any(score["detected"] for score in scores), max(score["z"] for score in scores)
    assert max(score["z"] for score in scores) < 4.5  # the threshold is about 5.5


@pytest.mark.parametrize(("call", "match"), [
    (lambda v: provenance.embed(v, 2**64), "fit in 64 bits"),
    (lambda v: provenance.embed(v, b"\x01\x02\x03", payload_bits=16), "fit in 16 bits"),
    (lambda v: provenance.embed(v.astype(np.float32), 1), "uint8"),
    (lambda v: provenance.embed(v[..., :2], 1), r"\(T, H, W, 3\)"),
    (lambda v: provenance.detect(v, payload_bits=0), "payload_bits"),
    (lambda v: provenance.detect(iter([])), "no frames"),
    (lambda v: provenance.detect(v[:, :2, :2]), "too small"),
])
def test_errors_are_one_line_kinema_errors(call, match):
    with pytest.raises(KinemaError, match=match) as info:
        call(world_clip(2, 32, 32))
    assert "\n" not in str(info.value)


def test_metadata_discloses_ai_and_lands_in_mp4_tags(tmp_path):
    meta = provenance.metadata("a red ball bounces", "debug", 7, steps=4)
    assert meta["digital_source_type"] == provenance.TRAINED_ALGORITHMIC_MEDIA
    assert meta["ai_generated"] == "true" and "AI-generated" in meta["comment"]
    assert int(meta["watermark_payload"], 16) == provenance.payload_id("a red ball bounces", "debug", 7)
    assert provenance.payload_id("a", "b", 1) != provenance.payload_id("a", "b", 2)
    assert provenance.payload_id("a", payload_bits=16) < 2**16
    path = tmp_path / "clip.mp4"
    payload = bytes.fromhex(meta["watermark_payload"])
    io.write_video(path, provenance.embed_stream([world_clip(5, 64, 64)], payload), 8, metadata=meta)
    tags = io.video_metadata(path)["tags"]
    assert tags["digital_source_type"] == provenance.TRAINED_ALGORITHMIC_MEDIA
    assert tags["watermark_payload"] == meta["watermark_payload"] and tags["seed"] == "7"


def test_c2pa_sign_and_read_back(tmp_path):
    pytest.importorskip("c2pa")
    cert, key = provenance.make_test_certificate(tmp_path)
    video = provenance.embed(world_clip(5, 64, 64), PAYLOAD)
    for name, frames in (("clip.mp4", video), ("still.png", video[:1])):
        path = tmp_path / name
        io.write_video(path, frames, 8, metadata={"prompt": "a red ball"})
        provenance.sign_c2pa(path, cert, key.read_text(), info={"model": "debug", "seed": 7})
        manifest = provenance.read_c2pa(path)
        assert manifest["claim_generator_info"][0]["name"] == "kinema"
        actions = next(a for a in manifest["assertions"] if a["label"].startswith("c2pa.actions"))
        created = actions["data"]["actions"][0]
        assert created["action"] == "c2pa.created"
        assert created["digitalSourceType"] == provenance.TRAINED_ALGORITHMIC_MEDIA
        generation = next(a for a in manifest["assertions"] if a["label"] == "org.kinema.generation")
        assert generation["data"] == {"model": "debug", "seed": 7}
        assert path.stat().st_size < 60_000  # no thumbnail
        # Signing keeps the pixels, the tags and so the watermark.
        assert provenance.detect(io.read_video(path)[0], expected=PAYLOAD)["detected"]
    np.testing.assert_array_equal(io.read_image(tmp_path / "still.png"), video[0])
    assert io.video_metadata(tmp_path / "clip.mp4")["tags"]["prompt"] == "a red ball"


def test_c2pa_failures_leave_the_file_untouched(tmp_path):
    pytest.importorskip("c2pa")
    cert, key = provenance.make_test_certificate(tmp_path)
    path = tmp_path / "clip.mp4"
    io.write_video(path, world_clip(3, 32, 32), 8)
    before = path.read_bytes()
    with pytest.raises(KinemaError, match="cannot sign clip.mp4"):
        provenance.sign_c2pa(path, key, key)  # a key where the certificate should be
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cert.pem", "clip.mp4", "key.pem"]
    assert provenance.read_c2pa(path) is None
    with pytest.raises(KinemaError, match="supports"):
        provenance.sign_c2pa(tmp_path / "clip.gif", cert, key)


def test_verify_reads_every_mark_and_the_watermark_outlives_the_others(tmp_path):
    meta = provenance.metadata("a red ball", "debug", 7)
    marked = provenance.embed(world_clip(40, 128, 128), bytes.fromhex(meta["watermark_payload"]))
    io.write_video(tmp_path / "made.mp4", marked, 8, metadata=meta)
    result = provenance.verify(tmp_path / "made.mp4")
    assert result["watermark"]["detected"] and result["watermark"]["bit_accuracy"] == 1.0
    assert result["metadata"]["ai_generated"] == "true" and result["metadata"]["prompt"] == "a red ball"
    assert result["c2pa"] in (None, "not checked")  # never signed
    # Re-encoded at half size without the tags: only the watermark is left, and it is still read.
    io.write_video(tmp_path / "shared.mp4", half(marked), 8)
    stripped = provenance.verify(tmp_path / "shared.mp4")
    assert stripped["watermark"]["detected"] and stripped["metadata"] == {}
    assert stripped["watermark"]["payload_hex"] == meta["watermark_payload"]
    io.write_video(tmp_path / "made.gif", marked[:8], 8, metadata=meta)  # a GIF keeps its tags in its comment
    assert provenance.verify(tmp_path / "made.gif")["metadata"]["ai_generated"] == "true"
    io.write_video(tmp_path / "camera.mp4", world_clip(40, 128, 128), 8)
    assert not provenance.verify(tmp_path / "camera.mp4")["watermark"]["detected"]


def test_verify_spreads_its_frames_over_a_long_video(tmp_path, monkeypatch):
    io.write_video(tmp_path / "long.mp4", provenance.embed(world_clip(100, 64, 64), PAYLOAD), 8)
    asked = []
    read_frames = io.read_frames
    monkeypatch.setattr(io, "read_frames", lambda path, picks: asked.append(list(picks)) or read_frames(path, picks))
    assert provenance.verify(tmp_path / "long.mp4")["watermark"]["detected"]
    picks = [i for chunk in asked for i in chunk]
    assert len(picks) == provenance.VERIFY_FRAMES and picks[0] == 0 and picks[-1] == 99
    assert max(len(chunk) for chunk in asked) == 8  # decoded a few frames at a time


def test_verify_reports_a_damaged_manifest_and_still_reads_the_watermark(tmp_path):
    pytest.importorskip("c2pa")
    cert, key = provenance.make_test_certificate(tmp_path)
    path = tmp_path / "signed.mp4"
    io.write_video(path, provenance.embed(world_clip(16, 128, 128), PAYLOAD), 8)
    provenance.sign_c2pa(path, cert, key)
    assert provenance.verify(path)["c2pa"]["validation_state"] == "Valid"
    data = bytearray(path.read_bytes())
    start = data.find(b"c2pa") + 50
    data[start:start + 300] = bytes(b ^ 0x55 for b in data[start:start + 300])
    path.write_bytes(data)
    result = provenance.verify(path)
    assert result["c2pa"] == "unreadable" and result["watermark"]["detected"]
    assert provenance.describe(result)[2] == "C2PA: a manifest that cannot be read (damaged, or cut by an edit)"


def test_a_missed_mark_under_kinemas_own_tags_is_not_called_someone_elses():
    missed = {"detected": False, "p_value": 0.4, "bit_accuracy": None, "bit_confidence": 0.5}
    tagged = provenance.describe({"watermark": missed, "metadata": {"ai_generated": "true", "model": "kinema-small"},
                                  "c2pa": "none"})
    assert tagged[0] == ("watermark: not found (p = 0.4): the tags below say Kinema made it: a picture dense with "
                         "still fine detail can hide the mark")
    bare = provenance.describe({"watermark": missed, "metadata": {}, "c2pa": "none"})
    assert bare[0].endswith("not made by Kinema, or edited past recognition")
    faint = provenance.describe({"watermark": {**missed, "p_value": 2.3e-6}, "metadata": {}, "c2pa": "none"})
    assert faint[0] == "watermark: not found (p = 2.3e-06): a weak trace of it, too weak to call (heavy re-encoding " \
                       "or resizing fades it)"  # not "p = 0.00: not made by Kinema"
    unsure = {"detected": True, "p_value": 1e-9, "bit_accuracy": None, "bit_confidence": 0.93, "payload_hex": "93443f"}
    assert provenance.describe({"watermark": unsure, "metadata": {}, "c2pa": "none"})[0] == (
        "watermark: found (p = 1.0e-09, payload 93443f, read with 93% confidence a bit)")


def test_verify_reads_a_file_as_its_content_says_whatever_its_name(tmp_path):
    """A PNG named .mp4, an MP4 named .png, a download without a suffix and an AVI read as what they are, as
    POST /v1/provenance reads uploads (the same sniff_suffix)."""
    import av

    meta = provenance.metadata("a red ball", "debug", 7)
    marked = provenance.embed(world_clip(16, 128, 128), bytes.fromhex(meta["watermark_payload"]))
    io.write_video(tmp_path / "clip.mp4", marked, 8, metadata=meta)
    io.write_video(tmp_path / "still.png", marked[:1], 8, metadata=meta)
    for source, name in (("still.png", "still.mp4"), ("clip.mp4", "clip.png"), ("clip.mp4", "download")):
        (tmp_path / name).write_bytes((tmp_path / source).read_bytes())
        result = provenance.verify(tmp_path / name)
        assert result["watermark"]["detected"] and result["metadata"]["prompt"] == "a red ball", name
        assert result["file"] == str(tmp_path / name)
    with av.open(str(tmp_path / "clip.avi"), "w") as container:
        stream = container.add_stream("mpeg4", rate=8, width=128, height=128)
        for frame in marked:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    (tmp_path / "avi.mp4").write_bytes((tmp_path / "clip.avi").read_bytes())
    assert filetypes.sniff_suffix((tmp_path / "clip.avi").read_bytes()[:16]) == ".avi"
    assert provenance.verify(tmp_path / "avi.mp4")["watermark"]["detected"]
    (tmp_path / "notes.mp4").write_text("not a video at all")
    with pytest.raises(KinemaError, match=r"notes.mp4 is neither a PNG, .* nor an MP4, .*; give one of those"):
        provenance.verify(tmp_path / "notes.mp4")
    (tmp_path / "cut.png").write_bytes((tmp_path / "clip.mp4").read_bytes()[:200])  # an MP4 cut short, named .png
    with pytest.raises(KinemaError) as caught:
        provenance.verify(tmp_path / "cut.png")
    assert str(tmp_path / "cut.png") in str(caught.value) and "file.mp4" not in str(caught.value)  # not the link


@pytest.mark.parametrize("image_format", ["JPEG", "WEBP"])
def test_disclosure_tags_round_trip_through_xmp(tmp_path, image_format):
    meta = provenance.metadata('a "red" ball & a <blue> one\nthen café', "debug", 7)
    path = tmp_path / "still.img"
    Image.fromarray(world_clip(1, 64, 64)[0]).save(path, format=image_format, xmp=provenance.xmp(meta))
    tags = provenance.verify(path)["metadata"]
    assert tags == {name: str(meta[name]) for name in provenance.DISCLOSURE_TAGS}
    assert provenance.TRAINED_ALGORITHMIC_MEDIA in Image.open(path).info["xmp"].decode()  # IPTC's field, for others
