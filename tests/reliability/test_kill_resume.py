"""`kill -9` at random moments of a run that saves every 2 steps: `last` always resumes to the same weights.

Ten times: a training process (real WikiText-2 blocks, a model with a FAISS memory) is SIGKILLed at a random
moment after its first checkpoint (during steps, validations and checkpoint writes alike), then the run is
resumed from whatever `last` holds; the final weights, buffers and memory must equal an uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

KILLS = 10
SEQ = 32

# The training process: the same model, blocks and settings as the in-process runs of the test.
CHILD = r"""
import json, sys, torch
torch.set_num_threads(1)
from s3cmn import S3CMNConfig, S3CMNForCausalLM
from s3cmn.run_config import TrainingConfig
from s3cmn.training import fit
from s3cmn.training.loop import seed_everything
spec = json.loads(sys.argv[1])
blocks = torch.load(spec["blocks"], weights_only=True)
seed_everything(0)
model = S3CMNForCausalLM(S3CMNConfig.from_preset("tiny", **spec["model"]))
fit(model, blocks["train"], blocks["valid"], TrainingConfig(**spec["training"]))
"""


def model_fields(vocab: int) -> dict:
    return dict(vocab_size=vocab, embedding_dim=32, hidden_dim=32, num_layers=1, spiking_units=16, mamba_d_state=4,
                hyena_filter_dim=8, hyena_filter_length=16, use_memory=True, num_clusters=4,
                memory_compression_dim=8, memory_size=64, memory_write_stride=8)


def training_fields(out: Path) -> dict:
    return dict(learning_rate=3e-3, batch_size=4, sequence_length=SEQ, warmup_steps=2, max_steps=16,
                eval_interval=4, eval_batches=2, log_interval=1, save_interval=2, output_dir=str(out),
                mixed_precision="no", device="cpu", num_samples=0, seed=0)


def train_in_process(spec: dict, blocks: dict, **overrides):
    from s3cmn import S3CMNConfig, S3CMNForCausalLM
    from s3cmn.run_config import TrainingConfig
    from s3cmn.training import fit
    from s3cmn.training.loop import seed_everything

    seed_everything(0)
    model = S3CMNForCausalLM(S3CMNConfig.from_preset("tiny", **spec["model"]))
    result = fit(model, blocks["train"], blocks["valid"], TrainingConfig(**{**spec["training"], **overrides}))
    return model, result


def snapshot(model) -> dict:
    tensors = {f"param {k}": v.detach().clone() for k, v in model.state_dict().items()}
    for layer, memory in model.memory_bank:
        for name, array in memory.entries().items():
            tensors[f"memory {layer} {name}"] = torch.as_tensor(array).clone()
    return tensors


def killed_in_fit(moments: list) -> list:
    """The kills that landed inside fit(): SIGKILLed while the run still held its folder's lock."""
    return [m for m in moments if m[1] == -signal.SIGKILL and "train.lock" in m[3]]


@pytest.fixture(scope="module")
def blocks(tmp_path_factory, shared_data) -> tuple[dict, Path, int]:
    from s3cmn.data import load_tokenizer, pack_blocks

    tokenizer = load_tokenizer(str(shared_data / "tokenizers" / "bert-base-uncased"))
    text = (shared_data / "wikitext-2-raw" / "wiki.valid.raw").read_text(encoding="utf-8")
    ids = tokenizer(text[:40_000], add_special_tokens=False, return_tensors="pt").input_ids[0]
    all_blocks = pack_blocks(ids, SEQ)
    data = {"train": all_blocks[:-8].clone(), "valid": all_blocks[-8:].clone()}
    path = tmp_path_factory.mktemp("blocks") / "blocks.pt"
    torch.save(data, path)
    return data, path, len(tokenizer)


@pytest.mark.slow
def test_kill_9_at_random_moments_always_resumes_to_the_uninterrupted_weights(blocks, tmp_path) -> None:
    data, blocks_file, vocab = blocks
    reference_spec = {"model": model_fields(vocab), "training": training_fields(tmp_path / "reference")}
    start = time.perf_counter()
    reference_model, reference = train_in_process(reference_spec, data)
    run_seconds = time.perf_counter() - start
    assert reference.steps == 16
    expected = snapshot(reference_model)

    rng = random.Random(17)
    moments = []
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    for i in range(2 * KILLS):  # until KILLS kills landed mid-run (a slow start may let a run finish first)
        if len(killed_in_fit(moments)) == KILLS:
            break
        out = tmp_path / f"run{i}"
        spec = {"model": model_fields(vocab), "training": training_fields(out), "blocks": str(blocks_file)}
        child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(spec)], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not (out / "last" / "trainer_state.json").exists() and child.poll() is None:
            assert time.monotonic() < deadline, "no first checkpoint within 120 s"
            time.sleep(0.02)
        assert child.poll() is None, child.stderr.read()  # the run must still be going: kill it
        delay = rng.uniform(0.0, 0.6 * run_seconds)
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait()
        step = json.loads((out / "last" / "trainer_state.json").read_text())["step"] if (out / "last").exists() \
            else json.loads((out / "last.old" / "trainer_state.json").read_text())["step"]
        moments.append((round(delay, 2), child.returncode, step, sorted(p.name for p in out.iterdir())))

        resumed_model, resumed = train_in_process(spec, data, resume=True)
        assert resumed.steps == 16, (i, moments[-1])
        got = snapshot(resumed_model)
        assert got.keys() == expected.keys()
        for name, tensor in expected.items():
            assert torch.equal(tensor, got[name]), (i, name, moments[-1])
    assert len(killed_in_fit(moments)) == KILLS, moments
    print("kill moments (s after the first checkpoint, exit code, step in last, folder):", moments)
