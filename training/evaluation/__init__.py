"""Evaluation: independent judges of generated images, caption metrics, closed-loop robot rollouts."""
