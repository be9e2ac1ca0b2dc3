"""Scale-out options without Ray (these run whether Ray is installed or not): without the flags nothing changes and
Ray is not imported; without Ray, --workers / --ray / DistributedUpscaler are a one-line error saying what to
install; the runtime and the scale-out modules import without torch and without Ray; bad options are one line."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.timeout(180)

HIDE_RAY = "sys.modules['ray'] = None"  # `import ray` raises ImportError, as when it is not installed
HIDE_TORCH = "sys.modules['torch'] = None"


def _cli(args: list[str], code: str = "") -> subprocess.CompletedProcess:
    program = textwrap.dedent(f"""
        import sys
        {code}
        from i2nq.cli import main
        rc = main({args!r})
        print("ray imported" if sys.modules.get("ray") is not None else "ray not imported")
        sys.exit(rc)
    """)
    return subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=150)


def test_without_the_flags_ray_is_not_imported(tiny_model, clip, tmp_path) -> None:
    r = _cli(["upscale", str(clip), "-o", str(tmp_path / "out.mp4"), "--model", str(tiny_model(scale=2)),
              "--device", "cpu", "--no-progress", "--preset", "ultrafast"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "ray not imported" and (tmp_path / "out.mp4").is_file()
    assert not list(tmp_path.glob("*.i2nq-job-*"))


def test_runtime_and_scaleout_import_without_torch_and_ray(tiny_model, clip, tmp_path) -> None:
    """The runtime, the scale-out modules and the CLI's upscale run with neither torch nor Ray importable."""
    code = f"""{HIDE_RAY}; {HIDE_TORCH}
        import i2nq, i2nq.runtime, i2nq.runtime.segments, i2nq.runtime.distributed, i2nq.runtime.scaleout_args
        assert i2nq.DistributedUpscaler is i2nq.runtime.distributed.DistributedUpscaler"""
    r = _cli(["upscale", str(clip), "-o", str(tmp_path / "out.mp4"), "--model", str(tiny_model(scale=2)),
              "--device", "cpu", "--no-progress", "--preset", "ultrafast"], code)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out.mp4").is_file()


@pytest.mark.parametrize("flags", [["--workers", "2"], ["--ray", "auto"], ["--ray", "127.0.0.1:6379", "--workers", "1"]])
def test_without_ray_the_flags_are_a_one_line_error(tiny_model, clip, tmp_path, flags) -> None:
    r = _cli(["upscale", str(clip), "-o", str(tmp_path / "out.mp4"), "--model", str(tiny_model(scale=2)), *flags],
             HIDE_RAY)
    assert r.returncode == 2
    assert r.stderr == "i2nq: error: --workers and --ray need Ray, which is not installed: pip install 'i2nq[ray]'\n"
    assert list(tmp_path.iterdir()) == []


def test_without_ray_the_api_is_a_one_line_error(tiny_model) -> None:
    program = textwrap.dedent(f"""
        import sys
        {HIDE_RAY}
        import i2nq
        try:
            i2nq.DistributedUpscaler({str(tiny_model(scale=2))!r}, workers=2)
        except i2nq.I2NQError as exc:
            print(exc)
    """)
    r = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=150)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "--workers and --ray need Ray, which is not installed: pip install 'i2nq[ray]'\n"


@pytest.mark.parametrize("args, message", [
    (["--workers", "0"], "argument --workers: not a worker count: '0' (1 or more)"),
    (["--workers", "two"], "argument --workers: not a worker count: 'two' (1 or more)"),
    (["--workers", "2", "--segment-seconds", "0"], "argument --segment-seconds: not a segment length: '0' (seconds > 0)"),
    (["--workers", "2", "--segment-seconds", "inf"], "not a segment length: 'inf'"),
    (["--segment-seconds", "2"], "i2nq: error: --segment-seconds cuts videos for --workers or --ray; give one of them"),
])
def test_bad_scaleout_options(tiny_model, clip, tmp_path, args, message) -> None:
    r = _cli(["upscale", str(clip), "-o", str(tmp_path / "out.mp4"), "--model", str(tiny_model(scale=2)), *args],
             HIDE_RAY)  # refused before Ray is wanted
    assert r.returncode == 2 and message in r.stderr.strip().splitlines()[-1]  # argparse's usage, then one line
    assert "Traceback" not in r.stderr and list(tmp_path.iterdir()) == []


def test_missing_model_fails_before_ray(clip, tmp_path) -> None:
    """A model that does not exist is named before Ray is asked for (nothing starts for a job that cannot run)."""
    r = _cli(["upscale", str(clip), "-o", str(tmp_path / "out.mp4"), "--model", str(tmp_path / "nope.onnx"),
              "--workers", "2"], HIDE_RAY)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "nope.onnx" in r.stderr, r.stderr
