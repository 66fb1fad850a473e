#!/usr/bin/env python
"""Drive the s3cmn CLIs through bad inputs and interruptions; every case must end in a one-line error or a
clean stop, never a traceback, and no checkpoint may be lost.

    python scripts/reliability.py [--jobs N] [--keep DIR] [-k PATTERN]

Prints one line per case (PASS/FAIL, the case, its seconds, what the CLI said) and a summary line; exits 1
if any case fails. Runs offline on WikiText-2 excerpts from ../shared/data with a ~1M-parameter fp32 model.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from s3cmn.utils import cli_runner
from s3cmn.utils.cli_runner import TINY_MODEL as MODEL
from s3cmn.utils.cli_runner import TINY_RUN as RUN
from s3cmn.utils.cli_runner import TRACEBACK, cli_env
from s3cmn.utils.cli_runner import CliResult as Result

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


class CaseFailed(AssertionError):
    """The CLI did not end the way the case requires."""


class Workspace:
    """The shared inputs: text excerpts, a token cache, a finished run, a run with learned positions."""

    def __init__(self, root: Path) -> None:
        self.root = root
        raw = SHARED / "wikitext-2-raw"
        self.train, self.valid = root / "train.txt", root / "valid.txt"
        self.train.write_bytes((raw / "wiki.valid.raw").read_bytes()[:40_000])
        self.valid.write_bytes((raw / "wiki.test.raw").read_bytes()[:12_000])
        self.full_valid = raw / "wiki.test.raw"
        self.tokenizer = SHARED / "tokenizers" / "bert-base-uncased"
        self.cache = root / "cache"
        self.run = root / "base-run"
        self.learned = root / "learned-run"

    def data(self, train: Path | None = None) -> list[str]:
        return ["--train-file", str(train or self.train), "--validation-file", str(self.valid),
                "--tokenizer", str(self.tokenizer), "--cache-dir", str(self.cache)]

    def train_args(self, out: Path, *extra: str, train: Path | None = None) -> list[str]:
        return [*MODEL, *RUN, *self.data(train), "--output-dir", str(out), *extra]

    def prepare(self) -> None:
        for out, extra in ((self.run, ["--max-steps", "4"]),
                           (self.learned, ["--max-steps", "2", "--position-embedding", "learned",
                                           "--max-position-embeddings", "40"])):
            result = cli("train", self.train_args(out, *extra))
            if result.returncode != 0:
                sys.exit(f"reliability: could not train the base run {out}:\n{result.output[-3000:]}")

    def copy_run(self, name: str, source: Path | None = None) -> Path:
        target = self.root / "cases" / name
        shutil.copytree(source or self.run, target)
        return target

    def folder(self, name: str) -> Path:
        return self.root / "cases" / name


def cli(module: str, args: list[str], timeout: float = 180, stdin: str | None = None) -> Result:
    try:
        return cli_runner.run_cli(module, args, timeout, cwd=REPO, stdin=stdin)
    except subprocess.TimeoutExpired as err:
        raise CaseFailed(f"still running after {timeout:.0f} s") from err


def start(module: str, args: list[str], log: Path) -> subprocess.Popen:
    return cli_runner.start_cli(module, args, log, cwd=REPO)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    try:
        cli_runner.wait_for(predicate, timeout, what)
    except TimeoutError as err:
        raise CaseFailed(str(err)) from None


def finish(proc: subprocess.Popen, log: Path, timeout: float) -> Result:
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired as err:
        proc.kill()
        proc.wait()
        raise CaseFailed(f"did not stop within {timeout:.0f} s of the signal") from err
    return Result(code, "", log.read_text())


# ----------------------------------------------------------------------------------------------------
# what a case must end with


def error(result: Result, prog: str, pattern: str) -> str:
    """A one-line error (exit 2) matching ``pattern``, no traceback."""
    if TRACEBACK in result.output:
        raise CaseFailed("traceback: " + result.output.strip().splitlines()[-1][:200])
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{prog}: error:")]
    if result.returncode != 2 or len(lines) != 1:
        raise CaseFailed(f"exit {result.returncode}, {len(lines)} error lines: {result.output.strip()[-300:]}")
    if not re.search(pattern, lines[0]):
        raise CaseFailed(f"the error does not say {pattern!r}: {lines[0]}")
    return lines[0]


def stop(result: Result, pattern: str, codes: tuple[int, ...] = (0,)) -> str:
    """A clean stop: the exit code, the run's summary line matching ``pattern``, no traceback."""
    if TRACEBACK in result.output:
        raise CaseFailed("traceback: " + result.output.strip().splitlines()[-1][:200])
    summary = [line for line in result.output.splitlines() if line.startswith("stopped (")]
    if result.returncode not in codes or not summary:
        raise CaseFailed(f"exit {result.returncode}: {result.output.strip()[-300:]}")
    if not re.search(pattern, summary[-1]):
        raise CaseFailed(f"the summary does not say {pattern!r}: {summary[-1]}")
    return summary[-1]


def intact(folder: Path, step: int | None = None, name: str = "last") -> None:
    """The checkpoint ``name`` is whole: its state parses, its weights load, at ``step`` if given."""
    from safetensors.torch import load_file

    path = folder / name
    if not (path / "trainer_state.json").is_file() and (folder / f"{name}.old" / "trainer_state.json").is_file():
        path = folder / f"{name}.old"
    try:
        state = json.loads((path / "trainer_state.json").read_text())
        load_file(path / "model.safetensors")
    except (OSError, ValueError) as err:
        raise CaseFailed(f"checkpoint {path} lost or damaged: {err}") from err
    if step is not None and state["step"] != step:
        raise CaseFailed(f"checkpoint {path} is at step {state['step']}, expected {step}")


# ----------------------------------------------------------------------------------------------------
# the cases: each returns the line the CLI ended with

CASES: list[tuple[str, Callable[[Workspace], str]]] = []


def case(name: str) -> Callable:
    def register(fn: Callable[[Workspace], str]) -> Callable[[Workspace], str]:
        CASES.append((name, fn))
        return fn
    return register


def train_error(name: str, pattern: str, *extra: str) -> None:
    """A case: s3cmn-train with ``extra`` flags on a fresh folder ends in a one-line error."""
    @case(name)
    def run(ws: Workspace) -> str:
        return error(cli("train", ws.train_args(ws.folder(name), *extra)), "s3cmn-train", pattern)


def resume_refused(name: str, pattern: str, *extra: str) -> None:
    """A case: resuming a copy of the base run with ``extra`` flags is refused, and the checkpoint stays whole."""
    @case(name)
    def run(ws: Workspace) -> str:
        out = ws.copy_run(name)
        line = error(cli("train", ws.train_args(out, "--resume", *extra)), "s3cmn-train", pattern)
        intact(out, 4)
        return line


def edited_config_run(ws: Workspace, name: str) -> Path:
    """A copy of the base run whose ``last/config.json`` says hidden_dim 64 (the weights are 32 wide)."""
    out = ws.copy_run(name)
    config = json.loads((out / "last" / "config.json").read_text())
    (out / "last" / "config.json").write_text(json.dumps({**config, "hidden_dim": 64}))
    return out


# --- issue 17: the seven problems
@case("rerun-into-existing-run-without-resume")
def _(ws: Workspace) -> str:
    out = ws.copy_run("rerun")
    line = error(cli("train", ws.train_args(out, "--max-steps", "2")), "s3cmn-train", "--resume.*--overwrite")
    intact(out, 4), intact(out, 4, "best")
    return line


@case("bare-resume-continues")
def _(ws: Workspace) -> str:
    out = ws.copy_run("bare-resume")
    line = stop(cli("train", ws.train_args(out, "--max-steps", "6", "--resume")), r"after 6 steps")
    intact(out, 6)
    return line


@case("overwrite-replaces-the-run")
def _(ws: Workspace) -> str:
    out = ws.copy_run("overwrite")
    line = stop(cli("train", ws.train_args(out, "--max-steps", "2", "--overwrite")), r"after 2 steps")
    intact(out, 2)
    return line


@case("second-run-on-a-folder-in-use")
def _(ws: Workspace) -> str:
    out, log = ws.folder("in-use"), ws.root / "in-use.log"
    first = start("train", ws.train_args(out, "--num-epochs", "1000", "--max-time", "300"), log)
    try:
        wait_for(lambda: (out / "train.lock").exists(), 120, "the first run's lock")
        line = error(cli("train", ws.train_args(out, "--max-steps", "2")), "s3cmn-train",
                     f"in use by another training run \\(process {first.pid} ")
    finally:
        first.send_signal(signal.SIGTERM)
        stop(finish(first, log, 60), r"signal SIGTERM", (130,))
    intact(out)
    return line


@case("stale-lock-taken-over")
def _(ws: Workspace) -> str:
    out = ws.copy_run("stale-lock")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / "train.lock").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "started": 0}))
    result = cli("train", ws.train_args(out, "--max-steps", "5", "--resume"))
    line = stop(result, r"after 5 steps")
    if "taking over the stale lock" not in result.stderr:
        raise CaseFailed("no log line about the stale lock")
    return line


resume_refused("resume-with-another-hidden-dim", r"hidden_dim \(checkpoint 32, given 64\)", "--hidden-dim", "64")


@case("edited-config-json-resume")
def _(ws: Workspace) -> str:
    out = edited_config_run(ws, "edited-config")
    return error(cli("train", ws.train_args(out, "--resume")), "s3cmn-train", "does not match its config")


@case("edited-config-json-eval")
def _(ws: Workspace) -> str:
    out = edited_config_run(ws, "edited-config-eval")
    return error(cli("eval", [str(out / "last"), "--max-eval-tokens", "64"]), "s3cmn-eval",
                 "does not match its config")


train_error("learned-positions-shorter-than-sequence", r"sequence_length = 32 is longer than max_position",
            "--position-embedding", "learned", "--max-position-embeddings", "16")


@case("pickled-optimizer-state")
def _(ws: Workspace) -> str:
    out = ws.copy_run("pickled-optimizer")
    code = "import argparse, sys, torch; torch.save({'state': argparse.Namespace(a=1)}, sys.argv[1])"
    subprocess.run([sys.executable, "-c", code, str(out / "last" / "optimizer.pt")], check=True, env=cli_env())
    line = error(cli("train", ws.train_args(out, "--resume")), "s3cmn-train", "not in a safe format")
    if "weights_only" in line:
        raise CaseFailed("the error recommends weights_only")
    return line


@case("resume-with-new-learning-rate")
def _(ws: Workspace) -> str:
    out = ws.copy_run("resume-lr")
    result = cli("train", ws.train_args(out, "--resume", "--max-steps", "6", "--learning-rate", "1e-5"))
    line = stop(result, r"after 6 steps")
    if "learning_rate changed from 0.003 to 1e-05" not in result.stderr:
        raise CaseFailed("the new learning rate is not reported")
    return line


resume_refused("resume-with-new-sequence-length", r"sequence_length \(checkpoint 32, given 16", "--sequence-length",
               "16")


@case("sigint-during-a-long-validation")
def _(ws: Workspace) -> str:
    out, log = ws.folder("sigint"), ws.root / "sigint.log"
    proc = start("train", [*MODEL, *RUN, *ws.data(), "--validation-file", str(ws.full_valid),
                           "--validation-source", "file", "--eval-batches", "0", "--eval-interval", "1",
                           "--max-steps", "100000", "--output-dir", str(out)], log)
    wait_for(lambda: (out / "metrics.jsonl").exists(), 180, "the first step")
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    result = finish(proc, log, 30)
    line = stop(result, r"signal SIGINT", (130,))
    if "not recorded" not in result.stderr:
        raise CaseFailed("the validation under way was not cut short")
    intact(out)
    return line


@case("sigint-twice-abandons-the-step")
def _(ws: Workspace) -> str:
    out, log = ws.folder("sigint-twice"), ws.root / "sigint-twice.log"
    proc = start("train", ws.train_args(out, "--gradient-accumulation-steps", "3000", "--max-steps", "2"), log)
    wait_for(lambda: (out / "train.lock").exists(), 120, "the run to start")
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    line = stop(finish(proc, log, 30), r"signal SIGINT", (130,))
    intact(out, 0)
    return line


@case("sigterm-stops-cleanly")
def _(ws: Workspace) -> str:
    out, log = ws.folder("sigterm"), ws.root / "sigterm.log"
    proc = start("train", ws.train_args(out, "--num-epochs", "1000"), log)
    wait_for(lambda: (out / "last").exists(), 120, "the first checkpoint")
    proc.send_signal(signal.SIGTERM)
    line = stop(finish(proc, log, 30), r"signal SIGTERM", (130,))
    intact(out)
    return line


NAN = ["--learning-rate", "1e30", "--warmup-steps", "0", "--nan-policy", "skip"]  # the weights blow up at once


@case("persistent-nan-skip-max-time")
def _(ws: Workspace) -> str:
    # 100,000 epochs: only the 3 s budget can end it, on any machine (a fast one once finished 1 epoch first)
    return stop(cli("train", ws.train_args(ws.folder("nan-time"), *NAN, "--max-time", "3", "--num-epochs", "100000"),
                    timeout=90),
                r"stopped \(max_time\)")


@case("persistent-nan-skip-max-steps")
def _(ws: Workspace) -> str:
    return stop(cli("train", ws.train_args(ws.folder("nan-steps"), *NAN, "--max-steps", "8"), timeout=90),
                r"stopped \(max_steps\)")


@case("persistent-nan-skip-sigterm")
def _(ws: Workspace) -> str:
    out, log = ws.folder("nan-sigterm"), ws.root / "nan-sigterm.log"
    proc = start("train", ws.train_args(out, *NAN), log)
    wait_for(lambda: "in a row" in log.read_text(), 120, "skipped batches")
    proc.send_signal(signal.SIGTERM)
    line = stop(finish(proc, log, 30), r"signal SIGTERM", (130,))
    intact(out)
    return line


train_error("nan-policy-stop-names-the-step", r"loss is (nan|inf) at step \d+", *NAN[:4])


@case("generate-past-the-learned-positions")
def _(ws: Workspace) -> str:
    result = cli("generate", [str(ws.learned / "last"), "--prompt", "the", "--max-new-tokens", "100"])
    if result.stdout:
        raise CaseFailed(f"text was generated before the error: {result.stdout[:80]!r}")
    return error(result, "s3cmn-generate", r"at most 39 new tokens fit")


@case("kill-9-then-resume")
def _(ws: Workspace) -> str:
    out, log = ws.folder("kill9"), ws.root / "kill9.log"
    proc = start("train", ws.train_args(out, "--max-steps", "40", "--save-interval", "1"), log)
    wait_for(lambda: (out / "last").exists(), 120, "the first checkpoint")
    time.sleep(0.7)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    intact(out)
    line = stop(cli("train", ws.train_args(out, "--max-steps", "40", "--save-interval", "1", "--resume")),
                r"after 40 steps")
    intact(out, 40)
    return line


# --- bad flags and values
train_error("unknown-flag", r"unknown option --hiden-dim; did you mean --hidden-dim", "--hiden-dim", "64")
train_error("not-an-integer", r"--batch-size: invalid .*'abc'", "--batch-size", "abc")
train_error("batch-size-zero", r"batch_size.*0", "--batch-size", "0")
train_error("negative-learning-rate", r"learning_rate", "--learning-rate", "-1")
train_error("bad-choice", r"--mixed-precision: invalid choice", "--mixed-precision", "fp8")
train_error("bad-boolean", r"expected true or false, got 'maybe'", "--resume", "maybe")
train_error("resume-and-overwrite", r"contradict", "--resume", "--overwrite")
train_error("modify-not-json", r"--modify is not valid JSON", "--modify", "{hidden_dim: 8")
train_error("modify-unknown-key", r"hiden_dim", "--modify", '{"hiden_dim": 8}')
train_error("config-file-missing", r"config file .* does not exist", "--config-path", "/nonexistent/run.yaml")
train_error("heads-do-not-divide-width", r"divisible by num_attention_heads", "--hidden-dim", "30", "--embedding-dim",
            "30", "--block-type", "reservoir", "--use-memory", "false")  # heads are checked where attention is used
train_error("memory-layer-out-of-range", r"memory_layers contains 5", "--memory-layers", "[5]")
train_error("cuda-without-a-gpu", r"cuda", "--device", "cuda")
train_error("fp16-on-the-cpu", r"fp16", "--mixed-precision", "fp16")
train_error("curriculum-without-ramp", r"--curriculum-tokens", "--curriculum", "seq-length", "--max-steps", "2")
# issue 32: a billion layers used to allocate until the machine swapped; a billion sequences need ~250 TB
train_error("a-billion-layers", r"the model needs ~[\d,.]+ GiB to train \(.*params.*but only [\d.]+ GiB is "
            r"available.*--force", "--num-layers", "1000000000")
train_error("a-batch-beyond-ram", r"activations [\d,.]+ GiB.*but only [\d.]+ GiB is available", "--batch-size",
            "1000000000")


@case("config-file-not-yaml")
def _(ws: Workspace) -> str:
    bad = ws.root / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    return error(cli("train", ws.train_args(ws.folder("bad-yaml"), "--config-path", str(bad))), "s3cmn-train",
                 "not valid YAML")


@case("config-file-not-utf8")
def _(ws: Workspace) -> str:
    bad = ws.root / "latin1.json"
    bad.write_bytes(b'{"hidden_dim": 32, "note": "caf\xe9"}')
    return error(cli("train", ws.train_args(ws.folder("latin1-config"), "--config-path", str(bad))), "s3cmn-train",
                 "not UTF-8")


# --- bad data
@case("train-file-missing")
def _(ws: Workspace) -> str:
    return error(cli("train", ws.train_args(ws.folder("no-data"), train=Path("/nonexistent/train.txt"))),
                 "s3cmn-train", "train.txt")


@case("train-file-empty")
def _(ws: Workspace) -> str:
    empty = ws.root / "empty.txt"
    empty.write_text("")
    return error(cli("train", ws.train_args(ws.folder("empty-data"), train=empty)), "s3cmn-train", "empty|no text")


@case("train-file-tiny")
def _(ws: Workspace) -> str:
    tiny = ws.root / "tiny.txt"
    tiny.write_text(" = Valkyria Chronicles = \n")
    return error(cli("train", ws.train_args(ws.folder("tiny-data"), train=tiny)), "s3cmn-train",
                 "token|block|short")


@case("train-file-not-utf8")
def _(ws: Workspace) -> str:
    latin = ws.root / "latin1.txt"
    latin.write_bytes(ws.train.read_bytes()[:5000] + b" caf\xe9 " + ws.train.read_bytes()[5000:10000])
    return error(cli("train", ws.train_args(ws.folder("latin1-data"), train=latin)), "s3cmn-train", "UTF-8")


@case("unknown-tokenizer")
def _(ws: Workspace) -> str:
    args = [*ws.train_args(ws.folder("bad-tokenizer")), "--tokenizer", "no-such-tokenizer-xyz"]
    return error(cli("train", args), "s3cmn-train", "no-such-tokenizer-xyz")


# --- missing and corrupt checkpoints and memory indexes
train_error("resume-without-a-checkpoint", r"no checkpoint at", "--resume")


@case("resume-incomplete-checkpoint")
def _(ws: Workspace) -> str:
    out = ws.copy_run("incomplete")
    (out / "last" / "trainer_state.json").unlink()
    return error(cli("train", ws.train_args(out, "--resume")), "s3cmn-train", "incomplete")


@case("resume-corrupt-trainer-state")
def _(ws: Workspace) -> str:
    out = ws.copy_run("corrupt-state")
    (out / "last" / "trainer_state.json").write_text('{"step": 4, "tok')
    return error(cli("train", ws.train_args(out, "--resume")), "s3cmn-train", "unreadable|corrupt")


@case("resume-truncated-weights")
def _(ws: Workspace) -> str:
    out = ws.copy_run("truncated-weights")
    weights = out / "last" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    return error(cli("train", ws.train_args(out, "--resume")), "s3cmn-train", "unreadable or corrupt")


@case("resume-garbage-optimizer-state")
def _(ws: Workspace) -> str:
    out = ws.copy_run("garbage-optimizer")
    (out / "last" / "optimizer.pt").write_bytes(os.urandom(2000))
    return error(cli("train", ws.train_args(out, "--resume")), "s3cmn-train", r"optimizer.pt is corrupt")


@case("resume-missing-optimizer-state")
def _(ws: Workspace) -> str:
    out = ws.copy_run("missing-optimizer")
    (out / "last" / "optimizer.pt").unlink()
    return error(cli("train", ws.train_args(out, "--resume")), "s3cmn-train", "optimizer.pt is missing")


@case("resume-corrupt-memory-index")
def _(ws: Workspace) -> str:
    out = ws.copy_run("corrupt-index")
    index = next((out / "last" / "memory" / "0").glob("index-*.faiss"))
    index.write_bytes(index.read_bytes()[:64])
    return error(cli("train", ws.train_args(out, "--resume")), "s3cmn-train", "memory|index|corrupt")


@case("resume-missing-memory-folder")
def _(ws: Workspace) -> str:
    out = ws.copy_run("missing-memory")
    shutil.rmtree(out / "last" / "memory")
    return error(cli("train", ws.train_args(out, "--resume")), "s3cmn-train", "memory")


@case("resume-from-old-after-crash-between-renames")
def _(ws: Workspace) -> str:
    out = ws.copy_run("crash-between-renames")
    os.replace(out / "last", out / "last.old")
    line = stop(cli("train", ws.train_args(out, "--resume", "--max-steps", "6")), r"after 6 steps")
    intact(out, 6)
    return line


@case("eval-missing-checkpoint")
def _(ws: Workspace) -> str:
    return error(cli("eval", ["/nonexistent/checkpoint"]), "s3cmn-eval", "/nonexistent/checkpoint")


@case("eval-folder-without-config")
def _(ws: Workspace) -> str:
    folder = ws.folder("no-config")
    folder.mkdir(parents=True)
    return error(cli("eval", [str(folder)]), "s3cmn-eval", "config")


@case("eval-corrupt-memory-index")
def _(ws: Workspace) -> str:
    out = ws.copy_run("eval-corrupt-index")
    index = next((out / "last" / "memory" / "0").glob("index-*.faiss"))
    index.write_bytes(b"not a faiss index")
    return error(cli("eval", [str(out / "last"), "--max-eval-tokens", "64"]), "s3cmn-eval", "memory|index|corrupt")


@case("generate-missing-checkpoint")
def _(ws: Workspace) -> str:
    return error(cli("generate", ["/nonexistent/checkpoint", "--prompt", "the"]), "s3cmn-generate", "does not exist")


@case("generate-zero-new-tokens")
def _(ws: Workspace) -> str:
    return error(cli("generate", [str(ws.run / "last"), "--prompt", "the", "--max-new-tokens", "0"]),
                 "s3cmn-generate", "max_new_tokens")


@case("generate-top-p-out-of-range")
def _(ws: Workspace) -> str:
    return error(cli("generate", [str(ws.run / "last"), "--prompt", "the", "--top-p", "2"]), "s3cmn-generate",
                 "top_p")


# --- a full disk, and a reader of `last` while the run replaces it (issue 32)
# s3cmn-train in a process whose writes hit a full disk (ENOSPC) part-way: half of optimizer.pt reaches the
# disk, or 100 bytes of a memory store's file
FULL_DISK = {
    "checkpoint": """
import errno, io, os, torch
real_save = torch.save
def save(obj, f, *args, **kwargs):
    if not str(f).endswith("optimizer.pt"):
        return real_save(obj, f, *args, **kwargs)
    buffer = io.BytesIO()
    real_save(obj, buffer, *args, **kwargs)
    with open(f, "wb") as handle:
        handle.write(buffer.getvalue()[: buffer.tell() // 2])
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
torch.save = save
""",
    "memory": """
import errno, os
from s3cmn.memory import persist
class FullDiskFile:
    def __init__(self, handle): self.handle = handle
    def write(self, data):
        self.handle.write(data[:100]); self.handle.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    def __getattr__(self, name): return getattr(self.handle, name)
    def __enter__(self): return self
    def __exit__(self, *exc): self.handle.close()
def full_disk_open(path, mode="r", *args, **kwargs):
    handle = open(path, mode, *args, **kwargs)
    return FullDiskFile(handle) if "w" in mode else handle
persist.open = full_disk_open
""",
}
TRAIN_MAIN = "\nimport sys\nfrom s3cmn.cli.train import main\nsys.exit(main(sys.argv[1:]))\n"


def train_on_a_full_disk(ws: Workspace, name: str, fault: str) -> str:
    """Resume a copy of the base run to step 6 while its disk is full: a one-line error naming the file, and
    ``last`` still the whole step-4 checkpoint."""
    out = ws.copy_run(name)
    before = {p.name for p in out.iterdir()}
    command = [sys.executable, "-c", FULL_DISK[fault] + TRAIN_MAIN, *ws.train_args(out, "--resume", "--max-steps", "6")]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=180, env=cli_env(), cwd=REPO)
    except subprocess.TimeoutExpired as err:
        raise CaseFailed("still running after 180 s") from err
    line = error(Result(proc.returncode, proc.stdout, proc.stderr), "s3cmn-train",
                 f"could not write the checkpoint {re.escape(str(out / 'last'))} .*No space left on device.*"
                 "still holds the previous checkpoint")
    intact(out, 4)
    leftovers = [p.name for p in out.iterdir() if p.name not in before and p.name != "metrics.csv"]
    if leftovers:
        raise CaseFailed(f"the partial save was left on the disk: {leftovers}")
    return line


@case("disk-full-during-checkpoint-save")
def _(ws: Workspace) -> str:
    return train_on_a_full_disk(ws, "disk-full-checkpoint", "checkpoint")


@case("disk-full-during-memory-store-save")
def _(ws: Workspace) -> str:
    line = train_on_a_full_disk(ws, "disk-full-memory", "memory")
    if not re.search(r"memory/\d+/arrays-\w+\.safetensors", line):
        raise CaseFailed("the error does not name the memory store's file")
    return line


# --- the datastore build (issue 32): a full disk, SIGKILL at random moments, a dead torchrun rank
def build_args(ws: Workspace, out: Path, *extra: str) -> list[str]:
    """``s3cmn-memory build`` of the base run over the training excerpt, one forward batch per chunk."""
    return ["build", str(ws.run / "last"), "--text", str(ws.train), "--out", str(out), "--index", "ivfflat",
            "--chunk-batches", "1", "--no-progress", *extra]


def same_datastore(a: Path, b: Path) -> None:
    """The two datastores hold the same entries and answer 64 queries with the same neighbours."""
    import numpy as np

    from s3cmn.nexttoken.datastore import NextTokenDatastore

    first, second = NextTokenDatastore.load(a), NextTokenDatastore.load(b)
    queries = np.random.default_rng(0).standard_normal((64, first.dim)).astype(np.float32)
    if not (np.array_equal(first.values, second.values) and np.array_equal(first.positions, second.positions)):
        raise CaseFailed(f"{b} holds other entries than {a}")
    if not np.array_equal(first.index.search(queries, 8)[1], second.index.search(queries, 8)[1]):
        raise CaseFailed(f"{b} answers with other neighbours than {a}")


def reference_datastore(ws: Workspace, *extra: str) -> Path:
    """An uninterrupted build with ``extra`` settings."""
    out = ws.root / ("datastore-reference" + "".join(extra).replace("-", "_"))
    result = cli("memory", build_args(ws, out, *extra))
    if result.returncode != 0:
        raise CaseFailed(f"the reference build failed: {result.output.strip()[-300:]}")
    return out


FULL_DISK_CHUNK = """
import errno, os
from s3cmn.memory import persist
real, writes = persist.atomic_write, []
def atomic_write(path, data):
    if "chunk-" in path.name:
        writes.append(path)
        if len(writes) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return real(path, data)
persist.atomic_write = atomic_write
import s3cmn.nexttoken.build as build
build.atomic_write = atomic_write
import sys
from s3cmn.cli.memory import main
sys.exit(main(sys.argv[1:]))
"""


@case("disk-full-during-datastore-build")
def _(ws: Workspace) -> str:
    out = ws.folder("datastore-full-disk")
    proc = subprocess.run([sys.executable, "-c", FULL_DISK_CHUNK, *build_args(ws, out)], capture_output=True,
                          text=True, timeout=180, env=cli_env(), cwd=REPO)  # fmt: skip
    line = error(Result(proc.returncode, proc.stdout, proc.stderr), "s3cmn-memory build",
                 r"No space left on device.*chunk-000002\.npz")
    chunks = sorted((out / ".build").glob("chunk-*"))
    if [c.name for c in chunks] != ["chunk-000000.npz", "chunk-000001.npz"]:
        raise CaseFailed(f"after the full disk the build folder holds {[c.name for c in chunks]}")
    resumed = cli("memory", build_args(ws, out, "--resume"))
    if resumed.returncode != 0:
        raise CaseFailed(f"--resume after the full disk failed: {resumed.output.strip()[-300:]}")
    same_datastore(reference_datastore(ws), out)
    return line


@case("datastore-build-killed-5-times-resumes")
def _(ws: Workspace) -> str:
    import random

    out, log, rng = ws.folder("datastore-killed"), ws.root / "datastore-killed.log", random.Random(5)
    args = [*build_args(ws, out), "--batch-size", "1"]  # ~600 chunks: every kill lands in the middle

    def chunks() -> int:
        return len(list((out / ".build").glob("chunk-*.npz")))

    for kill in range(5):
        proc = start("memory", [*args, *(["--resume"] if kill else [])], log)
        target = chunks() + rng.randint(1, 60)  # killed after a random number of new chunks
        wait_for(lambda: chunks() >= target or proc.poll() is not None, 120, "the build's chunks")  # noqa: B023
        proc.kill()
        if proc.wait() == 0:
            raise CaseFailed(f"the build finished before kill {kill + 1}")
    result = cli("memory", [*args, "--resume"])
    if result.returncode != 0:
        raise CaseFailed(f"the resumed build failed: {result.output.strip()[-300:]}")
    same_datastore(reference_datastore(ws, "--batch-size", "1"), out)
    return result.stdout.strip().splitlines()[-1]


def rank_pid(out: Path, rank: int) -> int | None:
    """The process of torchrun worker ``rank`` building into ``out`` (found through /proc)."""
    for proc in Path("/proc").iterdir():
        try:
            if str(out) in (proc / "cmdline").read_text() and f"LOCAL_RANK={rank}\0".encode() in (
                    proc / "environ").read_bytes():
                return int(proc.name)
        except (OSError, ValueError):
            continue
    return None


@case("torchrun-build-with-a-dead-rank-stops")
def _(ws: Workspace) -> str:
    out, log = ws.folder("datastore-dead-rank"), ws.root / "datastore-dead-rank.log"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
               "s3cmn.cli.memory", *build_args(ws, out, "--timeout", "20")]  # fmt: skip
    with open(log, "w") as handle:
        proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=cli_env(), cwd=REPO)
    try:
        wait_for(lambda: (out / ".build" / "plan.json").is_file(), 120, "the build plan")
        pid = rank_pid(out, 1)
        if pid is None:
            raise CaseFailed("rank 1 not found")
        os.kill(pid, signal.SIGKILL)
        code = proc.wait(60)
    except subprocess.TimeoutExpired as err:
        raise CaseFailed("rank 0 still running 60 s after rank 1 was killed") from err
    finally:
        if proc.poll() is None:
            proc.kill()
    if code == 0:
        raise CaseFailed("torchrun reported success with a dead rank")
    return f"torchrun exit {code} within 60 s of rank 1's SIGKILL"


READER = """
import json, sys
from pathlib import Path
from s3cmn.modeling.loading import load_model
from s3cmn.utils.checkpoints import read_checkpoint, read_trainer_state
last, steps = Path(sys.argv[1]), []
while len(set(steps)) < 4:  # loads until the run has replaced `last` three times under it
    model, state = read_checkpoint(last, lambda path: (load_model(path), read_trainer_state(path)))
    steps.append(state["step"])
print(json.dumps(steps))
"""


@case("reader-of-last-during-saves")
def _(ws: Workspace) -> str:
    out, log = ws.folder("reader"), ws.root / "reader.log"
    proc = start("train", ws.train_args(out, "--num-epochs", "1000", "--save-interval", "1"), log)
    try:
        wait_for(lambda: (out / "last" / "trainer_state.json").exists(), 120, "the first checkpoint")
        reader = subprocess.run([sys.executable, "-c", READER, str(out / "last")], capture_output=True, text=True,
                                timeout=180, env=cli_env(), cwd=REPO)
    except subprocess.TimeoutExpired as err:
        raise CaseFailed("the reader saw fewer than 4 checkpoints in 180 s") from err
    finally:
        proc.send_signal(signal.SIGTERM)
        stopped = stop(finish(proc, log, 60), r"signal SIGTERM", (130,))
    if reader.returncode != 0:
        raise CaseFailed("a load of last failed: " + (reader.stderr.strip().splitlines() or ["?"])[-1][:200])
    steps = json.loads(reader.stdout.strip().splitlines()[-1])
    if steps != sorted(steps):
        raise CaseFailed(f"the loads went back in time: steps {steps}")
    intact(out)
    return f"{len(steps)} loads of last, each whole, at steps {steps[0]}..{steps[-1]} while the run saved; {stopped}"


# ----------------------------------------------------------------------------------------------------


def run_case(ws: Workspace, name: str, fn: Callable[[Workspace], str]) -> tuple[bool, str]:
    start_time = time.perf_counter()
    try:
        detail, ok = fn(ws), True
    except CaseFailed as err:
        detail, ok = str(err), False
    except Exception as err:  # noqa: BLE001 - a bug in the case itself is a failed case, reported on its line
        detail, ok = f"the case itself failed: {type(err).__name__}: {err}", False
    seconds = time.perf_counter() - start_time
    detail = " ".join(detail.split())
    return ok, f"{'PASS' if ok else 'FAIL'}  {name:<44} {seconds:5.1f} s  {detail[:220]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=min(8, (os.cpu_count() or 2) + 1),
                        help="cases at a time (default: CPUs + 1, since signal cases mostly wait)")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    parser.add_argument("-k", dest="pattern", help="only the cases whose name contains this")
    args = parser.parse_args(argv)
    if not SHARED.is_dir():
        parser.error(f"the data folder {SHARED} is missing (the repository must sit beside ../shared)")
    cases = [(n, f) for n, f in CASES if not args.pattern or args.pattern in n]
    started = time.perf_counter()
    root = args.keep or Path(tempfile.mkdtemp(prefix="s3cmn-reliability-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        ws = Workspace(root)
        ws.prepare()
        print(f"reliability: {len(cases)} cases, {args.jobs} at a time, in {root} "
              f"(base runs ready after {time.perf_counter() - started:.0f} s)", flush=True)
        passed = 0
        with ThreadPoolExecutor(args.jobs) as pool:
            for ok, line in pool.map(lambda c: run_case(ws, *c), cases):
                passed += ok
                print(line, flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    failed = len(cases) - passed
    print(f"reliability: {passed}/{len(cases)} cases passed, {failed} failed, in {time.perf_counter() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
