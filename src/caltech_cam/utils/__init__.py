"""Small helpers every layer may use (they import nothing else of the package): atomic files, config values."""

from caltech_cam.utils.configs import config_dir, plain
from caltech_cam.utils.devices import resolve_device
from caltech_cam.utils.files import fsync_directory, write_atomically, write_text

__all__ = ["config_dir", "fsync_directory", "plain", "resolve_device", "write_atomically", "write_text"]
