"""caltech_cam: fine-tune classifiers on Caltech-256 and explain them with layer-wise Grad-CAM."""

__version__ = "0.3.0"
