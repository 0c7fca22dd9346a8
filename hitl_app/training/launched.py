"""One process of a launched round (``python -m hitl_app.training.launched JOB``, started by
``accelerate launch``; see ``launch``): load the base, attach the adapter to continue, train the
policy on this process's share of every batch, and on rank 0 write the adapter and the figures.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import torch
from torch.distributed.elastic.multiprocessing.errors import record

from ..serving.base_model import LoadOptions, load_base, load_tokenizer
from .faults import inject_fault
from .launch import ADAPTER_SUBDIR, ERROR_FILE, PROGRESS_PREFIX, RESULT_FILE, LaunchedPolicy, PolicyJob
from .policy import train_policy
from .sft import TrainConfig, attach_adapter

log = logging.getLogger(__name__)


def _print_progress(stage: str, fraction: float, message: str) -> None:
    print(PROGRESS_PREFIX + json.dumps({"stage": stage, "fraction": fraction, "message": message}), flush=True)


@record  # torchrun's failure report then names the failed process's exception, not just its exit code
def main(argv: list[str] | None = None) -> int:
    """Run the job file named in ``argv`` as one process of the launch; 0 when it is done."""
    from accelerate import PartialState

    argv = sys.argv[1:] if argv is None else argv
    job = PolicyJob.model_validate_json(Path(argv[0]).read_text())
    cfg = TrainConfig(**job.train)
    state = PartialState(cpu=cfg.device == "cpu")
    try:
        _train(job, cfg, state)
    except Exception as exc:
        # The trainer process reports this line as the round's error (``launch.Launcher.run``).
        (Path(job.out_dir) / ERROR_FILE.format(rank=state.process_index)).write_text(f"{type(exc).__name__}: {exc}")
        raise
    state.destroy_process_group()
    return 0


def _train(job: PolicyJob, cfg: TrainConfig, state) -> None:
    logging.basicConfig(level=logging.INFO, format=f"rank {state.process_index}: %(levelname)s %(name)s: %(message)s")
    if cfg.device == "cuda":
        torch.cuda.set_device(state.local_process_index)
    # The processes share this machine's cores.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // state.num_processes))
    inject_fault(f"rank{state.process_index}")
    tokenizer = load_tokenizer(job.base_source)
    base = load_base(job.base_source, LoadOptions(device=cfg.device, load_in_4bit=job.load_in_4bit))
    model = attach_adapter(base, Path(job.parent_adapter) if job.parent_adapter else None, cfg)
    sft, preference = train_policy(
        model, tokenizer, job.rows, cfg, progress=_print_progress if state.is_main_process else None
    )
    state.wait_for_everyone()
    if state.is_main_process:
        out = Path(job.out_dir)
        model.save_pretrained(str(out / ADAPTER_SUBDIR))
        result = LaunchedPolicy(
            sft=None if sft is None else vars(sft), preference=preference, processes=state.num_processes
        )
        (out / RESULT_FILE).write_text(result.model_dump_json())


if __name__ == "__main__":
    sys.exit(main())
