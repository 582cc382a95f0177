"""Phantom chest geometry: one frontal radiograph's anatomy, sampled per image, and the 29 Chest
ImaGenome region boxes measured on that anatomy's own masks.

Everything is built in pixel coordinates of the output image (width W, height H), in radiological
convention: the patient's right is on the image's left. Structures are polygons in an upright
"canonical" frame, then rotated about the thorax centre by the image's tilt, so pose varies while
every box is still read off rasterized masks (`region_boxes`), never off a fixed grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

# Both sides in drawing order; index 0 is the patient's right (image left).
SIDES = ("right", "left")
Point = tuple[float, float]


@dataclass
class Anatomy:
    """A phantom's geometry. Lengths are pixels; `sign[side]` is -1 for the patient's right
    (image left) and +1 for the left."""

    width: int
    height: int
    cx: float  # thorax midline at the lung apex level
    tilt_deg: float  # rotation of the whole patient about (cx, cy)
    cy: float
    half_thorax: float  # inner rib-cage half width (lung lateral border to midline)
    apex_y: float  # lung apices
    dome_y: dict[str, float]  # hemidiaphragm dome tops
    cp_y: dict[str, float]  # costophrenic angles (the lungs' lowest points)
    ctr: float  # cardiothoracic ratio: heart width / thorax width
    heart: tuple[float, float, float, float]  # canonical heart ellipse box, bottom clipped at the dome
    hilum: dict[str, tuple[float, float, float]]  # (x, y, radius)
    mediastinum_half: float  # half width of the upper mediastinum
    arch: tuple[float, float, float]  # aortic knob (x, y, radius)
    trachea_half: float
    carina_y: float
    spine_half: float
    scoliosis_amplitude: float  # lateral displacement of the spine's mid point (pixels, signed)
    clavicle_y: float
    exposure: float  # attenuation to brightness scale (higher: brighter image)
    gamma: float
    noise: float
    sign: dict[str, int] = field(default_factory=lambda: {"right": -1, "left": 1})

    # --- frame -------------------------------------------------------------------------------
    def to_image(self, points: list[Point] | np.ndarray) -> list[Point]:
        """Canonical-frame points to image pixels (rotation about the thorax centre)."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        angle = math.radians(self.tilt_deg)
        c, s = math.cos(angle), math.sin(angle)
        dx, dy = pts[:, 0] - self.cx, pts[:, 1] - self.cy
        x = self.cx + c * dx - s * dy
        y = self.cy + s * dx + c * dy
        return list(zip(x.tolist(), y.tolist()))

    def spine_x(self, y: float | np.ndarray) -> float | np.ndarray:
        """Spine centre line (canonical frame): straight, or bowed for scoliosis."""
        top, bottom = self.apex_y - 0.1 * self.height, max(self.cp_y.values()) + 0.05 * self.height
        phase = np.clip((np.asarray(y) - top) / (bottom - top), 0.0, 1.0)
        return self.cx + self.scoliosis_amplitude * np.sin(np.pi * phase)

    # --- polygons (canonical frame) -------------------------------------------------------------
    def lung_polygon(self, side: str, shrink: float = 0.0) -> list[Point]:
        """Lung outline: apex, lateral border, costophrenic angle, dome, medial border. `shrink`
        > 0 pulls the outline toward the hilum (a collapsed lung under a pneumothorax)."""
        sg = self.sign[side]
        lateral = self.cx + sg * self.half_thorax
        medial = self.cx + sg * self.mediastinum_half
        apex_x = self.cx + sg * 0.45 * self.half_thorax
        cp_y, dome_y = self.cp_y[side], self.dome_y[side]
        pts: list[Point] = []
        # Apex and lateral border: the border reaches the rib cage quickly, then runs down.
        for v in np.linspace(0.0, 1.0, 24):
            y = self.apex_y + v * (cp_y - self.apex_y)
            x = lateral + (apex_x - lateral) * (1.0 - v) ** 4
            pts.append((x, y))
        # Dome: from the costophrenic angle up to its top, then down a little to the heart.
        cp_x = lateral - sg * 0.04 * self.half_thorax
        peak_x = self.cx + sg * 0.5 * self.half_thorax
        for u in np.linspace(0.0, 1.0, 16):
            x = cp_x + u * (medial - cp_x)
            rel = (x - peak_x) / (cp_x - peak_x) if u < 0.55 else (x - peak_x) / (medial - peak_x)
            drop = (cp_y - dome_y) if u < 0.55 else 0.35 * (cp_y - dome_y)
            pts.append((x, dome_y + drop * rel**2))
        # Medial border up to the apex, bulging around the hilum slightly.
        for v in np.linspace(1.0, 0.0, 12):
            y = self.apex_y + v * (dome_y - self.apex_y)
            pts.append((medial + sg * 0.03 * self.half_thorax * math.sin(math.pi * v), y))
        if shrink > 0:
            hx, hy, _ = self.hilum[side]
            pts = [(hx + (x - hx) * (1 - shrink), hy + (y - hy) * (1 - shrink)) for x, y in pts]
        return pts

    def dome_curve(self, side: str) -> list[Point]:
        """The hemidiaphragm's upper surface, costophrenic angle to the heart border."""
        outline = self.lung_polygon(side)
        return outline[24:40]

    def heart_polygon(self) -> list[Point]:
        x1, y1, x2, y2 = self.heart
        bottom = max(self.dome_y.values()) + 0.02 * self.height
        ex, ey = (x1 + x2) / 2, (y1 + y2) / 2
        ax, ay = (x2 - x1) / 2, (y2 - y1) / 2
        t = np.linspace(0, 2 * np.pi, 64)
        return [(float(ex + ax * np.cos(a)), float(min(ey + ay * np.sin(a), bottom))) for a in t]

    def mediastinum_polygon(self) -> list[Point]:
        top = max(0.0, self.apex_y - 0.1 * self.height)
        x1, y1, x2, y2 = self.heart
        m = self.mediastinum_half
        return [
            (self.cx - 0.8 * m, top),
            (self.cx + 0.8 * m, top),
            (self.cx + m, self.apex_y),
            (self.cx + m, y1 + 0.2 * (y2 - y1)),
            (self.cx - m, y1 + 0.2 * (y2 - y1)),
            (self.cx - m, self.apex_y),
        ]

    def trachea_polygon(self) -> list[Point]:
        top = max(0.0, self.apex_y - 0.1 * self.height)
        t = self.trachea_half
        return [
            (self.cx - t, top),
            (self.cx + t, top),
            (self.cx + t, self.carina_y),
            (self.cx + t + 2.2 * t, self.carina_y + 3.0 * t),
            (self.cx + 1.4 * t, self.carina_y + 3.6 * t),
            (self.cx, self.carina_y + 0.8 * t),
            (self.cx - 1.4 * t, self.carina_y + 3.6 * t),
            (self.cx - t - 2.2 * t, self.carina_y + 3.0 * t),
            (self.cx - t, self.carina_y),
        ]

    def spine_polygon(self) -> list[Point]:
        ys = np.linspace(0, self.height, 40)
        xs = np.asarray(self.spine_x(ys))
        left = [(float(x) - self.spine_half, float(y)) for x, y in zip(xs, ys)]
        right = [(float(x) + self.spine_half, float(y)) for x, y in zip(xs, ys)]
        return left + right[::-1]

    def clavicle_polygon(self, side: str) -> list[Point]:
        sg = self.sign[side]
        thick = 0.022 * self.height
        inner = (self.cx + sg * 0.12 * self.half_thorax, self.clavicle_y + 0.02 * self.height)
        outer = (self.cx + sg * 1.15 * self.half_thorax, self.clavicle_y - 0.035 * self.height)
        mid = ((inner[0] + outer[0]) / 2, (inner[1] + outer[1]) / 2 + 0.012 * self.height)
        top = [inner, mid, outer]
        return [(x, y - thick / 2) for x, y in top] + [(x, y + thick / 2) for x, y in top[::-1]]

    def body_polygon(self) -> list[Point]:
        w = self.half_thorax
        return [
            (self.cx - 0.28 * w, -5),
            (self.cx + 0.28 * w, -5),
            (self.cx + 0.45 * w, self.apex_y - 0.06 * self.height),
            (self.cx + 1.45 * w, self.apex_y - 0.01 * self.height),
            (self.cx + 1.32 * w, self.height + 5),
            (self.cx - 1.32 * w, self.height + 5),
            (self.cx - 1.45 * w, self.apex_y - 0.01 * self.height),
            (self.cx - 0.45 * w, self.apex_y - 0.06 * self.height),
        ]

    def ribs(self) -> list[list[Point]]:
        """Posterior ribs as centre lines: from the spine outward, arching down laterally."""
        out = []
        step = (max(self.cp_y.values()) - self.apex_y) / 9.0
        for side in SIDES:
            sg = self.sign[side]
            for k in range(10):
                y0 = self.apex_y - 0.3 * step + k * step
                xs = np.linspace(0.05, 1.08, 14)
                pts = [
                    (
                        float(self.spine_x(y0)) + sg * u * self.half_thorax,
                        y0
                        - 0.25 * step * math.sin(math.pi * min(u, 0.6) / 0.6 * 0.5)
                        + 1.2 * step * max(0.0, u - 0.55) ** 2,
                    )
                    for u in xs
                ]
                out.append(pts)
        return out

    # --- zones ------------------------------------------------------------------------------
    def lung_length(self, side: str) -> float:
        return self.cp_y[side] - self.apex_y

    def zone_band(self, side: str, zone: str) -> tuple[float, float]:
        """Canonical y range of a lung zone (thirds of the apex-to-costophrenic height)."""
        length = self.lung_length(side)
        bands = {"upper": (0.0, 1 / 3), "mid": (1 / 3, 2 / 3), "lower": (2 / 3, 1.0), "apical": (0.0, 0.14)}
        a, b = bands[zone]
        return self.apex_y + a * length, self.apex_y + b * length


def sample_anatomy(
    rng: np.random.Generator,
    width: int,
    height: int,
    ctr: float | None = None,
    scoliosis: float = 0.0,
    mediastinal_widening: float = 1.0,
    elevated: dict[str, float] | None = None,
    hilum_scale: dict[str, float] | None = None,
) -> Anatomy:
    """A phantom's geometry with per-image pose, size and exposure variation. The lesion-shaped
    parameters (heart size, spine bow, mediastinal width, dome elevation, hilum size) are passed in
    by the caller, who decides the image truth."""
    elevated = elevated or {}
    hilum_scale = hilum_scale or {}
    scale = rng.uniform(0.9, 1.04)
    half_thorax = 0.37 * width * scale
    cx = width / 2 + rng.normal(0, 0.015 * width)
    apex_y = height * rng.uniform(0.1, 0.15)
    base = height * rng.uniform(0.64, 0.72)
    dome_y = {"right": base - 0.015 * height, "left": base + 0.01 * height}
    for side, rise in elevated.items():
        dome_y[side] -= rise * height
    cp_y = {
        side: dome_y[side] + rng.uniform(0.08, 0.1) * height + (elevated.get(side, 0.0) * height * 0.6)
        for side in SIDES
    }
    if ctr is None:
        ctr = float(rng.uniform(0.38, 0.48))
    heart_w = ctr * 2 * half_thorax
    heart_left_edge = cx - rng.uniform(0.3, 0.38) * heart_w  # about a third right of the midline
    carina_y = apex_y + 0.33 * (base - apex_y)
    heart_top = apex_y + rng.uniform(0.42, 0.5) * (base - apex_y)
    heart_bottom = max(dome_y.values()) + 0.35 * (max(dome_y.values()) - heart_top)
    hilum_y = apex_y + 0.45 * (base - apex_y)
    med_half = 0.15 * half_thorax * mediastinal_widening
    hilum = {
        side: (
            cx + {"right": -1, "left": 1}[side] * (med_half + 0.14 * half_thorax),
            hilum_y + (0.02 * height if side == "left" else 0.0),
            0.07 * half_thorax * hilum_scale.get(side, 1.0),
        )
        for side in SIDES
    }
    return Anatomy(
        width=width,
        height=height,
        cx=cx,
        cy=(apex_y + base) / 2,
        tilt_deg=float(rng.uniform(-3, 3)),
        half_thorax=half_thorax,
        apex_y=apex_y,
        dome_y=dome_y,
        cp_y=cp_y,
        ctr=float(ctr),
        heart=(heart_left_edge, heart_top, heart_left_edge + heart_w, heart_bottom),
        hilum=hilum,
        mediastinum_half=med_half,
        arch=(cx + med_half * 0.9, apex_y + 0.2 * (base - apex_y), 0.085 * half_thorax),
        trachea_half=0.045 * half_thorax,
        carina_y=carina_y,
        spine_half=0.085 * half_thorax,
        scoliosis_amplitude=scoliosis * half_thorax,
        clavicle_y=apex_y + 0.035 * height,
        exposure=float(rng.uniform(1.8, 2.6)),
        gamma=float(rng.uniform(0.85, 1.2)),
        noise=float(rng.uniform(0.008, 0.02)),
    )


# --- masks and boxes ------------------------------------------------------------------------------
def polygon_mask(anatomy: Anatomy, canonical: list[Point], width: float | None = None) -> np.ndarray:
    """A filled (or, with `width`, stroked) canonical-frame polygon as a boolean image mask."""
    canvas = Image.new("L", (anatomy.width, anatomy.height), 0)
    draw = ImageDraw.Draw(canvas)
    pts = anatomy.to_image(canonical)
    if width is None:
        draw.polygon(pts, fill=255)
    else:
        draw.line(pts, fill=255, width=max(1, int(round(width))))
    return np.asarray(canvas) > 127


def band_mask(anatomy: Anatomy, y1: float, y2: float, x1: float = -1e4, x2: float = 1e4) -> np.ndarray:
    return polygon_mask(anatomy, [(x1, y1), (x2, y1), (x2, y2), (x1, y2)])


def disk(anatomy: Anatomy, x: float, y: float, r: float) -> list[Point]:
    t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    return [(x + r * math.cos(a), y + r * math.sin(a)) for a in t]


Box = tuple[float, float, float, float]


def mask_box(mask: np.ndarray) -> Box | None:
    """Pixel-edge box (x1, y1, x2, y2) of a mask; None when empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


@dataclass
class AnatomyMasks:
    """The masks the renderer and the region boxes share."""

    lungs: dict[str, np.ndarray]
    zones: dict[tuple[str, str], np.ndarray]  # (side, upper|mid|lower|apical)
    heart: np.ndarray
    mediastinum: np.ndarray
    trachea: np.ndarray
    spine: np.ndarray
    clavicles: dict[str, np.ndarray]
    hila: dict[str, np.ndarray]
    arch: np.ndarray
    domes: dict[str, np.ndarray]
    body: np.ndarray


def anatomy_masks(anatomy: Anatomy) -> AnatomyMasks:
    lungs = {side: polygon_mask(anatomy, anatomy.lung_polygon(side)) for side in SIDES}
    zones = {}
    for side in SIDES:
        for zone in ("upper", "mid", "lower", "apical"):
            y1, y2 = anatomy.zone_band(side, zone)
            if zone == "lower":
                y2 += anatomy.height  # everything below the mid zone, down to the deepest recess
            zones[(side, zone)] = lungs[side] & band_mask(anatomy, y1, y2)
    return AnatomyMasks(
        lungs=lungs,
        zones=zones,
        heart=polygon_mask(anatomy, anatomy.heart_polygon()),
        mediastinum=polygon_mask(anatomy, anatomy.mediastinum_polygon()),
        trachea=polygon_mask(anatomy, anatomy.trachea_polygon()),
        spine=polygon_mask(anatomy, anatomy.spine_polygon()),
        clavicles={side: polygon_mask(anatomy, anatomy.clavicle_polygon(side)) for side in SIDES},
        hila={side: polygon_mask(anatomy, disk(anatomy, *anatomy.hilum[side])) for side in SIDES},
        arch=polygon_mask(anatomy, disk(anatomy, *anatomy.arch)),
        domes={
            side: polygon_mask(anatomy, anatomy.dome_curve(side), width=max(2, 0.012 * anatomy.height))
            for side in SIDES
        },
        body=polygon_mask(anatomy, anatomy.body_polygon()),
    )


def _drawn_box(mask: np.ndarray) -> Box:
    """`mask_box` of a mask every phantom draws (an empty one would be a defect of the phantom)."""
    box = mask_box(mask)
    if box is None:
        raise ValueError("a region mask of the phantom is empty")
    return box


def _union(*boxes: Box) -> Box:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def _expand(box: Box, fx: float, fy: float, width: int, height: int) -> Box:
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) * fx, (y2 - y1) * fy
    return (max(0.0, x1 - dx), max(0.0, y1 - dy), min(float(width), x2 + dx), min(float(height), y2 + dy))


def region_boxes(anatomy: Anatomy, masks: AnatomyMasks) -> dict[str, Box]:
    """The 29 region boxes, each measured on the phantom's masks (pixel edges, original image)."""
    a, m, W, H = anatomy, masks, anatomy.width, anatomy.height
    boxes: dict[str, Box] = {}
    for side in SIDES:
        lung = _drawn_box(m.lungs[side])
        boxes[f"{side} lung"] = lung
        boxes[f"{side} upper lung zone"] = _drawn_box(m.zones[(side, "upper")])
        boxes[f"{side} mid lung zone"] = _drawn_box(m.zones[(side, "mid")])
        boxes[f"{side} lower lung zone"] = _drawn_box(m.zones[(side, "lower")])
        boxes[f"{side} apical zone"] = _drawn_box(m.zones[(side, "apical")])
        boxes[f"{side} hilar structures"] = _expand(_drawn_box(m.hila[side]), 0.35, 0.5, W, H)
        # Costophrenic angle: the lateral quarter of the lung's lowest tenth.
        sg = a.sign[side]
        lateral = a.cx + sg * a.half_thorax
        inner = lateral - sg * 0.35 * a.half_thorax
        recess = m.lungs[side] & band_mask(
            a,
            a.cp_y[side] - 0.1 * a.lung_length(side),
            a.cp_y[side] + 5,
            min(lateral, inner) - 5,
            max(lateral, inner) + 5,
        )
        boxes[f"{side} costophrenic angle"] = _expand(_drawn_box(recess), 0.15, 0.15, W, H)
        boxes[f"{side} hemidiaphragm"] = _expand(_drawn_box(m.domes[side]), 0.0, 0.25, W, H)
        boxes[f"{side} clavicle"] = _drawn_box(m.clavicles[side])
    trachea = _drawn_box(m.trachea)
    boxes["trachea"] = (trachea[0], trachea[1], trachea[2], a.to_image([(a.cx, a.carina_y)])[0][1] + 1)
    spine_band = m.spine & band_mask(a, a.apex_y - 0.05 * H, max(a.cp_y.values()))
    boxes["spine"] = _drawn_box(spine_band)
    boxes["aortic arch"] = _expand(_drawn_box(m.arch), 0.1, 0.1, W, H)
    heart = _drawn_box(m.heart)
    boxes["cardiac silhouette"] = heart
    upper_med = _drawn_box(m.mediastinum)
    boxes["mediastinum"] = _union(upper_med, heart)
    boxes["upper mediastinum"] = _drawn_box(m.mediastinum & band_mask(a, 0, a.arch[1] + a.arch[2]))
    carina = a.to_image([(a.cx, a.carina_y)])[0]
    r = 2.5 * a.trachea_half
    boxes["carina"] = (carina[0] - r, carina[1] - r, carina[0] + r, carina[1] + r)
    # SVC: the right upper mediastinal border, from the clavicles to the top of the heart.
    hx1, hy1 = a.heart[0], a.heart[1]
    svc = [
        (a.cx - a.mediastinum_half * 1.05, a.clavicle_y),
        (a.cx - 0.3 * a.mediastinum_half, a.clavicle_y),
        (a.cx - 0.3 * a.mediastinum_half, hy1 + 0.1 * (a.heart[3] - hy1)),
        (hx1 + 0.05 * (a.heart[2] - hx1), hy1 + 0.1 * (a.heart[3] - hy1)),
    ]
    boxes["svc"] = _drawn_box(polygon_mask(a, svc))
    junction = a.to_image([(a.cx - 0.6 * a.mediastinum_half, hy1 + 0.12 * (a.heart[3] - hy1))])[0]
    r = 0.06 * a.half_thorax
    boxes["cavoatrial junction"] = (junction[0] - r, junction[1] - r, junction[0] + r, junction[1] + r)
    right_heart = m.heart & polygon_mask(a, [(-1e4, -1e4), (a.cx, -1e4), (a.cx, 1e4), (-1e4, 1e4)])
    boxes["right atrium"] = _drawn_box(right_heart)
    below = max(a.cp_y.values())
    boxes["abdomen"] = (
        max(0.0, a.cx - 1.2 * a.half_thorax),
        min(float(H) - 2, max(a.dome_y.values()) + 0.03 * H),
        min(float(W), a.cx + 1.2 * a.half_thorax),
        min(float(H), below + 0.2 * H),
    )
    return {name: (float(x1), float(y1), float(x2), float(y2)) for name, (x1, y1, x2, y2) in boxes.items()}
