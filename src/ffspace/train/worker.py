"""One data-parallel training worker: ``python -m ffspace.train.worker FOLDER RANK WORKERS`` (started by
`ffspace.train.distributed.spawn`, not by hand). Rebuilds the trainer from FOLDER's package, arrays and JSON
(`ffspace.workers`), joins the process group and runs the epochs. An exception is also written to
FOLDER/error_<rank>.json, so that the caller raises it with its own type."""

from __future__ import annotations

import sys
from pathlib import Path


def run(folder: Path, worker: int, workers: int):
    from ..workers import die_with_parent, read_inputs, read_spec
    from . import distributed
    from .config import TrainConfig
    from .trainer import Trainer

    spec = read_spec(folder)
    die_with_parent(spec["parent"])
    config = TrainConfig(**spec["config"])
    device = distributed.device_for(config.device, worker)
    distributed.join(folder, worker, workers, device)  # first: a CUDA worker then builds on its own GPU
    try:
        model, train_set, val_set, _ = read_inputs(folder, config.dtype)
        trainer = Trainer(model, train_set, val_set, config.model_copy(update={"device": device}),
                          run_dir=spec["run_dir"], extra_config=spec["extra_config"], owner=spec.get("owner"))
        trainer.fit_loop()
        distributed.barrier()  # nobody tears the group down while another worker still writes or reads
    finally:
        distributed.leave()


def main(argv=None):
    from ..workers import worker_main

    folder, worker, workers = (argv or sys.argv[1:])[:3]
    folder, worker = Path(folder), int(worker)
    worker_main(lambda: run(folder, worker, int(workers)), folder / f"error_{worker}.json")


if __name__ == "__main__":
    main()
