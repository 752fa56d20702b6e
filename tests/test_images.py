import io

import numpy as np
import pytest
from PIL import Image

from face_iqa.images import ImageError, load_image, to_rgb_uint8
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def face_rgb():
    return load_image(shared_path("images", "obama-480p.jpg"))


def _save(tmp_path, img: Image.Image, name: str, **kw) -> str:
    p = tmp_path / name
    img.save(p, **kw)
    return str(p)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "LA", "I;16", "I"])
def test_modes_convert_and_still_detect(tmp_path, face_rgb, detector, mode):
    pil = Image.fromarray(face_rgb)
    if mode == "I;16":
        arr16 = np.asarray(pil.convert("L")).astype(np.uint16) * 257
        pil2 = Image.fromarray(arr16)
        assert pil2.mode.startswith("I;16")
    elif mode == "I":
        pil2 = Image.fromarray(np.asarray(pil.convert("L")).astype(np.int32) * 257, mode="I")
    elif mode == "P":
        pil2 = pil.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    else:
        pil2 = pil.convert(mode)
    ext = "tif" if mode in ("CMYK", "I") else "png"
    if mode == "CMYK":
        ext = "jpg"
    path = _save(tmp_path, pil2, f"face_{mode.replace(';', '')}.{ext}")
    img = load_image(path)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert img.shape[:2] == face_rgb.shape[:2]
    assert img.mean() > 20  # not blacked out by a bad 16-bit scale
    assert len(detector.detect([img])[0]) == 1, mode


def test_sixteen_bit_rgb_png(tmp_path, face_rgb):
    import cv2

    p = tmp_path / "rgb48.png"
    cv2.imwrite(str(p), cv2.cvtColor(face_rgb, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
    img = load_image(p)
    assert img.dtype == np.uint8 and img.shape == face_rgb.shape
    assert np.abs(img.astype(int) - face_rgb.astype(int)).max() <= 1


def test_to_rgb_uint8_scales():
    assert to_rgb_uint8(np.full((2, 2), 65535, np.uint16)).max() == 255
    assert to_rgb_uint8(np.full((2, 2), 0.5, np.float32))[0, 0, 0] == 128
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[..., 0] = 7
    out = to_rgb_uint8(rgba)
    assert out.shape == (2, 2, 3) and out[0, 0, 0] == 7
    with pytest.raises(ValueError):
        to_rgb_uint8(np.zeros((2, 2, 5), np.uint8))


def test_bad_files_raise_with_the_path(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image\n")
    buf = io.BytesIO()
    Image.new("RGB", (200, 200), (90, 120, 30)).save(buf, format="JPEG")
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    for p, words in [
        (empty, "empty"),
        (text, "not a recognised image"),
        (trunc, "truncated"),
        (tmp_path / "missing.png", "cannot read"),
    ]:
        with pytest.raises(ImageError) as e:
            load_image(p)
        assert str(p) in str(e.value) and words in str(e.value)
