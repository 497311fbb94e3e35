"""streamfeat engine package."""
