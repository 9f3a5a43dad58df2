"""The reader against its corpus (tests/corpus/verdicts.json, made by tests/corpus/make_corpus.py): every
valid file decodes to the recorded tensors, every invalid one is refused with slimzip's own error naming
the broken rule, and `inspect` / `eval` say so in one line with exit code 2, the file untouched."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from slimzip.cli import main
from slimzip.codec import decode_model
from slimzip.container import decode_container
from slimzip.errors import SlimzipError

CORPUS = Path(__file__).resolve().parent / "corpus"
VERDICTS = json.loads((CORPUS / "verdicts.json").read_text())
sys.path.insert(0, str(CORPUS))
from make_corpus import INVALID, tensors_sha256  # noqa: E402
sys.path.pop(0)

VALID = sorted(k for k, v in VERDICTS.items() if v["verdict"] == "valid")
REFUSED = sorted(k for k, v in VERDICTS.items() if v["verdict"] == "invalid")


def test_the_corpus_covers_every_rule_file_and_each_verdict_is_one_of_two():
    assert {f"rules/{name}.slz" for name in INVALID} <= set(VERDICTS)
    assert {p.relative_to(CORPUS).as_posix() for p in CORPUS.glob("*/*.slz")} == set(VERDICTS)
    assert len(VALID) >= 9 and len(REFUSED) >= 50


@pytest.mark.parametrize("name", VALID)
def test_valid_files_decode_to_the_recorded_tensors(name):
    container = decode_container((CORPUS / name).read_bytes())
    assert tensors_sha256(decode_model(container), container) == VERDICTS[name]["tensors_sha256"]


@pytest.mark.parametrize("name", REFUSED)
def test_invalid_files_are_refused_naming_the_rule(name, capsys):
    path = CORPUS / name
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(SlimzipError) as info:
        decode_model(decode_container(path.read_bytes()))
    assert VERDICTS[name]["reason"] in str(info.value)
    for command in ("inspect", "eval"):
        assert main([command, str(path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("slimzip: error:"), err
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
