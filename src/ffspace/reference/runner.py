"""Run a labeler over many structures: in this process, on local worker processes, or on a Dask cluster.

Results are written to the `LabelStore` in the parent process as each one finishes, so a kill loses
only the calculations in flight, and a rerun labels only what is missing.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed

from tqdm.auto import tqdm

from ..data.dataset import Dataset
from ..errors import DataError
from .base import LabelFailure
from .store import LabelStore, structure_key


def _label_one(labeler, structure):
    """Worker entry point: returns ("ok", structure) or ("failed", reason, details)."""
    try:
        return ("ok", labeler.label(structure))
    except LabelFailure as exc:
        return ("failed", str(exc), exc.details)


def _worker_init(threads: int):
    # Each worker process owns `threads` cores; set before the QM library starts its thread pool.
    os.environ["OMP_NUM_THREADS"] = str(threads)


def label_structures(structures, labeler, store: LabelStore, workers: int = 1, scheduler=None,
                     progress: bool = True, retry_failed: bool = False) -> Dataset:
    """Label every structure not yet in ``store``; return the labeled dataset in input order.

    ``workers`` > 1 uses local processes; ``scheduler`` (a Dask scheduler address or a
    ``distributed.Client``) sends the work to a Dask cluster instead.
    """
    structures = list(structures)
    method = labeler.provenance()
    keys = [structure_key(s, method) for s in structures]
    todo, seen = [], set()
    for key, s in zip(keys, structures):
        if key in store or key in seen or (key in store.failures and not retry_failed):
            continue
        seen.add(key)
        todo.append((key, s))
    bar = tqdm(total=len(todo), desc=f"labeling ({method['method']})", unit="frame", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)

    def record(key, result):
        if result[0] == "ok":
            s = result[1]
            s.info.update({f"label_{k}": v for k, v in method.items() if isinstance(v, (str, int, float, bool))})
            store.add(key, s)
        else:
            store.add_failure(key, result[1], result[2])
            bar.write(f"failed: {result[1]}")
        bar.update(1)

    try:
        if scheduler is not None:
            _run_dask(todo, labeler, scheduler, record)
        elif workers > 1 and len(todo) > 1:
            threads = max(1, (os.cpu_count() or 1) // workers)
            import multiprocessing as mp

            with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                                     initargs=(threads,)) as pool:
                futures = {pool.submit(_label_one, labeler, s): key for key, s in todo}
                for fut in as_completed(futures):
                    record(futures[fut], fut.result())
        else:
            for key, s in todo:
                record(key, _label_one(labeler, s))
    finally:
        bar.close()
    out = [store.get(k, frame=i) for i, k in enumerate(keys) if k in store]
    if not out:
        raise DataError("no structure could be labeled (see failures.jsonl)", file=str(store.folder))
    return Dataset(out, name=str(store.labels_path))


def _run_dask(todo, labeler, scheduler, record):
    from distributed import Client, as_completed as dask_completed

    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
        futures = {}
        for key, s in todo:
            futures[client.submit(_label_one, labeler, s, key=f"label-{key}", pure=False)] = key
        for fut in dask_completed(list(futures)):
            record(futures[fut], fut.result())
    finally:
        if not isinstance(scheduler, Client):
            client.close()
