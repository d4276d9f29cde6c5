"""coars-fast inside other trainers. Each integration imports its host library only when used, so
`coars_fast` itself never requires them (and `coars_fast.kernels` stays torch-only)."""
