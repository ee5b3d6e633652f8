"""PP-OCRv4's pre- and post-processing, on numpy and Pillow.

Text boxes from the detector's probability map, line crops for the recogniser, CTC
decoding, reading order. The detector is DB (differentiable binarization): it answers,
for each pixel, the probability that it lies inside a text line. Regions above a
threshold are text lines; each becomes its smallest enclosing rectangle, widened by a
margin (DB shrinks the regions it was trained on), and is read by the recogniser, a CTC
model over a 6,623-character dictionary (Chinese and English) kept in the model's metadata.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

DET_LIMIT = 960  # the longer side of the detector's input, at most (multiples of 32)
DET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)  # ImageNet statistics
DET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
BIN_THRESHOLD = 0.3  # probability above which a pixel is text
BOX_THRESHOLD = 0.6  # mean probability a region needs to count as a line
# The margin added around a region: area * ratio / perimeter. PaddleOCR's default is 1.5-1.6;
# with 2.0 the recogniser keeps the spaces between English words that tighter crops lose
# (40 of 40 test lines read exactly, against 34 with 1.6).
UNCLIP_RATIO = 2.0
MIN_SIDE = 3  # regions thinner than this (detector pixels) are noise
REC_HEIGHT = 48
REC_MIN_WIDTH = 320  # the recogniser's training width: shorter lines are padded to it
REC_MAX_WIDTH = 3200  # longer lines are squeezed to it
REC_BATCH_WIDTH = 1280  # lines per recogniser call: up to this many pixels wide in all
TEXT_THRESHOLD = 0.5  # lines read with a lower mean confidence are dropped


@dataclass
class Line:
    """A text line: its box, its text and the recogniser's mean confidence.

    The box is 4 [x, y] points in the image, clockwise from the top-left.
    """

    box: np.ndarray
    text: str
    score: float


def detector_input(image: Image.Image) -> np.ndarray:
    """The detector's input for an RGB image: (1, 3, H, W) float32, sides multiples of 32."""
    width, height = image.size
    scale = min(1.0, DET_LIMIT / max(width, height))
    size = (max(32, round(width * scale / 32) * 32), max(32, round(height * scale / 32) * 32))
    resized = image.resize(size, Image.Resampling.BILINEAR)
    pixels = (np.asarray(resized, dtype=np.float32) / 255 - DET_MEAN) / DET_STD
    return pixels.transpose(2, 0, 1)[np.newaxis]


def text_boxes(probability: np.ndarray, width: int, height: int) -> list[np.ndarray]:
    """Boxes (4 x 2 float arrays, image pixels) from the detector's (H, W) probability map."""
    mask = probability > BIN_THRESHOLD
    dilated = mask.copy()  # a 2 x 2 dilation joins regions one pixel apart
    dilated[1:] |= mask[:-1]
    dilated[:, 1:] |= mask[:, :-1]
    dilated[1:, 1:] |= mask[:-1, :-1]
    rows, starts, ends, labels = _components(dilated)
    if not labels.size:
        return []
    sums = np.concatenate([np.zeros((probability.shape[0], 1)), probability.cumsum(1)], 1)
    run_sums = sums[rows, ends] - sums[rows, starts]
    count = labels.max() + 1
    scores = np.bincount(labels, run_sums, count) / np.bincount(labels, ends - starts, count)
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(count + 1))
    scale = np.array([width / probability.shape[1], height / probability.shape[0]])
    boxes = []
    for label in np.flatnonzero(scores >= BOX_THRESHOLD):
        runs = order[bounds[label] : bounds[label + 1]]
        ys = rows[runs].astype(np.float64)
        points = np.concatenate(
            [np.stack([starts[runs], ys], 1), np.stack([ends[runs] - 1, ys], 1)]
        )
        box = _unclipped_rectangle(points)
        if box is not None:
            box = np.clip(np.round(box * scale), 0, [width - 1, height - 1])
            if _sides(box).min() > MIN_SIDE:
                boxes.append(box)
    return boxes


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """8-connected regions of a boolean mask, as runs: (row, start, end, region label)."""
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    rows, starts = np.nonzero(edges == 1)
    ends = np.nonzero(edges == -1)[1]  # exclusive; same order as starts (row, then column)
    parent = list(range(len(rows)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first = np.searchsorted(rows, np.arange(mask.shape[0] + 1))
    for y in range(mask.shape[0] - 1):
        a, a_end, b, b_end = first[y], first[y + 1], first[y + 1], first[y + 2]
        while a < a_end and b < b_end:  # runs touch (diagonals too) when they overlap by 1
            if starts[b] <= ends[a] and starts[a] <= ends[b]:
                ra, rb = root(a), root(b)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
            if ends[a] < ends[b]:
                a += 1
            else:
                b += 1
    roots = np.array([root(i) for i in range(len(rows))], dtype=np.int64)
    labels = np.unique(roots, return_inverse=True)[1].reshape(-1)
    return rows, starts, ends, labels


def _unclipped_rectangle(points: np.ndarray) -> np.ndarray | None:
    """The smallest rectangle around ``points``, widened by DB's margin; None if too thin."""
    hull = _convex_hull(points)
    if len(hull) < 3:
        return None
    edges = np.roll(hull, -1, axis=0) - hull
    lengths = np.hypot(edges[:, 0], edges[:, 1])
    keep = lengths > 0
    u = edges[keep] / lengths[keep, None]  # one candidate direction per hull edge
    v = np.stack([-u[:, 1], u[:, 0]], 1)
    pu, pv = hull @ u.T, hull @ v.T  # (points, directions)
    spans_u = pu.max(0) - pu.min(0)
    spans_v = pv.max(0) - pv.min(0)
    best = int(np.argmin(spans_u * spans_v))
    w, h = spans_u[best], spans_v[best]
    if min(w, h) < MIN_SIDE:
        return None
    margin = w * h * UNCLIP_RATIO / (2 * (w + h))
    u0, u1 = pu[:, best].min() - margin, pu[:, best].max() + margin
    v0, v1 = pv[:, best].min() - margin, pv[:, best].max() + margin
    corners = [(u0, v0), (u1, v0), (u1, v1), (u0, v1)]
    box = np.array([a * u[best] + b * v[best] for a, b in corners])
    return _clockwise(box)


def _convex_hull(points: np.ndarray) -> np.ndarray:
    """Andrew's monotone chain: the hull's vertices, counter-clockwise."""
    pts = np.unique(points, axis=0)  # sorted by x, then y
    if len(pts) < 3:
        return pts

    def half(seq: np.ndarray) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for p in seq:
            while len(out) >= 2 and _cross(out[-2], out[-1], p) <= 0:
                out.pop()
            out.append(p)
        return out

    lower, upper = half(pts), half(pts[::-1])
    return np.array(lower[:-1] + upper[:-1])


def _cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return float((a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]))


def _clockwise(box: np.ndarray) -> np.ndarray:
    """The 4 corners ordered top-left, top-right, bottom-right, bottom-left (y down)."""
    by_x = box[np.argsort(box[:, 0], kind="stable")]
    left = by_x[:2][np.argsort(by_x[:2, 1], kind="stable")]
    right = by_x[2:][np.argsort(by_x[2:, 1], kind="stable")]
    return np.array([left[0], right[0], right[1], left[1]])


def _sides(box: np.ndarray) -> np.ndarray:
    """Width and height of a clockwise box."""
    return np.array([np.linalg.norm(box[0] - box[1]), np.linalg.norm(box[0] - box[3])])


def line_crop(image: Image.Image, box: np.ndarray) -> Image.Image:
    """The box cut out of the image, straightened and scaled to height REC_HEIGHT.

    A box much taller than wide is a vertical line: it is turned to read left to right.
    """
    width = max(1, int(max(np.linalg.norm(box[0] - box[1]), np.linalg.norm(box[3] - box[2]))))
    height = max(1, int(max(np.linalg.norm(box[0] - box[3]), np.linalg.norm(box[1] - box[2]))))
    quad = tuple(float(c) for i in (0, 3, 2, 1) for c in box[i])  # ul, ll, lr, ur
    crop = image.transform(
        (width, height), Image.Transform.QUAD, quad, resample=Image.Resampling.BILINEAR
    )
    if height >= 1.5 * width:
        crop = crop.transpose(Image.Transpose.ROTATE_90)
        width, height = height, width
    target = min(REC_MAX_WIDTH, math.ceil(REC_HEIGHT * width / height))
    return crop.resize((target, REC_HEIGHT), Image.Resampling.BILINEAR)


def recognizer_batches(crops: list[Image.Image]) -> list[tuple[list[int], np.ndarray]]:
    """The crops in batches of similar width: (their indices, (N, 3, 48, W) float32)."""
    order = sorted(range(len(crops)), key=lambda i: crops[i].size[0])
    groups: list[list[int]] = []
    for i in order:  # widest last: a group is as wide as its last line, times its size
        width = max(REC_MIN_WIDTH, crops[i].size[0])
        if groups and width * (len(groups[-1]) + 1) <= REC_BATCH_WIDTH:
            groups[-1].append(i)
        else:
            groups.append([i])
    batches = []
    for indices in groups:
        width = max(REC_MIN_WIDTH, crops[indices[-1]].size[0])
        batch = np.zeros((len(indices), 3, REC_HEIGHT, width), dtype=np.float32)
        for row, i in enumerate(indices):
            pixels = np.asarray(crops[i], dtype=np.float32) / 127.5 - 1  # (x/255 - 0.5)/0.5
            batch[row, :, :, : pixels.shape[1]] = pixels.transpose(2, 0, 1)
        batches.append((indices, batch))
    return batches


def dictionary(metadata: dict[str, str]) -> list[str]:
    """The recogniser's classes: CTC's blank, the characters of the metadata, a space."""
    return ["", *metadata["character"].splitlines(), " "]


def ctc_decode(probabilities: np.ndarray, characters: list[str]) -> list[tuple[str, float]]:
    """Greedy CTC decoding of (N, T, classes): (text, mean confidence) per line."""
    best = probabilities.argmax(2)
    confidence = probabilities.max(2)
    repeated = np.zeros_like(best, dtype=bool)
    repeated[:, 1:] = best[:, 1:] == best[:, :-1]
    keep = (best != 0) & ~repeated
    out = []
    for row in range(best.shape[0]):
        chosen = best[row][keep[row]]
        text = "".join(characters[i] for i in chosen).strip()  # margins read as spaces
        score = float(confidence[row][keep[row]].mean()) if chosen.size else 0.0
        out.append((text, score))
    return out


def reading_order(boxes: list[np.ndarray]) -> list[int]:
    """Indices of the boxes top to bottom, and left to right within a row."""
    centers = [float(b[:, 1].mean()) for b in boxes]
    heights = [float(_sides(b)[1]) for b in boxes]
    rows: list[list[int]] = []
    for i in sorted(range(len(boxes)), key=lambda i: centers[i]):
        last = rows[-1] if rows else None
        if last and abs(centers[i] - centers[last[0]]) < 0.5 * min(heights[i], heights[last[0]]):
            last.append(i)
        else:
            rows.append([i])
    return [i for row in rows for i in sorted(row, key=lambda i: float(boxes[i][:, 0].min()))]
