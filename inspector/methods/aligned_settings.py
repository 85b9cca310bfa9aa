"""The aligned-neighbour map's settings (inspector/methods/aligned.py, global context's
``aligned_map``): what a user configures, what the fixed-pose rule decided, and what the bundle keeps."""
from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import Field, model_validator
from typing_extensions import Annotated

from inspector.methods.base import MethodConfig, StrictJson

Positive = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
Weight = Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Cells = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=4, max_length=4)]  # y0, y1, x0, x1 of the grid


class PoseDecision(StrictJson):
    """What ``aligned_map: {enabled: auto}`` decided at calibration (calibration/methods/pose.py)."""

    enabled: bool
    twin_ratio: Optional[float] = None  # the golden images' statistic; None: too few images to judge
    cut: float  # on at or above it
    images: Annotated[int, Field(ge=0)]  # original golden images the rule saw
    reason: str


class AlignedConfig(MethodConfig):
    """The aligned-neighbour map (inspector/methods/aligned.py): for parts at the same place in
    every frame (a fixture, a conveyor stop); a part that moves or turns between frames wants it off."""

    # auto (the default): on when the golden images look like a fixed pose (calibration/methods/pose.py
    # decides once per calibration, before its fits, and the bundle records why)
    enabled: Union[bool, Literal["auto"]] = "auto"
    auto_cut: float = Field(0.48, gt=0.0, lt=1.0)  # the twin ratio at or above which auto turns it on
    # filled by calibration from ``enabled: auto`` (enabled is then its outcome), not a setting
    decision: Optional[PoseDecision] = None
    # golden images kept (k-center by layout when there are more): the bundle holds their features;
    # fewer cost map quality on parts with many variants (docs/BENCHMARKS.md, issue 12/13 pixel maps)
    images: int = Field(1000, ge=2)
    k: int = Field(5, ge=1, le=50)  # nearest golden images by layout each frame is compared with
    radius: int = Field(1, ge=0, le=8)  # cells of misplacement allowed between a frame and its neighbours
    # the map's references picked by the layout without the ``trim`` of its 16 regions where a frame
    # and a golden image differ most, so a defect's own regions do not pick them; the image term
    # keeps the whole layout's (0: the map's too). 8 gained pixel AUROC on every set with masks
    # (docs/BENCHMARKS.md, issue 12/13 pooled pixel AUROC, and "trim 8 the default")
    trim: int = Field(8, ge=0, le=15)
    # the map: the mean (weighted ``coarse_weight``) of its z-map on the ``dims`` principal directions
    # and on their first ``coarse_dims``, a texture's coarse character beside its grain; off with 0 or
    # without enough ordered directions (docs/BENCHMARKS.md, "the coarse map")
    coarse_dims: int = Field(8, ge=0)
    coarse_weight: float = Field(0.5, gt=0.0, le=1.0)  # the coarse map's share of the mean
    # features projected on the golden patches' top principal directions (None: all D): a bundle
    # 152/64 times smaller and a search ~2x cheaper for a map within 0.003 pixel AUROC of all D on
    # the benchmark sets (docs/BENCHMARKS.md)
    dims: Optional[int] = Field(64, ge=1)
    # where a part says which variant it is (a label's fruit, a marking), [x0, y0, x1, y1] in fractions
    # of the inspected area: the map's references are then the golden images whose key region looks
    # most like the frame's, so the rest is judged against that variant (juice of the wrong colour
    # for its label lights, not the label; ``trim`` then has no part in the map); None: picked by the layout
    # (docs/BENCHMARKS.md, "variant key")
    key_region: Optional[tuple[Fraction, Fraction, Fraction, Fraction]] = None
    key_cells: Optional[Cells] = None  # filled by calibration from key_region, not a setting
    fusion: Literal["replace", "max"] = "replace"  # PatchCore's distances in the map: replaced, or the larger
    # image score += image_weight x the map's largest z (0: the image score is global context's alone);
    # where the map is on (a fixed pose) 1.0 was as good or better on every benchmark set (docs/BENCHMARKS.md)
    image_weight: float = Field(1.0, ge=0.0, le=100.0)

    @model_validator(mode="after")
    def _decision_is_calibrations(self) -> "AlignedConfig":
        # calibration sets it with model_copy (no validation); anything validated is a user's input
        if self.decision is not None or self.key_cells is not None:
            raise ValueError(f"aligned_map.{'decision' if self.decision is not None else 'key_cells'} is written "
                             "by calibration (from enabled: auto, key_region), not a setting; remove it from the config")
        if self.key_region is not None:
            x0, y0, x1, y1 = self.key_region
            if not (x0 < x1 and y0 < y1):
                raise ValueError(f"aligned_map.key_region {list(self.key_region)} must be [x0, y0, x1, y1] "
                                 "with x0 < x1 and y0 < y1 (fractions of the inspected area)")
        return self


class AlignedParams(StrictJson):
    k: Annotated[int, Field(ge=1)]
    radius: Annotated[int, Field(ge=0)]
    trim: Annotated[int, Field(ge=0, le=15)] = 0  # the map's references only; bundles from before it: 0
    fusion: Literal["replace", "max"]
    dims: Optional[Annotated[int, Field(ge=1)]] = None  # the PCA projection's K; None: the full features
    mean: float  # golden images' aligned-map maxima (each without itself): mean and std
    std: Positive
    image_weight: Weight = 0.0  # bundles from before it: the map only
    coarse_dims: Annotated[int, Field(ge=0)] = 0  # the map's coarse half; bundles from before it: none
    coarse_mean: float = 0.0  # golden images' coarse aligned-map maxima: mean and std
    coarse_std: Positive = 1.0
    coarse_weight: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    key_cells: Optional[Cells] = None  # the map's references picked by these cells; bundles from before it: none
