"""Shared fixtures: a small synthetic dataset (session-wide), a tmp tree with the real archive's quirks, one torch
thread, a real SLURM cluster. Helpers that are not fixtures live in tests/helpers/ and are imported from there."""

from __future__ import annotations

from pathlib import Path

import pytest

from caltech_cam.data import SyntheticInfo, generate_synthetic
from caltech_cam.run.config import register_resolvers
from tests.helpers import SYNTHETIC_PARAMS, CaltechTree, make_caltech_tree

# What every app does before Hydra composes: tests compose configs themselves (conf/ needs the resolvers and the
# /caltech_cam/* nodes of Python defaults).
register_resolvers()


@pytest.fixture(scope="session")
def synthetic_info(tmp_path_factory: pytest.TempPathFactory) -> SyntheticInfo:
    """The shared synthetic set (see SYNTHETIC_PARAMS) with its boxes. Read-only: never write into it."""
    return generate_synthetic(tmp_path_factory.mktemp("data") / "synthetic", **SYNTHETIC_PARAMS)


@pytest.fixture(scope="session")
def synthetic_root(synthetic_info: SyntheticInfo) -> Path:
    """Root of the shared synthetic set; ``data.root=<it>`` with ``data=synthetic`` reuses it as it is."""
    return synthetic_info.root


@pytest.fixture
def caltech_tree(tmp_path: Path) -> CaltechTree:
    """A fresh quirky Caltech-layout tree per test (tests may damage it)."""
    return make_caltech_tree(tmp_path)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module's in-process torch work: on 2 cores shared with other jobs, two OpenMP
    threads spin against each other (measured 10-30x slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A real one-node SLURM cluster (tests/helpers/slurm_cluster.py); skipped where SLURM cannot run, except in CI."""
    from tests.helpers.slurm_cluster import cluster_or_skip

    yield from cluster_or_skip(tmp_path_factory.mktemp("slurm"))
