"""Occlusion order and amodal completion: pair finding, ordering, completion, baselines."""
