"""curriculum: a declarative curriculum engine for RL post-training of language models.

The public API, for a host with its own training loop (README, "Embedding the curriculum in
your own loop"):

    import curriculum
    cur = curriculum.Curriculum(curriculum.load_spec("my.toml"))
    state = cur.init()
    state, decision = cur.begin(state)            # PhaseStarted / Transition / Stay
    state, decision = cur.observe(state, metrics) # after each training step

Decisions are typed values (``Stay``, ``PhaseStarted``, ``PenaltiesChanged``, ``Transition``,
``Stop``); the state is plain frozen data.  Nothing here reads or writes files or configures
logging.  ``register_guard`` adds a Python guard function, ``register_reward`` a reward (with
the preset keys it takes and the outcomes it reports); ``Runner`` (with ``PhaseSetup`` and
``RunContext``) is the protocol a training back end implements for ``curriculum run``;
``step_metrics(rewards, group_size, top_reward)`` turns one GRPO step's rewards into the
reward statistics and group outcomes the guards and the collapse detector read.
"""

from curriculum.core import (
    Curriculum,
    CurriculumState,
    Decision,
    PenaltiesChanged,
    PhaseStarted,
    Stay,
    Stop,
    Transition,
)
from curriculum.errors import CurriculumError, SpecError
from curriculum.registry import register_guard, register_reward
from curriculum.spec import Spec, load_spec
from runners.base import PhaseSetup, RunContext, Runner
from runners.base import reward_step_stats as step_metrics

__all__ = [
    "Curriculum",
    "CurriculumError",
    "CurriculumState",
    "Decision",
    "PenaltiesChanged",
    "PhaseSetup",
    "PhaseStarted",
    "RunContext",
    "Runner",
    "Spec",
    "SpecError",
    "Stay",
    "Stop",
    "Transition",
    "load_spec",
    "register_guard",
    "register_reward",
    "step_metrics",
]
