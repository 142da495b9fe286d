"""One data-parallel training worker: ``python -m ffspace.train.worker FOLDER RANK WORKERS`` (started by
`ffspace.train.distributed.spawn`, not by hand). Rebuilds the trainer from FOLDER's package, arrays and JSON,
joins the process group and runs the epochs. An exception is also written to FOLDER/error_<rank>.json, so
that the caller raises it with its own type."""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path


def run(folder: Path, worker: int, workers: int):

    from ..data.readers import read_arrays
    from ..potential.package import load_package
    from . import distributed
    from .config import TrainConfig
    from .trainer import Trainer

    spec = json.loads((folder / "spec.json").read_text())
    config = TrainConfig(**spec["config"])
    device = distributed.device_for(config.device, worker)
    distributed.join(folder, worker, workers, device)  # first: a CUDA worker then builds on its own GPU
    try:
        model, _ = load_package(folder / "model.safetensors", dtype=config.dtype)
        trainer = Trainer(model, read_arrays(folder / "train.npz"), read_arrays(folder / "val.npz"),
                          config.model_copy(update={"device": device}), run_dir=spec["run_dir"],
                          extra_config=spec["extra_config"])
        trainer.fit_loop()
        distributed.barrier()  # nobody tears the group down while another worker still writes or reads
    finally:
        distributed.leave()


def main(argv=None):
    folder, worker, workers = (argv or sys.argv[1:])[:3]
    folder, worker = Path(folder), int(worker)
    try:
        run(folder, worker, int(workers))
    except BaseException as exc:
        (folder / f"error_{worker}.json").write_text(json.dumps({"type": type(exc).__name__, "message": str(exc)}))
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    # The work is done and on disk. Leave without the interpreter's teardown: gloo's background threads can
    # abort a process in static destructors ("terminate called without an active exception").
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
