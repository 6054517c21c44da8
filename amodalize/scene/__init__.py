"""Scene de-occlusion (layers) and recomposition."""
