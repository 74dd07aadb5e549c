"""Where a study lives: a journal file (default, safe for concurrent workers) or a database URL."""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend


def open_storage(spec: str | None, study_dir: Path) -> optuna.storages.BaseStorage:
    """null -> journal file <study dir>/journal.log; a path -> journal file there; a URL -> that database."""
    if spec and "://" in spec:
        return _open_database(spec)
    path = Path(spec) if spec else study_dir / "journal.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def _open_database(url: str) -> optuna.storages.RDBStorage:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except ArgumentError as e:
        raise ValueError(f"tune.storage={url!r} is not a database URL ({e}).") from e
    expected = (
        "expected a reachable database such as postgresql://user:password@host:5432/optuna or "
        "mysql+pymysql://user:password@host/optuna (sqlite:///file.db for one process), or a journal file path"
    )
    try:
        # A heartbeat lets other workers mark the trial of a killed worker (SLURM preemption) as failed.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=180)
    except ImportError as e:
        raise ImportError(
            f"tune.storage={shown}: no database driver for this URL is installed ({e}). Install one, e.g. "
            "`pip install 'psycopg[binary]'` for postgresql://, `pip install PyMySQL` for mysql+pymysql://."
        ) from e
    except Exception as e:  # sqlalchemy reports an unreachable server or unopenable file at connect time
        reason = str(e).strip().splitlines()[0]
        raise ConnectionError(
            f"tune.storage={shown}: cannot open the study database ({reason}); {expected}."
        ) from e
