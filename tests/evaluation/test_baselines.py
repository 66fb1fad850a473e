"""The speed baselines run on their fastest path and record the machine the numbers came from."""

from __future__ import annotations

import torch

from s3cmn.evaluation import baselines, benchmarking
from s3cmn.model_config import S3CMNConfig


def test_gpt2_baseline_has_no_attention_dropout_and_matched_parameters() -> None:
    reference = S3CMNConfig.from_preset("tiny", use_memory=False, vocab_size=512)
    from s3cmn.modeling.lm import S3CMNForCausalLM

    target = baselines.count_params(S3CMNForCausalLM(reference))
    gpt2 = baselines.build_gpt2(reference, target, positions=256)
    # attention dropout would push torch's CPU attention off its fused SDPA kernel (about 4x slower)
    assert gpt2.config.attn_pdrop == 0.0
    assert gpt2.config._attn_implementation == "sdpa"
    assert abs(baselines.count_params(gpt2) / target - 1) <= 0.01


def test_run_meta_records_the_machine_and_precision() -> None:
    meta = benchmarking.run_meta(threads=1, quick=True, argv=[])
    machine = meta["machine_record"]
    assert machine["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert machine["precision"] == "fp32" and machine["threads"] == 1
    assert machine["matmul_peak_gflops"] > 0
    meta["loadavg_end"] = meta["loadavg_start"]
    assert machine["cpu_capability"] in benchmarking.fmt_load(meta)
