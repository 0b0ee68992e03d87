"""Stage 2 model on a GPU: a Qwen3-0.6B-shaped `FmriLMForCausalLM` against the bare LM it wraps, in one run.

A training step as `Trainer` runs it with `bf16=True`: float32 weights, bf16 autocast, backward, a
fused AdamW step on the language model's parameters (the tokenizer is frozen). Four variants on
the same batch of `batch_size` prompts of `seq_len` tokens (`<fmri>` + 94 code tokens + `</fmri>`
+ text), each in eager mode and under `torch.compile`:

- `bare`: the language model on the token ids with the codes already written (pre-computed codes);
- `wrapper`: `FmriLMForCausalLM` on the very same ids (the Stage 2 training path): target >= 0.90x
  the bare LM's tokens/s, eager and compiled;
- `online`: the wrapper given `<fmri_pad>` placeholders and `fmri_values`, encoding the windows in
  the step (inference and users who skip the pre-computed pass): reported beside them.

Compiled variants are first compiled with `fullgraph=True`, which fails on any graph break: the line
says whether each model compiled as one graph. Tokens/s are the median over interleaved rounds
(variants called in rotating order), peak memory is `torch.cuda.max_memory_allocated` in the step.
The LM has random weights (no download): speed and memory do not depend on them.

Run on a CUDA machine: `python bench/lm_gpu.py [--batch_size 16] [--seq_len 1024] [--rounds 5]`.
Ends with one TARGET line per target and exits 0 either way (with no GPU it says so and stops).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from transformers import Qwen3Config

from lm import NUM_ROIS, batch, build


def qwen3_0_6b_config() -> Qwen3Config:
    """Qwen/Qwen3-0.6B's shape (its config.json), random weights."""
    return Qwen3Config(
        vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
        num_key_value_heads=8, head_dim=128, max_position_embeddings=40960, rms_norm_eps=1e-6,
        tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        bos_token_id=151643, eos_token_id=151645,
    )  # fmt: skip


def training_step(module: Callable, optimizer: torch.optim.Optimizer, inputs: dict[str, torch.Tensor]) -> None:
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = module(**inputs).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def compile_step(module: torch.nn.Module, optimizer: torch.optim.Optimizer, inputs: dict) -> tuple[Callable, bool]:
    """`torch.compile(module, fullgraph=True)` and a first step (the compilation); on a graph break, without fullgraph."""
    try:
        compiled = torch.compile(module, fullgraph=True)
        training_step(compiled, optimizer, inputs)
        return compiled, True
    except Exception as error:  # noqa: BLE001 - any graph break is reported, then measured without fullgraph
        print(
            f"  {type(module).__name__}: fullgraph=True failed ({type(error).__name__}: {str(error).splitlines()[0][:200]})"
        )
        compiled = torch.compile(module)
        training_step(compiled, optimizer, inputs)
        return compiled, False


def measure(
    runs: dict[str, Callable[[], None]], rounds: int, steps: int, tokens: int
) -> dict[str, tuple[float, float]]:
    """Median tokens/s over `rounds` interleaved rounds of `steps` steps, and peak GiB of one step, per run."""
    rates: dict[str, list[float]] = {name: [] for name in runs}
    peaks: dict[str, float] = {}
    order = list(runs.items())
    for name, run in order:  # warm-up, and each run's peak memory on its own
        run()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        run()
        torch.cuda.synchronize()
        peaks[name] = torch.cuda.max_memory_allocated() / 2**30
    for repeat in range(rounds):
        shift = repeat % len(order)
        for name, run in order[shift:] + order[:shift]:
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(steps):
                run()
            torch.cuda.synchronize()
            rates[name].append(steps * tokens / (time.perf_counter() - start))
    return {name: (statistics.median(values), peaks[name]) for name, values in rates.items()}


def report(mode: str, result: dict[str, tuple[float, float]]) -> None:
    for name, (rate, peak) in result.items():
        print(f"  {mode:8s} {name:7s}: {rate:9.0f} tokens/s, peak {peak:5.1f} GiB")
    bare_rate, bare_peak = result["bare"]
    print(
        f"  {mode}: wrapper {result['wrapper'][0] / bare_rate:.2f}x the bare LM's tokens/s and {result['wrapper'][1] / bare_peak:.2f}x "
        f"its peak memory; online encoding {result['online'][0] / bare_rate:.2f}x its tokens/s (reported, no target)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--seq_len", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="training steps per variant per round")
    parser.add_argument("--no_compile", action="store_true", help="eager only")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: this bench needs a GPU (bench/lm.py measures the same on CPU)")
        return
    device = "cuda"
    torch.backends.cuda.matmul.allow_tf32 = True
    print(
        f"{torch.cuda.get_device_name()}, torch {torch.__version__}, batch {args.batch_size} x {args.seq_len} tokens"
    )
    model = build(qwen3_0_6b_config(), seed=0)
    # bench/lm.py's prompts (codes written on the CPU in float32, as the pre-computed pass does), then the GPU
    inputs = {
        name: value.to(device)
        for name, value in batch(model, args.batch_size, args.seq_len - NUM_ROIS - 2, seed=0).items()
    }
    model = model.to(device).train()
    bare = model.language_model
    ids, placeholders = inputs["codes_written"], inputs["input_ids"]
    print(
        f"  LM: {sum(p.numel() for p in bare.parameters()) / 1e6:.0f}M parameters, vocabulary {bare.config.vocab_size}"
    )
    feeds = {
        "bare": (bare, {"input_ids": ids, "labels": ids}),
        "wrapper": (model, {"input_ids": ids, "labels": ids}),
        "online": (model, {"input_ids": placeholders, "fmri_values": inputs["fmri_values"], "labels": placeholders}),
    }
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        losses = {name: float(module(**feed).loss) for name, (module, feed) in feeds.items()}
    print("  loss on the batch (bf16 autocast): " + ", ".join(f"{name} {loss:.6f}" for name, loss in losses.items()))
    optimizer = torch.optim.AdamW(bare.parameters(), lr=1e-5, fused=True)
    tokens = args.batch_size * args.seq_len
    results: dict[str, dict[str, tuple[float, float]]] = {}
    eager = {name: (lambda m=module, f=feed: training_step(m, optimizer, f)) for name, (module, feed) in feeds.items()}
    results["eager"] = measure(eager, args.rounds, args.steps, tokens)
    report("eager", results["eager"])
    if not args.no_compile:
        compiled, fullgraph = {}, {}
        for name, (module, feed) in feeds.items():
            start = time.perf_counter()
            step_module, fullgraph[name] = compile_step(module, optimizer, feed)
            compiled[name] = lambda m=step_module, f=feed: training_step(m, optimizer, f)
            print(
                f"  compiled {name}: one graph (fullgraph=True) {fullgraph[name]}, compile + first step {time.perf_counter() - start:.0f} s"
            )
        results["compiled"] = measure(compiled, args.rounds, args.steps, tokens)
        report("compiled", results["compiled"])
    for mode, result in results.items():
        ratio = result["wrapper"][0] / result["bare"][0]
        print(
            f"TARGET gpu_tokens_per_s_{mode}: ratio {ratio:.2f}x (target >= 0.90x) {'PASS' if ratio >= 0.90 else 'FAIL'}"
        )
    if not args.no_compile:
        ok = fullgraph["wrapper"]
        print(
            f"TARGET gpu_wrapper_one_graph: {'one graph' if ok else 'graph breaks'} (target one graph) {'PASS' if ok else 'FAIL'}"
        )


if __name__ == "__main__":
    main()
