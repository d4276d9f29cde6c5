"""Writes a randomly initialised causal LM of a named shape, with a given tokenizer, to a folder that
`--model` accepts: GPU speed checks of the whole training loop where no pretrained weights can travel.
Its outputs are noise, so it measures speed and plumbing only, never learning.

    python scripts/random_model.py TOKENIZER_DIR OUT_DIR [--shape qwen2.5-0.5b] [--device cuda]
"""

import argparse

import torch
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

# Published shapes (the vocabulary comes from the tokenizer).
SHAPES = {
    "qwen2.5-0.5b": dict(
        hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2
    ),
    "qwen2.5-1.5b": dict(
        hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2
    ),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tokenizer_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="qwen2.5-0.5b")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_dir)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        tie_word_embeddings=True,
        max_position_embeddings=32768,
        **SHAPES[args.shape],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    with torch.device(args.device):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(args.out_dir)
    tokenizer.save_pretrained(args.out_dir)
    print(
        f"{args.shape} (random init, {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters) "
        f"-> {args.out_dir}"
    )


if __name__ == "__main__":
    main()
