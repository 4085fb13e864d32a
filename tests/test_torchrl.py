"""TorchRL: ``GymEnv`` makes the environments, ``ActionMask`` keeps its actions valid.

The environments expose their mask as the observation key ``"action_mask"``, the key
TorchRL's :class:`~torchrl.envs.transforms.ActionMask` reads by default: it narrows the
action spec after every reset and step, so ``env.rollout`` (random actions from the
spec) only places candidates not placed yet; an invalid one would raise.
"""

from __future__ import annotations

import pytest

torchrl = pytest.importorskip("torchrl")  # installed by the test extra (setup.cfg: torchrl)

from torchrl.envs import GymEnv, TransformedEnv  # noqa: E402
from torchrl.envs.transforms import ActionMask  # noqa: E402
from torchrl.envs.utils import check_env_specs  # noqa: E402

import rerank_env  # noqa: E402,F401  (registers the environments)


def _masked(env_id: str, **kwargs) -> TransformedEnv:
    return TransformedEnv(GymEnv(env_id, **kwargs), ActionMask())


def test_gym_env_drops_frameskip_and_builds_the_env() -> None:
    # GymEnv passes frameskip and retries without it on Python's own TypeError wording.
    env = GymEnv("SlateRerank-v0")
    assert env.wrapper_frame_skip == 1
    assert env.action_spec.space.n == 50
    assert env.observation_spec["action_mask"].shape == (50,)


@pytest.mark.parametrize("categorical", [False, True], ids=["one-hot", "categorical"])
@pytest.mark.parametrize("env_id", ["SlateRerank-v0", "SlateRerankGlobal-v0"])
def test_action_mask_env_passes_check_env_specs_and_rolls_out(env_id, categorical) -> None:
    env = _masked(env_id, categorical_action_encoding=categorical)
    check_env_specs(env, seed=0)
    env.set_seed(0)
    steps = 3 * (13 if env_id == "SlateRerank-v0" else 25)  # over several episodes
    rollout = env.rollout(steps, break_when_any_done=False)
    assert rollout.batch_size == (steps,)
    actions = rollout["action"]
    if not categorical:
        assert (actions.sum(-1) == 1).all()
        actions = actions.argmax(-1)
    # Every action was allowed by the mask it was drawn under.
    assert rollout["action_mask"].gather(-1, actions.unsqueeze(-1)).all()
    done = rollout["next", "done"].squeeze(-1)
    assert done.sum() >= 2
    if env_id == "SlateRerank-v0":  # an episode is L = 6 placements: 6 distinct candidates
        first = actions[: int(done.nonzero()[0]) + 1]
        assert len(first) == 6 and len(set(first.tolist())) == 6
