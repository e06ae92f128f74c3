"""The phase machine: phases are pytransitions states, guarded transitions carry the conditions.

Side effects (setting up a runner, saving checkpoints) are deliberately NOT pytransitions
callbacks: a callback that raises after the state changed would leave the machine in the new
state with its setup half done, and on_enter never fires for the initial state (a resume).
The core (curriculum/core.py) asks the machine where a trigger leads; the engine performs the
move's side effects itself, in a fixed order.
"""

from __future__ import annotations


from transitions import Machine

from curriculum.spec import END, Spec

BUDGET = "max_steps"


class _Cursor:
    """The one-field model pytransitions moves: a phase name, set from the state asked about."""

    def __init__(self, phase: str) -> None:
        self.phase = phase


class PhaseMachine:
    """The phase graph as a pytransitions Machine, asked as a pure function of the phase.

    The run's state (curriculum/core.py, CurriculumState) is a frozen value, so the machine
    keeps no copy of where the run is: :meth:`dest` puts the phase it is asked about on a
    scratch cursor (``model_attribute="phase"``), fires the trigger, and returns where it led.
    A trigger the graph does not allow from that phase raises (never a silent wrong move).
    """

    def __init__(self, spec: Spec):
        self.spec = spec
        states = list(spec.phases) + [END]
        trans: list[dict] = []
        for t in spec.transitions:
            trans.append(
                {
                    "trigger": "guard_fired",
                    "source": t.source,
                    "dest": t.dest,
                    "conditions": [_named(t.guard)],
                }
            )
        for name in spec.phases:
            trans.append({"trigger": "budget_exhausted", "source": name, "dest": spec.next_phase(name)})
        self._cursor = _Cursor(spec.start)
        self.machine = Machine(
            model=self._cursor,
            states=states,
            transitions=trans,
            initial=spec.start,
            model_attribute="phase",
            auto_transitions=False,
            send_event=True,
            ignore_invalid_triggers=False,
        )

    def dest(self, phase: str, guard: str | None, expect: str | None = None) -> str:
        """Where ``guard`` firing (None: the budget running out) leads from ``phase``."""
        cur = self._cursor
        self.machine.set_state(phase, model=cur)
        if guard is None:
            cur.budget_exhausted()
        else:
            cur.guard_fired(guard=guard)
        if cur.phase == phase and guard is not None and not any(
            t.guard == guard and t.dest == phase for t in self.spec.transitions_from(phase)
        ):
            raise RuntimeError(f"guard {guard!r} leads nowhere from phase {phase!r}")
        if expect is not None and cur.phase != expect:  # a spec/graph mismatch: never continue
            raise RuntimeError(f"phase machine moved to {cur.phase!r}, expected {expect!r}")
        return cur.phase


def _named(guard: str):
    def cond(event) -> bool:  # pytransitions passes EventData with send_event=True
        return event.kwargs.get("guard") == guard

    cond.__name__ = f"guard_{guard}"
    return cond


def mermaid(spec: Spec) -> str:
    """The phase machine as a Mermaid state diagram."""

    def node(n: str) -> str:
        return "[*]" if n == END else _ident(n)

    lines = ["stateDiagram-v2"]
    for name, ph in spec.phases.items():
        label = f"{name} ({ph.kind}"
        if ph.preset:
            label += f", {ph.preset}"
        if ph.max_steps:
            label += f", {ph.max_steps} steps"
        label += ")"
        lines.append(f"    state \"{label}\" as {_ident(name)}")
    lines.append(f"    [*] --> {_ident(spec.start)}")
    for t in spec.transitions:
        lines.append(f"    {node(t.source)} --> {node(t.dest)}: {t.guard}")
    for name, ph in spec.phases.items():
        if ph.max_steps is not None or ph.kind == "eval":
            label = BUDGET if ph.kind != "eval" else "evaluated"
            lines.append(f"    {node(name)} --> {node(spec.next_phase(name))}: {label}")
    return "\n".join(lines) + "\n"


def _ident(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)
