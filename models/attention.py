"""Scaled-dot-product attention that keeps grouped keys/values packed when a mask is given.

With grouped-query attention (SmolLM2: 9 query heads over 3 key/value heads) and an
attention mask, transformers' `sdpa` path copies every key and value head `n_rep` times
for queries longer than one token (`repeat_kv`): the whole KV cache is copied on each
such forward pass. Left-padded prefill and multi-token decode steps (forced runs fed in
one pass) are exactly that case. Here the query heads of a group are stacked along the
query axis instead, so each key/value head is read in place; the mask is repeated per
head of the group, which is cheap (no head dimension). Single-token steps take the same
path (transformers' own, `enable_gqa`, is several times slower on CPU). Everything else
falls through to transformers' own `sdpa`.
"""

from __future__ import annotations

PACKED_SDPA = "sdpa_packed_gqa"
_registered = False


def packed_gqa_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                         **kwargs):
    """Attention forward in transformers' interface: (output [B, q, H, D], None)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    n_rep = getattr(module, "num_key_value_groups", 1)
    q_len = query.shape[2]
    plain_mask = attention_mask is not None and attention_mask.dtype == torch.bool and attention_mask.shape[1] == 1
    if (
        n_rep == 1
        or (dropout and module.training)
        or not (plain_mask or (attention_mask is None and q_len == 1))
        or kwargs.get("position_bias") is not None
        or kwargs.get("softcap") is not None
    ):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    batch, heads, _, dim = query.shape
    scale = scaling if scaling is not None else dim**-0.5
    # Head h serves key/value head h // n_rep: stack each group's heads along the query axis.
    packed = query.reshape(batch, heads // n_rep, n_rep * q_len, dim)
    mask = attention_mask.repeat(1, 1, n_rep, 1) if attention_mask is not None else None
    out = torch.nn.functional.scaled_dot_product_attention(packed, key, value, attn_mask=mask, scale=scale)
    out = out.reshape(batch, heads, q_len, value.shape[-1]).transpose(1, 2).contiguous()
    return out, None


def register_packed_attention() -> str:
    """Make `PACKED_SDPA` a valid `attn_implementation` (idempotent); returns its name."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(PACKED_SDPA, packed_gqa_attention)
        AttentionMaskInterface.register(PACKED_SDPA, sdpa_mask)
        _registered = True
    return PACKED_SDPA
