"""`embedded` tracker: weight-free, prompted by the first-frame mask (see the tracking package docstring).

NewtonBench objects translate without rotating in front of a static camera, and are convex. Frame by frame:

1. match: the object's last appearance (its interior pixels, frames blurred by `smoothing`) is matched by masked SSD
   around a constant-velocity guess, while a ring just outside its outline is matched against the background seen
   so far (pixels the object has uncovered; differences truncated so a shadow moving along cannot dominate). Each
   placement's cost is divided by how well the background alone fits the template there, so a static patch that
   happens to look like the object (a distractor, a plain floor) is never chosen. The appearance score
   1 - sqrt(cost / background cost) is 1 for an exact fit and 0 when the background explains the pixels as well.
2. lost: a score below `min_score`, a placement mostly outside the frame, or an empty mask marks the frame lost;
   after a lost frame the whole frame is searched with the last confident and the first appearance.
3. segment: the last mask moved by the match is re-shaped against the background: a pixel near it is the object
   when it lies more than half way from its background colour to the object's expected colour (an anti-aliased
   edge at coverage 1/2); unknown background, object colour equal to the background colour, or a shadow-like
   darkening keep the moved mask's answer; the convex hull restores object pixels that match their background
   (a white checker square against white clouds). A segmentation that changes the area by more than
   `max_area_change` is distrusted and the moved mask kept; that frame is flagged in `TrackResult.fallback` (the
   evaluation counts them per clip, so an object that melts or grows is not silently tracked as rigid). The mask
   becomes the next template.
Optionally (`refine_pass`, off: it did not help on NewtonBench) every mask is segmented again against the nearest
background in time, past and future.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from newtonrewards.eval.tracking import TrackResult, check_track_inputs, result_from_masks


def disk(radius: int) -> np.ndarray:
    """Elliptic structuring element of the given radius (px)."""
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Bool mask grown by a disk of `radius` px."""
    return cv2.dilate(mask.astype(np.uint8), disk(radius)).astype(bool) if radius > 0 else mask.astype(bool)


def erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Bool mask shrunk by a disk of `radius` px."""
    return cv2.erode(mask.astype(np.uint8), disk(radius)).astype(bool) if radius > 0 else mask.astype(bool)


def masked_ssd(image: np.ndarray, valid: np.ndarray, template: np.ndarray, weight: np.ndarray):
    """Weighted mean squared colour difference of `template` at every placement in `image`, and the weight seen.

    image float32 [h, w, 3], valid float32 [h, w] (0 outside the frame), template [th, tw, 3], weight [th, tw].
    Returns cost [h-th+1, w-tw+1] (per pixel and channel; inf where nothing is seen) and seen [same].
    """
    sq = (image * image).sum(axis=2) * valid
    a = cv2.matchTemplate(sq, weight, cv2.TM_CCORR)
    b = cv2.matchTemplate(image * valid[..., None], template * weight[..., None], cv2.TM_CCORR)
    c = cv2.matchTemplate(valid, weight * (template * template).sum(axis=2), cv2.TM_CCORR)
    seen = cv2.matchTemplate(valid, weight, cv2.TM_CCORR)
    with np.errstate(invalid="ignore", divide="ignore"):
        cost = np.where(seen > 1e-3, np.maximum(a - 2 * b + c, 0) / (3 * seen), np.inf)
    return cost, seen


def subpixel(cost: np.ndarray, y: int, x: int) -> tuple[float, float]:
    """Parabola vertex around the integer minimum (y, x) of a cost map, per axis, clamped to half a pixel."""

    def vertex(m, c0, p):
        den = m - 2 * c0 + p
        return float(np.clip(0.5 * (m - p) / den, -0.5, 0.5)) if np.isfinite(den) and den > 1e-12 else 0.0

    dy = vertex(cost[y - 1, x], cost[y, x], cost[y + 1, x]) if 0 < y < cost.shape[0] - 1 else 0.0
    dx = vertex(cost[y, x - 1], cost[y, x], cost[y, x + 1]) if 0 < x < cost.shape[1] - 1 else 0.0
    return y + dy, x + dx



def shift_image(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """The image [H, W, C] moved by whole pixels (dy, dx); uncovered pixels repeat the border."""
    H, W = image.shape[:2]
    ys = np.clip(np.arange(H) - dy, 0, H - 1)
    xs = np.clip(np.arange(W) - dx, 0, W - 1)
    return image[ys][:, xs]



def fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask with every enclosed hole filled (the object is a solid silhouette)."""
    padded = np.pad(mask, 1).astype(np.uint8)
    flood = padded.copy()
    cv2.floodFill(flood, None, (0, 0), 1)
    return (padded.astype(bool) | (flood == 0))[1:-1, 1:-1]


def nearest_free_frames(occupied: np.ndarray) -> np.ndarray:
    """Per frame and pixel, the nearest frame in time where the pixel is not `occupied` [T, H, W]; -1 if none."""
    T = occupied.shape[0]
    before, after = np.full(occupied.shape, -1, np.int32), np.full(occupied.shape, -1, np.int32)
    last = np.full(occupied.shape[1:], -1, np.int32)
    for t in range(T):
        last = np.where(occupied[t], last, t)
        before[t] = last
    last = np.full(occupied.shape[1:], -1, np.int32)
    for t in range(T - 1, -1, -1):
        last = np.where(occupied[t], last, t)
        after[t] = last
    now = np.arange(T)[:, None, None]
    use_after = (after >= 0) & ((before < 0) | (after - now < now - before))
    return np.where(use_after, after, before)


@dataclass(frozen=True)
class Appearance:
    """The object as a template: colours [h, w, 3] of a box at `corner` (y, x) px, interior and ring weights."""

    colours: np.ndarray
    interior: np.ndarray
    ring: np.ndarray
    mask: np.ndarray
    corner: tuple[int, int]


def appearance_of(image: np.ndarray, mask: np.ndarray, ring: int) -> Appearance:
    """The template of the object `mask` [H, W] in `image` [H, W, 3]: its box grown by `ring` px (may leave frame)."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min() - ring - 1, ys.max() + ring + 2, xs.min() - ring - 1, xs.max() + ring + 2
    H, W = mask.shape
    pad = ring + 2
    box = np.s_[y0 + pad:y1 + pad, x0 + pad:x1 + pad]
    shape = np.pad(mask, pad)[box]
    interior = erode(shape, 1)
    if interior.sum() < 4:
        interior = shape
    rim = dilate(shape, ring) & ~dilate(shape, 1)
    colours = np.pad(image, [(pad, pad), (pad, pad), (0, 0)])[box]
    return Appearance(colours, interior.astype(np.float32), rim.astype(np.float32), shape, (int(y0), int(x0)))


@dataclass
class Match:
    """Where a template fits best: its corner (y, x) px sub-pixel, and the appearance score (1 exact, 0 background)."""

    corner: tuple[float, float]
    score: float


class EmbeddedTracker:
    """Weight-free tracker prompted by the first-frame mask.

    ring:         width (px) of the background ring around the outline that the follow step matches.
    margin:       search radius (px) around the constant-velocity guess, plus the last speed.
    first_reach:  search radius (px) of the first step, whose velocity is unknown.
    min_visible:  share of the object's interior that must be inside the frame for a placement to count.
    min_score:    appearance score (1: the template fits exactly, 0: the background fits as well) below which a
                  frame is lost.
    band:         width (px) of the band around the moved outline that segmentation may change.
    smoothing:    Gaussian sigma (px) applied to the frames before matching: fine textures alias less.
    noise:        colour distance (RGB in [0, 1]) below which a pixel counts as equal to its background.
    """

    def __init__(
        self,
        ring: int = 4,
        margin: int = 12,
        first_reach: int = 48,
        min_visible: float = 0.25,
        min_score: float = 0.5,
        band: int = 3,
        smoothing: float = 1.0,
        noise: float = 0.06,
        refine_pass: bool = False,
    ):
        self.ring, self.margin, self.first_reach, self.min_visible = ring, margin, first_reach, min_visible
        self.min_score, self.band, self.smoothing, self.noise = min_score, band, smoothing, noise
        self.refine_pass = refine_pass
        self.carry = 1.0
        self.max_area_change = 1.25
        self.convex = True

    def track(self, frames: np.ndarray, first_mask: np.ndarray) -> TrackResult:
        """Masks, centroids and lost flags of the object in frames uint8 [T, H, W, 3] from its frame-0 mask [H, W]."""
        frames, first_mask = check_track_inputs(frames, first_mask)
        images = frames.astype(np.float32) / np.float32(255)
        masks, lost, steps, fallback = self.follow(images, first_mask)
        if self.refine_pass:
            masks = self.refine(images, masks, lost, steps)
        masks[0] = first_mask
        return result_from_masks(masks, lost, fallback)

    # 1. follow ---------------------------------------------------------------------------------------------------
    def follow(self, images: np.ndarray, first_mask: np.ndarray) -> tuple[np.ndarray, ...]:
        """Masks [T, H, W], lost flags [T], whole-pixel steps [T, 2] and fallback flags [T] (the moved mask kept
        because the segmentation changed the area too much) frame by frame, with the background seen so far."""
        T, H, W, _ = images.shape
        smooth = np.stack([cv2.GaussianBlur(im, (0, 0), self.smoothing) for im in images]) if self.smoothing else images
        masks = np.zeros((T, H, W), bool)
        masks[0] = first_mask
        lost, fallback = np.zeros(T, bool), np.zeros(T, bool)
        self.scores = np.ones(T)
        first = last_good = appearance_of(smooth[0], first_mask, self.ring)
        background = images[0].copy()
        known = ~dilate(first_mask, 2)
        velocity, carry = np.zeros(2), np.zeros(2)
        steps = np.zeros((T, 2), int)
        for t in range(1, T):
            if lost[t - 1]:
                candidates = [self.match(smooth[t], background, known, app, None, 0) for app in (last_good, first)]
                used = [last_good, first]
            else:
                reach = self.first_reach if t == 1 else self.margin + int(np.ceil(np.abs(velocity).max()))
                candidates = [self.match(smooth[t], background, known, last_good, velocity + carry, reach)]
                used = [last_good]
            best = int(np.argmax([c.score for c in candidates]))
            match, app = candidates[best], used[best]
            self.scores[t] = match.score
            if match.score < self.min_score:
                lost[t], velocity, carry = True, np.zeros(2), np.zeros(2)
                continue
            moved = np.array(match.corner) - app.corner + (self.carry * carry if not lost[t - 1] else 0)
            step = np.round(moved).astype(int)
            carry = moved - step
            steps[t] = step
            velocity = moved if not lost[t - 1] else np.zeros(2)
            prior = np.zeros((H, W), bool)
            cy, cx = app.corner[0] + step[0], app.corner[1] + step[1]
            place_mask(prior, app.mask, cy, cx)
            masks[t] = self.segment(images[t], background, known, prior, shift_image(images[t - 1], *step))
            if not 1 / self.max_area_change <= masks[t].sum() / max(prior.sum(), 1) <= self.max_area_change:
                masks[t] = prior  # silhouettes change slowly: a sudden change is the segmentation failing
                fallback[t] = True
            if not masks[t].any():
                lost[t] = True
                continue
            last_good = appearance_of(smooth[t], masks[t], self.ring)
            free = ~dilate(masks[t], 2)
            background[free] = images[t][free]
            known |= free
        return masks, lost, steps, fallback

    def match(self, image, background, known, app: Appearance, guess, reach: int) -> Match:
        """Best placement of `app` in `image` near its corner + `guess` (None: the whole frame), and its score."""
        H, W, _ = image.shape
        th, tw = app.interior.shape
        pad = max(th, tw) + 1
        if guess is None:
            y0, y1, x0, x1 = -pad, H + pad - th, -pad, W + pad - tw
        else:
            gy, gx = int(round(app.corner[0] + guess[0])), int(round(app.corner[1] + guess[1]))
            y0, y1 = max(gy - reach, -pad), min(gy + reach, H + pad - th)
            x0, x1 = max(gx - reach, -pad), min(gx + reach, W + pad - tw)
        if y1 < y0 or x1 < x0:
            return Match((0.0, 0.0), -np.inf)

        def window(a):
            padded = np.pad(a, [(pad, pad), (pad, pad)] + [(0, 0)] * (a.ndim - 2))
            return padded[y0 + pad:y1 + pad + th, x0 + pad:x1 + pad + tw]

        valid = window(np.ones((H, W), np.float32))
        cost, seen = masked_ssd(window(image), valid, app.colours, app.interior)
        cost[seen < self.min_visible * app.interior.sum()] = np.inf
        kwin = window(known.astype(np.float32))
        # truncated: a shadow or a reflection moving with the object must not outweigh the interior's evidence
        diff2 = window(np.minimum(((image - background) ** 2).sum(axis=2) / 3, (2 * self.noise) ** 2) * known)
        ring_seen = cv2.matchTemplate(kwin, app.ring, cv2.TM_CCORR)
        with np.errstate(invalid="ignore", divide="ignore"):
            ring_sum = cv2.matchTemplate(diff2, app.ring, cv2.TM_CCORR)
            ring_cost = np.where(ring_seen > 0.1 * app.ring.sum(), ring_sum / ring_seen, 0)
        # how well the background alone explains the template's interior at each placement: the object is what
        # the background does not explain, so a static patch that happens to look like it scores ~1, not ~0
        bg_cost, bg_seen = masked_ssd(window(background), kwin, app.colours, app.interior)
        reference = np.where(bg_seen > 0.5 * app.interior.sum(), bg_cost, np.inf if guess is None else 0.2**2)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(np.isfinite(reference), (cost + ring_cost) / np.maximum(reference, 1e-6), np.inf)
        if not np.isfinite(ratio).any():
            return Match((0.0, 0.0), -np.inf)
        iy, ix = np.unravel_index(np.argmin(ratio), ratio.shape)
        fy, fx = subpixel(ratio, iy, ix)
        score = 1 - np.sqrt(cost[iy, ix] / max(reference[iy, ix], 1e-6)) if np.isfinite(cost[iy, ix]) else -np.inf
        return Match((y0 + fy, x0 + fx), float(score))

    # segmentation ------------------------------------------------------------------------------------------------
    def segment(self, image, background, known, prior, object_colours) -> np.ndarray:
        """The object's mask near `prior` [H, W]: the convex hull of the pixels that differ from the background.

        Pixels within `band` px of the prior count as the object where they lie more than half way from their
        background colour to the nearest colour inside the prior (an anti-aliased edge at coverage 1/2), and are
        left out where they look like the background in shadow (same chroma, darker). Where the background is
        unknown the prior answers. NewtonBench objects are convex, so their silhouettes are: the hull restores
        object pixels that happen to match the background (a white square of a checker against white clouds).
        """
        if not prior.any():
            return prior
        region = dilate(prior, self.band)
        ys, xs = np.nonzero(region)
        sl = np.s_[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        img, bg, kn, pr, near = image[sl], background[sl], known[sl], prior[sl], region[sl]
        inside = erode(pr, 1)
        if inside.sum() < 3:
            inside = pr
        _, labels = cv2.distanceTransformWithLabels(
            (~inside).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL
        )
        lookup = np.zeros((labels.max() + 1, 3), np.float32)
        lookup[labels[inside]] = object_colours[sl][inside]
        d = img - bg
        fb = lookup[labels] - bg
        fbn2 = (fb * fb).sum(axis=2)
        with np.errstate(invalid="ignore", divide="ignore"):
            alpha = (d * fb).sum(axis=2) / fbn2
            gain = (img * bg).sum(axis=2) / (bg * bg).sum(axis=2)
        shade = np.linalg.norm(img - gain[..., None] * bg, axis=2)
        shadow_like = (gain > 0.2) & (gain < 0.97) & (shade < self.noise)
        decisive = kn & (fbn2 > (2 * self.noise) ** 2) & ~(shadow_like & ~pr)
        fg = np.where(decisive, alpha > 0.5, pr) & near
        fg = cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_OPEN, disk(1)).astype(bool) | (fg & erode(pr, 2))
        count, comp = cv2.connectedComponents(fg.astype(np.uint8), connectivity=8)
        if count <= 1:
            return np.zeros_like(prior)
        overlap = np.bincount(comp.ravel(), weights=pr.ravel().astype(np.float64), minlength=count)
        overlap[0] = 0
        fg = (overlap > 0.1 * overlap.max())[comp]
        out = np.zeros_like(prior)
        if not fg.any():  # no component meets the prior (a generated clip's object vanished): nothing found
            return out
        if self.convex:
            points = np.stack(np.nonzero(fg)[::-1], axis=1).astype(np.int32)
            hull = np.zeros(fg.shape, np.uint8)
            cv2.fillConvexPoly(hull, cv2.convexHull(points), 1)
            out[sl] = hull.astype(bool)
        else:
            out[sl] = fill_holes(fg)
        return out

    # 2. refine ---------------------------------------------------------------------------------------------------
    def refine(self, images: np.ndarray, masks: np.ndarray, lost: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """Masks segmented again against the per-pixel nearest background in time (past and future)."""
        T = images.shape[0]
        occupied = np.stack([dilate(m, self.band + 3) for m in masks])
        source = nearest_free_frames(occupied)
        out = masks.copy()
        H, W = masks.shape[1:]
        yy, xx = np.mgrid[:H, :W]
        for t in range(1, T):
            if lost[t] or not masks[t].any():
                continue
            background = images[np.maximum(source[t], 0), yy, xx]
            expected = shift_image(images[t - 1], *steps[t])
            out[t] = self.segment(images[t], background, source[t] >= 0, masks[t], expected)
        return out


def place_mask(canvas: np.ndarray, patch: np.ndarray, y: int, x: int) -> None:
    """Paint bool `patch` into `canvas` [H, W] with its corner at (y, x), clipped to the canvas."""
    H, W = canvas.shape
    h, w = patch.shape
    cy0, cx0, cy1, cx1 = max(y, 0), max(x, 0), min(y + h, H), min(x + w, W)
    if cy1 > cy0 and cx1 > cx0:
        canvas[cy0:cy1, cx0:cx1] |= patch[cy0 - y:cy1 - y, cx0 - x:cx1 - x]
