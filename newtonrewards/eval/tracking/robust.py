"""The `robust` tracker, for blurred or compressed generated clips: blur-robust segmentation, clip background.

Use: `newtonrewards eval --tracker robust ...` or `build_tracker("robust")`.
Against `embedded` (docs/PERFORMANCE.md, Tracking): much better on blurred/noisy/JPEG frames and on most clips, but
it misses a box's side face that turns into view with the ground's colour (mini horizontal_throw-000000: ~1 px
centroid error, 2 px with depth 2), which the default's edge-colour growth happens to capture; so not the default.

NewtonBench objects translate without rotating in front of a static camera, and are convex. Frame by frame:

1. match: the object's last appearance (its interior pixels, frames blurred by `smoothing`) is matched by masked SSD
   around a constant-velocity guess, while a ring just outside its outline is matched against the background
   (differences truncated so a shadow moving along cannot dominate). Each placement's cost is divided by how well
   the background alone fits the template there, so a static patch that happens to look like the object (a
   distractor, a plain floor) is never chosen. The appearance score 1 - sqrt(cost / background cost) is 1 for an
   exact fit and 0 when the background explains the pixels as well.
2. lost: a score below `min_score`, a placement mostly outside the frame, or an empty mask marks the frame lost;
   after a lost frame the whole frame is searched with the last confident and the first appearance.
3. segment: the last mask moved by the match is re-shaped against the background: each pixel near it is unmixed
   into background, object colour and shadow, and is the object where its coverage exceeds 1/2 (the renderer's
   anti-aliased mask rule). The object colour is the best-fitting of the nearby interior colours, taken `depth` px
   inside the outline, where blur has not mixed them with the background (taken at the edge, a blurred edge reads
   as more object than it is and the mask grows frame after frame). Pixels that cannot tell object from background
   keep the moved mask's answer; the convex hull restores object pixels that match their background. A
   segmentation that changes the area by more than `max_area_change` is distrusted and the moved mask kept
   (flagged in `TrackResult.fallback`, counted per clip by the evaluation).
The first pass learns the background as it is uncovered. With `passes=2` (default) the clip is followed again
against the per-pixel median of every frame where the first pass saw the pixel clear of the object (past and
future: no shadow left behind, the background under the first frame's object known), and with shadows darkened the
way this clip's shadows are (`shadow_tint`).
"""

from __future__ import annotations

import cv2
import numpy as np

from newtonrewards.eval.tracking import TrackResult, check_track_inputs, result_from_masks
from newtonrewards.eval.tracking.embedded import (EmbeddedTracker, appearance_of, dilate, disk, erode, place_mask,
                                                  shift_image)


class RobustEmbeddedTracker(EmbeddedTracker):
    """Weight-free tracker prompted by the first-frame mask; `embedded`'s matching, its own segmentation and passes.

    ring:         width (px) of the background ring around the outline that the follow step matches.
    margin:       search radius (px) around the constant-velocity guess, plus the last speed.
    first_reach:  search radius (px) of the first step, whose velocity is unknown.
    min_visible:  share of the object's interior that must be inside the frame for a placement to count.
    min_score:    appearance score (1: the template fits exactly, 0: the background fits as well) below which a
                  frame is lost.
    band:         width (px) of the band around the moved outline that segmentation may change.
    smoothing:    Gaussian sigma (px) applied to the frames before matching: fine textures alias less.
    noise:        colour distance (RGB in [0, 1]) below which a pixel counts as equal to its background.
    depth:        how far inside the outline (px) object colours are read for segmentation (clear of edge blur);
                  None: 1 px on sharp frames, 2 px where the first frame's edges are blurred (`edge_width`).
    colours:      size of the object's colour palette (k-means of the first frame's object).
    reach:        how far (px) a pixel looks for the nearest object pixel of each palette colour.
    passes:       1: follow against the background seen so far; 2: follow again against the clip's median
                  background where the first pass saw each pixel clear of the object.
    free_margin:  px around a first-pass mask that do not count as clear background.
    tinted_shadows: learn from the clip how its shadows darken each channel (else: all channels alike).
    max_area_change: largest factor by which a segmentation may change the moved mask's area.
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
        depth: int | None = None,
        colours: int = 4,
        reach: float = 8.0,
        passes: int = 2,
        free_margin: int = 3,
        tinted_shadows: bool = True,
        max_area_change: float = 1.25,
    ):
        self.ring, self.margin, self.first_reach, self.min_visible = ring, margin, first_reach, min_visible
        self.min_score, self.band, self.smoothing, self.noise = min_score, band, smoothing, noise
        self.depth, self.colours, self.reach = depth, colours, reach
        self.passes, self.free_margin, self.tinted_shadows = passes, free_margin, tinted_shadows
        self.max_area_change = max_area_change
        self.carry = 1.0

    def track(self, frames: np.ndarray, first_mask: np.ndarray) -> TrackResult:
        """Masks, centroids and lost flags of the object in frames uint8 [T, H, W, 3] from its frame-0 mask [H, W]."""
        frames, first_mask = check_track_inputs(frames, first_mask)
        images = frames.astype(np.float32) / np.float32(255)
        inner = erode(first_mask, 1)
        palette = colour_palette(images[0], inner if inner.sum() >= 8 else first_mask, self.colours)
        depth = self.depth or (1 if edge_width(images[0], first_mask) < BLURRED_EDGE else 2)
        masks, lost, fallback = self.follow(images, first_mask, palette, depth)
        for _ in range(self.passes - 1):
            background, known = static_background(images, masks, lost, self.free_margin)
            tint = shadow_tint(images, masks, lost, background, known) if self.tinted_shadows else None
            masks, lost, fallback = self.follow(images, first_mask, palette, depth, (background, known), tint)
        masks[0] = first_mask
        return result_from_masks(masks, lost, fallback)

    # 1. follow ---------------------------------------------------------------------------------------------------
    def follow(self, images, first_mask, palette, depth, static=None, tint=None) -> tuple[np.ndarray, ...]:
        """Masks [T, H, W], lost flags [T] and fallback flags [T] (the moved mask kept because the segmentation
        changed the area by more than `max_area_change`) frame by frame.

        static: (background [H, W, 3], known [H, W]) of the whole clip, or None to use the background seen so far.
        palette [k, 3], depth (px) and tint [3] (or None): the object's colours, how far inside its outline they are
        read, and how shadows darken (`segment`).
        """
        T, H, W, _ = images.shape
        smooth = np.stack([cv2.GaussianBlur(im, (0, 0), self.smoothing) for im in images]) if self.smoothing else images
        masks = np.zeros((T, H, W), bool)
        masks[0] = first_mask
        lost, fallback = np.zeros(T, bool), np.zeros(T, bool)
        self.scores = np.ones(T)
        first = last_good = appearance_of(smooth[0], first_mask, self.ring)
        if static is None:
            background = images[0].copy()
            known = ~dilate(first_mask, 2)
        else:
            background, known = static
        velocity, carry = np.zeros(2), np.zeros(2)
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
            velocity = moved if not lost[t - 1] else np.zeros(2)
            prior = np.zeros((H, W), bool)
            cy, cx = app.corner[0] + step[0], app.corner[1] + step[1]
            place_mask(prior, app.mask, cy, cx)
            expected = shift_image(images[t - 1], *step)
            masks[t] = self.segment(images[t], background, known, prior, expected, palette, depth, tint)
            if not 1 / self.max_area_change <= masks[t].sum() / max(prior.sum(), 1) <= self.max_area_change:
                masks[t] = prior  # silhouettes change slowly: a sudden change is the segmentation failing
                fallback[t] = True
            if not masks[t].any():
                lost[t] = True
                continue
            last_good = appearance_of(smooth[t], masks[t], self.ring)
            free = ~dilate(masks[t], 2)
            if static is None:
                background[free] = images[t][free]
                known |= free
        return masks, lost, fallback

    # segmentation ------------------------------------------------------------------------------------------------
    def segment(self, image, background, known, prior, expected, palette, depth, tint) -> np.ndarray:
        """The object's mask near `prior` [H, W]: the convex hull of the pixels the object covers at least half of.

        expected [H, W, 3]: the last frame moved by the match (the object's colours where the prior lies). Each pixel
        within `band` px of the prior is unmixed against its background colour, every nearby object colour (the
        nearest interior pixel, `depth` px inside the prior, of each `palette` colour, within `reach` px: a striped
        object's edge is judged against its own stripe) and, outside the prior, a shadow (`shadow_tint`); the best
        fit gives its coverage (`unmix`), and a coverage above 1/2 makes it the object. Pixels whose colour cannot
        tell object from background or shadow, or whose background is unknown, keep the prior's answer. NewtonBench
        objects are convex, so their silhouettes are: the hull restores object pixels that match their background
        (a white square of a checker against white clouds).
        """
        if not prior.any():
            return prior
        region = dilate(prior, self.band)
        ys, xs = np.nonzero(region)
        sl = np.s_[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        img, bg, kn, pr, near = image[sl], background[sl], known[sl], prior[sl], region[sl]
        inside = erode(pr, depth)
        if inside.sum() < 3:
            inside = pr
        alpha, decisive = self.coverage(img - bg, bg, expected[sl], inside, pr, palette, tint)
        fg = np.where(decisive & kn, alpha > 0.5, pr) & near
        fg = cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_OPEN, disk(1)).astype(bool) | (fg & erode(pr, 2))
        count, comp = cv2.connectedComponents(fg.astype(np.uint8), connectivity=8)
        if count <= 1:
            return np.zeros_like(prior)
        overlap = np.bincount(comp.ravel(), weights=pr.ravel().astype(np.float64), minlength=count)
        overlap[0] = 0
        fg = (overlap > 0.1 * overlap.max())[comp]
        points = np.stack(np.nonzero(fg)[::-1], axis=1).astype(np.int32)
        hull = np.zeros(fg.shape, np.uint8)
        cv2.fillConvexPoly(hull, cv2.convexHull(points), 1)
        out = np.zeros_like(prior)
        out[sl] = hull.astype(bool)
        return out

    def coverage(self, d, bg, colours, inside, prior, palette, tint) -> tuple[np.ndarray, np.ndarray]:
        """Coverage [h, w] and decisive flags of d = image - background against the best-fitting nearby object colour.

        colours [h, w, 3]: the object's expected colours, read at `inside` pixels, each assigned to its nearest
        `palette` entry; per entry, every pixel is compared with that entry's nearest inside pixel (within `reach`).
        """
        h, w = inside.shape
        iy, ix = np.nonzero(inside)
        nearest = np.argmin(((colours[iy, ix][:, None, :] - palette[None]) ** 2).sum(axis=2), axis=1)
        best = np.full((h, w), np.inf, np.float32)
        alpha, decisive = np.zeros((h, w), np.float32), np.zeros((h, w), bool)
        for k in range(len(palette)):
            members = np.zeros((h, w), bool)
            members[iy[nearest == k], ix[nearest == k]] = True
            if not members.any():
                continue
            dist, labels = cv2.distanceTransformWithLabels(
                (~members).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL
            )
            lookup = np.zeros((labels.max() + 1, 3), np.float32)
            lookup[labels[members]] = colours[members]
            a, dec, residual = unmix(d, lookup[labels] - bg, bg, self.noise, prior, tint)
            better = (residual < best) & (dist <= self.reach)
            best = np.where(better, residual, best)
            alpha, decisive = np.where(better, a, alpha), np.where(better, dec, decisive)
        return alpha, decisive


SHADOW_FIT = 1.0  # a shadow explains a pixel only where darkening the background alone fits it within `noise`
BLURRED_EDGE = 0.6  # `edge_width` above which frames count as blurred (rendered clips 0.06-0.58, blurred 0.64-0.79)


def unmix(d, u, bg, noise: float, prior, tint=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Object coverage per pixel: d = image - background [h, w, 3] as a u + s v, u = object - background colour.

    v = -bg * tint is a shadow (it only darkens the background; tint [3] weighs the channels, None: all alike), with
    s in [0, 0.85], used outside `prior` [h, w] and only where it fits with s > 0. Returns the coverage a [h, w]
    (least squares), decisive [h, w] (the object's colour stands out from the background, and from its shadow
    where one is fitted, by more than 2 `noise`) and the squared residual of the fit with a clipped to [0, 1].
    """
    v = -bg if tint is None else -bg * tint
    uu, vv, uv = (u * u).sum(axis=2), (v * v).sum(axis=2), (u * v).sum(axis=2)
    ud, vd = (u * d).sum(axis=2), (v * d).sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        det = uu * vv - uv * uv
        s = np.clip((uu * vd - uv * ud) / det, 0, 0.85)
        a_shadow = (u * (d - s[..., None] * v)).sum(axis=2) / uu
        a_plain = ud / uu
        only = np.clip(vd / vv, 0, 0.85)[..., None] * v - d
        shadowed = ((uu * vd - uv * ud) > 0) & (det > 0) & ~prior & ((only * only).sum(axis=2) < SHADOW_FIT * noise**2)
        alpha = np.where(shadowed, a_shadow, a_plain)
        decisive = (uu > (2 * noise) ** 2) & (~shadowed | (det / vv > (2 * noise) ** 2))
    fit = d - np.clip(alpha, 0, 1)[..., None] * u - np.where(shadowed, s, 0)[..., None] * v
    return alpha, decisive, (fit * fit).sum(axis=2)


def colour_palette(image: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    """Up to `k` representative colours [k', 3] of the pixels of `mask` in `image` (k-means, deterministic seeds)."""
    pixels = image[mask].astype(np.float32)
    k = max(1, min(k, len(pixels)))
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 1e-3)
    cv2.setRNGSeed(0)
    _, labels, centres = cv2.kmeans(pixels, k, None, criteria, 3, cv2.KMEANS_PP_CENTERS)
    counts = np.bincount(labels.ravel(), minlength=k)
    return centres[counts >= max(3, 0.03 * len(pixels))]


def shadow_tint(images, masks, lost, background, known, reach: int = 40) -> np.ndarray | None:
    """Per-channel weights [3] of how a shadow darkens this clip's background (ambient light is tinted), or None.

    Samples pixels near the object but clear of it that are at least 15% darker than the static background, and
    takes the median of 1 - image / background per channel, scaled to mean 1.
    """
    samples = []
    for t in range(0, len(images), 2):
        if lost[t] or not masks[t].any():
            continue
        near = dilate(masks[t], reach) & ~dilate(masks[t], 3) & known
        img, bg = images[t][near], background[near]
        lum_i, lum_b = img.sum(axis=1), bg.sum(axis=1)
        dark = (lum_b > 0.3) & (lum_i < 0.85 * lum_b) & (bg.min(axis=1) > 0.03)
        samples.append(1 - img[dark] / bg[dark])
    ratios = np.concatenate(samples) if samples else np.zeros((0, 3))
    if len(ratios) < 30:
        return None
    w = np.median(ratios, axis=0)
    return (w / max(w.mean(), 1e-6)).astype(np.float32) if w.mean() > 0.05 else None


def nearest_colours(image: np.ndarray, members: np.ndarray):
    """(lookup [n, 3], labels [h, w]): lookup[labels] is each pixel's nearest `members` pixel's colour in `image`."""
    _, labels = cv2.distanceTransformWithLabels(
        (~members).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL
    )
    lookup = np.zeros((labels.max() + 1, 3), np.float32)
    lookup[labels[members]] = image[members]
    return lookup, labels


def edge_width(image: np.ndarray, mask: np.ndarray) -> float:
    """How far colour bleeds across the outline of `mask` in `image`: 1 - the mean share of the colour step between
    3 px inside and 3 px outside that happens between the two pixels on either side of the outline (0: a sharp
    step, larger: blurred)."""
    inner, outer = mask & ~erode(mask, 1), dilate(mask, 1) & ~mask
    smooth = cv2.blur(image, (3, 3))
    deep_in, deep_out = erode(mask, 3), ~dilate(mask, 3)
    if deep_in.sum() < 4 or not inner.any():
        return 0.0
    look_in, lab_in = nearest_colours(smooth, deep_in)
    look_out, lab_out = nearest_colours(smooth, deep_out)
    step = look_in[lab_in] - look_out[lab_out]
    n2 = (step * step).sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = ((image - look_out[lab_out]) * step).sum(axis=2) / n2
    ok = n2 > 0.15**2
    a_in = a[inner & ok]; a_out = a[outer & ok]
    if len(a_in) < 5 or len(a_out) < 5:
        return 0.0
    return float(np.median(a_out) + 1 - np.median(a_in))


def static_background(images: np.ndarray, masks: np.ndarray, lost: np.ndarray, margin: int):
    """Per-pixel median colour [H, W, 3] over the frames where the pixel is clear of the object, and where known."""
    T, H, W, _ = images.shape
    occupied = np.stack([dilate(m, margin) if not l else np.ones((H, W), bool) for m, l in zip(masks, lost)])
    ever = occupied.any(axis=0)
    background = np.median(images, axis=0)
    known = (~occupied).any(axis=0)
    sel = ever & known
    if sel.any():
        stack = images[:, sel].copy()
        stack[occupied[:, sel]] = np.nan
        background[sel] = np.nanmedian(stack, axis=0)
    return background.astype(np.float32), known
