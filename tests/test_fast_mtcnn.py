"""The fast detector finds the same faces as facenet-pytorch's reference path."""

import cv2
import numpy as np
import pytest
import torch
from facenet_pytorch.models.utils.detect_face import detect_face

from face_iqa.faces.detect import DetectorConfig, build_detector
from face_iqa.images import load_image
from tests.conftest import shared_path
from tests.util import match_boxes

TH = [0.6, 0.7, 0.7]


@pytest.fixture(scope="module")
def nets():
    return build_detector(DetectorConfig(device="cpu", backend="reference"))


def _compare(frames: np.ndarray, nets, fast, what: str) -> int:
    with torch.inference_mode():
        rb, rp = detect_face(
            frames, 20, nets.pnet, nets.rnet, nets.onet, TH, 0.709, torch.device("cpu")
        )
    got = fast.detect(list(frames))
    n = 0
    for i, det in enumerate(got):
        ref_b = np.asarray(rb[i], float).reshape(-1, 5)
        ref_p = np.asarray(rp[i], float).reshape(-1, 5, 2)
        assert len(det) == len(ref_b), f"{what} frame {i}: {len(det)} vs {len(ref_b)} faces"
        for a, b, iou in match_boxes(det.boxes, ref_b[:, :4]):
            assert iou >= 0.9, (what, i, iou)
            assert np.abs(det.landmarks[a] - ref_p[b]).max() <= 2.0, (what, i)
        n += len(det)
    return n


@pytest.fixture(scope="module")
def fast():
    return build_detector(
        DetectorConfig(device="cpu", backend="fast", batch_size=8, cpu_batch_size=8)
    )


def test_parity_on_every_shared_image(nets, fast, faces_csv):
    total = 0
    for row in faces_csv:
        img = load_image(shared_path(row["file"]))
        total += _compare(img[None], nets, fast, row["file"])
    assert total == sum(int(r["mtcnn_faces"]) for r in faces_csv)


@pytest.mark.slow
@pytest.mark.parametrize(
    "video,stride,want", [("short_hamilton_clip.mp4", 1, 275), ("facenet_example.mp4", 3, 35)]
)
def test_parity_on_video_frames(nets, fast, video, stride, want):
    """Every frame of the stage clip; every third of the 1080p group video (the reference
    detector takes a second a frame there; neighbouring frames differ little)."""
    cap = cv2.VideoCapture(str(shared_path("videos", video)))
    frames, n_frames, n_faces, index = [], 0, 0, 0
    while True:
        ok, bgr = cap.read()
        if ok and index % stride == 0:
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        index += 1
        if len(frames) == 8 or (not ok and frames):
            n_faces += _compare(np.stack(frames), nets, fast, f"{video} @{n_frames}")
            n_frames += len(frames)
            frames = []
        if not ok:
            break
    assert n_frames == want
    assert n_faces > n_frames  # several faces a frame: the comparison was not vacuous


def test_fast_is_the_default_and_handles_edge_cases(fast):
    assert DetectorConfig().backend == "fast"
    assert len(fast.detect([np.zeros((240, 320, 3), np.uint8)])[0]) == 0
    assert len(fast.detect([np.zeros((5, 5, 3), np.uint8)])[0]) == 0


def test_fast_backend_runs_the_fast_path(fast, faces_csv, monkeypatch):
    """The backends are really different code: with facenet-pytorch's ``detect_face``
    removed, the fast detector still finds the faces, and the reference detector fails."""
    import face_iqa.faces.detect as det_mod

    def boom(*a, **k):
        raise AssertionError("reference detect_face called")

    monkeypatch.setattr(det_mod, "detect_face", boom)
    row = next(r for r in faces_csv if int(r["mtcnn_faces"]) >= 1)
    img = load_image(shared_path(row["file"]))
    assert len(fast.detect([img])[0]) == int(row["mtcnn_faces"])
    ref = build_detector(DetectorConfig(device="cpu", backend="reference"))
    with pytest.raises(AssertionError, match="reference detect_face called"):
        ref.detect([img])


def test_shifted_group_nms_equals_batched_nms():
    """The GPU path's one-call NMS over group-shifted boxes keeps exactly what torchvision's
    per-group ``batched_nms`` keeps (checked on the CPU with random overlapping boxes)."""
    from face_iqa.faces.fast_mtcnn import _group_nms

    g = torch.Generator().manual_seed(0)
    xy = torch.rand((3000, 2), generator=g) * 600 - 50  # some boxes start left of / above 0
    wh = torch.rand((3000, 2), generator=g) * 80 + 12
    boxes = torch.cat([xy, xy + wh], 1).floor()
    scores = torch.rand(3000, generator=g)
    groups = torch.randint(0, 40, (3000,), generator=g)
    for thr in (0.5, 0.7):
        a = _group_nms(boxes, scores, groups, thr, shift=True)
        b = _group_nms(boxes, scores, groups, thr, shift=False)
        assert len(a) < len(boxes)  # something was suppressed
        assert sorted(a.tolist()) == sorted(b.tolist())


def test_padded_group_nms_equals_batched_nms(monkeypatch):
    """The GPU's all-groups-at-once NMS keeps exactly what torchvision's per-group
    ``batched_nms`` keeps (run here on the CPU): random overlapping boxes with integer
    corners (exact IoU ties at the thresholds), duplicate scores, uneven group sizes, the
    group-chunked path, and the fallback when one group is too large."""
    import face_iqa.faces.fast_mtcnn as fm

    g = torch.Generator().manual_seed(2)
    n = 2500
    xy = torch.rand((n, 2), generator=g) * 300 - 20
    wh = torch.rand((n, 2), generator=g) * 60 + 12
    boxes = torch.cat([xy, xy + wh], 1).floor()
    scores = (torch.rand(n, generator=g) * 50).floor() / 50  # many equal scores
    groups = (torch.rand(n, generator=g) ** 2 * 30).long()  # uneven groups, some empty ids
    for thr in (0.3, 0.5, 0.7):
        ref = sorted(torchvision_batched_nms(boxes, scores, groups, thr).tolist())
        got = fm._padded_nms(boxes, scores, groups, thr)
        assert 0 < len(ref) < n
        assert sorted(got.tolist()) == ref
        # chunks of a few groups at a time give the same answer
        monkeypatch.setattr(fm, "_PADDED_NMS_MAX", 3 * 400 * 400)
        assert sorted(fm._padded_nms(boxes, scores, groups, thr).tolist()) == ref
        monkeypatch.undo()
    monkeypatch.setattr(fm, "_PADDED_NMS_MAX", 100)
    assert fm._padded_nms(boxes, scores, groups, 0.5) is None
    got = fm._group_nms(boxes, scores, groups, 0.5, padded=True)  # falls back to torchvision
    assert sorted(got.tolist()) == sorted(
        torchvision_batched_nms(boxes, scores, groups, 0.5).tolist()
    )


def torchvision_batched_nms(boxes, scores, groups, thr):
    from torchvision.ops import batched_nms

    return batched_nms(boxes, scores, groups, thr)


def test_detection_with_padded_nms_is_unchanged(fast, faces_csv, monkeypatch):
    """The whole fast path with the GPU's padded NMS forced on (here on the CPU) gives the
    same boxes and landmarks as with torchvision's NMS, on every shared photo with faces."""
    import face_iqa.faces.fast_mtcnn as fm

    rows = [r for r in faces_csv if int(r["mtcnn_faces"]) >= 1]
    imgs = [load_image(shared_path(r["file"])) for r in rows]
    plain = [fast.detect([im])[0] for im in imgs]
    group_nms = fm._group_nms
    calls = []

    def forced(*a, **k):
        calls.append(1)
        return group_nms(*a, **{**k, "padded": True})

    monkeypatch.setattr(fm, "_group_nms", forced)
    padded = [fast.detect([im])[0] for im in imgs]
    assert len(calls) > 10
    for r, a, b in zip(rows, plain, padded):
        assert len(a) == len(b) == int(r["mtcnn_faces"]), r["file"]
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3, err_msg=r["file"])
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3, err_msg=r["file"])


def test_integral_pyramid_equals_area_interpolation():
    """The pyramid is read from the frames' integral images; it must equal what
    ``interpolate(mode="area")`` (the reference's resize) gives at every level."""
    import torch.nn.functional as F

    from face_iqa.faces.fast_mtcnn import _integral, _pyramid_level, _scales

    g = torch.Generator().manual_seed(0)
    u8 = torch.randint(0, 256, (2, 181, 243, 3), dtype=torch.uint8, generator=g)
    integ = _integral(u8)
    ref = torch.zeros((2, 182, 244, 3), dtype=torch.int64)
    ref[:, 1:, 1:] = u8.to(torch.int64).cumsum(1).cumsum(2)
    assert integ.dtype == torch.int32 and torch.equal(integ.to(torch.int64), ref)
    imgs = u8.permute(0, 3, 1, 2).to(torch.float32)
    scales = _scales(181, 243, 20, 0.709)
    assert len(scales) >= 4
    for s in scales:
        size = (int(181 * s + 1), int(243 * s + 1))
        want = (F.interpolate(imgs, size=size, mode="area") - 127.5) * 0.0078125
        got = _pyramid_level(integ, size)
        assert got.shape == want.shape
        assert torch.allclose(got, want, atol=1e-6, rtol=0), (size, (got - want).abs().max())


def test_cpu_pnet_forward_equals_facenet_pnet(fast):
    """The CPU P-Net path (strided-view 2x2 pool) gives exactly facenet-pytorch's outputs,
    on odd and even sizes (the pool's ceil mode)."""
    import torch.nn.functional as F

    from face_iqa.faces.fast_mtcnn import _max_pool_2x2_ceil, _pnet

    g = torch.Generator().manual_seed(0)
    for h, w in ((37, 52), (40, 41), (12, 12)):
        x = torch.randn((2, 10, h, w), generator=g)
        assert torch.equal(_max_pool_2x2_ceil(x), F.max_pool2d(x, 2, 2, ceil_mode=True))
        img = torch.randn((2, 3, h, w), generator=g).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            ours, ref = _pnet(fast.pnet, img), fast.pnet(img)
        for a, b in zip(ours, ref):
            assert torch.equal(a, b)


def test_padded_candidate_batches_change_no_output(fast):
    """On a GPU, R-Net and O-Net run on candidate chunks padded to a power of two rows (at
    least 64), so cuDNN plans a few shapes instead of one per candidate count: the outputs
    for the real rows are those of the unpadded call (forced on here, on the CPU)."""
    from face_iqa.faces.fast_mtcnn import _run_net

    g = torch.Generator().manual_seed(1)
    for net, side in ((fast.rnet, 24), (fast.onet, 48)):
        seen: list[int] = []
        hook = net.register_forward_hook(lambda m, i, o, seen=seen: seen.append(len(i[0])))
        for n in (3, 64, 70):
            data = torch.randn((n, 3, side, side), generator=g)
            with torch.inference_mode():
                plain, padded = _run_net(net, data, pad=False), _run_net(net, data, pad=True)
            for a, b in zip(plain, padded):
                assert a.shape == b.shape and a.shape[0] == n
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        hook.remove()
        assert seen == [3, 64, 64, 64, 70, 128], seen
