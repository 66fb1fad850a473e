"""s3cmn-generate end to end on a tiny saved model with the bert-base-uncased tokenizer saved beside it."""

from __future__ import annotations

import io

import pytest
import torch
from transformers import BertTokenizerFast

from s3cmn.cli import generate as generate_cli
from s3cmn.quantization import generate_text, load_for_inference, quantize_model, save_quantized


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, bert_vocab):
    """An fp32 save_pretrained folder and an int8 save_quantized folder of one tiny model, each with its tokenizer."""
    from s3cmn import S3CMNConfig, S3CMNForCausalLM

    root = tmp_path_factory.mktemp("generate")
    # transformers v5: `vocab=` (a path); `vocab_file=` is silently ignored
    tokenizer = BertTokenizerFast(vocab=str(bert_vocab))
    torch.manual_seed(0)
    config = S3CMNConfig.from_preset("tiny", embedding_dim=32, hidden_dim=32, num_layers=1, spiking_units=16,
                                     mamba_d_state=4, hyena_filter_dim=8, hyena_filter_length=16, use_memory=False,
                                     initializer_range=0.1)  # fmt: skip
    model = S3CMNForCausalLM(config).eval()
    model.save_pretrained(root / "fp32")
    tokenizer.save_pretrained(root / "fp32")
    quantized, report = quantize_model(model, "torch")
    save_quantized(quantized, root / "int8", report, tokenizer)
    return root


def run(argv: list[str], capsys, stdin: str | None = None, monkeypatch=None) -> tuple[int, str, str]:
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = generate_cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_greedy_from_an_fp32_checkpoint_streams_and_reports_speed(checkpoints, capsys) -> None:
    code, out, err = run([str(checkpoints / "fp32"), "--prompt", "the cat sat", "--max-new-tokens", "6",
                          "--temperature", "0"], capsys)  # fmt: skip
    assert code == 0
    assert out.startswith("the cat sat") and len(out.split()) > 3
    assert "6 tokens in" in err and "tokens/s" in err


def test_prompts_from_stdin_quantized_at_load(checkpoints, capsys, monkeypatch) -> None:
    argv = [str(checkpoints / "fp32"), "--quantize", "int8", "--backend", "torch", "--max-new-tokens", "4",
            "--temperature", "0", "--memory", "off"]  # fmt: skip
    code, out, err = run(argv, capsys, stdin="hello world\n\nthe river\n", monkeypatch=monkeypatch)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("hello world") and lines[1].startswith("the river")
    assert "backend=torch" in err and "8 tokens in" in err


def test_an_int8_checkpoint_generates_what_the_library_does(checkpoints, capsys) -> None:
    argv = [str(checkpoints / "int8"), "--prompt", "a b c", "--max-new-tokens", "8", "--seed", "3", "--top-k", "20",
            "--top-p", "0.9"]  # fmt: skip
    code, out, _ = run(argv, capsys)
    assert code == 0
    assert run(argv, capsys)[1] == out  # seeded sampling is reproducible
    model, tokenizer, report = load_for_inference(checkpoints / "int8")
    assert report is not None and report.backend == "torch"
    pieces: list[str] = []
    result = generate_text(model, tokenizer, "a b c", max_new_tokens=8, seed=3, top_k=20, top_p=0.9,
                           on_text=pieces.append)  # fmt: skip
    assert "".join(pieces) == out and result.text.strip() == out.strip()
    assert len(pieces) > 1  # streamed piece by piece, not printed at the end


@pytest.mark.parametrize("damage", ["missing", "corrupt_fp32", "corrupt_int8", "not_a_model"])
def test_bad_checkpoints_give_one_line_errors(checkpoints, tmp_path, capsys, damage: str) -> None:
    import shutil

    if damage == "missing":
        target = tmp_path / "nowhere"
    elif damage == "not_a_model":
        target = tmp_path
    else:
        target = tmp_path / "copy"
        shutil.copytree(checkpoints / ("fp32" if damage == "corrupt_fp32" else "int8"), target)
        weights = target / ("model.safetensors" if damage == "corrupt_fp32" else "model-int8.safetensors")
        weights.write_bytes(weights.read_bytes()[:100])
    code, out, err = run([str(target), "--prompt", "x"], capsys)
    assert code == 2 and out == ""
    assert err.startswith("s3cmn-generate: error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_compile_generates_the_eager_text_and_refuses_what_it_does_not_cover(checkpoints, capsys) -> None:
    argv = [str(checkpoints / "fp32"), "--prompt", "the cat sat", "--max-new-tokens", "6", "--temperature", "0"]
    code, eager, _ = run(argv, capsys)
    assert code == 0
    code, compiled, err = run([*argv, "--compile"], capsys)  # this model has no memory: --memory on reads nothing
    assert code == 0 and compiled == eager and "6 tokens in" in err
    code, out, err = run([str(checkpoints / "int8"), "--prompt", "x", "--compile"], capsys)
    last = err.splitlines()[-1]  # after the int8 report line
    assert code == 2 and out == "" and last.startswith("s3cmn-generate: error: ") and "quantised" in last
    code, out, err = run([*argv, "--compile", "--memory", "dynamic"], capsys)
    assert code == 2 and "--memory off" in err and err.count("\n") == 1
    code, out, err = run([*argv, "--compile-weights", "bf16"], capsys)
    assert code == 2 and "add --compile" in err and err.count("\n") == 1
    code, half, err = run([*argv, "--compile", "--compile-weights", "bf16"], capsys)
    assert code == 0 and "6 tokens in" in err and half.strip()  # greedy text of the rounded weights
