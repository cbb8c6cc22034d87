"""The judge role: scores where a candidate action leads, from a predicted next observation.

A :class:`~agents.roles.reviewer.Reviewer` with its own prompt: same output (:class:`Review`,
``score`` in 0..1 and ``critique``) and the same tolerant parser. The lookahead graph asks it
about each candidate's predicted state (from the world model) and takes the best action.

Example:
    >>> Judge().parse("Score: 8\\nCritique: it opens the form the task needs.").output.score
    0.8
"""

from __future__ import annotations

from agents.roles.reviewer import Reviewer


class Judge(Reviewer):
    name = "judge"
    prompt = "judge.txt"
