"""streamfeat dataflows package."""
