"""One function finds a checkpoint's tokenizer; s3cmn-eval, s3cmn-memory and generation all ask it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from s3cmn.cli.memory import find_tokenizer
from s3cmn.data import checkpoint_tokenizer, load_tokenizer
from s3cmn.data.errors import DataError
from s3cmn.data.tokenizer import saved_tokenizer_files
from s3cmn.evaluation.run import load_eval_tokenizer
from s3cmn.run_config import DataConfig

TEXT = "The tower is 324 metres tall."


def _ids(tokenizer, text: str = TEXT) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory, shared_data: Path) -> dict[str, Path]:
    """Checkpoint-like folders: BERT vocab.txt, GPT-2 vocab.json + merges.txt, a save_pretrained tokenizer,
    a vocab.json without its merges, and none."""
    root = tmp_path_factory.mktemp("checkpoints")
    tokenizers = shared_data / "tokenizers"
    out = {name: root / name for name in ("bert", "gpt2", "save_pretrained", "vocab_json_only", "none")}
    for folder in out.values():
        folder.mkdir()
        (folder / "config.json").write_text("{}")
    shutil.copy(tokenizers / "bert-base-uncased" / "vocab.txt", out["bert"])
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(tokenizers / "gpt2" / name, out["gpt2"])
    shutil.copy(tokenizers / "gpt2" / "vocab.json", out["vocab_json_only"])
    load_tokenizer(str(tokenizers / "bert-base-uncased")).save_pretrained(out["save_pretrained"])
    return out


def test_which_files_a_folder_holds(folders) -> None:
    assert {name: saved_tokenizer_files(f) for name, f in folders.items()} == {
        "bert": "bert", "gpt2": "gpt2", "save_pretrained": "save_pretrained", "vocab_json_only": None, "none": None,
    }


def test_checkpoint_tokenizer_is_load_tokenizer_or_none(folders) -> None:
    for name in ("bert", "gpt2", "save_pretrained"):
        assert _ids(checkpoint_tokenizer(folders[name])) == _ids(load_tokenizer(str(folders[name]))), name
    assert checkpoint_tokenizer(folders["none"]) is None
    assert checkpoint_tokenizer(folders["vocab_json_only"]) is None  # half a GPT-2 tokenizer is none
    with pytest.raises(DataError, match=r"none holds no tokenizer \(looked for tokenizer.json .* vocab.txt\)"):
        checkpoint_tokenizer(folders["none"], required=True)  # as generation asks (load_for_inference)


def test_eval_and_memory_cli_agree_on_the_checkpoints_tokenizer(folders, shared_data: Path) -> None:
    fallback = DataConfig(tokenizer=str(shared_data / "tokenizers" / "bert-base-uncased"))
    for name, folder in folders.items():
        own = checkpoint_tokenizer(folder)
        tokenizer, source = load_eval_tokenizer(folder, fallback)
        assert source == ("checkpoint" if own is not None else "data.tokenizer"), name
        found = find_tokenizer(None, folder)
        assert (found is None) == (own is None), name
        if own is not None:
            assert _ids(tokenizer) == _ids(found) == _ids(own), name
