"""The GPU calls' driver (benchmarks/gpu_demo_session.sh) refuses bad arguments before it starts anything and
prepares a machine once, stopping on the first failure. The commands it runs there (gsplat's build, the data phase,
nvidia-smi) are replaced by stand-ins: a lent GPU call is too scarce to find a shell mistake in."""

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAND_INS = {
    # gsplat's build is the only Python the prepare phase runs.
    "python3": """case "$*" in
  *gsplat*) [ -z "${SLOW_BUILD:-}" ] || sleep 2
    [ -z "${FAIL_BUILD:-}" ] || { echo "nvcc: build failed" >&2; exit 1; }
    touch "$DEMO_WORK.built"; echo "extension built" ;;
  *) echo "unexpected: python3 $*" >&2; exit 3 ;;
esac""",
    "nvidia-smi": 'echo "stand-in GPU, 1 MiB, 0"',
}
DATA_PHASE = """[ "$1" = data ] || exit 3
mkdir -p "$3"
[ -z "${FAIL_DATA:-}" ] || { echo "render failed"; exit 1; }
echo "rendered into $3\""""


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A repository root holding the driver, its environment script and a stand-in data phase."""
    root = tmp_path / "repo"
    (root / "benchmarks").mkdir(parents=True)
    (root / "scripts").mkdir()
    for name in ("gpu_demo_session.sh", "gpu_env.sh"):
        shutil.copy(ROOT / "benchmarks" / name, root / "benchmarks" / name)
    (root / "scripts" / "demo_model.sh").write_text(f"#!/usr/bin/env bash\n{DATA_PHASE}\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in STAND_INS.items():
        (bin_dir / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / ".complete").touch()  # the wheels count as installed: gpu_env.sh skips pip
    (tmp_path / "out").mkdir()
    return root


def session(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    tmp = root.parent
    environment = {**os.environ, "PATH": f"{tmp / 'bin'}:{os.environ['PATH']}", "DEMO_WORK": str(tmp / "work"),
                   "DIFFUSIONGS_SITE": str(tmp / "site"), "OUT": str(tmp / "out"), **env}
    return subprocess.run(["bash", "benchmarks/gpu_demo_session.sh", *args], cwd=root, env=environment,
                          capture_output=True, text=True, timeout=60)


def test_prepare_builds_and_renders_once(checkout):
    first = session(checkout, "prepare")
    assert first.returncode == 0, first.stderr
    assert "data ready after" in first.stdout and "gsplat ready after" in first.stdout
    assert (checkout.parent / "work" / ".prepared").is_file()
    second = session(checkout, "prepare")  # a warm machine's later call finds both on its disk
    assert second.returncode == 0, second.stderr
    assert "data ready" not in second.stdout and "gsplat ready" not in second.stdout


@pytest.mark.parametrize("failure, message", [("FAIL_BUILD", "nvcc: build failed"), ("FAIL_DATA", "render failed")])
def test_a_failed_build_or_render_stops_the_call_and_shows_its_log(checkout, failure, message):
    result = session(checkout, "prepare", **{failure: "1"})
    assert result.returncode == 1
    assert message in result.stdout
    assert not (checkout.parent / "work" / ".prepared").exists()  # the next call starts over


def test_a_failed_render_stops_the_build_beside_it(checkout):
    """gsplat's build runs in the background beside the data phase: when the data phase fails, the call ends and the
    build must not run on (on a warm machine it would hold the build lock that the next call's build waits on)."""
    result = session(checkout, "prepare", FAIL_DATA="1", SLOW_BUILD="1")
    assert result.returncode == 1 and "render failed" in result.stdout
    time.sleep(3)  # the stand-in build would have finished after 2 s
    assert not (checkout.parent / "work.built").exists()


@pytest.mark.parametrize("seconds, message", [("12.5", "is not a whole number"), ("571", "at most 570")])
@pytest.mark.parametrize("phase", ["start", "wait"])
def test_call_seconds_are_refused_before_anything_starts(checkout, phase, seconds, message):
    args = ["10", "1", seconds] if phase == "start" else [seconds]
    result = session(checkout, phase, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (checkout.parent / "work").exists()  # neither rendering nor training began
