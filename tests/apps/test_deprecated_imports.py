"""The import paths of the 0.2.0 release keep working after the restructure (/work/plan/LAYOUT.md, issue 16).

`caltech_cam.module` and `caltech_cam.config` become deprecation shims: importing them warns (FutureWarning, so
that users see it, naming where the names went) and re-exports the very objects of their new homes. The other old
paths stay real modules or packages that re-export: the same objects, no warning needed.
"""

from __future__ import annotations

import importlib
import sys
import warnings

import pytest

# (old module, name, new module): `from <old module> import <name>` gives `<new module>.<name>` itself.
MOVED = [
    ("caltech_cam.module", "ClassifierModule", "caltech_cam.models.classifier"),
    ("caltech_cam.module", "load_classifier", "caltech_cam.models.checkpoints"),
    ("caltech_cam.config", "config_dir", "caltech_cam.run.config"),
    ("caltech_cam.models", "build_model", "caltech_cam.models.registry"),
    ("caltech_cam.data", "CaltechDataModule", "caltech_cam.data.datamodule"),
    ("caltech_cam.data.decode", "load_rgb", "caltech_cam.data"),
    ("caltech_cam.cam", "compute_cams", "caltech_cam.cam.engine"),
]

# The shims, with the package their warning must point users to.
SHIMS = [
    ("caltech_cam.module", "caltech_cam.models"),
    ("caltech_cam.config", "caltech_cam.run"),
]


@pytest.mark.parametrize(("old", "name", "new"), MOVED, ids=[f"{o}.{n}" for o, n, _ in MOVED])
def test_old_import_path_gives_the_object_of_its_new_home(old, name, new):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the shims' warning is the next test's business
        got = getattr(importlib.import_module(old), name)
    assert got is getattr(importlib.import_module(new), name), f"{old}.{name} is not {new}.{name}"


@pytest.mark.parametrize(("shim", "points_to"), SHIMS, ids=[s for s, _ in SHIMS])
def test_shim_warns_on_import(shim, points_to, monkeypatch):
    # A fresh import runs the shim's body again (an earlier import, anywhere in the session, cached it); the
    # module and the package attribute that the import rebinds are put back afterwards.
    parent, _, attr = shim.rpartition(".")
    package = importlib.import_module(parent)
    monkeypatch.delitem(sys.modules, shim, raising=False)
    if hasattr(package, attr):
        monkeypatch.setattr(package, attr, getattr(package, attr))
    with pytest.warns(FutureWarning, match=points_to.replace(".", r"\.")):
        importlib.import_module(shim)
