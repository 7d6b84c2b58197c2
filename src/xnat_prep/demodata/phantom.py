"""A deterministic 3D head phantom: labelled ellipsoids sampled at patient coordinates.

Coordinates are DICOM patient coordinates (LPS, millimetres) with the head centred at the
origin, so any slice geometry (sagittal T1, oblique-free axial EPI, ...) samples the same
anatomy and the converted volumes of one session line up.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np


class Tissue(IntEnum):
    BACKGROUND = 0
    SCALP = 1
    CSF = 2
    GM = 3
    WM = 4
    LESION = 5
    ACTIVE_GM = 6  # grey matter whose BOLD signal follows the task


@dataclass(frozen=True)
class Ellipsoid:
    center: tuple[float, float, float]  # mm, LPS
    semi_axes: tuple[float, float, float]  # mm, before the rotation
    angle_deg: float  # rotation about the z (S) axis
    tissue: Tissue


# Painted in order: later ellipsoids overwrite earlier ones (Shepp-Logan style, but labels).
HEAD: tuple[Ellipsoid, ...] = (
    Ellipsoid((0, 0, 0), (74, 94, 100), 0, Tissue.SCALP),
    Ellipsoid((0, 2, 4), (68, 87, 92), 0, Tissue.CSF),
    Ellipsoid((0, 3, 6), (65, 84, 88), 0, Tissue.GM),
    Ellipsoid((0, 5, 10), (55, 74, 72), 0, Tissue.WM),
    Ellipsoid((0, 68, 8), (30, 12, 20), 0, Tissue.ACTIVE_GM),
    Ellipsoid((11, 0, 2), (9, 13, 9), 0, Tissue.GM),
    Ellipsoid((-11, 0, 2), (9, 13, 9), 0, Tissue.GM),
    Ellipsoid((8, -4, 18), (5, 24, 11), 12, Tissue.CSF),
    Ellipsoid((-8, -4, 18), (5, 24, 11), -12, Tissue.CSF),
    Ellipsoid((32, -74, -42), (12, 12, 11), 0, Tissue.CSF),
    Ellipsoid((-32, -74, -42), (12, 12, 11), 0, Tissue.CSF),
    Ellipsoid((24, -28, 32), (6, 7, 6), 30, Tissue.LESION),
    Ellipsoid((-30, 22, 40), (4, 5, 4), 0, Tissue.LESION),
)

# Signal per tissue (index = Tissue) for each contrast, in 12-bit scanner-like units.
CONTRASTS: dict[str, tuple[float, ...]] = {
    #             bg  scalp  csf    gm    wm  lesion active
    "T1w": (0, 1500, 250, 1200, 1900, 700, 1200),
    "T2w": (0, 900, 3200, 1700, 1100, 2600, 1700),
    "FLAIR": (0, 1100, 150, 1600, 1200, 3200, 1600),
    "PD": (0, 1400, 2400, 2100, 1800, 2300, 2100),
    "BOLD": (0, 700, 1700, 1400, 1150, 1500, 1400),
    "DWI": (0, 400, 3000, 1900, 1600, 2600, 1900),
}

# Apparent diffusion coefficients (mm^2/s); white matter gets a fibre direction along x.
ADC = np.array([0.0, 0.4e-3, 3.0e-3, 0.8e-3, 0.7e-3, 0.5e-3, 0.8e-3], dtype=np.float32)
WM_PARALLEL, WM_PERPENDICULAR = 1.5e-3, 0.35e-3


def tissue_map(
    points: np.ndarray, scale: float = 1.0, shift: tuple[float, float, float] = (0, 0, 0)
) -> np.ndarray:
    """Label each point (array ``[..., 3]`` of LPS mm) with a `Tissue` (uint8 array ``[...]``).

    ``scale`` enlarges the head (per subject) and ``shift`` moves it (per session: the subject
    lies a little differently in the scanner each time).
    """
    p = (points.astype(np.float32) - np.asarray(shift, dtype=np.float32)) / np.float32(scale)
    labels = np.zeros(p.shape[:-1], dtype=np.uint8)
    for e in HEAD:
        d = p - np.asarray(e.center, dtype=np.float32)
        c, s = np.cos(np.radians(e.angle_deg)), np.sin(np.radians(e.angle_deg))
        u = (c * d[..., 0] + s * d[..., 1]) / e.semi_axes[0]
        v = (-s * d[..., 0] + c * d[..., 1]) / e.semi_axes[1]
        w = d[..., 2] / e.semi_axes[2]
        labels[u * u + v * v + w * w <= 1] = e.tissue
    return labels


def signal(labels: np.ndarray, contrast: str) -> np.ndarray:
    """Noise-free signal (float32) of a label array for one contrast."""
    return np.asarray(CONTRASTS[contrast], dtype=np.float32)[labels]


def diffusion_attenuation(labels: np.ndarray, bval: float, bvec: tuple[float, float, float]) -> np.ndarray:
    """exp(-b·ADC) per voxel; white matter is anisotropic (fibres along x), the rest isotropic."""
    adc = ADC[labels]
    wm = labels == Tissue.WM
    adc[wm] = WM_PERPENDICULAR + (WM_PARALLEL - WM_PERPENDICULAR) * bvec[0] ** 2
    return np.exp(-np.float32(bval) * adc)
