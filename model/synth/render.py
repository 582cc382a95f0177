"""Lesions of a phantom (the image truth) and the radiograph rendered from anatomy + lesions.

The image is an attenuation map turned into brightness the way film does it (dense = bright):
soft tissue, air-filled lungs, heart, mediastinum, bones and vessels, plus each lesion's own
density or lucency placed where it belongs. `sample_lesions` decides what is present and where;
`render` only draws. Lesion positions are image pixels, so the region boxes of the same anatomy
say which regions hold each lesion.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from model.synth.anatomy import SIDES, Anatomy, AnatomyMasks, polygon_mask

SEVERITIES = ("mild", "moderate", "severe")
SEVERITY_WEIGHTS = (0.5, 0.35, 0.15)
SEVERITY_SCALE = {"mild": 0.6, "moderate": 1.0, "severe": 1.45}
ZONES = ("upper", "mid", "lower")

# Findings the phantom can show (Chest ImaGenome names) -> default prevalence per study.
DEFAULT_PREVALENCE: dict[str, float] = {
    "lung opacity": 0.12,
    "consolidation": 0.08,
    "atelectasis": 0.1,
    "linear/patchy atelectasis": 0.07,
    "pulmonary edema/hazy opacity": 0.08,
    "pleural effusion": 0.14,
    "pneumothorax": 0.05,
    "enlarged cardiac silhouette": 0.14,
    "mass/nodule (not otherwise specified)": 0.06,
    "calcified nodule": 0.05,
    "enlarged hilum": 0.04,
    "elevated hemidiaphragm": 0.05,
    "rib fracture": 0.04,
    "scoliosis": 0.05,
    "mediastinal widening": 0.03,
    "clavicle fracture": 0.02,
}
RENDERED_FINDINGS = tuple(DEFAULT_PREVALENCE)
# Findings drawn by changing the anatomy itself rather than adding a patch.
ANATOMY_FINDINGS = (
    "enlarged cardiac silhouette",
    "scoliosis",
    "mediastinal widening",
    "elevated hemidiaphragm",
    "enlarged hilum",
)


@dataclass
class Lesion:
    """One lesion of the image truth. `parts` are its pieces (one per side for bilateral ones),
    each with a centre in image pixels; `home` are the regions a reader would name for it."""

    finding: str
    sides: tuple[str, ...]
    severity: str
    subtle: bool = False
    zone: str | None = None
    parts: list[dict[str, Any]] = field(default_factory=list)
    home: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)


def choose_findings(rng: np.random.Generator, prevalence: dict[str, float]) -> list[str]:
    return [name for name in RENDERED_FINDINGS if rng.random() < prevalence.get(name, 0.0)]


def anatomy_parameters(rng: np.random.Generator, findings: list[str]) -> tuple[dict[str, Any], dict[str, Lesion]]:
    """Arguments of `sample_anatomy` for the anatomy-shaped findings, with their lesions (parts filled later)."""
    kwargs: dict[str, Any] = {}
    lesions: dict[str, Lesion] = {}
    for name in findings:
        if name not in ANATOMY_FINDINGS:
            continue
        severity = str(rng.choice(SEVERITIES, p=SEVERITY_WEIGHTS))
        k = SEVERITY_SCALE[severity]
        if name == "enlarged cardiac silhouette":
            kwargs["ctr"] = float(min(0.72, 0.53 + 0.07 * k + rng.uniform(0, 0.04)))
            lesions[name] = Lesion(name, (), severity, home=("cardiac silhouette",))
        elif name == "scoliosis":
            kwargs["scoliosis"] = float(rng.choice([-1, 1]) * 0.09 * k)
            lesions[name] = Lesion(name, (), severity, home=("spine",))
        elif name == "mediastinal widening":
            kwargs["mediastinal_widening"] = 1.5 + 0.35 * k
            lesions[name] = Lesion(name, (), severity, home=("mediastinum",))
        elif name == "elevated hemidiaphragm":
            side = str(rng.choice(SIDES))
            kwargs["elevated"] = {side: 0.045 + 0.035 * k}
            lesions[name] = Lesion(name, (side,), severity, home=(f"{side} hemidiaphragm",))
        elif name == "enlarged hilum":
            sides = SIDES if rng.random() < 0.4 else (str(rng.choice(SIDES)),)
            kwargs["hilum_scale"] = {side: 1.5 + 0.45 * k for side in sides}
            lesions[name] = Lesion(name, tuple(sides), severity, home=tuple(f"{s} hilar structures" for s in sides))
    return kwargs, lesions


def _point_in(rng: np.random.Generator, mask: np.ndarray, clearance: float) -> tuple[float, float]:
    """A random pixel of `mask` at least `clearance` pixels from its edge (or its deepest pixels)."""
    depth = np.asarray(ndimage.distance_transform_edt(mask))
    ok = depth >= min(clearance, depth.max() * 0.8)
    ys, xs = np.nonzero(ok)
    i = int(rng.integers(len(xs)))
    return float(xs[i]) + 0.5, float(ys[i]) + 0.5


def _zone_name(side: str, zone: str) -> str:
    return f"{side} apical zone" if zone == "apical" else f"{side} {zone} lung zone"


def sample_lesions(
    rng: np.random.Generator,
    anatomy: Anatomy,
    masks: AnatomyMasks,
    findings: list[str],
    anatomy_lesions: dict[str, Lesion],
) -> list[Lesion]:
    """Place every chosen finding on this anatomy."""
    lesions: list[Lesion] = []
    for name in findings:
        if name in anatomy_lesions:
            lesion = anatomy_lesions[name]
            lesion.parts = _anatomy_parts(anatomy, masks, lesion)
            lesions.append(lesion)
            continue
        severity = str(rng.choice(SEVERITIES, p=SEVERITY_WEIGHTS))
        place = _PLACERS.get(name)
        placed = place(rng, anatomy, masks, name, severity) if place else None
        if placed is not None:
            lesions.append(placed)
    return lesions


def _anatomy_parts(a: Anatomy, masks: AnatomyMasks, lesion: Lesion) -> list[dict[str, Any]]:
    """Where a finding drawn through the anatomy itself shows (it draws no random numbers)."""
    name = lesion.finding
    if name == "enlarged cardiac silhouette":
        ys, xs = np.nonzero(masks.heart)
        return [{"center": (float(xs.mean()), float(ys.mean()))}]
    if name == "scoliosis":
        mid_y = (a.apex_y + max(a.cp_y.values())) / 2
        return [{"center": a.to_image([(float(a.spine_x(mid_y)), mid_y)])[0]}]
    if name == "mediastinal widening":
        return [{"center": a.to_image([(a.cx, a.apex_y + 0.1 * a.height)])[0]}]
    if name == "elevated hemidiaphragm":
        dome = a.to_image(a.dome_curve(lesion.sides[0]))
        top = min(dome, key=lambda p: p[1])
        return [{"center": (top[0], top[1] + 0.01 * a.height)}]
    if name == "enlarged hilum":
        return [{"center": a.to_image([a.hilum[s][:2]])[0]} for s in lesion.sides]
    return lesion.parts


# Each placer draws, in a fixed order, the random numbers of one kind of finding (after its
# severity) and returns its lesion, or None where this anatomy leaves no room for it.
def _place_focal(rng: np.random.Generator, a: Anatomy, masks: AnatomyMasks, name: str, severity: str) -> Lesion:
    """Opacity, consolidation, nodules: one zone, one side (or both, for some opacities)."""
    k, ht = SEVERITY_SCALE[severity], a.half_thorax
    zone = str(rng.choice(ZONES, p=(0.3, 0.3, 0.4) if name != "consolidation" else (0.15, 0.35, 0.5)))
    bilateral = name == "lung opacity" and rng.random() < 0.2
    sides = SIDES if bilateral else (str(rng.choice(SIDES)),)
    radius = {
        "lung opacity": 0.13 * ht * k,
        "consolidation": 0.12 * ht * k,
        "mass/nodule (not otherwise specified)": (0.035 + 0.04 * (k - 0.6)) * ht,
        "calcified nodule": 0.02 * ht,
    }[name]
    parts = [{"center": _point_in(rng, masks.zones[(s, zone)], radius * 0.6), "radius": radius} for s in sides]
    return Lesion(name, sides, severity, zone=zone, parts=parts, home=tuple(_zone_name(s, zone) for s in sides))


def _place_atelectasis(rng: np.random.Generator, a: Anatomy, masks: AnatomyMasks, name: str, severity: str) -> Lesion:
    k, ht = SEVERITY_SCALE[severity], a.half_thorax
    zone = "lower" if name == "atelectasis" or rng.random() < 0.7 else "mid"
    bilateral = rng.random() < (0.2 if name == "atelectasis" else 0.35)
    sides = SIDES if bilateral else (str(rng.choice(SIDES)),)
    size = (0.16 if name == "atelectasis" else 0.2) * ht * k
    parts = [
        {
            "center": _point_in(rng, masks.zones[(s, zone)], size * 0.5),
            "radius": size,
            "angle": float(rng.uniform(-0.35, 0.35)),
        }
        for s in sides
    ]
    return Lesion(name, sides, severity, zone=zone, parts=parts, home=tuple(_zone_name(s, zone) for s in sides))


def _place_edema(rng: np.random.Generator, a: Anatomy, masks: AnatomyMasks, name: str, severity: str) -> Lesion:
    k, ht = SEVERITY_SCALE[severity], a.half_thorax
    parts = []
    for s in SIDES:
        hx, hy = a.to_image([a.hilum[s][:2]])[0]
        parts.append({"center": (hx + a.sign[s] * 0.22 * ht, hy), "radius": 0.35 * ht * (0.8 + 0.2 * k)})
    return Lesion(name, SIDES, severity, parts=parts, home=("right lung", "left lung"))


def _place_effusion(
    rng: np.random.Generator, a: Anatomy, masks: AnatomyMasks, name: str, severity: str
) -> Lesion | None:
    sides = SIDES if rng.random() < 0.35 else (str(rng.choice(SIDES)),)
    parts = []
    for s in sides:
        depth = {"mild": 0.045, "moderate": 0.1, "severe": 0.18}[severity] * a.height
        fluid = _effusion_mask(a, masks, s, depth)
        ys, xs = np.nonzero(fluid)
        if len(xs) == 0:
            continue
        parts.append({"center": (float(xs.mean()), float(ys.mean())), "depth": depth})
    if not parts:
        return None
    placed = sides[: len(parts)]
    return Lesion(name, placed, severity, parts=parts, home=tuple(f"{s} lung" for s in placed))


def _place_pneumothorax(
    rng: np.random.Generator, a: Anatomy, masks: AnatomyMasks, name: str, severity: str
) -> Lesion | None:
    side = str(rng.choice(SIDES))
    shrink = {"mild": 0.07, "moderate": 0.14, "severe": 0.24}[severity]
    rim = _pneumothorax_rim(a, masks, side, shrink)
    ys, xs = np.nonzero(rim)
    if not len(xs):
        return None
    parts = [{"center": (float(xs.mean()), float(ys.mean())), "shrink": shrink}]
    return Lesion(name, (side,), severity, parts=parts, home=(f"{side} lung",))


def _place_rib_fracture(rng: np.random.Generator, a: Anatomy, masks: AnatomyMasks, name: str, severity: str) -> Lesion:
    side = str(rng.choice(SIDES))
    rib = int(rng.integers(3, 8))
    u = float(rng.uniform(0.6, 0.85))
    parts = [{"center": _rib_point(a, side, rib, u)}]
    return Lesion(name, (side,), severity, parts=parts, home=(f"{side} lung",), params={"rib": rib, "u": u})


def _place_clavicle_fracture(
    rng: np.random.Generator, a: Anatomy, masks: AnatomyMasks, name: str, severity: str
) -> Lesion:
    side = str(rng.choice(SIDES))
    poly = a.clavicle_polygon(side)
    mid = ((poly[1][0] + poly[4][0]) / 2, (poly[1][1] + poly[4][1]) / 2)
    return Lesion(name, (side,), severity, parts=[{"center": a.to_image([mid])[0]}], home=(f"{side} clavicle",))


_PLACERS: dict[str, Callable[[np.random.Generator, Anatomy, AnatomyMasks, str, str], Lesion | None]] = {
    "lung opacity": _place_focal,
    "consolidation": _place_focal,
    "mass/nodule (not otherwise specified)": _place_focal,
    "calcified nodule": _place_focal,
    "atelectasis": _place_atelectasis,
    "linear/patchy atelectasis": _place_atelectasis,
    "pulmonary edema/hazy opacity": _place_edema,
    "pleural effusion": _place_effusion,
    "pneumothorax": _place_pneumothorax,
    "rib fracture": _place_rib_fracture,
    "clavicle fracture": _place_clavicle_fracture,
}


def _rib_index(side: str, rib: int) -> int:
    return SIDES.index(side) * 10 + rib


def _rib_point(a: Anatomy, side: str, rib: int, u: float) -> tuple[float, float]:
    line = a.ribs()[_rib_index(side, rib)]
    i = min(len(line) - 1, int(round(u * (len(line) - 1))))
    return a.to_image([line[i]])[0]


def _effusion_mask(a: Anatomy, masks: AnatomyMasks, side: str, depth: float) -> np.ndarray:
    """Fluid in the lung's dependent part, its surface a meniscus climbing the lateral wall."""
    sg = a.sign[side]
    lateral = a.cx + sg * a.half_thorax
    level = a.cp_y[side] - depth
    pts = []
    for u in np.linspace(0, 1, 20):
        x = lateral + (a.cx - lateral) * u
        pts.append((x, level + 0.6 * depth * u**0.5 - 0.25 * depth * (1 - u) ** 3))
    pts += [(a.cx, a.height * 2), (lateral + sg * 50, a.height * 2), (lateral + sg * 50, pts[0][1])]
    return masks.lungs[side] & polygon_mask(a, pts)


def _pneumothorax_rim(a: Anatomy, masks: AnatomyMasks, side: str, shrink: float) -> np.ndarray:
    collapsed = polygon_mask(a, a.lung_polygon(side, shrink=shrink))
    upper = polygon_mask(a, [(-1e4, -1e4), (1e4, -1e4), (1e4, a.hilum[side][1]), (-1e4, a.hilum[side][1])])
    return masks.lungs[side] & ~collapsed & upper


# --- drawing --------------------------------------------------------------------------------------
def _blur(mask: np.ndarray | np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(mask.astype(np.float32), sigma) if sigma > 0.3 else mask.astype(np.float32)


def _gaussian(shape: tuple[int, int], x: float, y: float, sx: float, sy: float) -> np.ndarray:
    h, w = shape
    gx = np.exp(-0.5 * ((np.arange(w, dtype=np.float32) + 0.5 - x) / sx) ** 2)
    gy = np.exp(-0.5 * ((np.arange(h, dtype=np.float32) + 0.5 - y) / sy) ** 2)
    return np.outer(gy, gx)


def _vessels(rng: np.random.Generator, a: Anatomy, shape: tuple[int, int]) -> np.ndarray:
    """Branching vascular markings fanning out from each hilum, thinning to the periphery."""
    canvas = Image.new("L", (shape[1], shape[0]), 0)
    draw = ImageDraw.Draw(canvas)
    base_width = max(1.0, 0.006 * a.height)

    def branch(x, y, angle, length, width, depth):
        x2, y2 = x + math.cos(angle) * length, y + math.sin(angle) * length
        draw.line([(x, y), (x2, y2)], fill=int(150 + 100 * min(1.0, width / 3)), width=max(1, int(round(width))))
        if depth < 3:
            for turn in (-0.45, 0.4):
                branch(x2, y2, angle + turn + rng.normal(0, 0.15), length * 0.62, width * 0.7, depth + 1)

    for side in SIDES:
        hx, hy = a.to_image([a.hilum[side][:2]])[0]
        outward = math.pi if a.sign[side] < 0 else 0.0
        for angle in np.linspace(-1.25, 1.25, 6):
            direction = outward + a.sign[side] * 0.0 + (angle if a.sign[side] > 0 else -angle)
            branch(hx, hy, direction + rng.normal(0, 0.1), a.half_thorax * rng.uniform(0.3, 0.4), base_width * 2, 0)
    return np.asarray(canvas, dtype=np.float32) / 255.0


def _ribs(a: Anatomy, shape: tuple[int, int], fracture: tuple[str, int, float] | None) -> np.ndarray:
    canvas = Image.new("L", (shape[1], shape[0]), 0)
    draw = ImageDraw.Draw(canvas)
    width = max(1, int(round(0.011 * a.height)))
    for index, line in enumerate(a.ribs()):
        pts = a.to_image(line)
        if fracture is not None and index == _rib_index(fracture[0], fracture[1]):
            cut = min(len(pts) - 2, int(round(fracture[2] * (len(pts) - 1))))
            step = 0.012 * a.height
            draw.line(pts[:cut] + [pts[cut]], fill=255, width=width)
            # The outer piece is displaced and separated by a gap: a visible step in the cortex.
            outer = [(x + 0.6 * step, y + step) for x, y in pts[cut:]]
            gx, gy = outer[0]
            nx, ny = outer[1]
            norm = math.hypot(nx - gx, ny - gy) or 1.0
            outer[0] = (gx + (nx - gx) / norm * step * 0.8, gy + (ny - gy) / norm * step * 0.8)
            draw.line(outer, fill=255, width=width)
        else:
            draw.line(pts, fill=255, width=width)
    return np.asarray(canvas, dtype=np.float32) / 255.0


def render(rng: np.random.Generator, anatomy: Anatomy, masks: AnatomyMasks, lesions: list[Lesion]) -> np.ndarray:
    """The radiograph as uint8 [H, W]."""
    a, m = anatomy, masks
    shape = (a.height, a.width)
    soft = 0.004 * a.height
    by_name = {lesion.finding: lesion for lesion in lesions}

    lungs = m.lungs["right"] | m.lungs["left"]
    aerated = lungs.copy()
    vessel_space = lungs.copy()
    lucency = np.zeros(shape, np.float32)
    pleural_line = np.zeros(shape, np.float32)
    if "pneumothorax" in by_name:
        lesion = by_name["pneumothorax"]
        side, shrink = lesion.sides[0], lesion.parts[0]["shrink"]
        rim = _pneumothorax_rim(a, m, side, shrink)
        vessel_space &= ~rim
        fade = 0.45 if lesion.subtle else 1.0
        lucency += fade * 0.12 * rim
        edge = rim & ndimage.binary_dilation(~rim & m.lungs[side], iterations=1)
        pleural_line += fade * edge

    attenuation = 0.72 * _blur(m.body, 3 * soft)
    attenuation -= 0.6 * _blur(aerated, soft)
    attenuation += 0.5 * _blur(m.heart, soft) + 0.3 * _blur(m.mediastinum, soft) + 0.22 * _blur(m.arch, soft)
    attenuation += 0.28 * sum(_blur(h, 2 * soft) for h in m.hila.values())
    attenuation += 0.32 * _blur(m.spine, soft) - 0.18 * _blur(m.trachea, soft)
    fracture = None
    if "rib fracture" in by_name:
        lesion = by_name["rib fracture"]
        fracture = (lesion.sides[0], lesion.params["rib"], lesion.params["u"])
    attenuation += 0.2 * _blur(_ribs(a, shape, fracture), soft * 0.6)
    clavicles = np.sum([*m.clavicles.values()], axis=0)  # int counts, as a sum of the masks
    if "clavicle fracture" in by_name:
        lesion = by_name["clavicle fracture"]
        x, y = lesion.parts[0]["center"]
        gap = polygon_mask(
            a, [(x - 0.006 * a.height, -1e4), (x + 0.006 * a.height, -1e4), (x + 0.012 * a.height, 1e4), (x, 1e4)]
        )
        clavicles = clavicles * ~gap
    attenuation += 0.34 * _blur(clavicles, soft * 0.6)
    attenuation += 0.13 * _blur(_vessels(rng, a, shape) * vessel_space, soft * 0.5)
    attenuation -= lucency
    attenuation += 0.12 * _blur(pleural_line, soft * 0.4)
    # Gastric air under the left hemidiaphragm.
    gx, gy = a.to_image([(a.cx + 0.5 * a.half_thorax, a.dome_y["left"] + 0.05 * a.height)])[0]
    attenuation -= 0.25 * _gaussian(shape, gx, gy, 0.12 * a.half_thorax, 0.035 * a.height) * (rng.random() < 0.8)

    for lesion in lesions:
        attenuation += _lesion_density(rng, a, m, lesion, shape, soft)

    attenuation = np.clip(attenuation, 0, None)
    image = 1.0 - np.exp(-a.exposure * attenuation)
    image = np.clip(image, 0, 1) ** a.gamma
    image = 0.04 + 0.92 * image + rng.normal(0, a.noise, shape).astype(np.float32)
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def _lesion_density(
    rng: np.random.Generator, a: Anatomy, m: AnatomyMasks, lesion: Lesion, shape: tuple[int, int], soft: float
) -> np.ndarray:
    """A lesion's extra attenuation (0 for those drawn through the anatomy or the lucency)."""
    k = SEVERITY_SCALE[lesion.severity]
    fade = 0.4 if lesion.subtle else 1.0
    out = np.zeros(shape, np.float32)
    name = lesion.finding
    lungs = {s: _blur(m.lungs[s], soft) for s in lesion.sides} if lesion.sides else {}
    for part, side in zip(lesion.parts, lesion.sides or ("",) * len(lesion.parts)):  # "": a lesion with no side
        x, y = part["center"]
        r = part.get("radius", 0.0)
        if name == "lung opacity":
            out += 0.28 * k * _gaussian(shape, x, y, r * 0.55, r * 0.45) * lungs[side]
        elif name == "consolidation":
            blob = np.zeros(shape, np.float32)
            for _ in range(3):
                dx, dy = rng.normal(0, 0.35 * r, 2)
                blob = np.maximum(blob, _gaussian(shape, x + dx, y + dy, r * 0.45, r * 0.38))
            dense = np.clip(blob * 1.6, 0, 1) ** 0.7
            # Air bronchograms: a few branching dark lines through the consolidated lung.
            canvas = Image.new("L", (shape[1], shape[0]), 0)
            draw = ImageDraw.Draw(canvas)
            for angle in rng.uniform(0, 2 * math.pi, 3):
                draw.line(
                    [(x, y), (x + math.cos(angle) * r * 0.7, y + math.sin(angle) * r * 0.7)],
                    fill=255,
                    width=max(1, int(0.004 * a.height)),
                )
            bronchi = np.asarray(canvas, np.float32) / 255.0
            out += (0.5 * k * dense - 0.12 * bronchi * dense) * lungs[side]
        elif name == "mass/nodule (not otherwise specified)":
            disk = _gaussian(shape, x, y, r, r) > math.exp(-0.5)
            out += 0.42 * _blur(disk, max(0.5, r * 0.15))
        elif name == "calcified nodule":
            disk = _gaussian(shape, x, y, r, r) > math.exp(-0.5)
            out += 0.9 * _blur(disk, 0.5)
        elif name in ("atelectasis", "linear/patchy atelectasis"):
            angle = part["angle"]
            if name == "atelectasis":
                # A wedge of collapsed lung, apex toward the hilum.
                hx, hy = a.to_image([a.hilum[side][:2]])[0]
                tip = (x + 0.5 * (hx - x), y + 0.5 * (hy - y))
                base = [
                    (x + r * 0.6 * math.cos(angle + 1.4), y + r * 0.6 * math.sin(angle + 1.4) + r * 0.2),
                    (x - r * 0.6 * math.cos(angle + 1.4), y - r * 0.6 * math.sin(angle + 1.4) + r * 0.2),
                ]
                canvas = Image.new("L", (shape[1], shape[0]), 0)
                ImageDraw.Draw(canvas).polygon([tip, *base], fill=255)
                out += 0.32 * k * _blur(np.asarray(canvas) > 127, 2 * soft) * lungs[side]
            else:
                canvas = Image.new("L", (shape[1], shape[0]), 0)
                dx, dy = math.cos(angle) * r * 0.5, math.sin(angle) * r * 0.5
                ImageDraw.Draw(canvas).line(
                    [(x - dx, y - dy), (x + dx, y + dy)], fill=255, width=max(1, int(round(0.008 * a.height)))
                )
                out += 0.3 * (0.7 + 0.3 * k) * _blur(np.asarray(canvas) > 127, soft) * lungs[side]
        elif name == "pulmonary edema/hazy opacity":
            out += 0.26 * k * _gaussian(shape, x, y, r * 0.7, r * 0.9) * lungs[side]
        elif name == "pleural effusion":
            fluid = _effusion_mask(a, m, side, part["depth"])
            out += 0.75 * _blur(fluid, 2 * soft)
    return out * fade
