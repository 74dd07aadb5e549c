"""hydra/launcher=slurm's launcher where Hydra accepts it: Hydra instantiates a launcher only from the hydra_plugins
namespace (any other `_target_` is "Invalid plugin ...: not the hydra_plugins package"). The code is
caltech_cam.run.slurm. Hydra imports this module at every start, so without hydra-submitit-launcher it must import
quietly: it then defines no launcher, and asking for one raises the ImportError, which conf/hydra/launcher/slurm.yaml's
`${caltech_cam.launcher_plugin:...}` turns into the install hint."""

from __future__ import annotations

try:
    from caltech_cam.run.slurm import CheckedSlurmLauncher as _CheckedSlurmLauncher
except ImportError as error:
    _import_error = error

    def __getattr__(name: str) -> object:
        if name == "CheckedSlurmLauncher":
            raise ImportError(str(_import_error)) from _import_error
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

else:

    class CheckedSlurmLauncher(_CheckedSlurmLauncher):
        """caltech_cam.run.slurm.CheckedSlurmLauncher, under the module name Hydra requires of plugins."""
