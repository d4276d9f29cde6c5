"""Merges per-vocabulary-range softmax statistics into per-row results, in a fixed order.

Every backend's forward returns partials[S, 4, R] for S vocabulary ranges and R rows, with fields
(m, sum, target, ent): m = max_j z_j, sum = sum_j exp(z_j - m), target = z_y (0 outside the
range), ent = sum_j exp(z_j - m) (z_j - m), where z = logits / temperature; and optionally
weight_partials[S, N, D] = sum_j exp(z_j - m) weight_j for the first N rows. Every range must hold at
least one vocabulary entry (finite m). Merging is exact log-sum-exp arithmetic, so the split only
changes rounding.
"""

from dataclasses import dataclass

import torch


@dataclass
class RowResults:
    lse: torch.Tensor  # [R] log sum_j exp(z_j)
    target_logit: torch.Tensor  # [R] z_y
    entropy: torch.Tensor  # [R] -sum_j p_j log p_j (meaningful when the forward computed ent)
    expected_weight: torch.Tensor = None  # [N, D] sum_j p_j weight_j, when weight_partials were given


def merge_vocab_partials(partials, weight_partials=None):
    m, sums, target, ent = partials.unbind(1)
    top = m.amax(0)
    scale = torch.exp(m - top)  # [S, R]
    total = (sums * scale).sum(0)
    log_total = total.log()
    # sum_j p_j (z_j - top) = sum_s scale_s (ent_s + (m_s - top) sum_s) / total
    mean_shifted = ((ent + (m - top) * sums) * scale).sum(0) / total
    results = RowResults(lse=top + log_total, target_logit=target.sum(0), entropy=log_total - mean_shifted)
    if weight_partials is not None:
        n = weight_partials.shape[1]
        weights = scale[:, :n] / total[:n]
        results.expected_weight = torch.einsum("sn,snd->nd", weights, weight_partials)
    return results
