"""streamfeat serving package."""
