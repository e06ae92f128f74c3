"""The phase machine: phases are pytransitions states, guarded transitions carry the conditions.

Side effects (setting up a runner, saving checkpoints) are deliberately NOT pytransitions
callbacks: a callback that raises after the state changed would leave the machine in the new
state with its setup half done, and on_enter never fires for the initial state (a resume).
The engine asks the machine where to go, then performs the move itself in a fixed order.
"""

from __future__ import annotations

from transitions import Machine

from curriculum.spec import END, Spec

BUDGET = "max_steps"


class PhaseMachine:
    """Wraps a pytransitions Machine built from a spec.  `self.state` is the current phase."""

    def __init__(self, spec: Spec, initial: str | None = None):
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
        self.machine = Machine(
            model=self,
            states=states,
            transitions=trans,
            initial=initial or spec.start,
            auto_transitions=False,
            send_event=True,
            ignore_invalid_triggers=False,
        )

    # pytransitions adds self.state, self.guard_fired(...), self.budget_exhausted()

    def on_guard(self, guard: str) -> str | None:
        """Move along the transition carried by `guard`; return the new phase or None."""
        moved = self.guard_fired(guard=guard)  # type: ignore[attr-defined]
        return self.state if moved else None  # type: ignore[attr-defined]

    def on_budget(self) -> str:
        self.budget_exhausted()  # type: ignore[attr-defined]
        return self.state  # type: ignore[attr-defined]

    def jump(self, phase: str) -> None:
        """Set the current phase directly (resume, --start-phase)."""
        self.machine.set_state(phase)


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
