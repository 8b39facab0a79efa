"""A stage: one small object with a name, a cache key, a way to produce its output and a way to load it.

The pipeline (:data:`edgekd.pipeline.STAGES`) is a list of stages run in order by
:func:`run_stages`. A cached stage's output lives in a :class:`~edgekd.stagecache.StageStore`
entry keyed by what it depends on; the run always continues from what the entry holds, whether
it was just computed or reused, so an interrupted-and-resumed run and an uninterrupted one
follow the same code from every stage boundary on. Adding a stage is one module with one
:class:`Stage` subclass, and one line in ``STAGES``.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

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
        entry = run.store.run(self.name, key, lambda folder: self.produce(run, folder), self.summary(run))
        run.keys[self.name] = key
        self.load(run, entry)


def run_stages(run: Run, stages: list[Stage]) -> None:
    """Each stage in order, each announced once as ``[k/n] name: what``; skipped ones say why."""
    n = len(stages)
    for i, stage in enumerate(stages, 1):
        why = stage.skip(run)
        if why:
            run.log(f"[{i}/{n}] {stage.name}: skipped ({why})")
            continue
        what = stage.announce(run)
        run.log(f"[{i}/{n}] {stage.name}" + (f": {what}" if what else ""))
        run.store.current = stage.name
        stage.execute(run)
        run.store.current = None
