"""SGS options for tests that run backbones with random (untrained) weights.

The default assignment ("ordered") pays one more bin per ``min_change`` = 1.0 of cumulative change of the
batch-normalised embedding. An untrained backbone in eval mode (BatchNorm running statistics at their
initial values) gives an embedding that changes by far less than that, so every clip, noise included, keeps one
bin. Tests of the machinery around SGS (masks, padding, grouping by B', GMACs per clip) need clips with
different B', so they use a min_change at the scale of an untrained embedding (0.01: noise clips keep 9-32
bins in r3d18, r3d18_a1 and x3d_s, a static clip 1).
"""
UNTRAINED_SGS = {"min_change": 0.01}
