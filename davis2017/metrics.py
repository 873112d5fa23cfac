"""DAVIS-2017 region similarity J, boundary measure F and per-object statistics.

The numbers are exactly those of the official DAVIS-2017 definitions (spec section 7.3); only the
computation differs. The official toolkit runs seg2bmap and two full-frame disk dilations for every
(result object, gt object, frame). Here each object is described once for all frames: the crops
around its mask in every frame are stacked into one canvas (separated by empty margins as wide as
the disk's reach) and bit-packed into 64-bit words along rows, so one vectorised seg2bmap on the
words gives the boundaries of all frames and one dilation on the words (horizontal runs by
doubling shifts, then one OR per disk row) their tolerance regions. A pair of objects is scored by
looking up each boundary pixel of one object in the other's dilated canvas, all frames at once.
The cost scales with the objects' size instead of the frame size times the number of pairs.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Sequence

import numpy as np

DEFAULT_BOUND_TH = 0.008


def boundary_radius(height: int, width: int, bound_th: float = DEFAULT_BOUND_TH) -> float:
    """Boundary tolerance in pixels: ceil(bound_th * image diagonal), or bound_th itself when >= 1."""
    if bound_th >= 1:
        return float(bound_th)
    return float(np.ceil(bound_th * math.sqrt(height * height + width * width)))


def disk(radius: float) -> np.ndarray:
    """Disk structuring element {x^2 + y^2 <= radius^2} on the grid arange(-radius, radius + 1).

    Same element as skimage.morphology.disk (strict radius), without depending on scikit-image.
    """
    offsets = np.arange(-radius, radius + 1)
    xs, ys = np.meshgrid(offsets, offsets)
    return (xs**2 + ys**2 <= radius**2).astype(np.uint8)


def tolerance_disk(height: int, width: int, bound_th: float = DEFAULT_BOUND_TH) -> np.ndarray:
    """The disk that dilates boundaries of frames of this size."""
    return disk(boundary_radius(height, width, bound_th))


@dataclasses.dataclass(frozen=True)
class ObjectFrames:
    """One object over T frames: per-frame crops of its non-void mask stacked into canvases.

    Frame t's crop covers image rows origin_y[t]..+height[t] and columns origin_x[t]..+width[t]
    (one background row/column of context where the image allows it). In the canvases its band
    starts at row band_start[t]; the crop sits `margin` rows below that and `margin` columns from
    the left, and every band ends with `margin` empty rows. Frames where the mask is empty have no
    band (present[t] False; a mask emptied only by void removal keeps a band with area 0).
    Boundary pixels are listed in image coordinates with their frame; `dilated` is the canvas of
    every band's boundary dilated by the tolerance disk, bit-packed along rows (see pack_rows).
    The boundary fields are None for objects described for J only.
    """

    present: np.ndarray
    origin_y: np.ndarray
    origin_x: np.ndarray
    height: np.ndarray
    width: np.ndarray
    band_start: np.ndarray
    margin: int
    masks: np.ndarray
    area: np.ndarray
    boundary_frame: np.ndarray | None = None
    boundary_y: np.ndarray | None = None
    boundary_x: np.ndarray | None = None
    n_boundary: np.ndarray | None = None
    dilated: np.ndarray | None = None

    @property
    def n_frames(self) -> int:
        """Number of frames described."""
        return len(self.present)

    @property
    def band_heights(self) -> np.ndarray:
        """Canvas rows of each frame's band (0 for absent frames)."""
        return np.where(self.present, self.height + 2 * self.margin, 0)

    def mask_crop(self, t: int) -> np.ndarray:
        """View of frame t's mask crop (frame t must be present)."""
        top = self.band_start[t] + self.margin
        return self.masks[top : top + self.height[t], self.margin : self.margin + self.width[t]]


def _first_last(flags: np.ndarray) -> tuple[int, int]:
    """Indices of the first and last True entry of a 1-D bool array that has one."""
    return int(flags.argmax()), len(flags) - 1 - int(flags[::-1].argmax())


def _frame_crops(masks: np.ndarray, void: np.ndarray | None) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """Per frame, the box (y0, y1, x0, x1), end exclusive, around the mask plus one pixel of
    background context on every side the image allows, and the non-void mask inside it.

    Works frame by frame so that each frame is read from memory once and then hit in cache.
    """
    n_frames, height, width = masks.shape
    boxes = np.zeros((n_frames, 4), dtype=np.int64)
    crops: list[np.ndarray | None] = [None] * n_frames
    for t in range(n_frames):
        rows = masks[t].any(axis=1)
        if not rows.any():
            continue
        y0, y1 = _first_last(rows)
        x0, x1 = _first_last(masks[t, y0 : y1 + 1].any(axis=0))
        boxes[t] = ya, yb, xa, xb = max(y0 - 1, 0), min(y1 + 2, height), max(x0 - 1, 0), min(x1 + 2, width)
        crops[t] = masks[t, ya:yb, xa:xb]
        if void is not None:
            crops[t] = crops[t] & ~np.asarray(void[t, ya:yb, xa:xb], dtype=bool)
    return boxes, crops


def describe_object(
    masks: np.ndarray, void: np.ndarray | None = None, kernel: np.ndarray | None = None
) -> ObjectFrames:
    """Describe one object's masks [T, H, W] with void pixels removed.

    With a tolerance kernel (see tolerance_disk) boundaries and dilated boundaries are built too.
    """
    masks = np.asarray(masks).astype(bool, copy=False)
    boxes, crops = _frame_crops(masks, void)
    heights, widths = boxes[:, 1] - boxes[:, 0], boxes[:, 3] - boxes[:, 2]
    present = heights > 0
    margin = 0 if kernel is None else max(max(kernel.shape) // 2, 1)
    band_heights = np.where(present, heights + 2 * margin, 0)
    band_start = np.cumsum(band_heights) - band_heights
    n_cols = -(-(int(widths.max(initial=0)) + 2 * margin) // 64) * 64  # whole 64-bit words per row
    # one extra zero row and column hold the right/bottom neighbours of the canvas' last pixels
    storage = np.zeros((int(band_heights.sum()) + 1, n_cols + 1), dtype=bool)
    canvas = storage[:-1, :-1]
    area = np.zeros(len(present), dtype=np.int64)
    for t in np.flatnonzero(present):
        top = band_start[t] + margin
        canvas[top : top + heights[t], margin : margin + widths[t]] = crops[t]
        area[t] = np.count_nonzero(crops[t])
    frames = ObjectFrames(present, boxes[:, 0], boxes[:, 2], heights, widths, band_start, margin, canvas, area)
    if kernel is None:
        return frames
    return _with_boundaries(frames, storage, masks.shape[1:], kernel)


def _with_boundaries(
    frames: ObjectFrames, storage: np.ndarray, image_shape: tuple[int, int], kernel: np.ndarray
) -> ObjectFrames:
    """Add boundary pixels (seg2bmap of every crop) and the dilated boundary canvas."""
    boundary = _packed_boundary(frames, storage, image_shape)
    rows, cols = _set_bits(boundary)
    frame = np.repeat(np.arange(frames.n_frames), frames.band_heights)[rows]
    top = frames.band_start + frames.margin
    return dataclasses.replace(
        frames,
        boundary_frame=frame,
        boundary_y=rows - top[frame] + frames.origin_y[frame],
        boundary_x=cols - frames.margin + frames.origin_x[frame],
        n_boundary=np.bincount(frame, minlength=frames.n_frames),
        dilated=dilate_words(boundary, kernel),
    )


def pack_rows(image: np.ndarray) -> np.ndarray:
    """Bit-pack a bool image along rows into uint64 words: column x is bit x % 64 of word x // 64."""
    n_rows, n_cols = image.shape
    if n_cols % 64:
        padded = np.zeros((n_rows, -(-n_cols // 64) * 64), dtype=bool)
        padded[:, :n_cols] = image
        image = padded
    return np.packbits(image, axis=1, bitorder="little").view("<u8")


def _set_bits(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) of the set bits of packed rows, in row-major order."""
    flat = words.ravel()
    set_words = np.flatnonzero(flat)
    bits = np.flatnonzero(np.unpackbits(flat[set_words].view(np.uint8), bitorder="little").view(bool))
    word = set_words[bits >> 6]
    return word // words.shape[1], (word % words.shape[1]) * 64 + (bits & 63)


def _shift_columns(words: np.ndarray, step: int, out: np.ndarray, carry: np.ndarray) -> np.ndarray:
    """Packed rows with every bit moved `step` columns (towards higher x if step > 0), 1 <= |step| <= 63.

    Bits moved past either end of a row are dropped; `carry` is scratch space of the same shape.
    """
    if step > 0:
        np.left_shift(words, step, out=out)
        np.right_shift(words[:, :-1], 64 - step, out=carry[:, 1:])
        carry[:, 0] = 0
    else:
        np.right_shift(words, -step, out=out)
        np.left_shift(words[:, 1:], 64 + step, out=carry[:, :-1])
        carry[:, -1] = 0
    out |= carry
    return out


def _row_intervals(kernel: np.ndarray) -> tuple[tuple[int, int, int], ...] | None:
    """(dy, -w, w) of each non-empty kernel row relative to cv2's centre anchor, when every row is
    one run centred on the anchor column (any disk of integer radius); None otherwise."""
    return _centred_row_runs(kernel.shape, kernel.astype(bool).tobytes())


@functools.lru_cache(maxsize=8)
def _centred_row_runs(shape: tuple[int, int], kernel_bytes: bytes) -> tuple[tuple[int, int, int], ...] | None:
    kernel = np.frombuffer(kernel_bytes, dtype=bool).reshape(shape)
    anchor_y, anchor_x = shape[0] // 2, shape[1] // 2
    intervals = []
    for i in np.flatnonzero(kernel.any(axis=1)):
        columns = np.flatnonzero(kernel[i])
        lo, hi = int(columns[0]) - anchor_x, int(columns[-1]) - anchor_x
        if lo != -hi or len(columns) != hi - lo + 1:
            return None
        intervals.append((int(i) - anchor_y, lo, hi))
    return tuple(intervals)


def dilate_packed(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """cv2.dilate(image, kernel) of a bool image, returned bit-packed (see pack_rows)."""
    return dilate_words(pack_rows(image), kernel)


def dilate_words(words: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """cv2.dilate by `kernel` of a bit-packed image (see pack_rows), bit-packed.

    A disk whose rows are centred runs (any integer radius) is dilated on the words: each row
    half-width is a horizontal dilation built by doubling shifts, and the rows are OR-ed with
    their vertical offsets. Other kernels go through cv2.dilate. Pixels outside the image count
    as background, like cv2's default border; bits past the image width are unspecified.
    """
    intervals = _row_intervals(kernel)
    if words.size == 0:
        return words.copy()
    if intervals is None:
        import cv2  # only for unusual kernels (bound_th >= 1 with a fractional radius)

        image = np.unpackbits(words.view(np.uint8), axis=1, bitorder="little")
        return pack_rows(cv2.dilate(image, kernel).view(bool))
    shifted, carry = np.empty_like(words), np.empty_like(words)
    by_width = {0: words}
    width, current = 0, words
    for target in sorted({hi for _, _, hi in intervals}):
        while width < target:  # dilating [-w, w] by s <= 2w + 1 keeps the run contiguous
            step = min(target - width, 2 * width + 1, 63)
            widened = current | _shift_columns(current, step, shifted, carry)
            widened |= _shift_columns(current, -step, shifted, carry)
            current, width = widened, width + step
        by_width[target] = current
    dilated = np.zeros_like(words)
    n_rows = len(words)
    for dy, _, hi in intervals:
        if abs(dy) >= n_rows:
            continue
        if dy >= 0:
            dilated[: n_rows - dy] |= by_width[hi][dy:]
        else:
            dilated[-dy:] |= by_width[hi][: n_rows + dy]
    return dilated


def _packed_boundary(frames: ObjectFrames, storage: np.ndarray, image_shape: tuple[int, int]) -> np.ndarray:
    """seg2bmap of every crop in the mask canvas, bit-packed (storage = canvas + a zero row/column).

    A pixel is a boundary pixel when it differs from its right, bottom or bottom-right neighbour.
    Crops touching the image's last row (column) get the official rule there: only the right
    (bottom) neighbour counts, and the image's bottom-right corner is never a boundary pixel.
    """
    words = np.packbits(storage[:, :-1], axis=1, bitorder="little").view("<u8")
    here, below = words[:-1], words[1:]
    scratch, carry = np.empty_like(here), np.empty_like(here)
    right = _shift_columns(here, -1, np.empty_like(here), carry)  # bit x holds pixel x + 1
    boundary = here ^ right
    np.bitwise_xor(here, below, out=scratch)
    boundary |= scratch
    np.bitwise_xor(here, _shift_columns(below, -1, scratch, carry), out=scratch)
    boundary |= scratch
    at_edge = (frames.origin_y + frames.height == image_shape[0]) | (frames.origin_x + frames.width == image_shape[1])
    for t in np.flatnonzero(frames.present & at_edge):
        _apply_image_edge_rule(frames, t, image_shape, here, right, below, boundary)
    # pixels left of or above a crop lie outside it (possibly outside the image): never boundary
    boundary &= pack_rows(np.arange(boundary.shape[1] * 64)[None] >= frames.margin)
    present = np.flatnonzero(frames.present)
    band_rows = np.stack([np.full(len(present), frames.margin), frames.height[present],
                          np.full(len(present), frames.margin)], 1)
    boundary[~np.repeat(np.tile([False, True, False], len(present)), band_rows.ravel())] = 0
    return boundary


def _apply_image_edge_rule(
    frames: ObjectFrames,
    t: int,
    image_shape: tuple[int, int],
    here: np.ndarray,
    right: np.ndarray,
    below: np.ndarray,
    boundary: np.ndarray,
) -> None:
    """Official seg2bmap rule on the image's last row and column, for the crop of frame t (packed)."""
    top = frames.band_start[t] + frames.margin
    bottom, end = top + frames.height[t] - 1, frames.margin + frames.width[t] - 1
    word, bit = end // 64, np.uint64(1) << np.uint64(end % 64)
    at_bottom = frames.origin_y[t] + frames.height[t] == image_shape[0]
    at_right = frames.origin_x[t] + frames.width[t] == image_shape[1]
    if at_bottom:  # the crop's other rows and columns of this canvas row are empty
        boundary[bottom] = here[bottom] ^ right[bottom]
    if at_right:
        column = slice(top, bottom + 1)
        boundary[column, word] = (boundary[column, word] & ~bit) | ((here[column, word] ^ below[column, word]) & bit)
    if at_bottom and at_right:
        boundary[bottom, word] &= ~bit


def _shared_frame_count(objects: Sequence[ObjectFrames]) -> int:
    """Frame count shared by all described objects."""
    counts = {obj.n_frames for obj in objects}
    if len(counts) > 1:
        raise ValueError(f"described objects have different frame counts: {sorted(counts)}")
    return counts.pop() if counts else 0


def _frame_overlap(a: ObjectFrames, b: ObjectFrames, t: int) -> int:
    """Pixels of frame t in both objects' masks."""
    y0, x0 = max(a.origin_y[t], b.origin_y[t]), max(a.origin_x[t], b.origin_x[t])
    y1 = min(a.origin_y[t] + a.height[t], b.origin_y[t] + b.height[t])
    x1 = min(a.origin_x[t] + a.width[t], b.origin_x[t] + b.width[t])
    if y1 <= y0 or x1 <= x0:
        return 0
    a_part = a.mask_crop(t)[y0 - a.origin_y[t] : y1 - a.origin_y[t], x0 - a.origin_x[t] : x1 - a.origin_x[t]]
    b_part = b.mask_crop(t)[y0 - b.origin_y[t] : y1 - b.origin_y[t], x0 - b.origin_x[t] : x1 - b.origin_x[t]]
    return int(np.count_nonzero(a_part & b_part))


def pairwise_iou(res: Sequence[ObjectFrames], gt: Sequence[ObjectFrames]) -> np.ndarray:
    """J for every (result object, gt object, frame): array [len(res), len(gt), T]."""
    n_frames = _shared_frame_count([*res, *gt])
    inter = np.zeros((len(res), len(gt), n_frames), dtype=np.int64)
    for i, r in enumerate(res):
        for j, g in enumerate(gt):
            for t in np.flatnonzero(r.present & g.present):
                inter[i, j, t] = _frame_overlap(r, g, t)
    res_area = np.array([r.area for r in res], dtype=np.int64).reshape(len(res), 1, n_frames)
    gt_area = np.array([g.area for g in gt], dtype=np.int64).reshape(1, len(gt), n_frames)
    union = res_area + gt_area - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    iou[union == 0] = 1.0
    return iou


def matched_boundary(points: ObjectFrames, other: ObjectFrames) -> np.ndarray:
    """Per frame, how many boundary pixels of `points` lie in the dilated boundary of `other`."""
    frame = points.boundary_frame
    margin = other.margin
    band_y = points.boundary_y - other.origin_y[frame] + margin
    band_x = points.boundary_x - other.origin_x[frame] + margin
    inside = other.present[frame] & (band_y >= 0) & (band_y < other.height[frame] + 2 * margin)
    inside &= (band_x >= 0) & (band_x < other.width[frame] + 2 * margin)
    frame, band_x = frame[inside], band_x[inside]
    rows = other.band_start[frame] + band_y[inside]
    words = other.dilated.ravel().take(rows * other.dilated.shape[1] + (band_x >> 6))
    hits = (words >> (band_x & 63).astype(np.uint64)) & np.uint64(1)
    return np.bincount(frame[hits.astype(bool)], minlength=points.n_frames)


def pairwise_boundary_f(res: Sequence[ObjectFrames], gt: Sequence[ObjectFrames]) -> np.ndarray:
    """F for every (result object, gt object, frame): array [len(res), len(gt), T].

    Objects must be described with the same tolerance kernel. Special cases of the definition:
    no boundary in either -> P = R = 1; only the result's empty -> P = 1, R = 0; only the gt's
    empty -> P = 0, R = 1; F = 0 when P + R = 0.
    """
    n_frames = _shared_frame_count([*res, *gt])
    res_matched = np.zeros((len(res), len(gt), n_frames), dtype=np.int64)
    gt_matched = np.zeros_like(res_matched)
    for i, r in enumerate(res):
        for j, g in enumerate(gt):
            res_matched[i, j] = matched_boundary(r, g)
            gt_matched[i, j] = matched_boundary(g, r)
    n_res = np.array([r.n_boundary for r in res], dtype=np.int64).reshape(len(res), 1, n_frames)
    n_gt = np.array([g.n_boundary for g in gt], dtype=np.int64).reshape(1, len(gt), n_frames)
    n_res, n_gt = np.broadcast_arrays(n_res, n_gt)
    precision = np.ones(res_matched.shape)
    np.divide(res_matched, n_res, out=precision, where=n_res > 0)
    recall = np.ones(gt_matched.shape)
    np.divide(gt_matched, n_gt, out=recall, where=n_gt > 0)
    total = precision + recall
    f_measure = np.zeros(total.shape)
    np.divide(2 * precision * recall, total, out=f_measure, where=total != 0)
    return f_measure


def _check_masks(annotation: np.ndarray, segmentation: np.ndarray, void: np.ndarray | None) -> None:
    """Both masks (and void) must be [T, H, W] or [H, W] of one shape."""
    shapes = {"annotation": np.shape(annotation), "segmentation": np.shape(segmentation)}
    if void is not None:
        shapes["void_pixels"] = np.shape(void)
    if len(set(shapes.values())) > 1 or len(shapes["annotation"]) not in (2, 3):
        raise ValueError(f"expected masks of one shape [T, H, W] or [H, W], got {shapes}")


def _as_frames(array: np.ndarray | None) -> np.ndarray | None:
    """View a [H, W] or [T, H, W] mask as a [T, H, W] sequence."""
    return None if array is None else np.asarray(array).reshape((-1, *np.shape(array)[-2:]))


def _single_pair(
    annotation: np.ndarray, segmentation: np.ndarray, void: np.ndarray | None, kernel: np.ndarray | None
) -> tuple[list[ObjectFrames], list[ObjectFrames]]:
    """Describe one (segmentation, annotation) pair as one-object lists."""
    _check_masks(annotation, segmentation, void)
    void = _as_frames(void)
    return (
        [describe_object(_as_frames(segmentation), void, kernel)],
        [describe_object(_as_frames(annotation), void, kernel)],
    )


def db_eval_iou(
    annotation: np.ndarray, segmentation: np.ndarray, void_pixels: np.ndarray | None = None
) -> np.ndarray:
    """Region similarity J = |S & G| / |S | G| over non-void pixels (1 when the union is empty).

    [T, H, W] inputs give an array [T]; [H, W] inputs a 0-d array.
    """
    res, gt = _single_pair(annotation, segmentation, void_pixels, None)
    iou = pairwise_iou(res, gt)[0, 0]
    return iou if np.ndim(annotation) == 3 else iou.reshape(())


def db_eval_boundary(
    annotation: np.ndarray,
    segmentation: np.ndarray,
    void_pixels: np.ndarray | None = None,
    bound_th: float = DEFAULT_BOUND_TH,
) -> np.ndarray:
    """Boundary F-measure with tolerance boundary_radius(H, W, bound_th), void pixels removed first.

    [T, H, W] inputs give an array [T]; [H, W] inputs a 0-d array.
    """
    kernel = tolerance_disk(*np.shape(annotation)[-2:], bound_th)
    res, gt = _single_pair(annotation, segmentation, void_pixels, kernel)
    f_measure = pairwise_boundary_f(res, gt)[0, 0]
    return f_measure if np.ndim(annotation) == 3 else f_measure.reshape(())


def decay_bins(n_frames: int, n_bins: int = 4) -> list[slice]:
    """Frame ranges of the official decay quarters; adjacent bins share their boundary frame."""
    ids = (np.round(np.linspace(1, n_frames, n_bins + 1) + 1e-10) - 1).astype(np.int64)
    return [slice(int(ids[i]), int(ids[i + 1]) + 1) for i in range(n_bins)]


def db_statistics(per_frame: np.ndarray) -> tuple[float, float, float]:
    """(mean, recall, decay) of one object's per-frame J or F values.

    Recall is the fraction of frames above 0.5; decay is the mean of the first quarter minus the
    mean of the last. Unlike the official code, bin indices are not cast to uint8, so sequences
    longer than 255 frames are binned correctly (identical results up to 255 frames).
    """
    values = np.asarray(per_frame)
    bins = decay_bins(len(values))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = np.nanmean(values)
        recall = np.nanmean(values > 0.5)
        decay = np.nanmean(values[bins[0]]) - np.nanmean(values[bins[-1]])
    return float(mean), float(recall), float(decay)
