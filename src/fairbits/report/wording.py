"""How result columns read in words: a label, a unit and a family per column.

Families group columns by what they look at, as the source paper does when it sets
pixel fidelity (its finding 1) beside facial phenotype (its finding 2): ``pixel``
(measures of the whole image), ``skin`` (the skin-tone measure's columns), ``identity``,
``geometry`` (landmarks) and ``classifier`` (phenotype and attribute classifiers).
"""

from __future__ import annotations

PIXEL, SKIN, IDENTITY, GEOMETRY, CLASSIFIER, OTHER_FACE = (
    "pixel", "skin", "identity", "geometry", "classifier", "face")
FAMILY_LABELS = {PIXEL: "pixel fidelity", SKIN: "skin tone", IDENTITY: "identity", GEOMETRY: "face geometry",
                 CLASSIFIER: "phenotype / attribute classifiers", OTHER_FACE: "other face measures"}
FAMILY_COLOURS = {PIXEL: "#8c8c8c", SKIN: "#b5651d", IDENTITY: "#7b3294", GEOMETRY: "#1b9e77",
                  CLASSIFIER: "#d95f02", OTHER_FACE: "#666699"}
# the registered measures whose columns make a family
FAMILY_MEASURES = {"skin_tone": SKIN, "identity": IDENTITY, "landmarks": GEOMETRY}

# column -> (label, unit appended to its values)
LABELS = {
    "psnr": ("PSNR", " dB"), "psnr_y": ("luma PSNR", " dB"), "ssim": ("SSIM", ""), "ms_ssim": ("MS-SSIM", ""),
    "ciede2000": ("colour error (CIEDE2000)", ""),
    "delta_e_skin": ("skin colour error (ΔE2000)", ""), "delta_e_lips": ("lip colour error (ΔE2000)", ""),
    "delta_e_hair": ("hair colour error (ΔE2000)", ""),
    "delta_ita": ("skin tone (ITA, positive = lighter)", "°"), "delta_L": ("skin lightness (L*)", ""),
    "delta_b": ("skin yellowness (b*)", ""), "delta_hue": ("skin hue", "°"),
    "identity_cos": ("identity similarity to the original (cosine)", ""),
    "landmark_nme": ("landmark displacement (NME)", ""),
    "delta_age": ("predicted age", " years"),
    "delta_nose_ratio": ("nose width ratio", ""), "delta_lip_ratio": ("lip ratio", ""),
    "delta_eye_aperture": ("eye aperture", ""),
}
# 0/1 columns -> what a 1 means, as a verb phrase
RATE_PHRASES = {
    "monk_changed": "changes the Monk skin-tone category",
    "fitzpatrick_changed": "changes the Fitzpatrick skin type",
    "identity_nonmatch": "makes identity verification fail",
    "face_found_recon": "leaves a detectable face",
}


def label(column: str) -> tuple[str, str]:
    """``(label, unit)`` of a column; unknown columns read as their name, no unit."""
    if column in LABELS:
        return LABELS[column]
    if column.endswith("_loss_recon"):
        return f"loss of the {column[:-len('_loss_recon')]} classifier on reconstructions", " nats"
    return column, ""


def rate_phrase(column: str) -> str:
    """What a 1 in a 0/1 column means, as a verb phrase following a codec's name."""
    if column in RATE_PHRASES:
        return RATE_PHRASES[column]
    if column.endswith("_flip"):
        return f"flips the {column[:-len('_flip')]} classifier's prediction"
    if column.endswith("_correct_recon"):
        return f"leaves the {column[:-len('_correct_recon')]} classifier right"
    return f"sets {column} to 1"


def family(column: str, face_columns=()) -> str:
    """The family of a result column (see the module docstring)."""
    from fairbits.errors import FairbitsError
    from fairbits.measures import get_measure
    from fairbits.measures.classifiers import is_classifier_column

    if is_classifier_column(column):
        return CLASSIFIER
    for name, fam in FAMILY_MEASURES.items():
        try:
            if column in get_measure(name).kinds:
                return fam
        except FairbitsError:  # the measure is not registered here
            continue
    return OTHER_FACE if column in set(face_columns) else PIXEL
