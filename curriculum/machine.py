"""The phase machine: phases are pytransitions states, guarded transitions carry the conditions.

Side effects (setting up a runner, saving checkpoints) are deliberately NOT pytransitions
callbacks: a callback that raises after the state changed would leave the machine in the new
state with its setup half done, and on_enter never fires for the initial state (a resume).
The engine asks the machine where to go, then performs the move itself in a fixed order.
"""

from __future__ import annotations

from typing import Any

from transitions import Machine

from curriculum.spec import END, Spec

BUDGET = "max_steps"


class PhaseMachine:
    """The phase graph as a pytransitions Machine whose model is the run state itself.

    The machine keeps no copy of where the run is: it reads and writes ``state.phase``
    (``model_attribute="phase"``), so the engine, a resume and the machine can never disagree.
    ``dest_on_guard`` / ``dest_on_budget`` only look up where a trigger would lead; ``move``
    fires it when the engine has finished the source phase.
    """

    def __init__(self, spec: Spec, state: Any):
        self.spec = spec
        self.state = state
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
        self.machine = Machine(
            model=state,
            states=states,
            transitions=trans,
            initial=state.phase,
            model_attribute="phase",
            auto_transitions=False,
            send_event=True,
            ignore_invalid_triggers=False,
        )

    def dest_on_guard(self, guard: str) -> str | None:
        """Where the transition carried by ``guard`` leads from the current phase (None: none)."""
        for t in self.spec.transitions_from(self.state.phase):
            if t.guard == guard:
                return t.dest
        return None

    def dest_on_budget(self) -> str:
        return self.spec.next_phase(self.state.phase)

    def move(self, dest: str, guard: str | None) -> None:
        """Take the transition (``guard`` None: the budget one) on the run state."""
        if guard is None:
            self.state.budget_exhausted()
        else:
            self.state.guard_fired(guard=guard)
        if self.state.phase != dest:  # a spec/graph mismatch: never silently continue
            raise RuntimeError(f"phase machine moved to {self.state.phase!r}, expected {dest!r}")


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
