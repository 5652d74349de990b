import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kinema.cli import main
from kinema.io import read_video


def run(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_generate_writes_mp4_with_requested_size_and_frames(tmp_path, capsys):
    out = tmp_path / "v.mp4"
    code, stdout, _ = run(["generate", "a red circle", "--model", "debug", "--size", "64x48", "--seconds", "1",
                           "--fps", "8", "--steps", "2", "-o", str(out), "--quiet"], capsys)
    assert code == 0 and "wrote" in stdout
    frames, fps = read_video(out)
    assert frames.shape == (8, 48, 64, 3) and fps == pytest.approx(8)


def test_generate_image_as_png_and_filmstrip(tmp_path, capsys):
    out, strip = tmp_path / "i.png", tmp_path / "s.png"
    code, stdout, _ = run(["generate", "a green square", "--model", "debug", "--size", "64x64", "--seconds", "0",
                           "--steps", "1", "-o", str(out), "--filmstrip", str(strip), "--quiet"], capsys)
    assert code == 0 and out.stat().st_size > 0 and strip.stat().st_size > 0
    assert re.search(r"i\.png \(64x64, an image, seed \d+\) and its contact sheet .*s\.png$", stdout.strip())
    assert "note:" not in stdout
    code, stdout, _ = run(["generate", "a green square", "--model", "debug", "--size", "64x64", "--seconds", "0",
                           "--steps", "1", "-o", str(tmp_path / "i.mp4"), "--quiet"], capsys)
    assert code == 0 and "note: one frame makes a one-frame video; for an image file write i.png" in stdout
    assert read_video(tmp_path / "i.mp4")[0].shape == (1, 64, 64, 3)


@pytest.mark.parametrize("args,message", [
    (["--model", "/no/such/folder"], "model folder /no/such/folder not found"),
    (["--model", "huge"], "unknown model 'huge'; pass a bundled model (kinema-small, kinema-small-fast)"),
    (["--model", "kinema-smal"], "unknown model 'kinema-smal' (did you mean kinema-small?)"),
    (["--size", "101x64"], "width 101 is odd; video needs even sizes, e.g. 100 or 102"),
    (["--size", "big"], "not WIDTHxHEIGHT"),
    (["--seconds", "-2"], "duration must be a positive number of seconds, got -2"),
    (["--seconds", "nan"], "duration must be a finite number of seconds, got nan; give one up to 60, e.g. 4"),
    (["--seconds", "inf"], "duration must be a finite number of seconds, got inf; give one up to 60, e.g. 4"),
    (["--prompt-at", "nan=a blue ball"], "cannot read segment 'nan=a blue ball'"),
    (["--size", "0x0"], "size '0x0' is not WIDTHxHEIGHT with both sides above 0"),
    (["--size", "99999x99999"], "larger than 1920x1080"),
    (["--window", "0"], "window 0 with context 1 (the least): a window holds its context latent frames, at least"),
    (["--window", "2"], "kinema: error: window 2 with context 1 (the least): a window holds its context latent frames, "
                        "at least one new one and one of the end that connect and loop run into, so it needs context "
                        "+ 2; give window 3\n"),
    (["--window", "4", "--context", "3"], "window 4 with context 3: a window holds"),
    (["--context", "4"], "window 5 with context 4: a window holds its context latent frames, at least one new one and "
                         "one of the end that connect and loop run into, so it needs context + 2; give window 6 or "
                         "context 3"),
    (["--context", "0"], "context 0 carries nothing from one window to the next; give at least 1 (default 2)"),
    (["--window", "33"], "window 33 is over 32 latent frames, the most the model sees at once; give at most 32"),
    (["--size", "514x128"], "size 514x128 is 4.02:1; Kinema makes shapes from 1:4 to 4:1, e.g. 512x128, the widest at "
                            "height 128\n"),
    (["--second", "1"], "kinema generate: error: unrecognized arguments: --second 1 (did you mean --seconds?); see "
                        "kinema generate --help\n"),
    (["--strenght=0.5"], "unrecognized arguments: --strenght=0.5 (did you mean --strength?); see kinema generate "
                         "--help"),
    (["blue", "ball"], "kinema generate: error: unrecognized arguments: blue ball; quote a prompt of several words: "
                       "kinema generate \"a red circle blue ball\" ...; see kinema generate --help\n"),
    (["--filmstrip", "strip.jpgx"], "the contact sheet is a PNG"),
    (["-o", "x.mp4", "--filmstrip", "x.mp4"], "the contact sheet is a PNG"),
    (["-o", "x.png", "--filmstrip", "x.png", "--seconds", "0"], "is the output itself"),
    (["--filmstrip", "nodir/s.png"], "does not exist; create it or choose another --filmstrip"),
    (["-o", "fast.gif", "--fps", "60"], "GIF cannot play 60 fps (at most 50); lower --fps or write .mp4"),
    (["-o", "/no/such/dir/v.mp4"], "does not exist"),
    (["-o", "v.avi"], "unknown output type"),
    (["--noise-correlation", "1.5"], "noise_correlation must be from 0 (independent frames) to 0.99, got 1.5"),
    (["--noise-drift", "3"], "noise_drift must be from 0 (noise in place) to 1 short sides per second, got 3.0"),
    (["--guidance", "-1"], "guidance must be between 0 and 100"),
    (["--seed", "-1"], "seed must be between 0"),
    (["--seconds", "1e308"], "duration must be at most 60 s, got 1e+308"),
    (["--seconds", "1", "--frames", "9"], "seconds 1 and frames 9 disagree at 8 fps"),
    (["--negative-prompt", "a \udcff ball"], "the negative prompt holds bytes that are not UTF-8 text"),
    (["--seconds", "abc"], "argument --seconds: invalid float value: 'abc'; see kinema generate --help"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    base = ["generate", "a red circle", "--model", "debug", "--steps", "1", "--quiet"]
    code, _, err = run(base + args, capsys)
    assert code == 2
    assert message in err and err.count("\n") == 1 and err.startswith(("kinema: error:", "kinema generate: error:"))


def test_a_failed_filmstrip_leaves_an_existing_output_alone(tmp_path, capsys):
    out = tmp_path / "keep.mp4"
    out.write_bytes(b"the user's video")
    code, _, err = run(["generate", "a red circle", "--model", "debug", "--steps", "1", "-o", str(out),
                        "--filmstrip", str(tmp_path / "strip.jpgx")], capsys)
    assert code == 2 and out.read_bytes() == b"the user's video"


def test_no_output_is_written_over_an_input(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    photo = np.full((48, 64, 3), 200, np.uint8)
    from PIL import Image
    Image.fromarray(photo).save("photo.png")
    base = ["generate", "a red circle", "--model", "debug", "--steps", "1", "--seconds", "1", "--quiet"]
    for args, option in ((["--image", "photo.png", "-o", "./photo.png"], "-o"),
                         (["--image", "photo.png", "-o", "v.mp4", "--filmstrip", "../" + tmp_path.name + "/photo.png"],
                          "--filmstrip"),
                         (["--connect", "photo.png", "photo.png", "-o", "v.mp4", "--filmstrip", "photo.png"],
                          "--filmstrip")):
        code, _, err = run(base + args, capsys)
        assert code == 2 and err.count("\n") == 1, err
        assert f"{option} photo.png is also an input video or image, which it would write over" in err
        assert (np.asarray(Image.open("photo.png")) == photo).all()
    code, stdout, _ = run(base + ["--image", "photo.png", "-o", "v.mp4", "--filmstrip", "strip.png"], capsys)
    assert code == 0 and stdout.strip().endswith("and its contact sheet strip.png") and Path("strip.png").is_file()


def test_segments_and_a_prompt_before_them_are_refused(tmp_path, capsys):
    code, _, err = run(["generate", "a blue square", "--segments", "0:a red ball;1:a green ball", "--model",
                        "debug", "-o", str(tmp_path / "s.mp4")], capsys)
    assert code == 2 and "--segments holds every prompt" in err and err.count("\n") == 1


def test_folders_that_are_files_are_one_line_errors(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    for args in (["eval", "--model", "debug", "--n", "1", "--out", str(afile)],
                 ["bench", "--quick", "--sections", "vae", "--out", str(afile)],
                 ["train", "--config", "configs/debug.toml", "--out", str(afile)],
                 ["verify", str(tmp_path)]):
        code, _, err = run(args, capsys)
        assert code == 2 and err.count("\n") == 1 and ("it is a file" in err or "is a folder" in err), (args, err)
    assert afile.read_text() == "mine"


def test_eval_checks_its_arguments_before_it_makes_its_folder(tmp_path, capsys):
    for args, says in ((["--aspects", ""], "no aspect ratio to evaluate"), (["--seed", "-5"], "seed must be 0 or more"),
                       (["--model", "nosuch"], "unknown model 'nosuch'")):
        code, _, err = run(["eval", "--model", "debug", "--n", "1", "--out", str(tmp_path / "e"), *args], capsys)
        assert code == 2 and says in err and not (tmp_path / "e").exists()


def test_judge_reads_a_kinema_file_as_it_was_drawn(tmp_path, capsys):
    from kinema import io, judge_measure, provenance, world

    prompt = "a small red circle moves to the right over a dark blue gradient"
    scene = world.Scene([world.Obj("circle", "red", "small", "right", 0.3, 0.5)], world.Background("gradient", "navy"))
    marked = provenance.embed(world.render(scene, 128, 128, 17, 8.0), 7)  # what every Kinema output carries
    assert judge_measure.measure(marked, 8.0).background == "night"  # the grain reads as a night sky's texture
    io.write_video(tmp_path / "marked.mp4", marked, 8.0)
    code, out, _ = run(["judge", prompt, str(tmp_path / "marked.mp4")], capsys)
    verdict = json.loads(out)
    assert code == 0 and verdict["background"] is True and verdict["colour"] is True and verdict["count"] is True
    assert verdict["seen"]["objects"][0]["colour"] == "red" and verdict["seen"]["objects"][0]["shape"] == "circle"
    assert (verdict["seen"]["count"], verdict["seen"]["background"]) == (1, "gradient")
    code, _, err = run(["judge", str(tmp_path / "marked.mp4"), prompt], capsys)
    assert code == 2 and "the prompt comes first, kinema judge PROMPT VIDEO" in err and err.count("\n") == 1


def test_empty_prompt_is_an_error(tmp_path, capsys):
    code, _, err = run(["generate", "", "--model", "debug", "-o", str(tmp_path / "v.mp4")], capsys)
    assert code == 2 and "prompt is empty" in err
    assert err.startswith("kinema: error:") and err.count("\n") == 1  # rejected before the progress bar is drawn


@pytest.mark.parametrize("args,message", [
    (["eval", "--model", "debug", "--n", "2", "--aspects", "1:1,2:0"], "aspect '2:0' is not a ratio W:H"),
    (["eval", "--model", "debug", "--n", "2", "--steps", "0"], "steps must be between 1 and 1000, got 0"),
    (["serve", "--port", "70000"], "port 70000 is not a TCP port"),
])
def test_eval_and_serve_errors_are_one_line_without_a_bar(tmp_path, capsys, args, message):
    code, _, err = run(args + (["--out", str(tmp_path / "eval")] if args[0] == "eval" else []), capsys)
    assert code == 2 and message in err
    assert err.startswith("kinema: error:") and err.count("\n") == 1  # no progress bar was drawn first


def test_output_that_is_a_folder_or_under_a_file(tmp_path, capsys):
    code, _, err = run(["generate", "x", "--model", "debug", "-o", str(tmp_path)], capsys)
    assert code == 2 and "is a folder" in err
    (tmp_path / "file").write_text("")
    code, _, err = run(["generate", "x", "--model", "debug", "-o", str(tmp_path / "file" / "v.mp4")], capsys)
    assert code == 2 and "does not exist" in err


def test_help_explains_itself():
    out = subprocess.run([sys.executable, "-m", "kinema.cli", "--help"], capture_output=True, text=True).stdout
    assert "generate" in out and "train" in out and "examples:" in out
    out = subprocess.run([sys.executable, "-m", "kinema.cli", "generate", "--help"], capture_output=True,
                         text=True).stdout
    assert "--size" in out and "--seconds" in out and "--guidance" in out


# -- modes ---------------------------------------------------------------------------------------------

@pytest.fixture
def fast_cli(fp32_debug_pipe, monkeypatch):
    """`kinema generate` on the session's fp32 debug pipeline (faster at these tiny sizes)."""
    from kinema.pipeline import Pipeline

    monkeypatch.setattr(Pipeline, "load", classmethod(lambda cls, spec=None, **kw: fp32_debug_pipe))
    monkeypatch.setattr(fp32_debug_pipe, "rewriter", fp32_debug_pipe.rewriter)
    return fp32_debug_pipe


@pytest.fixture
def clips(tmp_path):
    from kinema.io import write_video
    from kinema.world import Background, Obj, Scene, render

    paths = []
    for motion, colour in (("right", "red"), ("up", "blue")):
        scene = Scene([Obj("circle", colour, "medium", motion, 0.4, 0.5, speed=0.3)], Background("solid", "navy"))
        paths.append(tmp_path / f"{colour}.mp4")
        write_video(paths[-1], render(scene, 32, 32, 9, 8), 8)
    return [str(p) for p in paths]


@pytest.mark.parametrize("args,made", [
    (["--seconds", "2"], "makes 16 frames"),
    (["--extend", "{a}", "--seconds", "0.125"], "makes a video"),  # one new frame, after the clip's nine
])
def test_png_for_a_video_fails_before_generating(tmp_path, capsys, clips, args, made):
    out = tmp_path / "v.png"
    args = [arg.format(a=clips[0]) for arg in args]
    code, _, err = run(["generate", "a red circle", "--model", "debug", "--steps", "1", "-o", str(out), *args], capsys)
    assert code == 2 and f"v.png: a PNG holds one image and this request {made}" in err
    assert err.count("\n") == 1 and not out.exists()  # no progress bar: nothing was generated


def test_verify_finds_the_watermark_of_a_generated_video(tmp_path, capsys):
    import skimage.data
    from PIL import Image

    out = tmp_path / "v.mp4"  # the bundled model's video: the debug model's noise hides a mark this small
    code, stdout, _ = run(["generate", "a red circle", "--seconds", "1", "-o", str(out), "--quiet"], capsys)
    seed = re.search(r"seed (\d+)\)$", stdout.strip())[1]  # none given: a random one, printed
    code, stdout, _ = run(["verify", str(out)], capsys)
    lines = stdout.splitlines()
    assert code == 0 and re.fullmatch(r"watermark: found \(p (= .*e-\d\d+|< 1e-300), payload [0-9a-f]{16}; "
                                      r"6[0-4]/64 payload bits match the file's tag\)", lines[0])
    assert lines[1] == f"tags: ai_generated=true, model=kinema-small-fast, seed={seed}; prompt 'a red circle'"
    photo = tmp_path / "photo.png"
    Image.fromarray(skimage.data.chelsea()).save(photo)
    code, stdout, _ = run(["verify", str(photo)], capsys)
    assert code == 1 and stdout.startswith("watermark: not found") and "tags: none" in stdout
    assert run(["verify", str(tmp_path / "gone.mp4")], capsys)[:3:2] == (2, f"kinema: error: {tmp_path / 'gone.mp4'} "
                                                                         "not found; check the path\n")


def test_generate_reads_its_inputs_by_their_content_as_verify_does(fast_cli, clips, tmp_path, capsys):
    misnamed = tmp_path / "vid.png"  # an MP4 named as an image: the clip it holds, 9 frames at 8 fps
    misnamed.write_bytes(Path(clips[0]).read_bytes())
    base = ["generate", "a red circle", "--size", "32x32", "--steps", "1", "--quiet", "-o", str(tmp_path / "o.mp4")]
    code, stdout, _ = run([*base, "--extend", str(misnamed), "--seconds", "1"], capsys)
    assert code == 0 and re.search(r"\(32x32, 17 frames at 8 fps, seed \d+\)$", stdout.strip())
    code, stdout, _ = run([*base, "--image", str(misnamed), "--seconds", "1"], capsys)
    assert code == 0 and re.search(r"\(32x32, 8 frames at 8 fps, seed \d+\)$", stdout.strip())


def test_verify_reads_what_a_cut_short_video_holds_and_names_an_empty_file(tmp_path, capsys):
    from kinema import io, provenance, world

    scene = world.Scene([world.Obj("circle", "red", "small", "still", 0.5, 0.5)], world.Background("solid", "navy"))
    io.write_video(tmp_path / "v.mp4", provenance.embed(world.render(scene, 64, 64, 32, 8.0), 7), 8.0)
    cut = tmp_path / "cut.mp4"  # a download cut off at three quarters: its header still lists 32 frames
    cut.write_bytes((tmp_path / "v.mp4").read_bytes()[:int(0.75 * (tmp_path / "v.mp4").stat().st_size)])
    code, stdout, err = run(["verify", str(cut)], capsys)
    assert code == 0 and stdout.startswith("watermark: found") and err == ""
    (tmp_path / "empty.mp4").write_bytes(b"")
    code, _, err = run(["verify", str(tmp_path / "empty.mp4")], capsys)
    assert (code, err) == (2, f"kinema: error: {tmp_path / 'empty.mp4'} is empty (0 bytes); save or download the "
                              "video or image again\n")


def test_verify_reads_a_file_by_its_content_and_its_help_gives_the_exit_statuses(tmp_path, capsys):
    from kinema.io import write_video
    from kinema.provenance import metadata

    write_video(tmp_path / "still.png", np.full((1, 64, 64, 3), 90, np.uint8), 8, metadata=metadata("a ball", "x", 3))
    (tmp_path / "still.mp4").write_bytes((tmp_path / "still.png").read_bytes())  # a PNG named .mp4
    code, stdout, _ = run(["verify", str(tmp_path / "still.mp4")], capsys)
    assert code == 1 and stdout.splitlines()[1] == "tags: ai_generated=true, model=x, seed=3; prompt 'a ball'"
    (tmp_path / "notes").write_text("not a video")
    code, _, err = run(["verify", str(tmp_path / "notes")], capsys)
    assert code == 2 and err.startswith(f"kinema: error: {tmp_path / 'notes'} is neither a PNG")
    stdout = " ".join(run(["verify", "--help"], capsys)[1].split())
    assert "Exit status: 0 when the watermark is found, 1 when it is not, 2 on an error" in stdout


def test_generate_signs_with_c2pa_credentials(tmp_path, capsys, monkeypatch):
    pytest.importorskip("c2pa")
    from kinema.provenance import make_test_certificate

    cert, key = make_test_certificate(tmp_path)
    base = ["generate", "a red circle", "--model", "debug", "--size", "64x64", "--seconds", "1", "--steps", "1",
            "--seed", "0", "--quiet"]
    out = tmp_path / "v.mp4"
    assert run([*base, "-o", str(out), "--c2pa-cert", str(cert), "--c2pa-key", str(key)], capsys)[0] == 0
    stdout = run(["verify", str(out)], capsys)[1]  # (the debug model's noise hides the watermark at this size)
    assert stdout.splitlines()[1:] == ["tags: ai_generated=true, model=debug, seed=0; prompt 'a red circle'",
                                       "C2PA: signed by Kinema test with kinema, Valid (signature and content check "
                                       "out; the signer is not on a C2PA trust list)"]
    # The environment can name them too. A GIF cannot carry them: said before anything is generated.
    monkeypatch.setenv("KINEMA_C2PA_CERT", str(cert))
    monkeypatch.setenv("KINEMA_C2PA_KEY", str(key))
    code, _, err = run([*base, "-o", str(tmp_path / "v.gif")], capsys)
    assert code == 2 and "v.gif: C2PA credentials go into .mp4 and .png files only" in err
    assert not (tmp_path / "v.gif").exists()
    code, _, err = run([*base, "-o", str(out), "--c2pa-cert", str(cert)], capsys)
    assert code == 2 and "give both --c2pa-cert (the certificate chain) and --c2pa-key" in err
    code, _, err = run([*base, "-o", str(out), "--c2pa-cert", str(key), "--c2pa-key", str(key)], capsys)
    assert code == 2 and err.startswith(f"kinema: error: cannot sign with {key} and {key}") and err.count("\n") == 1


@pytest.mark.parametrize("args,frames", [
    (["--extend", "{a}", "--seconds", "1"], 9 + 8),
    (["--extend", "{a}", "--backward", "--seconds", "1"], 8 + 9),
    (["--loop", "--seconds", "2"], 16),
    (["--connect", "{a}", "{b}", "--seconds", "1"], 9 + 8 + 9),
    (["--edit", "{a}", "--strength", "0.5"], 9),
    (["--segments", "0:a red circle moves right;1:a blue square rises", "--seconds", "2"], 16),
    (["--prompt-at", "1=a blue square rises", "--seconds", "2"], 16),
])
def test_every_mode_from_the_command_line(fast_cli, clips, tmp_path, capsys, args, frames):
    out = tmp_path / "out.mp4"
    args = [a.format(a=clips[0], b=clips[1]) for a in args]
    prompt = [] if "--segments" in args else ["a red circle moves right"]  # the segments hold every prompt
    code, stdout, _ = run(["generate", *prompt, "--size", "32x32", "--steps", "1", "-o", str(out), "--quiet", *args],
                          capsys)
    assert code == 0 and f"{frames} frames" in stdout
    assert read_video(out)[0].shape == (frames, 32, 32, 3)


def test_connect_two_images_starts_on_the_first_and_ends_on_the_last(fast_cli, tmp_path, capsys):
    from PIL import Image

    first, last = tmp_path / "first.png", tmp_path / "last.png"
    Image.new("RGB", (48, 48), (220, 30, 30)).save(first)
    Image.new("RGB", (48, 48), (30, 30, 220)).save(last)
    out = tmp_path / "between.mp4"
    code, stdout, _ = run(["generate", "a red square turns blue", "--connect", str(first), str(last), "--size",
                           "32x32", "--seconds", "2", "--steps", "1", "-o", str(out), "--quiet"], capsys)
    assert code == 0 and "18 frames" in stdout  # the first image, a 2 s bridge, the last image
    frames = read_video(out)[0].astype(float)
    assert np.abs(frames[0].mean((0, 1)) - (220, 30, 30)).max() < 12
    assert np.abs(frames[-1].mean((0, 1)) - (30, 30, 220)).max() < 12


def test_image_to_video_and_aspect_from_the_command_line(fast_cli, tmp_path, capsys):
    import skimage.data
    from PIL import Image

    photo = tmp_path / "cat.jpg"
    Image.fromarray(skimage.data.chelsea()).save(photo)
    out = tmp_path / "cat.mp4"
    code, stdout, _ = run(["generate", "a cat", "--image", str(photo), "--size", "32x32", "--seconds", "1",
                           "--steps", "1", "-o", str(out), "--quiet"], capsys)
    assert code == 0 and "note: cat.jpg: resized 451x300 to 48x32 and center-cropped to 32x32" in stdout
    assert read_video(out)[0].shape == (8, 32, 32, 3)
    # Panned, the video opens on the photo and pans across a scene drawn around it; it keeps the photo's aspect.
    code, stdout, _ = run(["generate", "a cat, the camera pans left", "--image", str(photo), "--seconds", "1",
                           "--steps", "1", "--window-camera", "-o", str(out), "--quiet"], capsys)
    assert code == 0 and "note: cat.jpg: resized 451x300 to 96x64" in stdout and "scene" not in stdout
    assert read_video(out)[0].shape == (8, 64, 96, 3)
    # A photo given as the video to extend has no frame rate of its own: the output keeps the model's 8 fps.
    code, stdout, _ = run(["generate", "a cat", "--extend", str(photo), "--size", "32x32", "--seconds", "1",
                           "--steps", "1", "-o", str(out), "--quiet"], capsys)
    assert code == 0 and re.search(r"\(32x32, 9 frames at 8 fps, seed \d+\)$", stdout.strip())
    still = tmp_path / "wide.png"  # a .png with no duration is an image
    code, stdout, _ = run(["generate", "a green square", "--aspect", "16:9", "--steps", "1", "-o", str(still),
                           "--quiet"], capsys)
    assert code == 0 and read_video(still)[0].shape == (1, 64, 112, 3)


def test_prompt_api_flags_configure_the_rewriter(fast_cli, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KINEMA_PROMPT_API_KEY", "k")
    code, stdout, _ = run(["generate", "a red ball", "--expand", "--prompt-api", "http://127.0.0.1:9/v1",
                           "--prompt-model", "m", "--size", "32x32", "--seconds", "0", "--steps", "1",
                           "-o", str(tmp_path / "x.png"), "--quiet"], capsys)
    # nothing listens there: a note, and the built-in rewriter
    assert code == 0 and "note: the prompt expansion endpoint failed, so the built-in rewriter" in stdout
    assert (fast_cli.rewriter.api_base, fast_cli.rewriter.api_key, fast_cli.rewriter.model) == (
        "http://127.0.0.1:9/v1", "k", "m")


def test_input_lengths_and_seconds_to_add_are_said_in_the_commands_words(clips, tmp_path, capsys):
    from kinema.io import write_video

    long = tmp_path / "v61.mp4"  # 61 s: an edit keeps its length, which the pipeline would call a duration
    write_video(long, np.zeros((61 * 8, 16, 16, 3), np.uint8), 8)
    base = ["generate", "a red circle", "--model", "debug", "--steps", "1", "-o", str(tmp_path / "o.mp4")]
    for args, says in (
            (["--edit", str(long)], "the input video runs 61.0 s at 8 fps, over the 60 s Kinema takes; trim it (e.g. "
                                    "ffmpeg -i v61.mp4 -t 60 v61-60s.mp4)"),
            (["--extend", clips[0], "--seconds", "0"], "seconds 0 adds no frames; give the seconds to add, e.g. 2"),
            (["--connect", *clips, "--seconds", "0"], "seconds 0 adds no frames; give the seconds to add, e.g. 2")):
        assert run([*base, *args], capsys)[::2] == (2, f"kinema: error: {says}\n")


def test_prompt_at_without_an_opening_prompt_asks_for_one(tmp_path, capsys):
    base = ["generate", "--model", "debug", "--steps", "1", "-o", str(tmp_path / "o.mp4")]
    code, _, err = run([*base, "--prompt-at", "1=a blue ball"], capsys)
    assert (code, err) == (2, "kinema: error: --prompt-at '1=a blue ball' leaves the start without a prompt; give the "
                              "opening prompt before --prompt-at (kinema generate \"a red ball\" --prompt-at \"1=a "
                              "blue ball\")\n")


def test_errors_of_a_subcommand_point_to_its_own_help(capsys):
    code, _, err = run(["judge", "a", "green", "star", "v.mp4"], capsys)  # the hint's example, not these words
    assert (code, err) == (2, "kinema judge: error: unrecognized arguments: star v.mp4; quote a prompt of several "
                              "words: kinema judge \"a red ball\" ...; see kinema judge --help\n")
    assert run(["verify", "a.mp4", "--jsn"], capsys)[::2] == (
        2, "kinema verify: error: unrecognized arguments: --jsn (did you mean --json?); see kinema verify --help\n")
    assert run(["--verbose"], capsys)[::2] == (2, "kinema: error: unrecognized arguments: --verbose; see kinema "
                                                  "--help\n")


def test_eval_help_describes_only_what_eval_does():
    out = " ".join(subprocess.run([sys.executable, "-m", "kinema.cli", "eval", "--help"], capture_output=True,
                                  text=True).stdout.split())
    start = out.index("--window-camera, --no-window-camera")
    camera = out[start:out.index("--cache", start)]
    assert "in each prompt's video, so the report's pan column measures this, not the model" in camera
    assert not any(word in camera for word in ("--segments", "extensions", "edits", "given image"))


@pytest.mark.parametrize("args,message", [
    (["--loop", "--edit", "v.mp4"], "--loop and --edit are different modes"),
    (["--backward"], "--backward goes with --extend"),
    (["--strength", "0.5"], "--strength goes with --edit"),
    (["--segments", "soon:a red ball"], "cannot read segment 'soon:a red ball'"),
    (["--prompt-at", "2 a blue ball"], "cannot read segment '2 a blue ball'"),
    (["--extend", "missing.mp4"], "missing.mp4 not found"),
    (["--aspect", "16:9", "--size", "64x64"], "either a size or an aspect ratio"),
])
def test_mode_errors_on_the_command_line(fast_cli, tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["generate", "a red circle", "--steps", "1", "--quiet", *args], capsys)
    assert code == 2 and message in err and err.count("\n") == 1


def test_generate_help_lists_every_mode():
    out = subprocess.run([sys.executable, "-m", "kinema.cli", "generate", "--help"], capture_output=True,
                         text=True).stdout
    for flag in ("--image", "--extend", "--backward", "--loop", "--connect", "--edit", "--strength", "--segments",
                 "--prompt-at", "--aspect", "--no-expand", "--prompt-api"):
        assert flag in out


def test_bench_quick_from_the_command_line(tmp_path, capsys):
    code, stdout, _ = run(["bench", "--quick", "--sections", "dit", "--out", str(tmp_path)], capsys)
    assert code == 0 and (tmp_path / "bench-quick.json").exists() and "wrote" in stdout


def test_train_set_overrides_the_recipe(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, stdout, _ = run(["train", "--config", "configs/debug.toml", "--stage", "vae", "--out", str(run_dir),
                           "--set", "vae.steps=3", "--set", "vae.lr = 5e-4"], capsys)
    assert code == 0 and "training run in" in stdout
    saved = json.loads((run_dir / "recipe.json").read_text())["recipe"]
    assert saved["vae"]["steps"] == 3 and saved["vae"]["lr"] == 5e-4
    assert json.loads((run_dir / "vae" / "result.json").read_text())["steps"] == 3


@pytest.mark.parametrize("item,message", [
    ("vae.steps", "needs KEY=VALUE"), ("vae.nope=1", "nope"),
    ("dit.steps=abc", "recipe [dit] steps must be a whole number, got 'abc'"),
    ("dit.bf16=1", "recipe [dit] bf16 must be true or false, got 1"),
])
def test_train_set_errors_are_one_line(tmp_path, capsys, item, message):
    code, _, err = run(["train", "--config", "configs/debug.toml", "--out", str(tmp_path), "--set", item], capsys)
    assert code != 0 and message in err and len(err.strip().splitlines()) == 1


def test_train_checks_its_export_folder_before_training(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    refused = [(tmp_path / "a_file", "it is a file"), (tmp_path / "a_file" / "model", "is not a folder")]
    if Path("/proc/self").is_dir():  # Linux: /proc takes no new files, even from root, whose permission bits say yes
        refused.append((Path("/proc/model"), "/proc is not a folder you can write"))
    for export, message in refused:
        code, _, err = run(["train", "--config", "configs/debug.toml", "--out", str(tmp_path / "run"),
                            "--export", str(export)], capsys)
        assert code == 2 and f"cannot write to {export}" in err and message in err
    code, _, err = run(["train", "--config", "configs/debug.toml", "--out", str(tmp_path / "run"), "--stage", "vae",
                        "--export", str(tmp_path / "model")], capsys)
    assert code == 2 and "--stage vae does not finish; export with --stage dit or all" in err
    assert not (tmp_path / "run").exists()  # refused before any training
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "settings"}')
    code, _, err = run(["train", "--config", "configs/debug.toml", "--out", str(tmp_path / "run"), "--export",
                        str(mine)], capsys)
    assert code == 2 and "its config.json is not a Kinema model's" in err
    assert (mine / "config.json").read_text() == '{"my": "settings"}'
    assert not (tmp_path / "run").exists()  # nothing trained


def test_python_dash_m_kinema_is_the_command():  # what torchrun launches
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "kinema", "generate", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "usage: kinema generate" in done.stdout


def test_bare_cache_flag_uses_the_default_threshold():
    from kinema.accel import DEFAULT_CACHE_THRESHOLD
    from kinema.cli import build_parser

    args = build_parser().parse_args(["generate", "x", "--cache"])
    assert args.cache == DEFAULT_CACHE_THRESHOLD
    assert build_parser().parse_args(["generate", "x"]).cache == 0
    assert build_parser().parse_args(["eval", "--cache"]).cache == DEFAULT_CACHE_THRESHOLD


def test_window_camera_is_the_models_default_unless_turned_on_or_off(tmp_path):
    from kinema.cli import build_parser
    from kinema.cli_request import generate_request

    def window_camera(*flags: str) -> bool | None:
        args = build_parser().parse_args(["generate", "the camera pans left", *flags])
        return generate_request(args, tmp_path / "out.mp4")[0].window_camera

    flags = window_camera(), window_camera("--window-camera"), window_camera("--no-window-camera")
    assert flags == (None, True, False)
    assert build_parser().parse_args(["eval", "--no-window-camera"]).window_camera is False


def test_options_are_never_guessed_from_a_prefix(capsys):
    from kinema.cli import build_parser

    with pytest.raises(SystemExit):  # argparse would read it as --model extend
        build_parser().parse_args(["generate", "x", "--mode", "extend"])
    assert "unrecognized arguments: --mode extend" in capsys.readouterr().err
    assert build_parser().parse_args(["generate", "x", "--out", "v.mp4"]).output == "v.mp4"  # as eval spells it
    assert build_parser().parse_args(["generate", "x", "-q"]).quiet



class ClosedPipe:
    """A stdout whose reader has gone away, as under "kinema verify ... | head -1"."""

    def __init__(self, path):
        self.file = open(path, "w")  # a real descriptor, which main points at /dev/null

    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        pass

    def fileno(self):
        return self.file.fileno()


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path, monkeypatch):
    from kinema import io, provenance, world

    scene = world.Scene([world.Obj("circle", "red", "small", "still", 0.5, 0.5)], world.Background("solid", "navy"))
    io.write_video(tmp_path / "v.mp4", provenance.embed(world.render(scene, 64, 64, 9, 8.0), 7), 8.0)
    monkeypatch.setattr(sys, "stdout", ClosedPipe(tmp_path / "out.txt"))
    assert main(["verify", str(tmp_path / "v.mp4"), "--json"]) == 141  # 128 + SIGPIPE, no traceback


def test_the_parser_imports_no_torch_before_main_sets_the_thread_policy():
    code = ("import sys; from kinema.cli import build_parser; build_parser(); "
            "from kinema.config import BENCH_SECTIONS; print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr
    from kinema import bench
    from kinema.config import BENCH_SECTIONS

    assert tuple(bench.SECTIONS) == BENCH_SECTIONS  # what --help lists is what runs


def test_a_bad_request_fails_before_the_model_loads(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("kinema.pipeline.Pipeline.load", classmethod(lambda *a, **k: pytest.fail("loaded the model")))
    out = str(tmp_path / "v.mp4")
    for args, says in ((["", "-o", out], "the prompt is empty"),
                       (["a red ball", "--seconds", "61", "-o", out], "duration must be at most 60 s"),
                       (["a red ball", "--steps", "0", "-o", out], "steps must be between 1 and 1000"),
                       (["a red ball", "--seconds", "2", "-o", str(tmp_path / "v.png")], "a PNG holds one image")):
        code, _, err = run(["generate", *args], capsys)  # the bundled model: only its config.json is read
        assert code == 2 and says in err, err
