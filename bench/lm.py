"""Stage 2 model cost: `FmriLMForCausalLM` against the bare language model it wraps, in the same run.

(a) Forward + backward on a batch of prompts, each holding one scan's fMRI tokens: the wrapper
    on pre-computed codes (the training path: code tokens already in `input_ids`) against the
    bare LM on the very same token ids (target <= 1.10x), and the wrapper encoding `fmri_values`
    online, reported beside it.
(b) Greedy `generate` tokens/s with and without the KV cache, and whether both give the same tokens.
(c) After small Stage 2 runs (`bench/lm_quality.py`, one per seed): on the embedded data, held-out
    F2F next-window code accuracy against copy-the-current-window and most-frequent-code-per-ROI;
    on the bench cohort (embedded + synthetic subjects, `bench/pipeline.py`), held-out F2T loss
    with a scan's own tokens against other test subjects'.

Both for a GPT-2-shaped and a Qwen3-shaped LM (random weights, built from configs; small widths so
that the CPU run takes about a minute), with the paper's layout: one window of 94 ROIs (the
embedded AAL2 data) x one 160-frame patch = 94 fMRI tokens per scan, 8192 codes. Timings are the
process CPU time (one thread by default, so time spent descheduled by other processes on a shared
machine does not count), the fastest of repeats interleaved in rotating order.

Run: `.venv/bin/python bench/lm.py [--batch_size N] [--text_tokens N] [--repeats N]`. Ends with one
TARGET line per target and exits 0 either way.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from transformers import GPT2Config, Qwen3Config

from modeling_fmrilm import FmriLMConfig, FmriLMForCausalLM, FmriTokenizerConfig

NUM_ROIS, WINDOW_LENGTH = 94, 160
TEXT_VOCAB = 4096


def text_configs(hidden: int, layers: int) -> dict[str, object]:
    """The two LM shapes of the paper (GPT-2, Qwen3) at a CPU-sized width."""
    return {
        "gpt2": GPT2Config(
            vocab_size=TEXT_VOCAB,
            n_positions=1024,
            n_embd=hidden,
            n_layer=layers,
            n_head=hidden // 64,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=0,
            eos_token_id=0,
        ),
        "qwen3": Qwen3Config(
            vocab_size=TEXT_VOCAB,
            hidden_size=hidden,
            intermediate_size=3 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=hidden // 64,
            num_key_value_heads=max(1, hidden // 128),
            head_dim=64,
            max_position_embeddings=1024,
            tie_word_embeddings=True,
            bos_token_id=0,
            eos_token_id=0,
        ),
    }


def build(text_config: object, seed: int) -> FmriLMForCausalLM:
    torch.manual_seed(seed)
    tokenizer_config = FmriTokenizerConfig(
        num_rois=NUM_ROIS,
        window_length=WINDOW_LENGTH,
        patch_length=WINDOW_LENGTH,
        hidden_size=128,
        num_hidden_layers=2,
        num_decoder_layers=1,
        num_attention_heads=4,
        num_codes=8192,
        code_dim=128,
    )
    # No ids given: the 8192 code tokens and the three specials go after the text vocabulary.
    return FmriLMForCausalLM(FmriLMConfig(fmri_tokenizer_config=tokenizer_config, text_config=text_config))


def batch(model: FmriLMForCausalLM, batch_size: int, text_tokens: int, seed: int) -> dict[str, torch.Tensor]:
    """Prompts `<fmri> + 94 x <fmri_pad> + </fmri> + text`, their windows, and the ids with the codes written in."""
    config = model.config
    generator = torch.Generator().manual_seed(seed)
    text = torch.randint(TEXT_VOCAB, (batch_size, text_tokens), generator=generator)
    n_fmri = NUM_ROIS
    fmri_block = torch.tensor(
        [config.fmri_start_token_id, *[config.fmri_pad_token_id] * n_fmri, config.fmri_end_token_id]
    )
    input_ids = torch.cat([fmri_block.expand(batch_size, -1), text], dim=1)
    fmri_values = torch.randn(batch_size, NUM_ROIS, WINDOW_LENGTH, generator=generator)
    codes_written = model.insert_fmri_tokens(input_ids, fmri_values)
    return {"input_ids": input_ids, "fmri_values": fmri_values, "codes_written": codes_written}


def forward_backward(module: torch.nn.Module, **inputs: torch.Tensor) -> None:
    module.zero_grad(set_to_none=True)
    module(**inputs).loss.backward()


def interleaved_best(repeats: int, **runs) -> dict[str, float]:
    """Fastest CPU time of each callable in `runs`, called in turn (rotating the order) `repeats` times after a warm-up."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    order = list(runs.items())
    for _, run in order:
        run()
    for repeat in range(repeats):
        shift = repeat % len(order)
        for name, run in order[shift:] + order[:shift]:
            start = time.process_time()
            run()
            times[name].append(time.process_time() - start)
    return {name: min(values) for name, values in times.items()}


def measure(kind: str, text_config: object, args: argparse.Namespace) -> dict[str, float]:
    model = build(text_config, args.seed).train()
    inputs = batch(model, args.batch_size, args.text_tokens, args.seed)
    ids = inputs["codes_written"]
    bare = model.language_model
    seconds = interleaved_best(
        args.repeats,
        bare=lambda: forward_backward(bare, input_ids=ids, labels=ids),
        wrapper=lambda: forward_backward(model, input_ids=ids, labels=ids),
        online=lambda: forward_backward(
            model, input_ids=inputs["input_ids"], fmri_values=inputs["fmri_values"], labels=inputs["input_ids"]
        ),
    )
    model.eval()
    prompt = {"input_ids": inputs["input_ids"][:1], "fmri_values": inputs["fmri_values"][:1]}
    generate = {
        "max_new_tokens": args.new_tokens,
        "min_new_tokens": args.new_tokens,
        "do_sample": False,
        "pad_token_id": 0,
    }
    outputs: dict[str, torch.Tensor] = {}

    def run_generate(use_cache: bool) -> None:
        with torch.inference_mode():
            outputs[str(use_cache)] = model.generate(**prompt, use_cache=use_cache, **generate)

    generation = interleaved_best(
        max(1, args.repeats // 3), cached=lambda: run_generate(True), uncached=lambda: run_generate(False)
    )
    tokens = args.batch_size * ids.shape[1]
    print(
        f"{kind}: {sum(p.numel() for p in bare.parameters()) / 1e6:.1f}M LM parameters, batch {args.batch_size} x "
        f"{ids.shape[1]} tokens ({NUM_ROIS} fMRI tokens per prompt)"
    )
    print(
        f"  forward+backward (CPU time): bare LM {seconds['bare'] * 1e3:.0f} ms ({tokens / seconds['bare']:.0f} tokens/s), wrapper on "
        f"pre-computed codes {seconds['wrapper'] * 1e3:.0f} ms, wrapper encoding fmri_values online {seconds['online'] * 1e3:.0f} ms"
    )
    print(
        f"  greedy generate, CPU time ({args.new_tokens} new tokens after a {prompt['input_ids'].shape[1]}-token prompt): "
        f"cache {args.new_tokens / generation['cached']:.1f} tokens/s, no cache {args.new_tokens / generation['uncached']:.1f} tokens/s"
    )
    return {
        "wrapper_ratio": seconds["wrapper"] / seconds["bare"],
        "online_ratio": seconds["online"] / seconds["bare"],
        "cache_speedup": generation["uncached"] / generation["cached"],
        "same_tokens": float(torch.equal(outputs["True"], outputs["False"])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--text_tokens", type=int, default=66)
    parser.add_argument("--hidden_size", type=int, default=256)
    parser.add_argument("--num_layers", type=int, default=2)
    parser.add_argument("--new_tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quality_seeds", type=int, nargs="*", default=[0, 1, 2], help="Stage 2 runs for (c); none to skip"
    )
    parser.add_argument("--stage1_epochs", type=int, default=25)
    parser.add_argument("--stage2_epochs", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU, {torch.get_num_threads()} thread(s), torch {torch.__version__}")
    results = {
        kind: measure(kind, config, args) for kind, config in text_configs(args.hidden_size, args.num_layers).items()
    }

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    for kind, result in results.items():
        print(f"  {kind}: online encoding costs {result['online_ratio']:.2f}x the bare LM (reported, no target)")
    for kind, result in results.items():
        ratio = result["wrapper_ratio"]
        print(f"TARGET forward_backward_{kind}: ratio {ratio:.2f}x (target <= 1.10x) {verdict(ratio <= 1.10)}")
    for kind, result in results.items():
        speedup = result["cache_speedup"]
        print(
            f"TARGET generate_cache_speedup_{kind}: ratio {speedup:.2f}x (target >= 1.00x) {verdict(speedup >= 1.0)}"
        )
        same = bool(result["same_tokens"])
        print(
            f"TARGET generate_cache_same_tokens_{kind}: {'identical' if same else 'different'} (target identical) {verdict(same)}"
        )
    if args.quality_seeds:
        from lm_quality import print_targets, stage2_quality  # the data stack (datasets, nibabel), only for (c)

        torch.set_num_threads(max(1, os.cpu_count() or 1))
        print_targets(*stage2_quality(args.quality_seeds, args.stage1_epochs, args.stage2_epochs))


if __name__ == "__main__":
    main()
