"""Search candidates run in parallel on Ray: a local Ray instance started and stopped by slimzip
(``workers``), or an existing cluster (``address``). Optional: ``pip install -e ".[ray]"``.

The candidate pipeline (input model, data, configs) is put in Ray's object store once; every task runs
one candidate with its share of the CPU threads and returns its measurements. Only the driver writes
the journal, in the order the candidates were proposed, so the journal does not depend on the number of
workers. A task whose worker dies is re-run once by Ray (``max_retries``); a candidate is journaled only
when its result arrives, so it is never recorded twice, and a killed driver resumes from the journal as
without Ray. Workers write trunks and files into the run directory: on a cluster of several machines it
must be on a file system they share.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

from ..errors import SlimzipError

RETRIES = 1  # a candidate whose worker died is re-run once


def _ray():
    try:
        import ray
    except ImportError:
        raise SlimzipError("--workers and --ray-address need Ray: pip install -e \".[ray]\" (or pip install ray)") \
            from None
    return ray


Job = tuple[Callable[..., Any], dict]  # a whole job, e.g. one strategy's search: fn(**kwargs)


class RayPool:
    """Runs ``pipeline(knobs, parent, **kwargs)`` calls on Ray workers (``map`` returns their results, or
    the exception each raised, in call order), or whole jobs (``jobs``)."""

    def __init__(self, pipeline: Callable[..., dict] | None, workers: int = 2, address: str | None = None,
                 gpus: bool = False):
        """``gpus``: every task takes one GPU (``--device cuda``); Ray gives each its own, seen as cuda:0."""
        ray = _ray()
        if gpus and not address:
            import torch

            if torch.cuda.device_count() < workers:
                raise SlimzipError(f"--workers {workers} with --device cuda needs {workers} GPUs (one each); "
                                   f"this machine has {torch.cuda.device_count()}")
        self.started = not ray.is_initialized()
        if self.started:
            try:
                if address:
                    ray.init(address=address, log_to_driver=False)
                else:
                    ray.init(num_cpus=workers, num_gpus=workers if gpus else 0, include_dashboard=False,
                             log_to_driver=False)
            except Exception as e:  # a wrong address, a cluster that is not up
                raise SlimzipError(f"cannot start or reach Ray ({'--ray-address ' + address if address else 'local'}"
                                   f": {str(e).splitlines()[0][:200]})") from None
        # local: the machine's cores shared out; on a cluster every task asks for one CPU, so one thread
        self.threads = 1 if address else max(1, (os.cpu_count() or 1) // workers)
        self.width = int(ray.cluster_resources().get("CPU", 1)) if address else workers  # tasks at once
        self.pipeline = ray.put(pipeline) if pipeline is not None else None
        share = {"num_cpus": 1, "num_gpus": 1 if gpus else 0, "max_retries": RETRIES}
        self.task = ray.remote(**share)(_run_candidate)
        self.job = ray.remote(**share)(_run_job)

    def map(self, calls: Sequence[tuple[Any, Any, dict]]) -> list[dict | BaseException]:
        # the pipeline's reference inside a list: Ray does not fetch it, a worker does, once (``_pipeline``)
        refs = [self.task.remote([self.pipeline], knobs, parent, kwargs, self.threads) for knobs, parent, kwargs in calls]
        return [_outcome(ref, "a candidate", "the journal keeps every finished one") for ref in refs]

    def jobs(self, ready: dict[str, Job], then: Callable[[str, Any], dict[str, Job]],
             done: Callable[[str, Any], None] = lambda name, result: None) -> dict[str, Any]:
        """Run ``ready`` jobs on the workers, each as soon as one is free; ``then(name, result)`` returns
        the jobs a finished one makes ready, ``done`` hears of each. A job whose worker dies is run again
        once (a search resumes from its journal); the first job that raises raises here."""
        ray = _ray()
        pending = {self.job.remote(fn, kwargs, self.threads): name for name, (fn, kwargs) in ready.items()}
        results = {}
        try:
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                name = pending.pop(ref)
                results[name] = _outcome(ref, name, "every search keeps its journal")
                if isinstance(results[name], BaseException):
                    raise results[name]
                done(name, results[name])
                for follow, (fn, kwargs) in then(name, results[name]).items():
                    pending[self.job.remote(fn, kwargs, self.threads)] = follow
        finally:
            for ref in pending:  # on a cluster the jobs would outlive this call
                ray.cancel(ref, force=True)
        return results

    def close(self) -> None:
        if self.started:
            _ray().shutdown()


def _outcome(ref: Any, what: str, kept: str) -> Any:
    """A task's result, or the exception its own code raised (e.g. a divergence); a worker or node that
    died again after the retry is one line saying what survives."""
    ray = _ray()
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        return e.as_instanceof_cause()
    except ray.exceptions.RayError as e:
        raise SlimzipError(f"a Ray worker died running {what} ({type(e).__name__}); {kept}: run the same command "
                           "again to resume") from None


_PIPELINE: dict[str, Callable[..., dict]] = {}  # on a worker: the search's pipeline, fetched by its first task


def _pipeline(ref: Any) -> Callable[..., dict]:
    """The pipeline behind ``ref``, fetched from the object store once per worker process (as the driver,
    in-process, uses one pipeline for every candidate), not once per candidate."""
    if ref.hex() not in _PIPELINE:
        _PIPELINE.clear()  # a worker reused by the next search drops the last one's
        _PIPELINE[ref.hex()] = _ray().get(ref)
    return _PIPELINE[ref.hex()]


def _run_candidate(pipeline: list, knobs: Any, parent: Any, kwargs: dict, threads: int) -> dict:
    """One candidate on a worker; its wall seconds are the task's own (the driver waits on several)."""
    import time

    import torch

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    result = _pipeline(pipeline[0])(knobs, parent, **kwargs)
    return {**result, "task_seconds": time.perf_counter() - t0}


def _run_job(fn: Callable[..., Any], kwargs: dict, threads: int) -> Any:
    """One whole job on a worker, with its share of the threads."""
    import torch

    torch.set_num_threads(threads)
    return fn(**kwargs)
