"""Deprecated: `caltech_cam.run.config` (moved in 0.3.0); kept for one release, removed in 0.4.0."""

import warnings

from caltech_cam.run.config import config_dir, rank_tag, register_resolvers
from caltech_cam.utils.configs import plain

register_resolvers()  # 0.2.0 registered its resolvers on import: code relying on that keeps working
warnings.warn(
    "caltech_cam.config is deprecated since 0.3.0 and will be removed in 0.4.0: import config_dir and "
    "register_resolvers from caltech_cam.run.config.",
    FutureWarning,
    stacklevel=2,
)

__all__ = ["config_dir", "plain", "rank_tag", "register_resolvers"]
