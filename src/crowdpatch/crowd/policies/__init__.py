"""Question policies: which questions to ask next, chosen per project by name (``[crowd] planner``).

``fixed`` (:mod:`.fixed`) is the paper's scheme; ``adaptive`` (:mod:`.adaptive`) buys each answer
only where it is expected to change the mask, with the model of :mod:`.posteriors`; ``precise``
(:mod:`.precise`) localizes the target by its extreme points and lets a worker pick its mask.
"""

from crowdpatch.config import ProjectConfig
from crowdpatch.crowd.policies.adaptive import AdaptivePolicy
from crowdpatch.crowd.policies.base import POLICIES, AnswerOutcome, Policy
from crowdpatch.crowd.policies.fixed import FixedPolicy
from crowdpatch.crowd.policies.precise import PrecisePolicy


def policy_for(config: ProjectConfig) -> Policy:
    """The project's policy (``[crowd] planner``)."""
    return POLICIES.get(config.crowd.planner)()


__all__ = ["POLICIES", "AdaptivePolicy", "AnswerOutcome", "FixedPolicy", "Policy", "PrecisePolicy", "policy_for"]
