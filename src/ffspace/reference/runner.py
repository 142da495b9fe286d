"""Run a labeler over many structures: in this process, on local worker processes, or on a Dask cluster.

Results are written to the `LabelStore` in the parent process as each one finishes, so a kill loses
only the calculations in flight, and a rerun labels only what is missing. `run_tasks` is the mechanism, also used
by the sampling of a recipe's molecules (`job.sampled_frames`).
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager


from ..data.dataset import Dataset
from ..errors import DataError
from ..progress import progress as progress_bar
from .base import LabelFailure
from .store import LabelStore, structure_key


def _label_one(labeler, structure):
    """Label one structure: ("ok", structure) or ("failed", reason, details). A frame the labeler refuses
    (`DataError`: a charge and multiplicity impossible for its electrons, an element the method lacks) is a failure
    of that frame, recorded like an unconverged SCF: the others go on."""
    charge = getattr(labeler, "charge", None)
    given = structure.info.get("charge")
    if charge is not None and given is not None and abs(float(given) - float(charge)) > 1e-3:  # (summed partials)
        return ("failed", f"{structure.where()}: the structure's charge {given} is not the labeler's {charge}",
                {"error": "charge"})
    try:
        return ("ok", labeler.label(structure))
    except LabelFailure as exc:
        return ("failed", str(exc), exc.details)
    except DataError as exc:
        return ("failed", str(exc), {"error": type(exc).__name__})
    except (ArithmeticError, ValueError, RuntimeError, MemoryError) as exc:
        # a numerical failure inside the QM code on this geometry (a singular overlap, an eigensolver that does
        # not converge, memory): that frame's failure, recorded, so that a rerun does not stop on it again. A
        # programming or setup error (ImportError, TypeError, ...) still stops the run: it would fail every frame.
        return ("failed", f"{structure.where()}: {type(exc).__name__}: {exc}"[:2000], {"error": type(exc).__name__})


def _label_chunk(labeler, chunk):
    """Worker entry point: a few structures per task, so inter-process traffic does not dominate
    cheap methods like xTB (a chunk is the most a kill can lose)."""
    return [(key, _label_one(labeler, s)) for key, s in chunk]


def _chunks(todo, size):
    return [todo[k:k + size] for k in range(0, len(todo), size)]


@contextmanager
def _child_threads(threads: int):
    """OMP_NUM_THREADS for worker processes spawned inside the block. It must be in the environment when
    a worker starts: the QM libraries' OpenMP runtime reads it once, at load."""
    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = old


def run_tasks(fn, tasks: list[tuple], workers: int = 1, scheduler=None):
    """``fn(*task)`` for each task, yielding ``(index, result)`` as each finishes: in this process (in order) when
    ``workers`` is 1 and there is no ``scheduler``, else on ``workers`` local processes (spawned, each dying with
    this process, each with its share of the cores as OMP_NUM_THREADS, at most the OMP_NUM_THREADS this process
    was given) or on the Dask cluster of ``scheduler`` (an address or a ``distributed.Client``). An exception of a
    task is raised here, and the tasks not started are dropped. ``fn`` and the tasks must pickle for the parallel
    paths."""
    if scheduler is not None:
        yield from _run_dask_tasks(fn, tasks, scheduler)
    elif workers > 1 and tasks:
        import multiprocessing as mp

        from ..workers import die_with_parent

        threads = _threads_per_worker(workers)
        # each worker dies with this process: a killed run leaves no QM process computing for nobody
        with _child_threads(threads), ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                                          initializer=die_with_parent,
                                                          initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(fn, *task): i for i, task in enumerate(tasks)}
            try:
                for fut in as_completed(futures):
                    yield futures[fut], fut.result()
            except BaseException:
                # the tasks not started are dropped rather than computed and thrown away on the way out
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    else:
        for i, task in enumerate(tasks):
            yield i, fn(*task)


def _threads_per_worker(workers: int) -> int:
    """The cores this process may use, shared among ``workers``; a thread count the user set (OMP_NUM_THREADS=1 to
    make MD sampling reproducible across machines) is kept as the most each worker gets."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // workers)
    given = os.environ.get("OMP_NUM_THREADS", "")
    return min(threads, int(given)) if given.isdigit() and int(given) > 0 else threads


def _run_dask_tasks(fn, tasks, scheduler):
    from distributed import Client
    from distributed import as_completed as dask_completed

    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
        futures = {client.submit(fn, *task, pure=False): i for i, task in enumerate(tasks)}
        try:
            for fut in dask_completed(futures):
                yield futures[fut], fut.result()
        except BaseException:
            client.cancel(list(futures))  # (a client the caller keeps would otherwise compute the rest for nobody)
            raise
    finally:
        if not isinstance(scheduler, Client):
            client.close()


def label_structures(structures, labeler, store: LabelStore, workers: int = 1, scheduler=None,
                     progress: bool = True, retry_failed: bool = False, chunk: int = 8,
                     max_new: int | None = None) -> Dataset:
    """Label every structure not yet in ``store`` (or the first ``max_new`` of them); return the labeled dataset
    in input order: every structure of ``structures`` that the store holds a label of.

    ``workers`` > 1 uses local processes; ``scheduler`` (a Dask scheduler address or a
    ``distributed.Client``) sends the work to a Dask cluster instead.
    """
    structures = list(structures)
    method = labeler.provenance()
    keys = _keys_reusing_other_versions(structures, method, store)
    todo, seen = [], set()
    for key, s in zip(keys, structures):
        if key in store or key in seen or (key in store.failures and not retry_failed):
            continue
        seen.add(key)
        todo.append((key, s))
    if max_new is not None and len(todo) > max_new:
        # a time-boxed run (or, with 0, an export of what is labelled so far): the rest wait for the next run
        print(f"labeling {max_new} of the {len(todo)} missing frames (max_new_labels); "
              f"{len(todo) - max_new} left for a later run", file=sys.stderr)
        todo = todo[:max_new]
    bar = progress_bar(total=len(todo), desc=f"labeling ({method['method']})", unit="frame", enabled=progress)

    def record(key, result):
        if result[0] == "ok":
            s = result[1]
            s.info.update({f"label_{k}": v for k, v in method.items() if isinstance(v, (str, int, float, bool))})
            if method.get("charge"):  # what charge-aware models read: the charge the label was computed at
                s.info["charge"] = method["charge"]
            store.add(key, s)
        else:
            store.add_failure(key, result[1], result[2])
            bar.write(f"failed: {result[1]}")
        bar.update(1)

    try:
        if scheduler is None and (workers <= 1 or len(todo) <= 1):
            for key, s in todo:
                record(key, _label_one(labeler, s))
        else:
            tasks = [(labeler, c) for c in _chunks(todo, chunk)]
            for _, results in run_tasks(_label_chunk, tasks, workers, scheduler):
                for key, result in results:
                    record(key, result)
    finally:
        bar.close()
    out = [_with_identity(store.get(k, frame=i), structures[i]) for i, k in enumerate(keys) if k in store]
    if not out:
        why = ("none is labelled yet (max_new_labels=0)" if max_new == 0 else
               "no structure could be labeled (see failures.jsonl)")
        raise DataError(why, file=str(store.folder))
    return Dataset(out, name=str(store.labels_path))


IDENTITY = ("smiles", "name", "formal_charge", "conformer")


def _with_identity(labelled, frame):
    """A stored label with who the frame is (SMILES, name, charge, conformer) from the frame given now where the
    record lacks it: a label is keyed by geometry alone, and labels made before samples carried their molecule's
    identity would otherwise stay anonymous (no split by molecule, no audit of a test-set exclusion)."""
    labelled.info = dict(labelled.info)  # (the store's record shares this dict: it must stay as made)
    for k in IDENTITY:
        if k in frame.info and k not in labelled.info:
            labelled.info[k] = frame.info[k]
    return labelled


def _keys_reusing_other_versions(structures, method: dict, store: LabelStore) -> list[str]:
    """Each structure's store key; a structure the store holds labelled by another version of the same program
    at the same method and settings gets that label's key. The version is part of a key (it is provenance), but
    a new PySCF or tblite release must not silently relabel a store of hours: the label is reused, its record
    keeps the version that made it, and how many were reused is said."""
    keys = [structure_key(s, method) for s in structures]
    versions = {r["info"].get("label_program_version") for r in store.labels.values()
                if r["info"].get("label_program") == method.get("program")
                and r["info"].get("label_method") == method.get("method")} - {method.get("program_version"), None}
    reused = {}
    for i, (key, s) in enumerate(zip(keys, structures)):
        if key in store:
            continue
        for version in sorted(versions):
            other = structure_key(s, {**method, "program_version": version})
            if other in store:
                keys[i] = other
                reused[version] = reused.get(version, 0) + 1
                break
    for version, n in reused.items():
        print(f"label store {store.folder}: {n} label(s) made by {method.get('program')} {version} reused (this is "
              f"{method.get('program_version')}; same method and settings)", file=sys.stderr)
    return keys
