"""A seeded, reproducible source of realistic events for demos, benchmarks and training.

``generate`` yields what a business app would put on ``events.<type>`` (with a share of
deliberately broken messages and the ground truth of each), ``training_set`` the valid
events and labels that first models are trained on.
"""

from app.simulator.generate import SimEvent, generate, training_set

__all__ = ["SimEvent", "generate", "training_set"]
