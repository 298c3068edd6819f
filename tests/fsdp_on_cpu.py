"""`python -m newtonrewards.cli ARGS` under Accelerate's FSDP on the CPU, for tests: run it as the script of
`ACCELERATE_USE_CPU=1 accelerate launch --config_file configs/accelerate/fsdp.yaml --num_processes 2 ... ARGS`.

Accelerate 1.15 turns FSDP on only for accelerator devices: AcceleratorState.__init__ (accelerate/state.py) sets
DistributedType.FSDP inside `elif self.distributed_type in [DistributedType.MULTI_GPU, MULTI_MLU, ...]`, a list
without MULTI_CPU, so on the CPU the launch file's FSDP plugin is dropped and the ranks run as MULTI_CPU (DDP over
gloo); without ACCELERATE_USE_CPU they run as DistributedType.NO (unsynchronised). torch's FSDP2 (`fully_shard`) runs
on the CPU over gloo. This shim makes the one decision Accelerate makes on a GPU: once the state is built,
distributed_type = FSDP with the plugin Accelerate read from the launch environment. Everything else (prepare ->
fully_shard, clip_grad_norm_, get_state_dict, save_state / load_state with torch.distributed.checkpoint) is
Accelerate's and torch's own code.
"""

from __future__ import annotations

import sys

from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

_build_state = AcceleratorState.__init__


def _fsdp_on_cpu(self, *args, **kwargs) -> None:
    _build_state(self, *args, **kwargs)
    plugin = kwargs.get("fsdp_plugin")
    if plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.fsdp_plugin = plugin
        self.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP


AcceleratorState.__init__ = _fsdp_on_cpu

if __name__ == "__main__":
    from newtonrewards.cli import main

    sys.exit(main(sys.argv[1:]))
