"""What a demo session contains: the series list for each size, and the edge-case series."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

SIZES = ("tiny", "small", "realistic")

Kind = Literal["mr", "localizer", "secondary_capture", "report"]
# How a series is made unconvertible on purpose (see `dicom.py`).
Defect = Literal["truncated_pixel_data"]


@dataclass(frozen=True)
class SeriesSpec:
    """One series: acquisition parameters and how many files it becomes."""

    number: int
    description: str
    kind: Kind = "mr"
    contrast: str = "T1w"
    orientation: Literal["ax", "sag", "cor"] = "ax"  # a localizer cycles sag, cor, ax
    rows: int = 64
    cols: int = 64
    pixel_spacing: tuple[float, float] = (3.0, 3.0)  # (between rows, between columns), mm
    slices: int = 1
    thickness: float = 3.0
    spacing: float = 3.0  # between slice centres; > thickness means a gap
    volumes: int = 1
    tr: float = 2000.0  # ms
    te: float = 30.0
    ti: float | None = None
    flip: float = 90.0
    acquisition: Literal["2D", "3D"] = "2D"
    sequence: str = "SE"  # ScanningSequence
    variant: str = "NONE"  # SequenceVariant
    sequence_name: str = "se2d1"
    bvals: tuple[float, ...] = ()  # one per volume for DWI
    bvecs: tuple[tuple[float, float, float], ...] = ()
    defect: Defect | None = None
    # several echoes in one series (their TEs, ms): each slice and volume is written once per echo
    echoes: tuple[float, ...] = ()
    # with echoes: the last echo is written again as a phase image (ImageType P), as a Philips
    # B0 map series holds magnitude and phase images together
    with_phase: bool = False

    @property
    def n_images(self) -> int:
        """Images per slice position and volume (echoes, plus the phase image)."""
        return max(1, len(self.echoes)) + (1 if self.with_phase else 0)

    @property
    def n_files(self) -> int:
        if self.kind in ("secondary_capture", "report"):
            return 1
        return self.slices * self.volumes * self.n_images


def hemisphere_directions(n: int) -> tuple[tuple[float, float, float], ...]:
    """``n`` well-spread unit vectors on the upper hemisphere (Fibonacci lattice), deterministic."""
    golden = math.pi * (3 - math.sqrt(5))
    dirs = []
    for i in range(n):
        z = 1 - (i + 0.5) / n  # (0, 1]: upper hemisphere only
        r = math.sqrt(1 - z * z)
        dirs.append((round(r * math.cos(golden * i), 6), round(r * math.sin(golden * i), 6), round(z, 6)))
    return tuple(dirs)


def dwi_scheme(
    b0: int, shells: dict[float, int]
) -> tuple[tuple[float, ...], tuple[tuple[float, float, float], ...]]:
    """b-values and unit vectors: ``b0`` unweighted volumes, then each shell's directions."""
    bvals: list[float] = [0.0] * b0
    bvecs: list[tuple[float, float, float]] = [(0.0, 0.0, 0.0)] * b0
    for b, n in shells.items():
        bvals += [b] * n
        bvecs += hemisphere_directions(n)
    return tuple(bvals), tuple(bvecs)


def _bold(number: int, description: str, matrix: int, slices: int, volumes: int, voxel: float, tr: float):
    return SeriesSpec(
        number,
        description,
        contrast="BOLD",
        rows=matrix,
        cols=matrix,
        pixel_spacing=(voxel, voxel),
        slices=slices,
        thickness=voxel,
        spacing=voxel,
        volumes=volumes,
        tr=tr,
        te=30,
        flip=77,
        sequence="EP",
        variant="SK\\SS",
        sequence_name="epfid2d1",
    )


def _dwi(number: int, matrix: int, slices: int, voxel: float, b0: int, shells: dict[float, int]):
    bvals, bvecs = dwi_scheme(b0, shells)
    return SeriesSpec(
        number,
        "DWI_dir" + str(len(bvals) - b0),
        contrast="DWI",
        rows=matrix,
        cols=matrix,
        pixel_spacing=(voxel, voxel),
        slices=slices,
        thickness=voxel,
        spacing=voxel,
        volumes=len(bvals),
        tr=max(3000.0, 80.0 * slices),
        te=80,
        sequence="EP",
        variant="SK\\SS",
        sequence_name="ep_b",
        bvals=bvals,
        bvecs=bvecs,
    )


def _localizer(matrix: int, fov: float) -> SeriesSpec:
    return SeriesSpec(
        1,
        "localizer",
        kind="localizer",
        contrast="PD",
        rows=matrix,
        cols=matrix,
        pixel_spacing=(fov / matrix, fov / matrix),
        slices=3,
        thickness=7,
        spacing=7,
        tr=8.6,
        te=4,
        flip=20,
        sequence="GR",
        variant="SP",
        sequence_name="fl2d1",
    )


def _t1(number: int, matrix: int, slices: int, voxel: float) -> SeriesSpec:
    return SeriesSpec(
        number,
        "T1w_MPRAGE",
        contrast="T1w",
        orientation="sag",
        rows=matrix,
        cols=matrix,
        pixel_spacing=(voxel, voxel),
        slices=slices,
        thickness=voxel,
        spacing=voxel,
        tr=2300,
        te=2.98,
        ti=900,
        flip=9,
        acquisition="3D",
        sequence="GR\\IR",
        variant="SK\\SP\\MP",
        sequence_name="tfl3d1",
    )


def _t2(number: int, matrix: int, slices: int, in_plane: float, thickness: float) -> SeriesSpec:
    return SeriesSpec(
        number,
        "T2w_TSE",
        contrast="T2w",
        rows=matrix,
        cols=matrix,
        pixel_spacing=(in_plane, in_plane),
        slices=slices,
        thickness=thickness,
        spacing=thickness,
        tr=6000,
        te=100,
        flip=150,
        variant="SK\\SP",
        sequence_name="tse2d1_15",
    )


def _flair(number: int, rows: int, cols: int, slices: int, in_plane: float, thickness: float) -> SeriesSpec:
    # Rows != columns and a slice gap: the shape and spacing checks must not assume a square stack.
    return SeriesSpec(
        number,
        "FLAIR",
        contrast="FLAIR",
        orientation="cor",
        rows=rows,
        cols=cols,
        pixel_spacing=(in_plane, in_plane),
        slices=slices,
        thickness=thickness,
        spacing=thickness * 1.2,
        tr=9000,
        te=81,
        ti=2500,
        flip=150,
        sequence="SE\\IR",
        variant="SK\\SP\\MP",
        sequence_name="tir2d1_16",
    )


PROTOCOLS: dict[str, tuple[SeriesSpec, ...]] = {
    # whole session well under 2 MB; still one 3D, one 4D and one DWI series
    "tiny": (
        _localizer(32, 256),
        _t1(2, 32, 24, 8.0),
        _bold(3, "fMRI_rest", 16, 8, 6, 12.0, 1000),
        _dwi(4, 16, 8, 12.0, 1, {1000: 6}),
    ),
    # a few MB
    "small": (
        _localizer(128, 256),
        _t1(2, 64, 48, 4.0),
        _t2(3, 64, 20, 3.5, 6.0),
        _flair(4, 56, 64, 16, 3.5, 6.0),
        _bold(5, "fMRI_rest", 64, 16, 10, 3.5, 1000),
        _dwi(6, 64, 16, 3.5, 1, {1000: 6}),
    ),
    # a real scanner session, ~200 MB
    "realistic": (
        _localizer(256, 256),
        _t1(2, 256, 176, 1.0),
        _t2(3, 256, 48, 0.9, 3.0),
        _flair(4, 256, 224, 40, 0.9, 4.0),
        _bold(5, "fMRI_rest", 64, 36, 150, 3.0, 2000),
        _bold(6, "fMRI_task", 64, 36, 150, 3.0, 2000),
        _dwi(7, 96, 50, 2.5, 5, {1000: 30, 2000: 30}),
    ),
}


def edge_case_series(base: tuple[SeriesSpec, ...]) -> tuple[SeriesSpec, ...]:
    """Series the workflow must cope with, numbered after ``base``.

    - a repeat of the first 3D series with the same SeriesDescription (duplicate scan type)
    - an MR series with an empty SeriesDescription (scan without a type)
    - a Secondary Capture screenshot and a Basic Text SR report (non-image: to be skipped)
    - an MR series whose pixel data is cut short (dcm2niix must fail on it)
    """
    n = max(s.number for s in base)
    t1 = next(s for s in base if s.acquisition == "3D")
    small_2d = SeriesSpec(
        0,
        "",
        contrast="PD",
        rows=32,
        cols=32,
        pixel_spacing=(7.0, 7.0),
        slices=6,
        thickness=7,
        spacing=7,
        tr=3000,
        te=12,
        flip=90,
    )
    return (
        replace(t1, number=n + 1),
        replace(small_2d, number=n + 2, description=""),
        SeriesSpec(n + 3, "Screen Save", kind="secondary_capture", rows=240, cols=320),
        SeriesSpec(n + 4, "Radiology Report", kind="report"),
        replace(
            small_2d, number=n + 5, description="T2w_broken", contrast="T2w", defect="truncated_pixel_data"
        ),
    )


PROTOCOL_NAMES = ("default", "bids", "reproin")


def bids_protocol(size: str, reproin: bool = False) -> tuple[SeriesSpec, ...]:
    """A BIDS-typical session: series named as a scanner names them (``reproin``: ReproIn names).

    Multi-run task BOLD with SBRef (a cancelled and repeated run: run 2 stopped after 2 volumes),
    a spin-echo fieldmap pair (AP, PA), a GRE fieldmap (two magnitude echoes and a phase image in
    one series, as Philips writes it), multi-echo BOLD, DWI, a T1w and a non-image series.
    """
    m = {"tiny": 16, "small": 32, "realistic": 64}[size]
    slices, voxel = (8, 12.0) if size == "tiny" else (16, 192 / m)
    volumes = {"tiny": 6, "small": 10, "realistic": 100}[size]
    names = {
        "scout": "AAHead_Scout",
        "t1": "T1w_MPR",
        "se_ap": "SpinEchoFieldMap_AP",
        "se_pa": "SpinEchoFieldMap_PA",
        "sbref": "tfMRI_nback_AP_SBRef",
        "bold": "tfMRI_nback_AP",
        "gre": "gre_field_mapping",
        "me": "rfMRI_REST_ME_AP",
        "dwi": "dMRI_dir6_AP",
        "report": "PhoenixZIPReport",
    }
    if reproin:
        names |= {
            "scout": "anat-scout",
            "t1": "anat-T1w",
            "se_ap": "fmap-epi_acq-se_dir-AP",
            "se_pa": "fmap-epi_acq-se_dir-PA",
            "sbref": "func-sbref_task-nback_dir-AP",
            "bold": "func-bold_task-nback_dir-AP",
            "gre": "fmap-fieldmap_acq-gre",
            "me": "func-bold_task-rest_acq-me_dir-AP",
            "dwi": "dwi-dwi_acq-dir6_dir-AP",
            "report": "PhoenixZIPReport",
        }

    def bold(number: int, key: str, n: int) -> SeriesSpec:
        return _bold(number, names[key], m, slices, n, voxel, 1000)

    t1 = _t1(2, m * 2, slices * 3, voxel / 2)
    se = replace(bold(3, "se_ap", 1), te=60, sequence="SE", variant="SK", sequence_name="epse2d1")
    bvals, bvecs = dwi_scheme(1, {1000: 6})
    series = [
        replace(_localizer(32, 256), description=names["scout"]),
        replace(t1, description=names["t1"]),
        se,
        replace(se, number=4, description=names["se_pa"]),
        bold(5, "sbref", 1),
        bold(6, "bold", volumes),
        bold(7, "sbref", 1),
        bold(8, "bold", 2),  # cancelled after 2 volumes
        bold(9, "sbref", 1),
        bold(10, "bold", volumes),  # the repeat
        bold(11, "sbref", 1),
        bold(12, "bold", volumes),
        replace(
            bold(13, "gre", 1),
            te=4.92,
            tr=500,
            flip=60,
            sequence="GR",
            variant="SP",
            sequence_name="fm2d2r",
            echoes=(4.92, 7.38),
            with_phase=True,
        ),
        replace(bold(14, "me", volumes), echoes=(14.0, 38.0, 62.0)),
        replace(_dwi(15, m, slices, voxel, 1, {1000: 6}), description=names["dwi"], bvals=bvals, bvecs=bvecs),
        SeriesSpec(16, names["report"], kind="secondary_capture", rows=240, cols=320),
    ]
    return tuple(series)


def session_protocol(
    size: str, edge_cases: bool = False, protocol: str = "default"
) -> tuple[SeriesSpec, ...]:
    """The series of one session of ``size``, plus the edge cases if asked for (``protocol``:
    default, or the BIDS-typical ``bids`` / ``reproin`` session)."""
    if protocol != "default":
        return bids_protocol(size, reproin=protocol == "reproin")
    base = PROTOCOLS[size]
    return base + edge_case_series(base) if edge_cases else base
