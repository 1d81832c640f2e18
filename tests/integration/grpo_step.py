"""One TRL GRPOTrainer step with both rmserve reward functions, in this process or as a script
(`python -m tests.integration.grpo_step URL POLICY_TOKENIZER OUT_DIR`), so that a test can run it
under another TRL version (PYTHONPATH) than the one installed."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def grpo_step(url: str, tokenizer_dir: Path, output_dir: Path) -> dict[str, Any]:
    """Train one step on a tiny random GPT-2 policy; return TRL's first log entry and its version."""
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel
    from trl import GRPOConfig, GRPOTrainer

    from rmserve_client import AsyncRmserveReward, RmserveReward

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    policy = GPT2LMHeadModel(GPT2Config(
        vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=128,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    ))
    prompts = Dataset.from_dict({"prompt": ["How do I cook pasta?", "Explain why the sky is blue.",
                                            "Write a python function.", "Travel tips for Paris?"]})
    config = GRPOConfig(
        output_dir=str(output_dir), max_steps=1, per_device_train_batch_size=4, num_generations=2,
        max_completion_length=8, learning_rate=1e-3, logging_steps=1, report_to="none", use_cpu=True,
        save_strategy="no", bf16=False, seed=0,
    )
    rewards = [RmserveReward(url, model="gpt2", name="rmserve_sync"),
               AsyncRmserveReward(url, model="gpt2", name="rmserve_async")]
    trainer = GRPOTrainer(model=policy, reward_funcs=rewards, args=config, train_dataset=prompts,
                          processing_class=tokenizer)
    trainer.train()
    rewards[0].close()
    return {"trl": trl.__version__, "trl_path": trl.__file__, "logged": trainer.state.log_history[0]}


if __name__ == "__main__":
    result = grpo_step(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
    print(json.dumps(result, default=str))
