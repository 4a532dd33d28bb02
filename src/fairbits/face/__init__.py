"""Face analysis: mediapipe landmarks and semantic region masks (see :mod:`.analysis`)."""

from fairbits.face.analysis import (MASK_NAMES, FaceAnalysis, FaceAnalyzer, empty_masks,
                                    region_masks)

__all__ = ["MASK_NAMES", "FaceAnalysis", "FaceAnalyzer", "empty_masks", "region_masks"]
