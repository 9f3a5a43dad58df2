"""Compile a generated C model with the machine's C compiler, run it on images through a small harness,
and measure it: flash (text + data of the object file, from ``size``), RAM (static buffers + a stack
bound from ``-fstack-usage``), agreement with PyTorch, latency per image."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SlimzipError
from .cgen import CModel

CFLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror"]
HARNESS = """#include <stdio.h>
#include <time.h>
#include "{name}.h"

int main(void) {{
    static float x[{guard}_INPUT_SIZE], y[{guard}_OUTPUT_SIZE];
    double seconds = 0.0;
    long n = 0;
    while (fread(x, sizeof(float), {guard}_INPUT_SIZE, stdin) == {guard}_INPUT_SIZE) {{
        clock_t t0 = clock();
        {name}_predict(x, y);
        double one = (double)(clock() - t0) / CLOCKS_PER_SEC;
        seconds += one;
        ++n;
        if (fwrite(y, sizeof(float), {guard}_OUTPUT_SIZE, stdout) != {guard}_OUTPUT_SIZE) return 1;
        fprintf(stderr, "%.9f\\n", one);
    }}
    fprintf(stderr, "%ld %.9f\\n", n, seconds);
    return 0;
}}
"""


@dataclass(frozen=True)
class Built:
    flash_bytes: int  # text + data of the model's object file (code, constants, weights)
    ram_bytes: int  # data + bss (the arena) + the stack bound
    stack_bytes: int
    executable: Path


def compiler() -> str:
    """The C compiler: $CC, else cc (one line and exit 2 when there is none)."""
    cc = os.environ.get("CC", "cc")
    path = shutil.which(cc)
    if path is None:
        raise SlimzipError(f"no C compiler found ({cc!r} is not on PATH; set CC or install one): "
                           "the C model cannot be checked")
    return path


def _run(args: list[str], cwd: Path, what: str, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, **kw)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace") if isinstance(proc.stderr, bytes) else proc.stderr
        first = next((line for line in err.splitlines() if "error" in line), err.strip()[:200])
        raise SlimzipError(f"{what} failed: {first.strip()[:300]}")
    return proc


def build(model: CModel, work: Path, link: bool = True) -> Built:
    """Compile ``model`` in ``work`` (object file and, with ``link``, the harness executable) and measure its
    memory."""
    cc = compiler()
    (work / f"{model.name}.c").write_text(model.source)
    (work / f"{model.name}.h").write_text(model.header)
    (work / "harness.c").write_text(HARNESS.format(name=model.name, guard=model.name.upper()))
    _run([cc, *CFLAGS, "-fstack-usage", "-c", f"{model.name}.c", "-o", f"{model.name}.o"], work, "compiling the C model")
    if link:
        _run([cc, *CFLAGS, "harness.c", f"{model.name}.o", "-lm", "-o", "harness"], work, "linking the C harness")
    text, data, bss = _sizes(work / f"{model.name}.o")
    stack = _stack_bound(work / f"{model.name}.su")
    return Built(text + data, data + bss + stack, stack, work / "harness")


def _sizes(obj: Path) -> tuple[int, int, int]:
    size = shutil.which("size")
    if size is None:
        raise SlimzipError("binutils' size is not on PATH: cannot measure the C model's flash")
    out = subprocess.run([size, str(obj)], capture_output=True, text=True, check=True).stdout.splitlines()[1].split()
    return int(out[0]), int(out[1]), int(out[2])


def _stack_bound(su: Path) -> int:
    """predict's frame plus the two largest other frames (the call depth is at most three)."""
    frames = {}
    for line in su.read_text().splitlines() if su.exists() else []:
        parts = line.split("\t")
        if len(parts) >= 2 and parts[1].isdigit():
            frames[parts[0].rsplit(":", 1)[-1]] = int(parts[1])
    predict = max((v for k, v in frames.items() if k.endswith("_predict")), default=0)
    rest = sorted((v for k, v in frames.items() if not k.endswith("_predict")), reverse=True)
    return predict + sum(rest[:2])


def _execute(built: Built, images: np.ndarray) -> subprocess.CompletedProcess:
    """The harness on ``images``: logits on stdout, each image's seconds then the total on stderr."""
    data = np.ascontiguousarray(images, dtype="<f4").tobytes()
    return _run([str(built.executable)], built.executable.parent, "running the C model", input=data, timeout=3600)


def run(built: Built, images: np.ndarray, outputs: int) -> tuple[np.ndarray, float]:
    """(logits, seconds per image inside predict) of the compiled model on ``images`` (N, ...)."""
    proc = _execute(built, images)
    logits = np.frombuffer(proc.stdout, dtype="<f4").reshape(-1, outputs)
    n, seconds = proc.stderr.decode().splitlines()[-1].split()
    if int(n) != len(images):
        raise SlimzipError(f"the C model answered {n} of {len(images)} images")
    return logits, float(seconds) / max(1, int(n))


def median_seconds(built: Built, images: np.ndarray) -> float:
    """The median seconds of one ``predict`` call over ``images`` (each timed alone)."""
    times = [float(line) for line in _execute(built, images).stderr.decode().splitlines()[:-1]]
    return float(np.median(times)) if times else 0.0


def c_name(out: Path) -> str:
    """A C identifier from the output file's stem (``lenet-5.c`` -> ``lenet_5``)."""
    name = re.sub(r"\W", "_", out.stem)
    return name if re.match(r"[A-Za-z_]", name) else f"m_{name}"


def scratch() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="slimzip-c-")
