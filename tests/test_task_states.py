"""The task state machine as a table: which step moves which phase to which, and nothing else."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from appliance.cluster.task_states import TRANSITIONS, IllegalStep, Step, advance
from appliance.store.models import Phase, Task

U, W, F, N = Phase.UPLOADING, Phase.WAITING, Phase.FORWARDING, Phase.ON_NODE
D, R, L = Phase.FINISHED, Phase.REMOVED, Phase.LOST
ALL = (U, W, F, N, D, R, L)

# step: {from: to}; every pair not listed must be refused
EXPECTED = {
    Step.COMMIT: {U: W},
    Step.PLACE: {W: F},
    Step.DELIVERED: {F: N},
    Step.REQUEUE: {W: W, F: W, N: W, D: W},
    Step.FINISH: {N: D, D: D},
    Step.CANCEL: {W: D, F: D, D: D},
    Step.RESTART_ON_NODE: {N: N, D: N},
    Step.GIVE_UP: {W: D, F: D, N: D, D: D},
    Step.FOUND_RUNNING: {L: N},
    Step.FOUND_FINISHED: {L: D},
    Step.REMOVE: {U: R, W: R, F: R, N: R, D: R, L: R},
    Step.LOSE: {U: L, W: L, F: L, N: L, D: L, L: L, R: L},
}


def test_the_table_is_exactly_the_specification():
    assert set(TRANSITIONS) == set(Step) == set(EXPECTED)
    assert TRANSITIONS == EXPECTED


@pytest.mark.parametrize("step", list(Step))
@pytest.mark.parametrize("phase", ALL)
def test_each_step_from_each_phase(step, phase):
    task = Task(uuid="00000000-0000-4000-8000-000000000001", phase=phase)
    target = EXPECTED[step].get(phase)
    if target is None:
        with pytest.raises(IllegalStep, match=f"cannot {step} from phase {phase}"):
            advance(task, step)
        assert task.phase == phase  # a refused step changes nothing
    else:
        advance(task, step)
        assert task.phase == target


def test_no_module_changes_a_phase_but_through_the_machine():
    """An assignment to `.phase` anywhere else would bypass the table."""
    root = Path(__file__).parent.parent
    offenders = []
    for path in [*root.glob("appliance/**/*.py"), *root.glob("webui/**/*.py")]:
        if path.name == "task_states.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
            for target in targets:
                for leaf in (target.elts if isinstance(target, ast.Tuple) else [target]):
                    if isinstance(leaf, ast.Attribute) and leaf.attr == "phase":
                        offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not offenders, offenders
