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
    assert len(VALID) >= 10 and len(REFUSED) >= 100


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


READER = {  # the reader's modules, and in each the functions that run only when writing a file
    "container": set(), "compact": {"plan_to_masks", "compact_manifest"}, "coding": set(),
    "joint": {"joint_encode"}, "contexts": {"push", "cost"},
    "codec": {"file_model", "encode_model"},
    "graph": {"_encode", "_target_name", "traced", "_dtype_name", "portable", "_check_round_trip", "describe"},
}
REFUSALS = ("ContainerError", "GraphError", "FormatError")


def _refusal_templates() -> dict[str, str]:
    """Every message the reader refuses a file with (from its source: each ``raise`` of its own error
    types outside the writer's functions), as a regex over the message, by ``module:line``."""
    import ast
    import re

    import slimzip

    found = {}
    for module, writer in READER.items():
        path = Path(slimzip.__file__).parent / f"{module}.py"
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, ast.FunctionDef) or fn.name in writer:
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args and \
                        getattr(node.exc.func, "id", None) in REFUSALS:
                    arg = node.exc.args[0]
                    parts = arg.values if isinstance(arg, ast.JoinedStr) else [arg]
                    if all(isinstance(p, (ast.Constant, ast.FormattedValue)) for p in parts):
                        pattern = "".join(re.escape(p.value) if isinstance(p, ast.Constant) else ".*" for p in parts)
                        found[f"{module}:{node.lineno}"] = pattern
    return found


# refusals no rule file of the corpus reaches yet (each entry is a debt: a new rule file removes it)
NOT_IN_CORPUS = {
    "the file's channel plan does not fit the given model",  # needs the user's own class: tests/test_api_seams.py
    "bytes is larger than any .slz slimzip writes",  # a file past 4 GiB (read_container, before any byte is read)
    "the decoded tensors do not load into the model",  # shapes are checked first; PyTorch's own refusal, kept as a guard
    "fixed-width stream holds a symbol outside the alphabet",  # version 4 only (a non-power-of-two codebook)
    "the model graph is inconsistent",  # fx's own lint after slimzip's checks, kept as a guard
    "bad section reference",  # every reference is checked whole first (each section used once); kept as a guard
    "malformed shape", "claims more than",  # inspect of a file storing no model: tests/test_reliability.py
    "kept positions do not match its count",  # a context stream's count is its row's nnz, checked against the positions
}


def test_every_refusal_of_the_reader_has_a_rule_file():
    """Walk the reader's refusals (``_refusal_templates``) and check that a file of the corpus is refused
    by each, except those listed in ``NOT_IN_CORPUS`` (which must still be uncovered: the list only
    shrinks)."""
    import re

    templates = _refusal_templates()
    messages = []
    for name in REFUSED:
        try:
            decode_model(decode_container((CORPUS / name).read_bytes()))
        except SlimzipError as e:
            messages.append(str(e))
    covered = {k for k, pattern in templates.items() if any(re.search(pattern, m) for m in messages)}
    missing = {k: templates[k] for k in set(templates) - covered}
    print(f"{len(covered)} of {len(templates)} refusals have a corpus file")
    assert len(templates) > 60
    def text(pattern: str) -> str:
        return re.sub(r"\\(.)", r"\1", pattern)

    listed = {k for k, p in missing.items() if any(x in text(p) for x in NOT_IN_CORPUS)}
    assert not set(missing) - listed, f"refusals with no corpus file: {sorted(text(missing[k]) for k in set(missing) - listed)}"
    stale = [x for x in NOT_IN_CORPUS if not any(x in text(missing[k]) for k in missing)]
    assert not stale, f"listed as uncovered but a corpus file now covers them (or gone): {stale}"
