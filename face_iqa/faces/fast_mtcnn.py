"""A batched MTCNN: facenet-pytorch's P/R/O-Net weights and decision rules, without the
per-box Python loops.

What changes against ``facenet_pytorch...detect_face`` (the reference):

- The pyramid levels and the candidate crops for R-Net (24x24) and O-Net (48x48) are
  resampled for all frames and boxes at once from the frames' integral images
  (summed-area tables). facenet-pytorch resizes each level and crops each box with
  ``interpolate(mode="area")``, once per box; area resampling is an average over integer
  pixel bins, which the summed-area table gives exactly (integer sums, one division), so
  the networks see the same inputs up to float rounding.
- NMS keeps frames (and pyramid levels) apart by groups. On the GPU every group is done at
  once (:func:`_padded_nms`, a few batched matrix products) instead of torchvision's
  ``nms``, whose last step walks all boxes in one thread block; on the CPU, where ``nms``
  is quadratic in its input, torchvision's per-group loop stays. The final "Min" NMS runs
  on the host over the few boxes left.
- Nothing moves to the host until the end (no per-box ``.item()``).

The decision rules are the reference's: the same pyramid, thresholds (``>=`` for P-Net,
``>`` after), box regression with the same ``+1`` conventions, squaring and clipping.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms, nms

__all__ = ["fast_detect_face"]


def _scales(h: int, w: int, minsize: int, factor: float) -> list[float]:
    m = 12.0 / minsize
    minl = min(h, w) * m
    scales, s = [], m
    while minl >= 12:
        scales.append(s)
        s *= factor
        minl *= factor
    return scales


def _pyramid_level(integ: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """One pyramid level, area-resampled from the frames' integral images: what
    ``interpolate(mode="area")`` (adaptive average pooling) gives, normalised for P-Net.

    Bins are separable, so two ``index_select`` per axis do it: rows first, then columns.
    Returns ``(B, 3, h, w)`` float32 in channels-last memory (what oneDNN wants)."""
    sh, sw = size
    hh, ww = integ.shape[1] - 1, integ.shape[2] - 1
    zero = torch.zeros(1, dtype=torch.int64, device=integ.device)
    rl, rh = (v[0] for v in _bins(zero, torch.tensor([hh], device=integ.device), sh))
    cl, ch = (v[0] for v in _bins(zero, torch.tensor([ww], device=integ.device), sw))
    rows = integ.index_select(1, rh) - integ.index_select(1, rl)  # (B, sh, W+1, 3)
    b, c = rows.shape[0], rows.shape[3]
    # columns: one flat gather of pixel rows (faster than index_select on dim 2)
    flat = rows.view(-1, c)
    off = (torch.arange(b * sh, device=integ.device) * (ww + 1))[:, None]
    sums = flat.index_select(0, (off + ch).view(-1)) - flat.index_select(0, (off + cl).view(-1))
    # mean of the bin, then P-Net's (x - 127.5) / 128; 1/128 and 127.5/128 are exact in float
    scale = 0.0078125 / ((rh - rl)[:, None] * (ch - cl)[None, :]).to(torch.float32)
    data = torch.mul(sums.view(b, sh, sw, c), scale[None, :, :, None]).sub_(0.99609375)
    return data.permute(0, 3, 1, 2)


def _pnet_candidates(
    integ: torch.Tensor,
    pnet,
    scales: list[float],
    thresh: float,
):
    """Stage 1 on the frames' integral images ``int32 (B, H+1, W+1, 3)``. Returns boxes
    ``(N, 9)`` [x1 y1 x2 y2 score dx1 dy1 dx2 dy2] and image ids, after the per-level (0.5)
    and per-image (0.7) NMS."""
    h, w = integ.shape[1] - 1, integ.shape[2] - 1
    all_boxes, all_img = [], []
    for scale in scales:
        size = (int(h * scale + 1), int(w * scale + 1))
        data = _pyramid_level(integ, size)
        reg, probs = _pnet(pnet, data.to(pnet.conv1.weight.dtype))
        reg, p = reg.float(), probs[:, 1].float()
        idx = (p >= thresh).nonzero()
        img_i, yy, xx = idx[:, 0], idx[:, 1], idx[:, 2]
        score = p[img_i, yy, xx]
        r = reg[img_i, :, yy, xx]
        bx = xx.to(reg.dtype)
        by = yy.to(reg.dtype)
        x1 = torch.floor((2 * bx + 1) / scale)
        y1 = torch.floor((2 * by + 1) / scale)
        x2 = torch.floor((2 * bx + 12) / scale)
        y2 = torch.floor((2 * by + 12) / scale)
        lvl = torch.cat([torch.stack([x1, y1, x2, y2, score], 1), r], 1)
        # NMS within each frame at this level (the reference's first step) ...
        keep = _group_nms(lvl[:, :4], lvl[:, 4], img_i, 0.5)
        all_boxes.append(lvl[keep])
        all_img.append(img_i[keep])
    boxes = torch.cat(all_boxes)
    img_ids = torch.cat(all_img)
    # ... then within each frame across levels
    keep = _group_nms(boxes[:, :4], boxes[:, 4], img_ids, 0.7)
    return boxes[keep], img_ids[keep]


# Entries of the padded suppression matrices (groups x rows x rows) that _padded_nms builds
# at a time, in chunks of groups; a group with more than its square root of boxes (thousands
# of candidates in one frame) falls back to the shifted one-call NMS.
_PADDED_NMS_MAX = 1 << 26


def _group_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    groups: torch.Tensor,
    thresh: float,
    shift: bool | None = None,
    padded: bool | None = None,
) -> torch.Tensor:
    """Indices kept by NMS within each group (a box never suppresses another group's).
    ``padded`` (default on CUDA): :func:`_padded_nms`, every group at once; ``shift``
    (default on CUDA, when not padded or too large for it): one torchvision call over
    group-shifted boxes; else torchvision's ``batched_nms``."""
    if padded is None:
        padded = boxes.is_cuda
    if shift is None:
        shift = boxes.is_cuda
    if len(boxes) == 0:
        return batched_nms(boxes, scores, groups, thresh)
    if padded:
        keep = _padded_nms(boxes, scores, groups, thresh)
        if keep is not None:
            return keep
    if not shift:
        return batched_nms(boxes, scores, groups, thresh)
    b = boxes.to(torch.float64)
    lo, hi = b.min(), b.max()
    shifted = b - lo + (groups.to(torch.float64) * (hi - lo + 1))[:, None]
    return nms(shifted, scores.to(torch.float64), thresh)


def _padded_nms(
    boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, thresh: float
) -> torch.Tensor | None:
    """Greedy NMS within each group, all groups at once, keeping what torchvision's ``nms``
    keeps per group (same IoU formula and ``>`` test, scores sorted descending and stably).
    ``None`` when one group alone has more than ``sqrt(_PADDED_NMS_MAX)`` boxes.

    Why: torchvision's CUDA ``nms`` ends in one thread block that walks the sorted boxes one
    by one, so its time grows with the candidates of all frames together. Here each group's
    boxes form a row of a ``(groups, rows)`` layout in score order, and "box i is kept unless
    a kept higher-scored box of its group overlaps it by IoU > thresh" is solved by
    fixed-point iteration: start with every box kept and recompute from the previous guess
    until nothing changes. After k rounds the first k boxes of each group are final (box i
    depends only on boxes before it), so this ends at greedy NMS's answer, in as many rounds
    as the longest chain of suppressions, each round one batched matrix product.

    Returns the kept indices into ``boxes``, by group, score-descending within a group."""
    n = len(boxes)
    order = torch.sort(scores, descending=True, stable=True).indices
    order = order[torch.sort(groups[order], stable=True).indices]
    _, g = torch.unique_consecutive(groups[order], return_inverse=True)  # groups 0..G-1
    counts = torch.bincount(g)
    rows = int(counts.max())
    if rows * rows > _PADDED_NMS_MAX:
        return None
    pos = torch.arange(n, device=boxes.device) - (torch.cumsum(counts, 0) - counts)[g]
    n_groups = len(counts)
    coords = boxes.new_zeros((n_groups, rows, 4), dtype=torch.float32)
    coords[g, pos] = boxes[order].to(torch.float32)
    valid = torch.zeros((n_groups, rows), dtype=torch.bool, device=boxes.device)
    valid[g, pos] = True
    later = torch.ones(rows, rows, dtype=torch.bool, device=boxes.device).triu_(1)
    mm_dtype = torch.float16 if boxes.is_cuda else torch.float32  # sums of 0/1: > 0 is exact
    keep = torch.zeros_like(valid)
    step = max(1, _PADDED_NMS_MAX // (rows * rows))
    for s in range(0, n_groups, step):
        x1, y1, x2, y2 = coords[s : s + step].unbind(2)
        area = (x2 - x1) * (y2 - y1)
        iw = torch.minimum(x2[:, :, None], x2[:, None]) - torch.maximum(x1[:, :, None], x1[:, None])
        ih = torch.minimum(y2[:, :, None], y2[:, None]) - torch.maximum(y1[:, :, None], y1[:, None])
        inter = iw.clamp_(min=0).mul_(ih.clamp_(min=0))
        del iw, ih
        union = area[:, :, None] + area[:, None] - inter
        # sup[g, j, i]: box j, scored higher, would suppress box i
        sup = (inter.div_(union) > thresh).logical_and_(later).to(mm_dtype)
        del inter, union
        ok = valid[s : s + step]
        cur = ok
        while True:  # three rounds between checks (each check waits for the GPU)
            for _ in range(3):
                cur = ok & ~(torch.bmm(cur.to(mm_dtype)[:, None], sup)[:, 0] > 0)
            nxt = ok & ~(torch.bmm(cur.to(mm_dtype)[:, None], sup)[:, 0] > 0)
            if torch.equal(nxt, cur):
                break
            cur = nxt
        keep[s : s + step] = cur
    return order[keep[g, pos]]


def _square(b: torch.Tensor) -> torch.Tensor:
    w = b[:, 2] - b[:, 0]
    h = b[:, 3] - b[:, 1]
    side = torch.maximum(w, h)
    x1 = b[:, 0] + w * 0.5 - side * 0.5
    y1 = b[:, 1] + h * 0.5 - side * 0.5
    out = b.clone()
    out[:, 0], out[:, 1] = x1, y1
    out[:, 2], out[:, 3] = x1 + side, y1 + side
    return out


def _regress(b: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    w = b[:, 2] - b[:, 0] + 1
    h = b[:, 3] - b[:, 1] + 1
    out = b.clone()
    out[:, 0] = b[:, 0] + reg[:, 0] * w
    out[:, 1] = b[:, 1] + reg[:, 1] * h
    out[:, 2] = b[:, 2] + reg[:, 2] * w
    out[:, 3] = b[:, 3] + reg[:, 3] * h
    return out


def _clip_regions(b: torch.Tensor, w: int, h: int) -> torch.Tensor:
    """The reference's ``pad``: truncate, clip to [1, w] x [1, h]; the crop is rows
    ``[y - 1, ey)`` and columns ``[x - 1, ex)``. Returns ``(N, 4)`` [r0, r1, c0, c1]."""
    t = b[:, :4].trunc().to(torch.int64)
    x = t[:, 0].clamp(min=1)
    y = t[:, 1].clamp(min=1)
    ex = t[:, 2].clamp(max=w)
    ey = t[:, 3].clamp(max=h)
    return torch.stack([y - 1, ey, x - 1, ex], 1)


def _bins(
    start: torch.Tensor, length: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive-average-pool bin edges: ``[start + floor(i*L/S), start + ceil((i+1)*L/S))``."""
    i = torch.arange(size, device=start.device)
    lo = start[:, None] + torch.div(i[None] * length[:, None], size, rounding_mode="floor")
    hi = start[:, None] + torch.div(
        (i[None] + 1) * length[:, None] + size - 1, size, rounding_mode="floor"
    )
    return lo, hi


def _integral(imgs_u8: torch.Tensor) -> torch.Tensor:
    """Summed-area tables of a batch ``uint8 (B, H, W, 3)``: ``int32 (B, H+1, W+1, 3)``
    (exact: a 4K frame sums to below 2**31 per channel)."""
    b, h, w, c = imgs_u8.shape
    if not imgs_u8.is_cuda:  # OpenCV's SIMD integral: ~10x torch's cumsum on the CPU
        import cv2

        frames = imgs_u8.numpy()
        out = np.empty((b, h + 1, w + 1, c), np.int32)
        for i in range(b):
            cv2.integral(frames[i], out[i], sdepth=cv2.CV_32S)
        return torch.from_numpy(out)
    integ = torch.zeros((b, h + 1, w + 1, c), dtype=torch.int32, device=imgs_u8.device)
    integ[:, 1:, 1:] = imgs_u8
    return integ.cumsum_(1).cumsum_(2)  # in place: one int32 copy of the batch at most


def _area_crops(
    integ: torch.Tensor, img_ids: torch.Tensor, regions: torch.Tensor, size: int
) -> torch.Tensor:
    """Area-resample each region of its frame to ``size`` x ``size``: ``(N, 3, S, S)`` float,
    on the raw 0-255 scale, from the frames' integral images (all boxes in one gather)."""
    n = len(regions)
    if n == 0:
        return torch.zeros((0, 3, size, size), dtype=torch.float32, device=integ.device)
    r0, r1, c0, c1 = regions.unbind(1)
    valid = (r1 > r0) & (c1 > c0)
    rl, rh = _bins(r0, (r1 - r0).clamp(min=1), size)
    cl, ch = _bins(c0, (c1 - c0).clamp(min=1), size)
    area = ((rh - rl)[:, :, None] * (ch - cl)[:, None, :]).to(torch.float32)
    # a region wholly outside the frame is invalid (zeroed below); keep its reads in bounds
    hmax, wmax = integ.shape[1] - 1, integ.shape[2] - 1
    rl, rh = rl.clamp(0, hmax), rh.clamp(0, hmax)
    cl, ch = cl.clamp(0, wmax), ch.clamp(0, wmax)
    # one flat row gather per corner: pixel (frame, r, c) is row (frame * (H+1) + r) * (W+1) + c
    w1, c = integ.shape[2], integ.shape[3]
    base = (img_ids * integ.shape[1])[:, None]
    r_lo, r_hi = (base + rl) * w1, (base + rh) * w1
    flat = integ.view(-1, c)

    def corner(r: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        return flat.index_select(0, (r[:, :, None] + col[:, None, :]).reshape(-1))

    s = corner(r_hi, ch) - corner(r_lo, ch) - corner(r_hi, cl) + corner(r_lo, cl)
    s = s.view(n, size, size, c)
    out = (s.to(torch.float32) / area[..., None]).permute(0, 3, 1, 2).contiguous()
    return out * valid[:, None, None, None]


def _max_pool_2x2_ceil(x: torch.Tensor) -> torch.Tensor:
    """``max_pool2d(x, 2, 2, ceil_mode=True)`` as the maximum of four strided views: on the
    CPU this skips the argmax indices ATen computes there, and is exact."""
    h, w = x.shape[2:]
    if h % 2 or w % 2:
        x = F.pad(x, (0, w % 2, 0, h % 2), value=float("-inf"))
    return torch.maximum(
        torch.maximum(x[:, :, 0::2, 0::2], x[:, :, 0::2, 1::2]),
        torch.maximum(x[:, :, 1::2, 0::2], x[:, :, 1::2, 1::2]),
    )


def _pnet(pnet, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """facenet-pytorch's ``PNet.forward`` with its layers and weights; on the CPU the 2x2 pool
    is :func:`_max_pool_2x2_ceil`."""
    if x.is_cuda:
        return pnet(x)
    x = pnet.prelu1(pnet.conv1(x))
    x = _max_pool_2x2_ceil(x)
    x = pnet.prelu2(pnet.conv2(x))
    x = pnet.prelu3(pnet.conv3(x))
    return pnet.conv4_2(x), pnet.softmax4_1(pnet.conv4_1(x))


def _run_net(net, data: torch.Tensor, pad: bool | None = None) -> tuple[torch.Tensor, ...]:
    """R-Net or O-Net over candidate crops, in chunks. ``pad`` (default: on a GPU) pads each
    chunk with zero crops to a power of two rows (at least 64): cuDNN plans a convolution
    anew for every new batch shape, a CPU-bound step that costs far more than these small
    networks' work, and the candidate count differs in every batch. Rows are independent,
    so the padding changes no output."""
    chunk = 16384 if data.is_cuda else 2048
    pad = data.is_cuda if pad is None else pad
    outs = []
    for i in range(0, len(data), chunk):
        part = data[i : i + chunk]
        n = len(part)
        rows = min(max(64, 1 << (n - 1).bit_length()), chunk) if pad else n
        if rows > n:
            part = torch.cat([part, part.new_zeros((rows - n, *part.shape[1:]))])
        outs.append([o[:n] for o in net(part)])
    return tuple(torch.cat(v, 0) for v in zip(*outs))


def _nms_min(boxes: np.ndarray, scores: np.ndarray, thresh: float) -> np.ndarray:
    """The reference's final NMS: overlap over the smaller box (areas with +1), keeping the
    highest score first."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores)
    keep = []
    while order.size:
        i = order[-1]
        keep.append(i)
        rest = order[:-1]
        iw = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        ih = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        o = iw * ih / np.minimum(area[i], area[rest])
        order = rest[o <= thresh]
    return np.array(keep, np.int64)


def fast_detect_face(
    frames: np.ndarray,
    minsize: int,
    pnet,
    rnet,
    onet,
    threshold: list[float],
    factor: float,
    device: torch.device,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Detect faces in a batch of same-size frames ``uint8 (B, H, W, 3)``.

    Returns per frame ``boxes (N, 5)`` [x1 y1 x2 y2 prob] and ``points (N, 5, 2)``, like the
    reference's ``detect_face``.
    """
    imgs_u8 = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
    bsz, h, w = imgs_u8.shape[:3]
    empty = (
        [np.zeros((0, 5), np.float32) for _ in range(bsz)],
        [np.zeros((0, 5, 2), np.float32) for _ in range(bsz)],
    )
    scales = _scales(h, w, minsize, factor)
    if not scales:
        return empty
    # The integral images serve the pyramid and the crops of stages 2 and 3. (Adaptive
    # average pooling of the whole float frame at each level was 30% of the GPU time of a
    # 720p batch, and the float copy of the frames one more pass over them.)
    integ = _integral(imgs_u8)
    del imgs_u8
    boxes, img_ids = _pnet_candidates(integ, pnet, scales, threshold[0])
    if len(boxes) == 0:
        return empty
    reg = boxes[:, 5:9]
    rw = boxes[:, 2] - boxes[:, 0]
    rh = boxes[:, 3] - boxes[:, 1]
    b = torch.stack(
        [
            boxes[:, 0] + reg[:, 0] * rw,
            boxes[:, 1] + reg[:, 1] * rh,
            boxes[:, 2] + reg[:, 2] * rw,
            boxes[:, 3] + reg[:, 3] * rh,
            boxes[:, 4],
        ],
        1,
    )
    b = _square(b)

    # Stage 2: R-Net on 24x24 area crops of every candidate at once.
    crops = _area_crops(integ, img_ids, _clip_regions(b, w, h), 24)
    reg2, prob2 = _run_net(rnet, (crops - 127.5) * 0.0078125)
    score = prob2[:, 1]
    ok = score > threshold[1]
    b = torch.cat([b[ok, :4], score[ok, None]], 1)
    img_ids, reg2 = img_ids[ok], reg2[ok]
    keep = _group_nms(b[:, :4], b[:, 4], img_ids, 0.7)
    b, img_ids, reg2 = b[keep], img_ids[keep], reg2[keep]
    b = _square(_regress(b, reg2))
    if len(b) == 0:
        return empty

    # Stage 3: O-Net on 48x48 crops: score, box regression, landmarks.
    crops = _area_crops(integ, img_ids, _clip_regions(b, w, h), 48)
    reg3, pts, prob3 = _run_net(onet, (crops - 127.5) * 0.0078125)
    score = prob3[:, 1]
    ok = score > threshold[2]
    b = torch.cat([b[ok, :4], score[ok, None]], 1)
    img_ids, reg3, pts = img_ids[ok], reg3[ok], pts[ok]
    bw = (b[:, 2] - b[:, 0] + 1)[:, None]
    bh = (b[:, 3] - b[:, 1] + 1)[:, None]
    px = bw * pts[:, :5] + b[:, 0:1] - 1
    py = bh * pts[:, 5:10] + b[:, 1:2] - 1
    points = torch.stack([px, py], 2)
    b = _regress(b, reg3)

    b_np = b.cpu().numpy()
    p_np = points.cpu().numpy()
    ids = img_ids.cpu().numpy()
    out_b, out_p = [], []
    for i in range(bsz):
        sel = np.flatnonzero(ids == i)
        keep = sel[_nms_min(b_np[sel, :4], b_np[sel, 4], 0.7)]
        out_b.append(b_np[keep].astype(np.float32))
        out_p.append(p_np[keep].astype(np.float32))
    return out_b, out_p
