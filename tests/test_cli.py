import subprocess
import sys

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
    code, _, _ = run(["generate", "a green square", "--model", "debug", "--size", "64x64", "--seconds", "0",
                      "--steps", "1", "-o", str(out), "--filmstrip", str(strip), "--quiet"], capsys)
    assert code == 0 and out.stat().st_size > 0 and strip.stat().st_size > 0


@pytest.mark.parametrize("args,message", [
    (["--model", "/no/such/folder"], "model folder /no/such/folder not found"),
    (["--model", "huge"], "unknown preset 'huge'"),
    (["--size", "100x64"], "nearest valid width is 96"),
    (["--size", "big"], "not WIDTHxHEIGHT"),
    (["--seconds", "-2"], "duration must be positive"),
    (["-o", "/no/such/dir/v.mp4"], "does not exist"),
    (["-o", "v.avi"], "unknown output type"),
    (["--seconds", "2", "-o", "v.png"], "cannot be a PNG"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    base = ["generate", "a red circle", "--model", "debug", "--steps", "1", "--quiet"]
    code, _, err = run(base + args, capsys)
    assert code == 2
    assert message in err and err.count("\n") == 1 and err.startswith("kinema: error:")


def test_empty_prompt_is_an_error(tmp_path, capsys):
    code, _, err = run(["generate", "", "--model", "debug", "-o", str(tmp_path / "v.mp4")], capsys)
    assert code == 2 and "prompt is empty" in err


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
