"""PPO with a memory policy: encoder -> any registered memory -> conditioner -> actor/critic."""

from embodimem.agents.ppo.config import EvalConfig, TrainConfig
from embodimem.agents.ppo.policy import MemoryPolicy, PolicyConfig

__all__ = ["EvalConfig", "MemoryPolicy", "PolicyConfig", "TrainConfig"]
