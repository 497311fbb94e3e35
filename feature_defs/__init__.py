"""streamfeat feature_defs package."""
