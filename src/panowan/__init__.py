"""panowan: multi-view 360° RGB-D panorama completion with a dual-stream Wan2.1-I2V model."""

__version__ = "0.1.0"
