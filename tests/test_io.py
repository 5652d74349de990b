"""Video/image IO: exact mp4 timing, round trips, streaming, atomic writes and clear errors."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kinema import io
from kinema.errors import KinemaError


def smooth_video(frames: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Slowly moving gradients and a soft blob: easy for a codec, so PSNR measures the pipeline."""
    t = np.arange(frames)[:, None, None]
    y = np.arange(height)[None, :, None]
    x = np.arange(width)[None, None, :]
    blob = 200 * np.exp(-(((x - 10 - 2 * t) ** 2 + (y - height / 2) ** 2) / 60.0))
    red = 40 + 2 * x + blob
    green = 30 + 3 * y + 0 * t
    blue = 120 + 60 * np.sin((x + y + 3 * t) / 12)
    return np.clip(np.stack(np.broadcast_arrays(red, green, blue), -1), 0, 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255**2 / mse)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize(("fps", "frames"), [(8, 17), (24, 33)])
def test_mp4_round_trip_exact_fps_and_frames(tmp_path, fps, frames):
    video = smooth_video(frames)
    path = tmp_path / "clip.mp4"
    io.write_video(path, video, fps, metadata={"prompt": "a red ball", "seed": 7})
    meta = io.video_metadata(path)
    assert (meta["width"], meta["height"], meta["frames"]) == (64, 48, frames)
    assert meta["fps"] == fps
    assert (meta["codec"], meta["pix_fmt"]) == ("h264", "yuv420p")
    assert meta["tags"]["prompt"] == "a red ball"
    assert meta["tags"]["seed"] == "7"
    assert meta["tags"]["software"].startswith("kinema")
    back, back_fps = io.read_video(path)
    assert back.shape == video.shape and back.dtype == np.uint8
    assert back_fps == fps
    assert psnr(back, video) >= 30
    assert io.read_video(path, max_frames=5)[0].shape[0] == 5


def test_same_frames_give_the_same_file(tmp_path):
    """One seed, one file: x264 with B-frames (8 of 10 runs) or MB-tree (~1 of 10) varied from run to run."""
    video = smooth_video(33)
    for name in "abcd":
        io.write_video(tmp_path / f"{name}.mp4", video, 8, {"seed": "7"})
    first = (tmp_path / "a.mp4").read_bytes()
    assert all((tmp_path / f"{name}.mp4").read_bytes() == first for name in "bcd")


def test_streamed_chunks_equal_array_write(tmp_path):
    video = smooth_video(17)
    io.write_video(tmp_path / "whole.mp4", video, 8)
    # The decoder's chunking: 1 frame, then 4 at a time; tensors are accepted too.
    chunks = (torch.from_numpy(video[a:b]) for a, b in [(0, 1), (1, 5), (5, 9), (9, 13), (13, 17)])
    io.write_video(tmp_path / "streamed.mp4", chunks, 8)
    np.testing.assert_array_equal(io.read_video(tmp_path / "whole.mp4")[0],
                                  io.read_video(tmp_path / "streamed.mp4")[0])


def keyframed_video(path: Path, frames: int, size: int) -> np.ndarray:
    """An mp4 with a keyframe every 10 frames, each frame marked by its index; returns the frames as read."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width = stream.height = size
        stream.pix_fmt, stream.codec_context.gop_size = "yuv420p", 10
        for i in range(frames):
            frame = np.zeros((size, size, 3), np.uint8)
            frame[..., 0], frame[i % size, :, 1] = i, 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return io.read_video(path)[0]


def test_read_frames_picks_exact_frames_past_keyframes(tmp_path):
    whole = keyframed_video(tmp_path / "gop.mp4", 200, 64)
    indices = [57, 58, 0, 120, 199, 500, 3]  # any order, repeats allowed; past the end is the last frame
    np.testing.assert_array_equal(io.read_frames(tmp_path / "gop.mp4", indices), whole[np.minimum(indices, 199)])
    io.write_video(tmp_path / "clip.webm", smooth_video(30), 8)
    np.testing.assert_array_equal(io.read_frames(tmp_path / "clip.webm", [29, 12, 40]),
                                  io.read_video(tmp_path / "clip.webm")[0][[29, 12, 29]])


def test_read_frames_holds_only_the_frames_asked_for(tmp_path):
    import tracemalloc

    keyframed_video(tmp_path / "long.mp4", 200, 256)  # 39 MB of frames when read whole
    tracemalloc.start()
    frames = io.read_frames(tmp_path / "long.mp4", [180, 190])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert frames.shape == (2, 256, 256, 3) and int(frames[1, 0, 0, 0]) in range(188, 193)
    assert peak < 4 * frames.nbytes


def test_a_video_over_max_seconds_stops_decoding_with_a_clear_error(tmp_path):
    io.write_video(tmp_path / "ten.mp4", smooth_video(81), 8)  # 10 s: 8 * 10 + 1 frames
    assert len(io.read_video(tmp_path / "ten.mp4", max_seconds=10)[0]) == 81
    with pytest.raises(KinemaError, match=r"ten.mp4 runs over 9.5 s, .*trim it \(e.g. ffmpeg -i ten.mp4 -t 9.5"):
        io.read_video(tmp_path / "ten.mp4", max_seconds=9.5)
    io.write_video(tmp_path / "ten.gif", smooth_video(81), 8)
    with pytest.raises(KinemaError, match="runs over 9.5 s"):
        io.read_video(tmp_path / "ten.gif", max_seconds=9.5)


def test_single_frame_mp4_and_odd_size(tmp_path):
    io.write_video(tmp_path / "one.mp4", smooth_video(1), 8)
    assert io.video_metadata(tmp_path / "one.mp4")["frames"] == 1
    # yuv420p needs even sizes: odd frames are padded by one row/column, never rejected.
    io.write_video(tmp_path / "odd.mp4", smooth_video(5, 47, 63), 8)
    back, _ = io.read_video(tmp_path / "odd.mp4")
    assert back.shape == (5, 48, 64, 3)


def test_webm_round_trip(tmp_path):
    video = smooth_video(9)
    io.write_video(tmp_path / "clip.webm", video, 8)
    meta = io.video_metadata(tmp_path / "clip.webm")
    assert (meta["codec"], meta["frames"], meta["fps"]) == ("vp9", 9, 8.0)
    assert psnr(io.read_video(tmp_path / "clip.webm")[0], video) >= 28


def test_gif_round_trip_frames_and_duration(tmp_path):
    video = smooth_video(9)
    video[4] = video[3]  # GIF merges repeated frames; reading must restore them
    path = tmp_path / "clip.gif"
    io.write_video(path, video, 8)
    with Image.open(path) as gif:
        assert gif.info["loop"] == 0
        durations = []
        for index in range(gif.n_frames):
            gif.seek(index)
            durations.append(gif.info["duration"])
    assert len(durations) == 8  # the repeated frame was merged into its predecessor
    # 12.5 cs per frame alternates 120/130 ms so the total stays within half a centisecond.
    assert set(durations) == {120, 130, 240} and abs(sum(durations) - 9 * 125) <= 5
    back, fps = io.read_video(path)
    assert back.shape == video.shape and fps == 8
    assert io.probe_input(path, still=False) == (video.shape, 8)  # 9 frames, though the GIF stores 8
    assert psnr(back, video) >= 25  # 256-colour palette


def test_png_single_frame_with_metadata(tmp_path):
    frame = smooth_video(1)
    path = tmp_path / "still.png"
    io.write_video(path, frame, 8, metadata={"prompt": "a cat", "seed": 3})
    with Image.open(path) as image:
        assert image.text["prompt"] == "a cat"
        assert image.text["seed"] == "3"
        assert image.text["software"].startswith("kinema")
    back, fps = io.read_video(path)
    np.testing.assert_array_equal(back, frame)
    assert fps == 8
    np.testing.assert_array_equal(io.read_image(path), frame[0])


def test_png_with_several_frames_is_a_clear_error(tmp_path):
    with pytest.raises(KinemaError, match=r"\.mp4 or \.gif"):
        io.write_video(tmp_path / "many.png", smooth_video(3), 8)
    assert leftovers(tmp_path) == []


def test_failed_write_leaves_nothing_and_keeps_existing_file(tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"previous video")

    def failing_chunks():
        yield smooth_video(5)
        raise RuntimeError("decoder crashed")

    with pytest.raises(RuntimeError, match="decoder crashed"):
        io.write_video(path, failing_chunks(), 8)
    assert leftovers(tmp_path) == ["clip.mp4"]
    assert path.read_bytes() == b"previous video"
    with pytest.raises(KinemaError, match="empty"):
        io.write_video(tmp_path / "empty.mp4", iter([]), 8)
    assert leftovers(tmp_path) == ["clip.mp4"]


def test_write_errors_name_the_problem(tmp_path):
    video = smooth_video(2)
    with pytest.raises(KinemaError, match="missing is not an existing folder"):
        io.write_video(tmp_path / "missing" / "clip.mp4", video, 8)
    (tmp_path / "file").write_text("x")
    with pytest.raises(KinemaError, match="not an existing folder"):
        io.write_video(tmp_path / "file" / "clip.mp4", video, 8)
    with pytest.raises(KinemaError, match="unsupported suffix"):
        io.write_video(tmp_path / "clip.avi", video, 8)
    with pytest.raises(KinemaError, match="uint8"):
        io.write_video(tmp_path / "clip.mp4", video.astype(np.float32), 8)
    with pytest.raises(KinemaError, match="fps"):
        io.write_video(tmp_path / "clip.mp4", video, 0)


def test_read_errors(tmp_path):
    with pytest.raises(KinemaError, match="not found"):
        io.read_video(tmp_path / "nope.mp4")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    with pytest.raises(KinemaError, match="corrupt"):
        io.read_video(corrupt)
    with pytest.raises(KinemaError, match="corrupt") as caught:
        io.video_metadata(corrupt)
    assert str(caught.value) == (f"cannot read {corrupt}: corrupt or not a video (Invalid data found when "
                                 "processing input); re-export it as .mp4")  # no errno, no second path
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(KinemaError, match="corrupt"):
        io.read_image(tmp_path / "bad.png")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(KinemaError, match="unsupported suffix"):
        io.read_video(tmp_path / "notes.txt")


def test_inputs_are_read_by_their_content_whatever_their_name(tmp_path):
    video = smooth_video(9)
    io.write_video(tmp_path / "clip.mp4", video, 8)
    misnamed = tmp_path / "vid.png"  # an MP4 named as an image: read as the video it is, as kinema verify reads it
    misnamed.write_bytes((tmp_path / "clip.mp4").read_bytes())
    frames, fps = io.read_video(misnamed)
    assert frames.shape == (9, 48, 64, 3) and fps == pytest.approx(8)
    assert io.probe_input(misnamed, still=True) == ((48, 64, 3), None)
    assert io.probe_input(misnamed, still=False) == ((9, 48, 64, 3), 8.0)
    assert np.array_equal(io.read_image(misnamed), frames[0]) and not io.see_through(misnamed)
    still = tmp_path / "still.mp4"  # and a PNG named as a video is an image
    Image.fromarray(video[0]).save(still, format="PNG")
    assert io.probe_input(still, still=False) == ((1, 48, 64, 3), None)
    assert np.array_equal(io.read_video(still)[0][0], video[0]) and io.video_metadata(still)["frames"] == 1
    with pytest.raises(KinemaError, match=f"^cannot read {still}: it holds a PNG file; use one of .mp4"):
        io.read_frames(still, [0])
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(KinemaError) as caught:
        io.read_video(tmp_path / "empty.mp4")
    said = f"{tmp_path / 'empty.mp4'} is empty (0 bytes); save or download the video or image again"
    assert str(caught.value) == said


def test_read_frames_of_a_cut_short_video_takes_the_last_frame_it_holds(tmp_path):
    io.write_video(tmp_path / "clip.mp4", np.random.default_rng(0).integers(0, 256, (32, 48, 64, 3), np.uint8), 8)
    cut = tmp_path / "cut.mp4"  # a download cut off: its header still lists 32 frames
    cut.write_bytes((tmp_path / "clip.mp4").read_bytes()[:int(0.75 * (tmp_path / "clip.mp4").stat().st_size)])
    decoded = io.read_video(cut)[0]
    assert 8 < len(decoded) < 32 and io.video_metadata(cut)["frames"] == 32
    last = len(decoded) - 1
    for indices in ([0, 5, 30], [last, 31], [30, 31]):  # from the start, past the cut, and a seek into the lost part
        picked = io.read_frames(cut, indices)
        expected = [decoded[min(i, last)] for i in indices]
        assert all(np.abs(a.astype(int) - b).max() == 0 for a, b in zip(picked, expected, strict=True)), indices


def test_read_image_converts_rgba_and_grayscale(tmp_path):
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:, :3, 3] = 255  # left half opaque red, right half transparent -> white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    image = io.read_image(tmp_path / "a.png")
    assert image.shape == (4, 6, 3)
    assert image[0, 0].tolist() == [255, 0, 0] and image[0, 5].tolist() == [255, 255, 255]
    Image.fromarray(np.full((5, 7), 90, np.uint8), "L").save(tmp_path / "g.jpg")
    gray = io.read_image(tmp_path / "g.jpg")
    assert gray.shape == (5, 7, 3) and abs(int(gray[2, 3, 0]) - 90) <= 2
    frames, _ = io.read_video(tmp_path / "g.jpg")
    assert frames.shape == (1, 5, 7, 3)
    deep = np.linspace(0, 65535, 5 * 7).reshape(5, 7).astype(np.uint16)  # a 16-bit grey scan
    Image.fromarray(deep).save(tmp_path / "g16.png")
    np.testing.assert_array_equal(io.read_image(tmp_path / "g16.png")[..., 1], np.round(deep / 257))


def test_an_image_too_large_to_open_is_a_one_line_error(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 2,000 pixels is over twice this: a "decompression bomb"
    with pytest.raises(KinemaError, match="huge.png is over 1,000 pixels, too large to open safely; scale it down"):
        io.read_image(tmp_path / "huge.png")


def test_videos_are_resampled_to_the_rate_asked_for(tmp_path):
    video = np.stack([np.full((16, 16, 3), 10 * i, np.uint8) for i in range(24)])  # frame i is grey 10 i
    io.write_video(tmp_path / "fast.mp4", video, 24)
    grey = lambda frames: [round(float(f.mean()) / 10) for f in frames]  # noqa: E731
    slow, fps = io.read_video(tmp_path / "fast.mp4", fps=8)  # 1 s: 8 frames, each the one on screen then
    assert fps == 8 and grey(slow) == [0, 3, 6, 9, 12, 15, 18, 21] and io.resampled_count(24, 24, 8) == 8
    up, fps = io.read_video(tmp_path / "fast.mp4", fps=60, max_frames=7)
    assert fps == 60 and grey(up) == [0, 0, 0, 1, 1, 2, 2]  # 2.5 output frames a source frame
    assert io.resampled_count(24, 24, 60) == 60 and len(io.read_video(tmp_path / "fast.mp4", fps=60)[0]) == 60
    same, fps = io.read_video(tmp_path / "fast.mp4", fps=24)
    assert fps == 24 and grey(same) == list(range(24))
    io.write_video(tmp_path / "fast.gif", video, 24)
    gif, fps = io.read_video(tmp_path / "fast.gif", fps=8)
    assert fps == 8 and grey(gif) == [0, 3, 6, 9, 12, 15, 18, 21]


def test_a_gif_frame_held_longer_is_repeated(tmp_path):
    frames = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (0, 120, 240)]
    frames[0].save(tmp_path / "hold.gif", save_all=True, append_images=frames[1:], duration=[400, 100, 100])
    video, fps = io.read_video(tmp_path / "hold.gif")  # the typical frame lasts 0.1 s: 10 fps, the first held 4
    assert fps == 10 and [int(f[0, 0, 0]) // 100 for f in video] == [0, 0, 0, 0, 1, 2]
    assert io.probe_input(tmp_path / "hold.gif", still=False) == ((6, 8, 8, 3), 10)  # the header says the same


def write_turned(path: Path, frames: np.ndarray, degrees: int) -> None:
    """An mp4 stored as `frames`, with a display matrix that shows it turned `degrees` counterclockwise,
    as phones store portrait video."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.set_display_rotation(degrees)
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


@pytest.mark.parametrize(("degrees", "red_side"), [(90, "bottom"), (-90, "top"), (180, "right")])
def test_rotated_video_reads_upright(tmp_path, degrees, red_side):
    stored = np.zeros((3, 32, 64, 3), np.uint8)
    stored[:, :, :32, 0] = 255  # red on the stored frame's left half
    write_turned(tmp_path / "phone.mp4", stored, degrees)
    frames, _ = io.read_video(tmp_path / "phone.mp4")
    shown = (3, 32, 64, 3) if degrees == 180 else (3, 64, 32, 3)
    assert frames.shape == shown
    meta = io.video_metadata(tmp_path / "phone.mp4")
    assert (meta["frames"], meta["height"], meta["width"]) == shown[:3]
    red = frames[0, ..., 0] > 128
    halves = {"top": red[:32], "bottom": red[32:], "left": red[:, :32], "right": red[:, 32:]}
    assert halves[red_side].mean() > 0.95 and red.mean() == pytest.approx(0.5, abs=0.05)
    assert io.read_image(tmp_path / "phone.mp4").shape == shown[1:]
    np.testing.assert_array_equal(io.read_frames(tmp_path / "phone.mp4", [2, 0]), frames[[2, 0]])  # training's reader


def test_exif_oriented_photo_reads_upright_with_its_shown_size(tmp_path):
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to show", as a phone held upright writes it
    Image.fromarray(stored).save(tmp_path / "photo.jpg", exif=exif, quality=95)
    image = io.read_image(tmp_path / "photo.jpg")
    assert image.shape == (40, 20, 3) and image[:20, :, 0].mean() > 200 and image[20:, :, 0].mean() < 60
    meta = io.video_metadata(tmp_path / "photo.jpg")
    assert (meta["width"], meta["height"]) == (20, 40)


def test_anamorphic_video_reads_at_its_display_aspect(tmp_path):
    """A 32x64 stream of pixels twice as wide as tall shows as 64x64: every reader gives it so."""
    from fractions import Fraction

    import av

    frame = np.zeros((64, 32, 3), np.uint8)
    frame[:, :16] = 255  # the left half white, as shown
    with av.open(str(tmp_path / "wide_pixels.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 64, "yuv420p"
        stream.codec_context.sample_aspect_ratio = Fraction(2, 1)
        for _ in range(3):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    path = tmp_path / "wide_pixels.mp4"
    assert (io.video_metadata(path)["width"], io.probe_input(path, still=False)[0]) == (64, (3, 64, 64, 3))
    for video in (io.read_video(path)[0], io.read_frames(path, [0, 2])):
        assert video.shape[1:] == (64, 64, 3)
        assert video[:, :, :28].mean() > 240 and video[:, :, 36:].mean() < 15


def test_an_animated_webp_given_as_a_video_is_its_first_frame(tmp_path):
    frames = [Image.fromarray(np.full((24, 40, 3), v, np.uint8)) for v in (30, 200)]
    frames[0].save(tmp_path / "anim.webp", save_all=True, append_images=frames[1:], duration=100, lossless=True)
    assert io.probe_input(tmp_path / "anim.webp", still=False)[0] == (1, 24, 40, 3)  # not FFmpeg's 0x0
    video, _ = io.read_video(tmp_path / "anim.webp")
    assert video.shape == (1, 24, 40, 3) and int(video[0, 0, 0, 0]) == 30


def test_video_that_changes_size_is_a_clear_error(tmp_path):
    import av

    parts = []
    for size in (32, 48):  # two MPEG-TS streams joined byte for byte: the size changes at the join
        with av.open(str(tmp_path / "part.ts"), "w", format="mpegts") as container:
            stream = container.add_stream("mpeg2video", rate=8)
            stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
            for _ in range(3):
                container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((size, size, 3), np.uint8))))
            container.mux(stream.encode())
        parts.append((tmp_path / "part.ts").read_bytes())
    (tmp_path / "joined.mp4").write_bytes(b"".join(parts))
    with pytest.raises(KinemaError, match="changes its frame size"):
        io.read_video(tmp_path / "joined.mp4")


def test_uint8_conversions_round_trip():
    video = torch.rand(2, 3, 5, 8, 8) * 2.4 - 1.2  # out of range values get clamped
    frames = io.to_uint8(video)
    assert frames.shape == (5, 8, 8, 3) and frames.dtype == np.uint8
    expected = ((video[0].clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 3, 0).to(torch.uint8).numpy()
    np.testing.assert_array_equal(frames, expected)
    back = io.from_uint8(frames)
    assert back.shape == (3, 5, 8, 8) and back.dtype == torch.float32
    assert back.min() >= -1 and back.max() <= 1
    np.testing.assert_array_equal(io.to_uint8(back), frames)
    np.testing.assert_array_equal(io.to_uint8(back[None]), frames)


def test_fit_image_covers_then_crops():
    wide = np.zeros((100, 200, 3), np.uint8)
    wide[:, 90:110] = 255  # a centered stripe must stay centered
    fitted, message = io.fit_image(wide, 64, 64)
    assert fitted.shape == (64, 64, 3)
    assert "200x100" in message and "center-cropped" in message
    assert fitted[:, 32].min() > 200 and fitted[:, 0].max() < 30
    same, message = io.fit_image(fitted, 64, 64)
    assert same is fitted and "already" in message
    scaled, message = io.fit_image(np.zeros((32, 32, 3), np.uint8), 64, 64)
    assert scaled.shape == (64, 64, 3) and "cropped" not in message


def test_fit_message_says_only_what_was_done():
    assert io.fit_message(96, 64, 80, 64) == "center-cropped 96x64 to 80x64"  # no resize to the same size
    assert io.fit_message(200, 100, 64, 64) == "resized 200x100 to 128x64 and center-cropped to 64x64"
    assert io.fit_message(32, 32, 64, 64) == "resized 32x32 to 64x64"
