"""Speed, peak memory and sizes."""

from __future__ import annotations

import mmap

import numpy as np
import torch

from s3cmn.evaluation.speed import PeakMemory, folder_size, measure_speed, parameter_count, serialized_size


def test_peak_memory_sees_an_allocation() -> None:
    with PeakMemory("cpu") as small:
        pass
    with PeakMemory("cpu") as peak:
        # 64 MiB of fresh pages, touched. Straight from the kernel: an allocator may serve a malloc from pages that
        # are already resident (a long suite's heap), and the resident set would then not grow at all.
        block = mmap.mmap(-1, 64 * 2**20)
        np.frombuffer(block, dtype=np.uint8)[:: mmap.PAGESIZE] = 1
        block.close()
    assert peak.result["cpu_peak_rss_bytes"] > 0 and peak.result["cpu_method"]
    if peak.result["cpu_method"].startswith("VmHWM"):  # resettable: the phase peak includes the 64 MiB
        assert peak.result["cpu_peak_rss_bytes"] - small.result["cpu_peak_rss_bytes"] > 48 * 2**20


def test_peak_memory_falls_back_when_the_kernel_ignores_the_reset(monkeypatch) -> None:
    import s3cmn.evaluation.speed as speed

    status = {"VmHWM": 2_000_000, "VmRSS": 900_000}  # KiB: the write to clear_refs was accepted and ignored
    monkeypatch.setattr(speed, "status_kib", status.get)
    monkeypatch.setattr(speed, "_CLEAR_REFS", type("Sink", (), {"write_text": lambda self, text: None})())
    with PeakMemory("cpu") as peak:
        pass
    assert peak.result["cpu_method"] == "ru_maxrss, process lifetime"
    status["VmHWM"] = 900_100  # a reset that took: HWM back at the current RSS
    with PeakMemory("cpu") as peak:
        pass
    assert peak.result["cpu_method"].startswith("VmHWM") and peak.result["cpu_peak_rss_bytes"] == 900_100 * 1024


def test_measure_speed_on_a_tiny_model(tiny_model) -> None:
    model = tiny_model()
    model(torch.randint(0, 97, (4, 48)), write_memory=True)
    entries = model.memory_bank[0].num_entries
    result = measure_speed(model, torch.randint(0, 97, (1, 12)), new_tokens=3, repeats=2, use_memory=True)
    assert result.prompt_tokens == 12 and result.new_tokens == 3 and result.batch_size == 1
    assert result.prefill_tokens_per_s > 0 and result.generation_ms_per_token > 0
    assert abs(result.generation_tokens_per_s * result.generation_ms_per_token / 1000 - 1) < 1e-9
    assert model.memory_bank[0].num_entries == entries  # timing never writes to the memory


def test_sizes(tiny_model, tmp_path) -> None:
    model = tiny_model()
    model.save_pretrained(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "notes.txt").write_text("x")
    sizes = folder_size(tmp_path / "ckpt")
    assert sizes["weights"] == (tmp_path / "ckpt" / "model.safetensors").stat().st_size
    assert sizes["memory"] > 0 and sizes["other"] > 0
    assert sizes["total"] == sizes["weights"] + sizes["memory"] + sizes["other"]
    n = parameter_count(model)
    assert n == sum(p.numel() for p in model.parameters()) and serialized_size(model) > 4 * n * 0.9
