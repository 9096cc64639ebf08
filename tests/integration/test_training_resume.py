"""Training resumes after its process is killed: two real training processes on the tiny model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


RESUME_SCRIPT = r"""
import json, os, sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from training.sft import train_lora
from tests.factories import invoice_records, tiny_config

slow = os.environ.get("SLOW_STEPS") == "1"
def progress(info):
    if slow:
        time.sleep(0.4)
res = train_lora(tiny_config(attention_metrics=False, checkpoint_every=2, lora_dropout=0.1),
                 invoice_records(40), Path(sys.argv[1]), Path(sys.argv[2]), progress=progress)
print(json.dumps({{"resumed_from_step": res.resumed_from_step, "steps": res.steps,
                  "total_steps": res.total_steps, "history": [h["step"] for h in res.metrics["history"]]}}))
"""


def _run(script: Path, model: Path, out: Path, slow: bool) -> subprocess.Popen:
    env = {**os.environ, "SLOW_STEPS": "1" if slow else "0", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, str(script), str(model), str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


@pytest.mark.timeout(240)  # two training processes; slower when the machine is shared
def test_resume_after_the_process_is_killed(tiny_model_dir, tmp_path):
    script = tmp_path / "train_once.py"
    script.write_text(RESUME_SCRIPT.format(root=str(ROOT)))
    out = tmp_path / "run"
    proc = _run(script, tiny_model_dir, out, slow=True)
    latest = out / "checkpoints" / "latest.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if latest.is_file() and json.loads(latest.read_text())["step"] >= 4:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(latest.read_text())["step"]
    assert 4 <= killed_at < 12 and not (out / "adapter").exists()

    resumed = _run(script, tiny_model_dir, out, slow=False)
    stdout, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    info = json.loads(stdout.strip().splitlines()[-1])
    assert info["resumed_from_step"] == killed_at
    assert info["steps"] == info["total_steps"] == 12
    assert info["history"] == list(range(1, 13))  # one entry per step, none repeated

    # The resumed run ends where an uninterrupted run ends (data order, RNG and optimizer restored).
    ref = _run(script, tiny_model_dir, tmp_path / "ref", slow=False)
    ref.communicate(timeout=300)
    assert ref.returncode == 0
    from safetensors.torch import load_file

    a = load_file(out / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "ref" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    import torch

    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
