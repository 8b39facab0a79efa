"""A stage: one small object with a name, a cache key, a way to produce its output and a way to load it.

The pipeline (:data:`edgekd.pipeline.STAGES`) is a list of stages run in order by
:func:`run_stages`. A cached stage's output lives in a :class:`~edgekd.stagecache.StageStore`
entry keyed by what it depends on; the run always continues from what the entry holds, whether
it was just computed or reused, so an interrupted-and-resumed run and an uninterrupted one
follow the same code from every stage boundary on. Adding a stage is one module with one
:class:`Stage` subclass, and one line in ``STAGES``.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .. import _dist

if TYPE_CHECKING:
    from ..stagecache import StageEntry
    from .run import Run


class Stage:
    """One step from one artifact to the next.

    ``name`` is the stage's name everywhere: the log's ``[k/n] name``, the stage-cache folder,
    ``report.json["stages"]`` and the seed the stage starts from. Subclasses give ``key`` (what
    the output depends on), ``produce`` (write the output into a folder, return small JSON facts)
    and ``load`` (put the entry's output on the run for the next stages); a stage that is never
    cached (the benchmark) overrides :meth:`execute` instead.
    """

    name: str = ""
    # with several processes (torchrun, edgekd._dist): "main" — rank 0 alone runs it; "shared" — rank 0 runs it
    # and the others load what it wrote to the stage cache; "collective" — every process trains (DDP), rank 0 keeps it
    ranks: str = "main"

    def skip(self, run: Run) -> str | None:
        """Why this stage does not run for this run (logged), or None when it runs."""
        return None

    def announce(self, run: Run) -> str:
        """What the stage is about to do, for the log line."""
        return ""

    def key(self, run: Run) -> str:
        raise NotImplementedError

    def produce(self, run: Run, folder: Path) -> dict:
        raise NotImplementedError

    def load(self, run: Run, entry: StageEntry) -> None:
        raise NotImplementedError

    def summary(self, run: Run) -> str:
        """A few words on the entry (shown when a finished one is reused)."""
        return ""

    def execute(self, run: Run) -> None:
        key = self.key(run)
        world = _dist.world()
        if not world.distributed or self.ranks == "main":  # one process, or a stage rank 0 runs alone
            entry = run.store.run(self.name, key, lambda folder: self.produce(run, folder), self.summary(run))
        else:
            entry = self._execute_in_group(run, key, world)
        run.keys[self.name] = key
        self.load(run, entry)

    def _execute_in_group(self, run: Run, key: str, world) -> StageEntry:
        """Several processes: rank 0 writes the stage cache; the others train beside it or read what it wrote."""
        from ..stagecache import seed_everything, stage_seed

        store = run.store
        cached = _dist.share(not store.force and store.lookup(self.name, key) is not None)  # rank 0 decides
        if world.main:
            entry = store.run(self.name, key, lambda folder: self.produce(run, folder), self.summary(run))
        elif self.ranks == "collective" and not cached:  # train beside rank 0 (DDP); its entry is the one kept
            with tempfile.TemporaryDirectory(prefix=f"edgekd-rank{world.rank}-") as tmp:
                seed_everything(stage_seed(store.seed, self.name))
                self.produce(run, Path(tmp))
        _dist.barrier()  # rank 0's entry is complete
        if world.main:
            return entry
        entry = store.lookup(self.name, key)
        if entry is None:
            raise RuntimeError(f"internal: rank {world.rank} cannot read stage {self.name}'s cache entry that rank 0 "
                               f"wrote under {store.root}: with several machines it must be on a shared filesystem")
        return entry


def run_stages(run: Run, stages: list[Stage]) -> None:
    """Each stage in order, each announced once as ``[k/n] name: what``; skipped ones say why.

    With several processes, ranks other than 0 run the shared and collective stages only and stop after
    the last collective one (rank 0 goes on to lower, measure and write)."""
    n, world = len(stages), _dist.world()
    last = max((i for i, s in enumerate(stages, 1) if s.ranks == "collective"), default=0)
    for i, stage in enumerate(stages, 1):
        if not world.main and (i > last or stage.ranks == "main"):
            if i > last:
                return
            continue
        why = stage.skip(run)
        if why:
            run.log(f"[{i}/{n}] {stage.name}: skipped ({why})")
            continue
        what = stage.announce(run)
        run.log(f"[{i}/{n}] {stage.name}" + (f": {what}" if what else ""))
        run.store.current = stage.name
        stage.execute(run)
        run.store.current = None
