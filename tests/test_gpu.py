"""On a machine with an NVIDIA GPU and PyTorch: a command generator declared
`slot = "gpu"` runs on the GPU through the real queue, and a CPU-slot job
cannot see the GPU. Skipped elsewhere; tests/test_queue.py covers the same
slot logic with a fake nvidia-smi on every machine."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from lattice.worker import gpu_indices


def _torch_sees_a_gpu() -> bool:
    if not shutil.which("nvidia-smi"):
        return False
    probe = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"
    try:
        return subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


pytestmark = pytest.mark.skipif(not _torch_sees_a_gpu(), reason="needs an NVIDIA GPU and PyTorch with CUDA")

# Draws a seeded 64x64 RGB image on whatever device it is given and writes it
# as a binary PPM; what it saw goes to the --report file.
SCRIPT = r"""
import json, os, sys, torch
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
cuda = torch.cuda.is_available()
dev = "cuda" if cuda else "cpu"
g = torch.Generator(device=dev).manual_seed(int(args["--seed"]))
img = torch.rand((64, 64, 3), generator=g, device=dev)
img = (img @ torch.eye(3, device=dev) * 255).clamp(0, 255).to(torch.uint8).cpu()
with open(args["--out"], "wb") as f:
    f.write(b"P6 64 64 255\n" + bytes(img.flatten().tolist()))
seen = {"cuda": cuda, "device": torch.cuda.get_device_name(0) if cuda else None,
        "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}
json.dump(seen, open(args["--report"], "w"))
"""


def test_gpu_slot_jobs_run_on_the_gpu_and_cpu_jobs_cannot_see_it(tmp_path, cli):
    assert gpu_indices(), "nvidia-smi -L lists no GPU"
    root = tmp_path / "proj"
    assert cli("init", str(root)).code == 0
    (root / "draw.py").write_text(SCRIPT)
    with open(root / ".lattice" / "config.toml", "a") as f:
        for name, slot in (("draw_gpu", "gpu"), ("draw_cpu", "cpu")):
            argv = [sys.executable, "draw.py", "--seed", "{seed}", "--out", "{output}",
                    "--report", str(tmp_path / f"{slot}.json")]
            f.write(f"\n[generators.{name}]\nargv = {json.dumps(argv)}\nextensions = [\"ppm\"]\n"
                    f"slot = \"{slot}\"\ndeterministic = true\n")
    assert cli("-C", str(root), "trust").code == 0

    for out, model in (("on_gpu.ppm", "draw_gpu"), ("on_cpu.ppm", "draw_cpu")):
        r = cli("-C", str(root), "gen", out, "--model", model, "--seed", "5")
        assert r.code == 0, r.err

    gpu = json.loads((tmp_path / "gpu.json").read_text())
    cpu = json.loads((tmp_path / "cpu.json").read_text())
    assert gpu["cuda"] and gpu["device"] and gpu["visible"] == "0"
    assert not cpu["cuda"] and cpu["visible"] == ""

    # The GPU output is recorded like any other: an asset with a recipe that
    # re-runs on the GPU to the same bytes.
    recipe = cli("-C", str(root), "show", "on_gpu.ppm", "--json").json["versions"][-1]["recipe"]
    assert recipe["generator"] == "draw_gpu" and recipe["seed"] == 5
    verified = cli("-C", str(root), "verify", "on_gpu.ppm")
    assert verified.code == 0, verified.out + verified.err
