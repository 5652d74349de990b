"""Listings of a user's videos: JSONL, CSV from spreadsheets and other tools, sidecar captions, and their errors."""

import pytest

from kinema.errors import KinemaError
from kinema.listing import read_listing
from test_data import _videos


def test_a_folder_without_clips_says_how_to_lay_one_out(tmp_path):
    (tmp_path / "notes.txt").write_text("a caption with no clip")
    with pytest.raises(KinemaError, match="holds no video or image files; put clips there, each with its caption in "
                                          r"a same-named .txt file \(clip.mp4, clip.txt\)"):
        read_listing(tmp_path)


def test_csv_and_sidecar_captions(tmp_path):
    _videos(tmp_path, count=1)
    (tmp_path / "list.csv").write_text('path,caption\nclip0.mp4,"a fade, slowly"\n')
    assert read_listing(tmp_path / "list.csv")[0].caption == "a fade, slowly"
    (tmp_path / "list.csv").unlink()
    (tmp_path / "clip0.txt").write_text("sidecar caption\n")
    assert read_listing(tmp_path)[0].caption == "sidecar caption"
    (tmp_path / "clip0.txt").write_text("")
    with pytest.raises(KinemaError, match="clip0.txt is empty; write clip0.mp4's caption in it"):
        read_listing(tmp_path)
    (tmp_path / "clip0.txt").write_bytes("café crème".encode("latin-1"))
    with pytest.raises(KinemaError, match=r"clip0.txt is not UTF-8 text \(byte 3\); save it as UTF-8"):
        read_listing(tmp_path)
    (tmp_path / "clip0.txt").unlink()
    (tmp_path / "list.csv").write_bytes("path,caption\nclip0.mp4,café\n".encode("latin-1"))
    with pytest.raises(KinemaError, match="list.csv is not UTF-8 text"):
        read_listing(tmp_path / "list.csv")


def test_listings_from_spreadsheets_and_other_tools(tmp_path):
    _videos(tmp_path, count=2)
    # Excel's byte-order mark, a caption over two lines, Open-Sora's column names with more columns after them
    (tmp_path / "sheet.csv").write_text('\ufeffpath,text,num_frames\nclip0.mp4,"a fade,\nslowly",12\n'
                                        "clip1.mp4,a second fade,12\n", encoding="utf-8")
    rows = read_listing(tmp_path / "sheet.csv")
    assert [(r.path.name, r.caption, r.where) for r in rows] == [
        ("clip0.mp4", "a fade,\nslowly", f"{tmp_path / 'sheet.csv'} line 2"),  # where its record starts
        ("clip1.mp4", "a second fade", f"{tmp_path / 'sheet.csv'} line 4")]
    # A European Excel export: semicolons between the columns, commas in the captions
    (tmp_path / "semi.csv").write_text("path;caption\nclip0.mp4;a fade, slowly\nclip1.mp4;a second fade\n")
    assert [r.caption for r in read_listing(tmp_path / "semi.csv")] == ["a fade, slowly", "a second fade"]
    (tmp_path / "tabs.csv").write_text("clip0.mp4\ta fade, slowly\n")
    assert [r.caption for r in read_listing(tmp_path / "tabs.csv")] == ["a fade, slowly"]
    # Hugging Face's metadata.jsonl names them file_name and text
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "clip1.mp4", "text": "from the hub"}\n')
    assert read_listing(tmp_path / "metadata.jsonl")[0].caption == "from the hub"
    (tmp_path / "named.csv").write_text("filename,description\nclip0.mp4,a fade\n")  # names Kinema does not know
    with pytest.raises(KinemaError, match="named.csv line 1: 'filename' is not a media file; if this line names the "
                                          "columns, call them path / file_name / file / video and caption / text"):
        read_listing(tmp_path / "named.csv")
    (tmp_path / "labels.csv").write_text("file,label\nclip0.mp4,a fade\n")  # the path named, the caption not
    with pytest.raises(KinemaError, match="labels.csv line 1 names its columns without a caption column; call one of "
                                          "'label' caption / text / prompt"):
        read_listing(tmp_path / "labels.csv")
    (tmp_path / "short.csv").write_text("path,caption,fps\nclip0.mp4\n")
    with pytest.raises(KinemaError, match="short.csv line 2: 1 columns, fewer than the header's"):
        read_listing(tmp_path / "short.csv")
