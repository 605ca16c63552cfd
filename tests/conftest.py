"""Shared test set-up.

Tests run on small tensors on a 2-core machine: one intra-op thread avoids the thread-pool
overhead that dominates tiny operations (and keeps parallel test workers from oversubscribing).
"""

from __future__ import annotations

import torch

torch.set_num_threads(1)
