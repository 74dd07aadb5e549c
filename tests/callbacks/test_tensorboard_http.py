"""What the user opens is what is tested: a real `tensorboard --logdir <run>` serves the callback's pictures and
scalars through its own HTTP routes (the images and scalars plugins), byte for byte what the event files hold."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from tests.callbacks.test_grad_cam import events_of
from tests.helpers import compose_train, tiny_overrides

pytestmark = pytest.mark.slow  # trains, then runs a TensorBoard server in a subprocess

LAYERS = ["layer1", "layer2", "layer3", "layer4"]


def tensorboard_command() -> list[str]:
    """The console script installed beside this interpreter (what `tensorboard` runs in this environment)."""
    script = Path(sys.executable).parent / "tensorboard"
    return [str(script)] if script.exists() else [sys.executable, "-m", "tensorboard.main"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(base: str, route: str, **query: str) -> bytes:
    url = f"{base}{route}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def get_json(base: str, route: str, **query: str):
    return json.loads(get(base, route, **query))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path) -> Path:
    """One epoch of `train` at 64 px with the callback on (4 probe images; the synthetic set has boxes)."""
    from caltech_cam.train import train

    tmp = tmp_path_factory.mktemp("tb_http")
    extra = [
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "+trainer.num_sanity_val_steps=0",
        "test=false",
    ]
    cfg = compose_train([*tiny_overrides(synthetic_root, tmp), *extra])
    cfg.paths.output_dir = str(tmp / "run")
    train(cfg)
    return tmp / "run"


@pytest.fixture
def server(run_dir: Path, tmp_path: Path):
    """A real TensorBoard on 127.0.0.1 over the run; yields (base URL, process); stopped by its PID afterwards."""
    log_file = tmp_path / "tensorboard.log"
    proc, ready = None, False
    try:
        with log_file.open("wb") as log:
            for _attempt in range(3):  # another process may take the free port between the probe and the bind
                port = free_port()
                proc = subprocess.Popen(
                    [
                        *tensorboard_command(),
                        "--logdir",
                        str(run_dir),
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: a helper it spawns can be found and checked
                )
                base = f"http://127.0.0.1:{port}"
                ready = wait_for_pictures(base, proc, timeout=120)
                if ready or proc.poll() is None:
                    break
        assert ready, (
            f"tensorboard (exit code {proc.poll()}) did not list the run's pictures:\n"
            + (log_file.read_text(errors="replace")[-3000:])
        )
        yield base, proc
    finally:
        if proc is not None and proc.poll() is None:
            stop(proc)


def wait_for_pictures(base: str, proc: subprocess.Popen, timeout: float) -> bool:
    """Whether the server answers with the run's pictures listed (answering alone is not enough: the event files
    load in the background) before `timeout` s or its exit."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            tags = get_json(base, "/data/plugin/images/tags")
            if any("gradcam/overview" in per_run for per_run in tags.values()):
                return True
        except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
            pass
        time.sleep(0.5)
    return False


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's PID, then SIGKILL if it lingers; its process group must be empty afterwards."""
    group = os.getpgid(proc.pid)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=20)
    # A helper it started (the data server of --load_fast) exits when its parent does; give it a moment.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(group, signal.SIGKILL)
    raise AssertionError(f"processes of tensorboard's group {group} outlived it (killed now)")


def test_tensorboard_serves_the_callbacks_pictures_and_scalars(server, run_dir):
    base, proc = server
    (events,) = events_of(run_dir / "tensorboard")

    image_tags = get_json(base, "/data/plugin/images/tags")
    (run,) = [name for name, tags in image_tags.items() if "gradcam/overview" in tags]
    assert sorted(image_tags[run]) == sorted([f"gradcam/{layer}" for layer in LAYERS] + ["gradcam/overview"])
    for tag in image_tags[run]:
        (written,) = events.Images(tag)
        (entry,) = get_json(base, "/data/plugin/images/images", run=run, tag=tag)
        assert entry["step"] == written.step
        served = get(base, "/data/plugin/images/individualImage?" + entry["query"])
        assert served == written.encoded_image_string, f"{tag}: served bytes differ from the event file's"
        picture = Image.open(io.BytesIO(served))
        assert picture.format == "PNG" and picture.size == (written.width, written.height)
    # The picture is the callback's grid: 4 probe rows; the overview is the input plus every layer.
    overview = Image.open(io.BytesIO(events.Images("gradcam/overview")[0].encoded_image_string))
    per_layer = Image.open(io.BytesIO(events.Images("gradcam/layer1")[0].encoded_image_string))
    assert overview.height == per_layer.height and overview.width > 2 * per_layer.width

    scalar_tags = get_json(base, "/data/plugin/scalars/tags")[run]
    wanted = [
        f"gradcam/{name}/{layer}"
        for name in ("average_drop", "increase_in_confidence", "pointing_game", "energy_pointing_game")
        for layer in LAYERS
    ]
    assert set(wanted) <= set(scalar_tags), sorted(set(wanted) - set(scalar_tags))
    for tag in [*wanted, "val/acc_top1"]:
        served = get_json(base, "/data/plugin/scalars/scalars", run=run, tag=tag)
        written = events.Scalars(tag)
        assert [(step, value) for _wall, step, value in served] == [(s.step, s.value) for s in written], tag
    for layer in LAYERS:
        (point,) = get_json(
            base, "/data/plugin/scalars/scalars", run=run, tag=f"gradcam/pointing_game/{layer}"
        )
        assert 0.0 <= point[2] <= 1.0
    assert proc.poll() is None, "the server was up for every request"
