"""Test helpers, imported as `from tests.helpers import ...` (conftest.py holds the fixtures only)."""

from tests.helpers.data import (
    SYNTHETIC_PARAMS,
    TINY,
    CaltechTree,
    CubTree,
    ImageFolderTree,
    compose_train,
    jpeg_bytes,
    make_caltech_tree,
    make_cub_tree,
    make_imagefolder_tree,
    one_step_checkpoint,
    require,
    run_cli,
    run_dirs,
    tiny_overrides,
)

__all__ = [
    "SYNTHETIC_PARAMS",
    "TINY",
    "CaltechTree",
    "CubTree",
    "ImageFolderTree",
    "compose_train",
    "jpeg_bytes",
    "make_caltech_tree",
    "make_cub_tree",
    "make_imagefolder_tree",
    "one_step_checkpoint",
    "require",
    "run_cli",
    "run_dirs",
    "tiny_overrides",
]
