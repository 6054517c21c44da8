"""The methods `convert` knows, each named once: how an object is completed and how a pair is
ordered. ``ConvertOptions`` checks against these tables and the CLI builds its choices from them,
so a new method is one entry here and its code in ``infer.convert``. Importing this module loads
nothing else (the CLI reads it at start-up)."""

# Amodal completion: name -> what the amodal mask is.
AMODAL_METHODS = {
    "raw": "the visible mask as it is",
    "convex": "the visible mask's convex hull",
    "convex-r": "the convex hull kept only under the object's occluders (Convex^R; no model)",
    "pcnet": "PCNet-M's completion behind the object's occluders",
}
# Ordering of a candidate pair: name -> what decides which object is in front.
ORDER_METHODS = {
    "area": "the smaller (or larger) visible mask is in front",
    "y-axis": "the visible mask reaching lower in the image is in front",
    "convex": "the mask whose convex hull grows less into the other is in front",
    "pcnet": "dual completion: the mask PCNet-M completes less behind the other is in front",
    "fused": "dual completion and convex-hull evidence combined by a fit made without ground truth",
}
