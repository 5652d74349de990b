import json

import numpy as np
import pytest
import torch

from kinema import data
from kinema.config import preset
from kinema.data import (
    Bucket,
    FolderSource,
    WorldSource,
    build_cache,
    check_manifest,
    load_cache,
    split_counts,
)
from kinema.errors import KinemaError
from kinema.io import video_metadata, write_video
from kinema.world import MOTIONS, SceneMix


def test_bucket_shapes_tokens_and_batch_sizes():
    small = preset("small")
    video, image, wide = Bucket(128, 128, 17), Bucket(128, 128, 1), Bucket(224, 128, 17)
    assert video.latent_shape(small) == (8, 5, 32, 32)
    assert wide.latent_shape(small) == (8, 5, 32, 56)
    assert (video.tokens(small), image.tokens(small), wide.tokens(small)) == (320, 64, 560)
    # Batches hold about the same number of tokens, capped.
    assert video.batch_size(small, 2560, 24) == 8
    assert image.batch_size(small, 2560, 24) == 24
    assert wide.batch_size(small, 2560, 24) == 4
    assert Bucket(128, 128, 33).batch_size(small, 100, 24) == 1
    assert video.name == "128x128x17"


def test_split_counts_follow_weights():
    assert split_counts(100, [2, 1, 1]) == [50, 25, 25]
    assert split_counts(10, [1.0, 0.01, 0.0]) == [10, 1, 0]  # every weighted bucket gets a clip


def test_world_clips_are_deterministic_and_never_heldout():
    from kinema import world

    source = WorldSource(seed=0, fps=8)
    a, b = source.clip(3, Bucket(32, 32, 5)), source.clip(3, Bucket(32, 32, 5))
    assert a.frames.shape == (5, 32, 32, 3) and a.frames.dtype == np.uint8
    assert np.array_equal(a.frames, b.frames) and a.caption == b.caption
    assert source.clip(3, Bucket(32, 32, 5), stream=1).meta != a.meta
    heldout = set(world.HELDOUT)
    for i in range(300):
        scene = WorldSource(seed=i % 3, fps=8).clip(i, Bucket(16, 16, 1)).meta["scene"]
        for obj in scene["objects"]:
            assert (obj["colour"], obj["shape"], obj["motion"]) not in heldout
    # Captions are re-drawn from the stored ground truth.
    rng = np.random.default_rng(0)
    assert all(isinstance(source.caption(a.meta, rng), str) for _ in range(3))


def test_a_blend_draws_its_share_of_clips_from_a_second_mix():
    """blend (0.3, one object): about 30% of the clips come from the blend, the rest from the main mix (two or three
    objects here, to tell them apart); an empty blend draws exactly the unblended scenes."""
    from kinema import world

    crowded, single = world.SceneMix(objects=(2, 3)), world.SceneMix(objects=(1,), motions=("left", "right"))
    blended = WorldSource(seed=0, fps=8, mix=crowded, blend=(0.3, single))
    scenes = [blended.clip(i, Bucket(16, 16, 1)).meta["scene"]["objects"] for i in range(200)]
    alone = [objects for objects in scenes if len(objects) == 1]
    assert 40 <= len(alone) <= 80  # 60 expected
    assert all(objects[0]["motion"] in ("left", "right") for objects in alone)
    plain, empty = WorldSource(seed=0, fps=8), WorldSource(seed=0, fps=8, blend=(0.0, single))
    assert all(plain.clip(i, Bucket(16, 16, 1)).meta == empty.clip(i, Bucket(16, 16, 1)).meta for i in range(20))
    assert plain.describe() == empty.describe() != WorldSource(seed=0, fps=8, blend=(0.3, single)).describe()
    assert WorldSource(seed=0, fps=8, blend=(0.3, world.WHOLE_WORLD)).describe() != plain.describe()


def test_world_objects_may_leave_the_frame_in_their_own_cache():
    from kinema.data import open_source

    kept, free = open_source("world", 0, 8), open_source("world", 0, 8, SceneMix(stay_in_frame=False))
    assert kept.describe() != free.describe()  # a cache of one is never reused for the other
    assert kept.describe() == "world seed=0 fps=8"  # caches built before the option stay valid
    assert free.describe() == "world seed=0 fps=8 leaving the frame"
    starts = [obj["x"] > 0.5 for i in range(300)
              for obj in free.clip(i, Bucket(16, 16, 17)).meta["scene"]["objects"] if obj["motion"] == "right"]
    assert 0.3 < np.mean(starts) < 0.7  # about half start in the right half (in frame: ~12%, tests/test_world.py)


def test_a_narrow_scene_mix_draws_only_its_scenes_into_its_own_cache():
    from kinema.data import open_source

    mix = SceneMix(objects=(1,), motions=("left", "right"), backgrounds=("solid",))
    source = open_source("world", 0, 8, mix)
    assert source.describe() == "world seed=0 fps=8 objects=(1,) motions=('left', 'right') backgrounds=('solid',)"
    assert open_source("world", 0, 8, SceneMix(motions=("right", "left", *MOTIONS))).describe() == "world seed=0 fps=8"
    scenes = [source.clip(i, Bucket(16, 16, 9)).meta["scene"] for i in range(40)]
    assert {len(s["objects"]) for s in scenes} == {1}
    assert {s["objects"][0]["motion"] for s in scenes} == {"left", "right"}
    assert {s["background"]["kind"] for s in scenes} == {"solid"}


def _videos(folder, count=2, frames=12):
    for i in range(count):
        video = np.zeros((frames, 40, 56, 3), np.uint8)
        video[:, :, :, i % 3] = np.linspace(40, 200, frames, dtype=np.uint8)[:, None, None]
        write_video(folder / f"clip{i}.mp4", video, fps=16)


def test_folder_source_from_jsonl(tmp_path, capsys):
    _videos(tmp_path)
    write_video(tmp_path / "still.png", np.full((1, 20, 30, 3), 99, np.uint8), fps=1)
    rows = [{"path": "clip0.mp4", "caption": "a red fade"}, {"path": str(tmp_path / "clip1.mp4"), "caption": "b"},
            {"path": "still.png", "caption": "a grey still"}]
    listing = tmp_path / "captions.jsonl"
    listing.write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = FolderSource(tmp_path, fps=8, clip_frames=17)  # the folder's one listing is found
    assert [r.caption for r in source.rows] == ["a red fade", "b", "a grey still"]
    # Too short for the longest bucket: each video is named once, when the listing is read.
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 2 and warnings[1].endswith("line 2: clip1.mp4 has 12 frames, fewer than the longest "
                                                       "bucket's 17; its last frame is held to fill those clips")
    FolderSource(tmp_path, fps=8, clip_frames=9)  # 12 frames at 16 fps: 0.75 s, for clips of 1 s at 8 fps
    assert capsys.readouterr().err.splitlines()[0].endswith(
        "clip0.mp4 lasts 0.75 s, shorter than the longest bucket's 1 s; it plays slower to fill those clips, so its "
        "motion is learnt as slower")
    clip = source.clip(0, Bucket(32, 48, 5))
    assert clip.frames.shape == (5, 48, 32, 3) and clip.caption == "a red fade"
    # Videos are resampled from 16 to 8 fps: every other frame.
    red = clip.frames[:, 24, 16, 0].astype(int)
    assert (np.diff(red) > 0).all()
    # Too short for the bucket: the last frame is held.
    long = source.clip(1, Bucket(32, 32, 17))
    assert long.frames.shape == (17, 32, 32, 3) and np.array_equal(long.frames[-1], long.frames[-2])
    # Images only fill 1-frame buckets; video buckets skip them.
    assert source.clip(2, Bucket(32, 32, 1)).frames.shape == (1, 32, 32, 3)
    assert source.clip(2, Bucket(32, 32, 5)).caption == "a red fade"


def test_a_folder_cache_is_not_reused_once_a_caption_or_clip_changes(tmp_path):
    _videos(tmp_path, count=2)
    listing = tmp_path / "captions.jsonl"
    listing.write_text('{"path": "clip0.mp4", "caption": "a fade"}\n{"path": "clip1.mp4", "caption": "b"}\n')
    first = FolderSource(listing, fps=8).describe()
    assert FolderSource(listing, fps=8).describe() == first
    listing.write_text('{"path": "clip0.mp4", "caption": "a slow fade"}\n{"path": "clip1.mp4", "caption": "b"}\n')
    edited = FolderSource(listing, fps=8).describe()
    assert edited != first
    write_video(tmp_path / "clip1.mp4", np.zeros((20, 40, 56, 3), np.uint8), fps=16)  # a clip replaced
    assert FolderSource(listing, fps=8).describe() != edited


@pytest.mark.parametrize("text, message", [
    ('{"path": "clip0.mp4", "caption": "ok"}\n{"path": oops}\n', "line 2"),
    ('{"path": "clip0.mp4", "caption": "ok"}\n{"path": "missing.mp4", "caption": "x"}\n', "line 2"),
    ('{"path": "clip0.mp4", "caption": ""}\n', "line 1"),
])
def test_bad_rows_name_file_and_line(tmp_path, text, message):
    _videos(tmp_path, count=1)
    listing = tmp_path / "rows.jsonl"
    listing.write_text(text)
    with pytest.raises(KinemaError, match=f"rows.jsonl {message}"):
        FolderSource(listing, fps=8)


def test_every_twentieth_video_is_held_out_for_evaluation(tmp_path):
    _videos(tmp_path, count=1)
    listing = tmp_path / "rows.csv"
    listing.write_text("".join(f"clip0.mp4,clip number {i}\n" for i in range(19)))
    few = FolderSource(listing, fps=8)
    assert few.held_out() is None and len(few.rows) == 19  # too few to spare one: all train
    listing.write_text("".join(f"clip0.mp4,clip number {i}\n" for i in range(41)))
    train, held = FolderSource(listing, fps=8), FolderSource(listing, fps=8).held_out()
    assert [r.caption for r in held.rows] == ["clip number 19", "clip number 39"]
    assert len(train.rows) == 39 and not {r.caption for r in train.rows} & {r.caption for r in held.rows}
    assert held.clip(0, Bucket(32, 32, 5)).caption == "clip number 19"


def test_unreadable_video_names_its_row(tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    (tmp_path / "rows.csv").write_text("broken.mp4,a broken clip\n")
    with pytest.raises(KinemaError, match="none of the 1 files .*rows.csv lists can be read"):
        FolderSource(tmp_path / "rows.csv", fps=8)


def test_buckets_with_few_clips_take_different_rows(tmp_path):
    _videos(tmp_path, count=1, frames=48)  # 3 s: windows far enough apart to differ
    (tmp_path / "rows.csv").write_text("".join(f"clip0.mp4,row {i}\n" for i in range(40)))
    source = FolderSource(tmp_path / "rows.csv", fps=8, buckets=5)
    taken = [{source.clip(i, Bucket(32, 32, 5), stream).caption for i in range(6)} for stream in range(5)]
    # Five buckets of 6 clips from 38 training rows (2 are held out), each from its fifth: 30 rows, none twice.
    assert len(set.union(*taken)) == 30
    assert taken[0] == {f"row {i}" for i in range(6)} and taken[1] == {f"row {i}" for i in range(7, 13)}
    # A bucket that wraps past the last row goes on to the videos' next windows, as the first bucket does.
    wrapped, second_pass = source.clip(8, Bucket(32, 32, 5), 4), source.clip(38, Bucket(32, 32, 5), 0)
    assert wrapped.caption == "row 0" and np.array_equal(wrapped.frames, second_pass.frames)
    assert not np.array_equal(wrapped.frames, source.clip(0, Bucket(32, 32, 5), 0).frames)


def test_unreadable_files_are_skipped_with_a_warning(tmp_path, capsys, monkeypatch):
    _videos(tmp_path, count=2)
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"x" * 4000)  # a cut-off download
    (tmp_path / "rows.csv").write_text("clip0.mp4,first\nbroken.mp4,broken\nclip1.mp4,second\n")
    source = FolderSource(tmp_path / "rows.csv", fps=8)
    captions = [source.clip(i, Bucket(32, 32, 5)).caption for i in range(4)]
    assert captions == ["first", "second", "first", "second"]  # dropped when the listing was read
    [warning] = capsys.readouterr().err.splitlines()  # once: clips (in any process) never meet it
    assert warning.startswith(f"kinema: warning: skipping {tmp_path / 'rows.csv'} line 2: cannot read ")
    assert "broken.mp4: corrupt or not a video" in warning
    # The next stage reads the listing again: nothing is probed again or warned of twice, until a file changes.
    probed = []
    monkeypatch.setattr(data, "video_metadata", lambda path: probed.append(path) or video_metadata(path))
    assert len(FolderSource(tmp_path / "rows.csv", fps=8).rows) == 2 and not capsys.readouterr().err
    assert probed == []
    write_video(tmp_path / "broken.mp4", np.zeros((12, 40, 56, 3), np.uint8), fps=16)  # downloaded again
    assert [row.caption for row in FolderSource(tmp_path / "rows.csv", fps=8).rows] == ["first", "broken", "second"]
    assert probed == [tmp_path / "broken.mp4"]


def _pool_encoder(video):  # (B, 3, T, H, W) -> (B, 3, T', H/8, W/8), a stand-in VAE
    first = torch.nn.functional.avg_pool3d(video[:, :, :1], (1, 8, 8))
    rest = torch.nn.functional.avg_pool3d(video[:, :, 1:], (4, 8, 8)) if video.shape[2] > 1 else first[:, :, :0]
    return torch.cat([first, rest], dim=2)


def test_latent_cache_is_incremental_and_checked(tmp_path):
    source = WorldSource(seed=0, fps=8)
    buckets, counts = [Bucket(32, 32, 5), Bucket(32, 32, 1)], [3, 2]
    folder = tmp_path / "cache"
    check_manifest(folder, {"fingerprint": "vae-a"})
    build_cache(folder, source, buckets, counts, _pool_encoder, progress=False)
    loaded = load_cache(folder, buckets, counts)
    assert loaded[0].latents.shape == (3, 3, 2, 4, 4) and loaded[0].latents.dtype == torch.float16
    assert loaded[1].latents.shape == (2, 3, 1, 4, 4)
    assert "scene" in loaded[0].metas[0] and loaded[0].metas[0]["caption"]
    # A missing shard is rebuilt identically; other shards are left alone.
    shard = folder / "32x32x5" / "shard_00000.safetensors"
    shard.unlink()
    build_cache(folder, source, buckets, counts, _pool_encoder, progress=False)
    assert torch.equal(load_cache(folder, buckets, counts)[0].latents, loaded[0].latents)
    with pytest.raises(KinemaError, match="wants 4"):
        load_cache(folder, buckets, [4, 2])
    build_cache(folder, source, buckets, [4, 2], _pool_encoder, progress=False)  # the recipe grew
    assert torch.equal(load_cache(folder, buckets, [4, 2])[0].latents[:3], loaded[0].latents)
    with pytest.raises(KinemaError, match="another VAE"):
        check_manifest(folder, {"fingerprint": "vae-b"})
    shard.write_bytes(b"garbage")
    with pytest.raises(KinemaError, match="corrupt"):
        load_cache(folder, buckets, counts)


def test_cache_rendered_by_worker_processes_is_the_same(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "SHARD_CLIPS", 2)  # several shards a bucket: the pool renders each next one ahead
    source = WorldSource(seed=3, fps=8)
    buckets, counts = [Bucket(32, 32, 5), Bucket(48, 32, 1)], [5, 3]
    build_cache(tmp_path / "here", source, buckets, counts, _pool_encoder, progress=False)
    build_cache(tmp_path / "pool", source, buckets, counts, _pool_encoder, progress=False, workers=2)
    here, pool = load_cache(tmp_path / "here", buckets, counts), load_cache(tmp_path / "pool", buckets, counts)
    for a, b in zip(here, pool, strict=True):
        assert a.latents.abs().sum() > 0 and torch.equal(a.latents, b.latents)
        assert a.metas == b.metas
    assert len(list((tmp_path / "pool" / "32x32x5").glob("shard_*"))) == 3


def test_buckets_take_clips_of_their_orientation_and_no_held_out_row_is_unreadable(tmp_path):
    _videos(tmp_path, count=2)  # 56x40: landscape
    write_video(tmp_path / "tall.mp4", np.zeros((12, 56, 40, 3), np.uint8), fps=16)
    (tmp_path / "rows.csv").write_text("clip0.mp4,wide one\ntall.mp4,tall\nclip1.mp4,wide two\n")
    source = FolderSource(tmp_path / "rows.csv", fps=8)
    assert {source.clip(i, Bucket(48, 32, 5)).caption for i in range(6)} == {"wide one", "wide two"}
    assert {source.clip(i, Bucket(32, 48, 5)).caption for i in range(3)} == {"tall"}
    assert {source.clip(i, Bucket(32, 32, 5)).caption for i in range(3)} == {"wide one", "tall", "wide two"}
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    rows = [f"clip{i % 2}.mp4,clip number {i}\n" for i in range(19)] + ["broken.mp4,the twentieth\n"]
    (tmp_path / "rows.csv").write_text("".join(rows + [f"clip0.mp4,clip number {i}\n" for i in range(20, 40)]))
    held = FolderSource(tmp_path / "rows.csv", fps=8).held_out()  # the 20th readable video, not the broken one
    assert [row.caption for row in held.rows] == ["clip number 20"]
