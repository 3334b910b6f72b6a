"""Build the two tiny RANDOM models that the embedded default serves with real vLLM on the CPU.

Run it with the vLLM venv's python (it needs torch, transformers and tokenizers):

    .venv-vllm/bin/python deploy/local/build_tiny_models.py [--out DIR] [--force]

It writes, under DIR (default: $LOCAL_MODELS_DIR or <repo>/.cache/models):

    tokenizer/      a byte-level BPE tokenizer trained here on text generated here (fixed seed)
    tiny-qwen3/     Qwen3ForCausalLM, Qwen3-style chat template with <think> reasoning
    tiny-qwen2/     Qwen2ForCausalLM, ChatML template without reasoning

Both models: hidden 128, 2 layers, 2 heads, 1 KV head, head_dim 64 (head_dim 16 fails in vLLM's CPU
attention), random weights with fixed seeds. Nothing is downloaded. A stamp keyed on this script's
content makes the next run a no-op.

Random weights emit arbitrary tokens; the suite fixes the output length with `ignore_eos: true`
and `max_tokens`. To keep every streamed token one visible, valid UTF-8 chunk, the output layer is
shaped so that the model (in practice) never samples: special tokens (<|im_end|>, </think>, ...),
bytes outside printable ASCII, or any token containing '<' or '>'. So a Qwen3 reply with thinking
on is all reasoning (vLLM's qwen3 parser starts in the reasoning state and never sees </think>),
and with thinking off (`enable_thinking: false`, the template then closes an empty think block) it
is all answer content.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = Path(os.environ.get("LOCAL_MODELS_DIR", ROOT / ".cache" / "models"))
STAMP_NAME = ".build-stamp"

VOCAB_SIZE = 2048  # trained BPE vocabulary (bytes + merges + special tokens)
SEED = 20261127

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Qwen3 keeps <think>/</think> as added but non-special tokens, so they survive decoding and the
# reasoning parser can find them by token id.
THINK_TOKENS = ["<think>", "</think>"]

MODELS = {
    "tiny-qwen3": {"arch": "Qwen3ForCausalLM", "model_type": "qwen3", "seed": SEED + 3},
    "tiny-qwen2": {"arch": "Qwen2ForCausalLM", "model_type": "qwen2", "seed": SEED + 2},
}

# Qwen3's template, trimmed (no tools): <think> reasoning of the last assistant turn is kept,
# `enable_thinking=false` closes an empty think block in the generation prompt, as Qwen3 does.
QWEN3_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message.role == 'system' or message.role == 'user' %}"
    "{{- '<|im_start|>' + message.role + '\\n' + (message.content if message.content is string else '') + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}"
    "{%- set content = message.content if message.content is string else '' %}"
    "{%- set reasoning = message.reasoning_content if message.reasoning_content is string else "
    "(message.reasoning if message.reasoning is string else '') %}"
    "{%- if not reasoning and '</think>' in content %}"
    "{%- set reasoning = content.split('</think>')[0].split('<think>')[-1].strip('\\n') %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}"
    "{%- endif %}"
    "{%- if loop.last and reasoning %}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>assistant\\n' + content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)

# Plain ChatML (Qwen2 / Qwen2.5 without tools), no reasoning.
QWEN2_TEMPLATE = (
    "{%- if messages[0].role != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\\n' + (message.content if message.content is string else '') + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_WORDS = (
    "system network model request latency memory cache batch token stream server client engine "
    "budget review plan garden river mountain city market history science music language design "
    "energy signal window record method result table figure measure value report error question "
    "answer reason summary detail example story process project team policy travel weather "
    "kitchen library museum planet ocean forest desert bridge engineer teacher doctor student "
    "artist farmer pilot sailor writer painter builder quickly carefully rarely often always "
    "gently simply clearly slowly briefly openly compare explain describe analyse improve predict "
    "consider imagine translate ancient modern simple complex bright quiet heavy light rapid "
    "steady careful honest the a an of to in on for with and or but is are was were be been this "
    "that these those it they we you he she think first then next because so therefore however "
    "step check count number list time second minute hour day week year user assistant task"
).split()


def script_hash() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def training_text(seed: int) -> list[str]:
    """Seeded English-like lines plus digits, hex and punctuation; no '<' or '>'."""
    rng = random.Random(seed)
    lines = []
    for _ in range(4000):
        n = rng.randint(4, 24)
        words = [rng.choice(_WORDS) for _ in range(n)]
        if rng.random() < 0.5:
            words[0] = words[0].capitalize()
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words)), f"{rng.getrandbits(48):012x}")
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words)), str(rng.randint(0, 99999)))
        line = " ".join(words) + rng.choice([".", ".", "?", "!", ":", ";", ","])
        if rng.random() < 0.2:
            line = f"Task {rng.getrandbits(48):012x}. {line}"
        if rng.random() < 0.1:
            line = f"({line}) \"{rng.choice(_WORDS)}\" - '{rng.choice(_WORDS)}' [{rng.randint(0, 9)}]"
        lines.append(line)
    return lines


def build_tokenizer(out: Path) -> "object":
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS + THINK_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodes
        show_progress=False,
    )
    tok.train_from_iterator(training_text(SEED), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
    )
    # <|...|> are special (skipped when decoding); <think> / </think> stay as plain added tokens.
    fast.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    return fast


def banned_token_ids(tokenizer) -> list[int]:
    """Ids the random model must not emit: specials, think markers, non-printable bytes, '<' '>'."""
    banned = []
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id], skip_special_tokens=False)
        printable = all(32 <= ord(c) < 127 or c == "\n" for c in text) and text != ""
        if (
            token_id in tokenizer.all_special_ids
            or text in SPECIAL_TOKENS + THINK_TOKENS
            or not printable
            or "<" in text
            or ">" in text
            or "\ufffd" in text
        ):
            banned.append(token_id)
    return banned


def build_model(name: str, spec: dict, tokenizer, template: str, out: Path) -> None:
    import torch
    import transformers

    torch.manual_seed(spec["seed"])
    vocab = len(tokenizer)
    padded_vocab = (vocab + 63) // 64 * 64
    common = dict(
        vocab_size=padded_vocab,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=4096,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        torch_dtype="bfloat16",
    )
    if spec["model_type"] == "qwen3":
        config = transformers.Qwen3Config(**common)
        model = transformers.Qwen3ForCausalLM(config)
    else:
        config = transformers.Qwen2Config(**common)
        model = transformers.Qwen2ForCausalLM(config)
    # Tie the output distribution down: peaked random logits (std ~11 per token after the final
    # RMSNorm) for allowed tokens, logit 0 for banned and padding ids, so banned ids are never
    # sampled at any sane temperature.
    banned = banned_token_ids(tokenizer) + list(range(vocab, padded_vocab))
    with torch.no_grad():
        w = model.lm_head.weight
        w.normal_(0.0, 1.0)
        w[banned] = 0.0
    model = model.to(torch.bfloat16)
    model.generation_config = transformers.GenerationConfig(
        bos_token_id=common["bos_token_id"],
        eos_token_id=[common["eos_token_id"], common["pad_token_id"]],
        pad_token_id=common["pad_token_id"],
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.chat_template = template
    tokenizer.save_pretrained(out)
    # Belt and braces for loaders that read the template only from tokenizer_config.json.
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["chat_template"] = template
    cfg_path.write_text(json.dumps(cfg, indent=2))
    (out / "README.md").write_text(
        f"# {name}\n\nA tiny {spec['arch']} with RANDOM weights, built by "
        "deploy/local/build_tiny_models.py for load-testing plumbing. Its output is meaningless.\n"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"models folder (default {DEFAULT_OUT})")
    ap.add_argument("--force", action="store_true", help="rebuild even if the stamp matches")
    args = ap.parse_args(argv)
    out: Path = args.out.resolve()
    stamp = out / STAMP_NAME
    want = script_hash()
    if (
        not args.force
        and stamp.is_file()
        and stamp.read_text().strip() == want
        and all((out / n / "config.json").is_file() for n in MODELS)
    ):
        print(f"[build_tiny_models] up to date: {out} (stamp {want})")
        return 0

    t0 = time.monotonic()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import transformers

    transformers.utils.logging.disable_progress_bar()
    print(f"[build_tiny_models] building tiny-qwen3 and tiny-qwen2 under {out} ...", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=out))
    try:
        tokenizer = build_tokenizer(tmp)
        tokenizer.save_pretrained(tmp / "tokenizer")
        templates = {"tiny-qwen3": QWEN3_TEMPLATE, "tiny-qwen2": QWEN2_TEMPLATE}
        for name, spec in MODELS.items():
            build_model(name, spec, tokenizer, templates[name], tmp / name)
        # Smoke check: the templates render and the think markers are single tokens.
        for marker in THINK_TOKENS + SPECIAL_TOKENS:
            ids = tokenizer.encode(marker, add_special_tokens=False)
            assert len(ids) == 1, f"{marker!r} is not one token: {ids}"
        for name in MODELS:
            (out / name).exists() and shutil.rmtree(out / name)
            (tmp / name).rename(out / name)
        (out / "tokenizer").exists() and shutil.rmtree(out / "tokenizer")
        (tmp / "tokenizer").rename(out / "tokenizer")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    stamp.write_text(want + "\n")
    print(
        f"[build_tiny_models] done in {time.monotonic() - t0:.1f} s "
        f"(vocab {len(tokenizer)}): {', '.join(str(out / n) for n in MODELS)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
