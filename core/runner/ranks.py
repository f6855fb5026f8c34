"""Ranks under an existing launcher (accelerate launch / torchrun): who am I, wait for the others.

Outside a launcher this is a world of one. Under one, accelerate's PartialState joins the
process group (gloo on CPU, nccl on GPU) so `wait_for_everyone` is a real barrier.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..devices import auto_devices, device_type
from ..images import atomic_write_bytes


@dataclass
class Ranks:
    rank: int = 0
    world: int = 1
    state: object | None = None

    @classmethod
    def from_env(cls) -> Ranks:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        from accelerate import PartialState  # deferred: heavy (accelerate, torch); a world of one never needs it

        # without cpu=True accelerate ignores the launcher on a GPU-less machine (world of one)
        state = PartialState(cpu=device_type(auto_devices()[0]) == "cpu")
        return cls(rank=state.process_index, world=state.num_processes, state=state)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local_devices(self, spec: str, parsed: list[str]) -> list[str]:
        """Under a launcher each rank drives its own GPU: `auto` or the bare kind (`cuda`, `xpu`)
        mean this rank's device."""
        kind = self.state.device.type if self.state is not None else "cpu"
        if kind != "cpu" and spec in ("auto", kind):
            return [str(self.state.device)]
        return parsed

    def wait_for_everyone(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    def write_stats(self, out: Path, stats: dict) -> None:
        stats = {**stats, "rank": self.rank, "world": self.world}
        atomic_write_bytes(Path(out) / ".ranks" / f"{self.rank}.json", json.dumps(stats).encode())

    def read_stats(self, out: Path) -> list[dict]:
        return [json.loads((Path(out) / ".ranks" / f"{r}.json").read_text()) for r in range(self.world)]
