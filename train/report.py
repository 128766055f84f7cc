"""The experiment's statistics and its results.md / results.png.

Every subset is compared with uniform seed by seed (seed k: the k-th uniform draw, the same
initialisation and the same data-order seed). The gap of seed k is the difference in held-out
bits per byte, over the documents' summed losses. Its uncertainty comes from a bootstrap that
resamples the held-out documents and the seeds together (10,000 draws; a 95% percentile
interval), so it covers both the choice of held-out text and the students' training noise. The
headline is given over all held-out bytes (the held-out set's source mix) and with every source
weighted equally (the mean of the per-source gaps; documents resampled within their source).
"""

from __future__ import annotations

import math
import statistics

import numpy as np

DRAWS = 10_000
LN2 = math.log(2)


def gaps(arm: np.ndarray, uniform: np.ndarray, n_bytes: np.ndarray, sources: np.ndarray) -> dict:
    """Paired gaps of one subset against uniform: `arm` and `uniform` are (seeds, documents) nats.

    Returns the per-seed gaps, their mean, the bootstrap interval and seeds better, over all bytes
    and with equal source weights.
    """
    delta = arm - uniform  # (K, D)
    k, d = delta.shape
    rng = np.random.default_rng(0)
    names = sorted(set(sources.tolist()))
    members = [np.flatnonzero(sources == s) for s in names]

    def over_bytes(counts: np.ndarray) -> np.ndarray:  # (draws, D) times each document is drawn -> (K, draws) gaps
        return (delta @ counts.T) / (counts @ n_bytes) / LN2

    def equal_weights(counts_by_source: list[np.ndarray]) -> np.ndarray:
        per = [(delta[:, m] @ c.T) / (c @ n_bytes[m]) / LN2 for m, c in zip(members, counts_by_source)]
        return np.mean(per, axis=0)

    def drawn(n: int) -> np.ndarray:  # a bootstrap sample of n documents, as counts
        return rng.multinomial(n, np.full(n, 1 / n), size=DRAWS).astype(np.float64)

    seed_draws = rng.integers(0, k, size=(DRAWS, k))
    result = {}
    for name, whole, boot in (
        ("all", over_bytes(np.ones((1, d))), lambda: over_bytes(drawn(d))),
        ("equal_sources", equal_weights([np.ones((1, len(m))) for m in members]),
         lambda: equal_weights([drawn(len(m)) for m in members])),
    ):
        per_seed = whole[:, 0]
        sampled = boot()  # (K, DRAWS): every draw's documents, under every seed
        means = sampled[seed_draws, np.arange(DRAWS)[:, None]].mean(axis=1)  # and every draw's seeds
        low, high = np.percentile(means, [2.5, 97.5])
        result[name] = {"per_seed": [float(g) for g in per_seed], "mean": float(per_seed.mean()),
                        "std": float(per_seed.std(ddof=1)) if k > 1 else 0.0, "ci95": [float(low), float(high)],
                        "seeds_better": int((per_seed < 0).sum())}
    return result


def sentence(name: str, gap: dict, against: str = "uniform") -> str:
    low, high = gap["ci95"]
    verdict = "better than" if high < 0 else "worse than" if low > 0 else "not distinguishable from"
    return (f"{name} is {verdict} {against}: {gap['mean']:+.3f} bits per byte, 95% interval {low:+.3f} to {high:+.3f}, "
            f"{gap['seeds_better']} of {len(gap['per_seed'])} seeds better")


def write_markdown(out, results: dict) -> None:
    config, splits, heldout = results["config"], results["splits"], results["heldout"]
    unit = config["unit"]
    subsets, models = results["subsets"], results["models"]
    seeds = len(config["seeds"])
    lines = [
        f"# MiniPLM on corpusdb: preset {config['preset']}",
        "",
        f"Held-out bits per byte of `{results['student']['size']}` students ({results['student']['n_parameters']:,} parameters) "
        f"trained for {results['compute']['student_tokens']:,} tokens ({results['compute']['student_steps']} steps) on each "
        f"subset, {seeds} seeds; lower is better. Every subset holds alpha = {config['alpha']} of the training split's "
        f"{_budget_words(config['budget'])} ({results['budget']['budget']:,.0f} of {results['budget']['total']:,.0f}), "
        f"selected as {unit}" + (f" of at most {config['instance_tokens'] or config['seq_len']} student tokens" if unit == "instances" else "")
        + ". Gaps are paired by seed (seed k: the k-th uniform draw, initialisation k, data order k) with a 95% bootstrap "
        "interval over held-out documents and seeds together; \"equal sources\" weights every held-out source alike.",
        "",
        f"| subset | {unit} | student tokens | MB | epochs | bits/byte | ± | gap to uniform [95%] | seeds better | "
        "gap, equal sources [95%] |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, s in subsets.items():
        gap, equal = s.get("gap", {}).get("all"), s.get("gap", {}).get("equal_sources")
        cells = [f"{gap['mean']:+.4f} [{gap['ci95'][0]:+.3f}, {gap['ci95'][1]:+.3f}]", f"{gap['seeds_better']}/{seeds}",
                 f"{equal['mean']:+.4f} [{equal['ci95'][0]:+.3f}, {equal['ci95'][1]:+.3f}]"] if gap else ["", "", ""]
        lines.append(f"| {name} | {s['units']:,.0f} | {s['student_tokens']:,.0f} | {s['bytes'] / 1e6:.3f} | {s['epochs']:.2f} | "
                     f"{s['bits_per_byte_mean']:.4f} | {s['bits_per_byte_std']:.4f} | " + " | ".join(cells) + " |")
    lines += ["", "Per-seed subsets (uniform, uniform_length_matched) give their mean size. \"epochs\": student tokens "
              "trained / the subset's tokens with one EOS per unit.", "",
              "Difference against each control directly (difference minus control, paired by seed; negative: difference "
              "better):", "", "| control | gap [95%] | seeds better | gap, equal sources [95%] |", "| --- | ---: | ---: | ---: |"]
    for name, both in results["difference_vs"].items():
        gap, equal = both["all"], both["equal_sources"]
        lines.append(f"| {name} | {gap['mean']:+.4f} [{gap['ci95'][0]:+.3f}, {gap['ci95'][1]:+.3f}] | {gap['seeds_better']}/{seeds} | "
                     f"{equal['mean']:+.4f} [{equal['ci95'][0]:+.3f}, {equal['ci95'][1]:+.3f}] |")
    lines += ["", "In words (an interval that holds 0 is \"not distinguishable\"):", ""]
    lines += [f"- {sentence(name, s['gap']['all'])}" for name, s in subsets.items() if name != "uniform"]
    lines += [f"- {sentence('difference', both['all'], name)}" for name, both in results["difference_vs"].items()]
    lines += ["",
              "| model | what | parameters | trained on | bits/byte on held-out |", "| --- | --- | ---: | --- | ---: |"]
    for name, m in models.items():
        lines.append(f"| {name} | {m['what']} | {m['n_parameters']:,} | {m['trained_on']} | {m['bits_per_byte']:.4f} |")
    sources = sorted(heldout["documents"])
    lines += ["", f"Splits (disjoint by near-duplicate cluster): pool = training split {splits['pool']['documents']:,} documents, "
              f"{splits['pool']['bytes'] / 1e6:.2f} MB; reference set {splits['reference_slice']['documents']:,} documents, "
              f"{splits['reference_slice']['bytes'] / 1e6:.2f} MB; held-out {splits['heldout']['documents']:,} documents, "
              f"{splits['heldout']['bytes'] / 1e6:.3f} MB, from outside both. Held-out candidates passed over: "
              f"{heldout['dropped_overlap']} sharing "
              + (f"more than {config['heldout_max_overlap']:.0%} of their word 13-grams" if config["heldout_max_overlap"]
                 else "a word 13-gram") + f" with the pool or the reference set (the largest share kept: "
              f"{heldout['max_overlap']:.1%}), {heldout['dropped_large']} "
              f"larger than {config['heldout_max_doc']:.0%} of the set.", "",
              "| held-out | " + " | ".join(sources) + " |", "| --- |" + " ---: |" * len(sources),
              "| documents | " + " | ".join(f"{heldout['documents'][s]:,}" for s in sources) + " |",
              "| kB | " + " | ".join(f"{heldout['bytes'][s] / 1e3:.1f}" for s in sources) + " |",
              "", "Per source (bits/byte, mean over seeds):", "", "| subset | " + " | ".join(sources) + " |",
              "| --- |" + " ---: |" * len(sources)]
    for name, s in subsets.items():
        means = [statistics.mean(r["per_source_bits_per_byte"][src] for r in s["runs"]) for src in sources]
        lines.append(f"| {name} | " + " | ".join(f"{m:.3f}" for m in means) + " |")
    lines += ["", f"Training compute: {results['compute']['training_flops']:.3g} FLOPs (6 N D over every model trained); "
              f"wall clock {results['seconds_total']:.0f} s over the invocations that finished (this one {results['seconds']:.0f} s)."]
    (out / "results.md").write_text("\n".join(lines) + "\n")


def _budget_words(budget: str) -> str:
    return {"tokens": "student tokens", "bytes": "text bytes", "docs": "units"}[budget]


def write_plot(out, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in results["subsets"] if n != "uniform"]
    gap = [results["subsets"][n]["gap"]["all"] for n in names]
    means = [g["mean"] for g in gap]
    errors = np.array([[g["mean"] - g["ci95"][0] for g in gap], [g["ci95"][1] - g["mean"] for g in gap]])
    figure, axis = plt.subplots(figsize=(7, 3.8))
    axis.barh(names, means, xerr=errors, capsize=4, color=["#d62728" if "difference" in n else "#888888" for n in names])
    axis.axvline(0, color="black", linewidth=0.8)
    axis.invert_yaxis()
    axis.set_xlabel("held-out bits per byte minus uniform's (95% interval; left is better)")
    axis.set_title(f"students at equal tokens ({results['config']['preset']} preset, {len(results['config']['seeds'])} seeds)")
    figure.tight_layout()
    figure.savefig(out / "results.png", dpi=120)
    plt.close(figure)
