"""The chaos run's pure parts, with no Ray import so that unit tests reach them: the seeded
fault schedule, and the checks that read the ledger kept outside the processes.

Ledger lines (one per event, appended with ``O_APPEND`` by whichever process saw it):

    enter KEY INVOCATION PID           an exclusive handler started (or replayed) on KEY
    exit KEY INVOCATION PID            ... and returned
    run INVOCATION STEP NONCE PID ATTEMPT   a ``ctx.run`` step executed; NONCE is its result
    dead PID                           process PID is gone (written before ``os._exit``, or by
                                       the injector once a killed process disappeared)

Positions in the ledger order events: a ``dead`` line after an event says the process died
after it (pids can be reused, so only a later ``dead`` line counts).
"""

from __future__ import annotations

import collections
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

HOST_SERVICES = ("ChaosCounter", "ChaosSteps")
POOL_SIZE = 2


@dataclass(frozen=True)
class Fault:
    """One scheduled fault: ``at`` seconds after the fault phase starts; ``target`` names a
    host (``service:index``) for a host kill, a number of crash tokens for the exits."""

    at: float
    kind: str
    target: str = ""

    def __str__(self) -> str:
        return f"{self.at:.1f}s {self.kind}" + (f"({self.target})" if self.target else "")


def make_schedule(seed: int, span: float, kinds: Sequence[str]) -> list[Fault]:
    """The faults of a run, drawn from ``random.Random(seed)`` alone, in a fixed order (gap,
    kind, target), so a seed always gives the same schedule. It opens with every kind once in
    a seeded order at 0.5-1.5 s gaps (so a short run meets each kind), then random kinds every
    1-3 s until ``span``."""
    rng = random.Random(seed)
    opening = list(kinds)
    rng.shuffle(opening)
    faults: list[Fault] = []
    at = 0.0
    while True:
        first_round = len(faults) < len(opening)
        at += rng.uniform(0.5, 1.5) if first_round else rng.uniform(1.0, 3.0)
        kind = opening[len(faults)] if first_round else rng.choice(list(kinds))
        target = ""
        if kind == "host_kill":
            target = f"{rng.choice(HOST_SERVICES)}:{rng.randrange(POOL_SIZE)}"
        elif kind in ("handler_exit", "await_exit"):
            target = str(rng.randint(1, 3))
        if at >= span:
            return faults
        faults.append(Fault(round(at, 3), kind, target))


def _deaths(lines: Sequence[str]) -> dict[str, list[int]]:
    """pid -> the ledger positions of its ``dead`` lines."""
    out: dict[str, list[int]] = collections.defaultdict(list)
    for pos, line in enumerate(lines):
        if line.startswith("dead "):
            out[line.split()[1]].append(pos)
    return out


def overlaps(lines: Sequence[str]) -> str:
    """ "ok", or the first time two exclusive handlers of a key were inside at once.

    Between an invocation's enter and exit no other invocation may enter the key, unless the
    process the first was inside has died since (its invocation runs again later, maybe after
    others whose acceptance became durable first). The same invocation entering again is a
    replay (after a crash, or after it left memory to wait)."""
    inside: dict[str, tuple[str, str, int]] = {}  # key -> (invocation, pid, enter position)
    deaths = _deaths(lines)
    for pos, line in enumerate(lines):
        kind, _, rest = line.partition(" ")
        if kind not in ("enter", "exit"):
            continue
        key, inv, pid = rest.split()
        now = inside.get(key)
        if kind == "enter":
            if (
                now is not None
                and now[0] != inv
                and not any(now[2] < d < pos for d in deaths.get(now[1], ()))
            ):
                return f"{inv} entered {key} while {now[0]} was inside (pid {now[1]} alive)"
            inside[key] = (inv, pid, pos)
        elif now is not None and now[0] == inv:
            del inside[key]
    return "ok"


@dataclass
class RunCheck:
    """The outcome of ``check_runs``: problems (empty when the guarantee held) and counts."""

    problems: list[str]
    executions: int = 0
    journaled: int = 0
    lost_with_process: int = 0  # executions whose process died before their result was durable


def check_runs(
    lines: Sequence[str], journaled: dict[tuple[str, str], str], alive: Callable[[int], bool]
) -> RunCheck:
    """Guarantee 1 through the ledger: each journaled ``ctx.run`` ran once, except in
    attempts that died before their result was journaled.

    ``journaled`` maps (invocation, step) to the nonce the journal holds as its result. A host
    that stays alive commits every result it recorded (its flusher re-sends until the journal
    takes it), so an execution whose nonce is not the journaled one must come from a process
    that died: a later ``dead`` line of its pid, or (for a death nobody wrote down) a pid not
    alive when checking. And it must come before the journaled execution: an execution after
    it is a journaled step that ran again. Every journaled nonce must be in the ledger once.
    """
    deaths = _deaths(lines)
    execs: dict[tuple[str, str], list[tuple[int, str, str]]] = collections.defaultdict(list)
    for pos, line in enumerate(lines):
        if line.startswith("run "):
            _, inv, step, executed, pid, _attempt = line.split()
            execs[inv, step].append((pos, executed, pid))
    result = RunCheck([], sum(map(len, execs.values())), len(journaled))
    for step_id in sorted(set(execs) | set(journaled)):
        runs = execs.get(step_id, [])
        nonce = journaled.get(step_id)
        mine = [r for r in runs if r[1] == nonce]
        if nonce is not None and len(mine) != 1:
            result.problems.append(f"{step_id}: journaled result {nonce} executed {len(mine)}x")
            continue
        journaled_pos = mine[0][0] if mine else len(lines)
        for pos, executed, pid in runs:
            if executed == nonce:
                continue
            died = any(d > pos for d in deaths.get(pid, ())) or not alive(int(pid))
            if pos > journaled_pos:
                result.problems.append(
                    f"{step_id}: ran again (pid {pid}) after its result "
                    f"{nonce} was executed and journaled"
                )
            elif not died:
                result.problems.append(
                    f"{step_id}: execution {executed} in pid {pid} was not "
                    "journaled, yet its process lived on"
                )
            else:
                result.lost_with_process += 1
    return result
