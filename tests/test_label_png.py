from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from course_lib.data.label_png import (
    LabelEncodingError,
    decode_imagenet_s,
    encode_imagenet_s,
    read_imagenet_s_png,
    read_index_png,
    write_imagenet_s_png,
)


def test_imagenet_s_roundtrip_above_255_and_ignore(tmp_path):
    ids = np.array([[0, 1, 255, 256], [300, 919, 1000, -1]])
    path = tmp_path / "a" / "x.png"
    write_imagenet_s_png(path, ids)
    rgb = np.asarray(Image.open(path))
    assert rgb.dtype == np.uint8 and rgb[1, 0].tolist() == [300 % 256, 1, 0]
    decoded = read_imagenet_s_png(path, num_classes=919)
    assert decoded.dtype == np.int32
    assert decoded.tolist() == [[0, 1, 255, 256], [300, 919, 1000, 1000]]


def test_decode_does_not_overflow_uint8():
    rgb = np.zeros((1, 1, 3), np.uint8)
    rgb[0, 0, :2] = [147, 3]  # 3 * 256 + 147 = 915
    assert decode_imagenet_s(rgb)[0, 0] == 915


def test_wrong_encodings_are_named(tmp_path):
    gray = tmp_path / "gray.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(gray)
    with pytest.raises(LabelEncodingError, match="RGB PNGs"):
        read_imagenet_s_png(gray)
    rgb = tmp_path / "rgb.png"
    write_imagenet_s_png(rgb, np.full((2, 2), 60))
    with pytest.raises(LabelEncodingError, match="outside 0..50"):
        read_imagenet_s_png(rgb, num_classes=50)
    with pytest.raises(LabelEncodingError, match="single-channel"):
        read_index_png(rgb)
    assert read_index_png(gray).dtype == np.int64
    with pytest.raises(LabelEncodingError, match="H×W"):
        encode_imagenet_s(np.zeros((2, 2, 3)))


def test_write_is_atomic_an_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "cls" / "a.png"
    old = np.array([[0, 1], [2, 1000]])
    write_imagenet_s_png(path, old)

    def crash(self, target, *args, **kwargs):   # Ctrl-C after the first bytes of the PNG were written
        Path(target).write_bytes(b"\x89PNG\r\n")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        write_imagenet_s_png(path, np.zeros((2, 2), dtype=np.int64))
    np.testing.assert_array_equal(read_imagenet_s_png(path), old)
    assert [p.name for p in path.parent.iterdir()] == ["a.png"]   # no partial file left behind
