"""Autodidact: a framework for agents that improve themselves.

This package is the kernel: the shared vocabulary (:mod:`autodidact.types`), the lazy
registry (:mod:`autodidact.registry`), configuration (:mod:`autodidact.config`), errors
(:mod:`autodidact.errors`) and the command line (:mod:`autodidact.cli`). It imports no other
package of the project at import time, and none of torch, transformers, playwright or vllm.
"""

__version__ = "0.1.0"
