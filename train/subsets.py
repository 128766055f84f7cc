"""The experiment's subsets: rankings of the training units, each cut at the same budget of student tokens.

Every subset but the curriculum is one ranking of the scored training units, cut where the units
before it reach the budget (alpha of the training split's student tokens, `budget=tokens`; or of
its bytes or units), ties by unit id. They differ only in the ranking:

- `uniform`: a seeded random order, drawn again for every seed;
- `uniform_length_matched`: uniform within each length (student tokens; for whole documents,
  twenty length quantiles), as many units of each as the difference subset holds, drawn per seed:
  a uniform subset with the difference subset's lengths;
- `difference`: MiniPLM's difference score, the `score` column of corpusdb's `difference_bytes`
  policy (teacher minus reference log-likelihood per byte, or per token);
- `dedup_difference`: the same over the deduplicated training split;
- `teacher_likelihood`: the teacher's log-likelihood per byte, highest first (perplexity filtering);
- `reference_loss`: the reference's loss per byte, highest first;
- `curriculum`: the difference subset, ordered by reference loss (easy first) and not shuffled.

Student tokens are the reference's token counts: the students use the reference's tokenizer.
"""

from __future__ import annotations

ARMS = ("uniform", "uniform_length_matched", "difference", "dedup_difference", "teacher_likelihood", "reference_loss",
        "curriculum")
LENGTH_QUANTILES = 20  # length strata of whole documents


def make_subsets(db, config, prefix: str, seeds: list[int]) -> tuple[dict[str, dict[int, tuple[str, bool]]], dict]:
    """Create every subset's view; returns arm -> seed -> (view, shuffle), and the budget."""
    p = prefix
    teacher, reference = f"{p}_teacher", f"{p}_reference"
    key = "instance_id" if config.unit == "instances" else "doc_id"
    db.create_view(f"{p}_train_dedup", f"select t.* from {p}_train t left join minhash m using (doc_id) "
                                       "where m.doc_id is null or m.doc_id = m.cluster_id", replace=True)
    units = {"train": f"{p}_train", "train_dedup": f"{p}_train_dedup"}
    if config.unit == "instances":  # the same splits, as instances of their documents
        for split in ("train", "train_dedup"):
            db.create_view(f"{p}_{split}_instances", f"select i.* from instances i semi join {p}_{split} t on i.doc_id = t.doc_id",
                           replace=True)
            units[split] = f"{p}_{split}_instances"
    length = "student_tokens" if config.unit == "instances" else f"ntile({LENGTH_QUANTILES}) over (order by student_tokens, {key})"
    for split, view in units.items():
        # every scored unit with its rankings' keys (the difference score from the library's policy) and its length
        db.create_view(f"{p}_ranked_{split}", f"""
            select b.*, s.n_tokens as student_tokens, b.teacher_logprob / b.n_bytes as teacher_per_byte,
                   -b.reference_logprob / b.n_bytes as reference_loss_per_byte
            from difference_bytes('{teacher}', '{reference}', alpha := 1.0, per := '{config.per}', docs := '{view}') b
            join (select doc_id as unit, n_tokens from scores where model = '{reference}') s on s.unit = b.{key}""",
                       replace=True)
    db.create_view(f"{p}_lengths", f"select {key}, {length} as length_bin from {p}_ranked_train", replace=True)
    size = {"tokens": "student_tokens", "bytes": "n_bytes", "docs": "1"}[config.budget]
    (total,) = db.sql(f"select sum({size}) from {p}_ranked_train").fetchall()[0]
    budget = config.alpha * float(total)

    def cut(name: str, split: str, order: str) -> str:
        db.create_view(f"{p}_{name}", f"select * exclude (size_before) from (select *, coalesce(sum({size}) over (order by "
                                      f"{order}, {key} rows between unbounded preceding and 1 preceding), 0) as size_before "
                                      f"from {p}_ranked_{split}) where size_before < {budget!r}", replace=True)
        return f"{p}_{name}"

    arms: dict[str, dict[int, tuple[str, bool]]] = {arm: {} for arm in ARMS}
    for arm, split, order in (("difference", "train", "score desc"), ("dedup_difference", "train_dedup", "score desc"),
                              ("teacher_likelihood", "train", "teacher_per_byte desc"),
                              ("reference_loss", "train", "reference_loss_per_byte desc")):
        view = cut(arm, split, order)
        arms[arm] = {seed: (view, True) for seed in seeds}
    db.create_view(f"{p}_curriculum", f"select * from curriculum('{reference}', docs := '{p}_difference')", replace=True)
    arms["curriculum"] = {seed: (f"{p}_curriculum", False) for seed in seeds}
    for seed in seeds:
        arms["uniform"][seed] = (cut(f"uniform_s{seed}", "train", f"uniform({key}, {100 + seed})"), True)
        # as many units of each length as the difference subset holds, uniformly within it
        db.create_view(f"{p}_uniform_length_matched_s{seed}", f"""
            with wanted as (
                select l.length_bin, count(*) as n from {p}_difference d join {p}_lengths l using ({key}) group by l.length_bin
            ),
            drawn as (
                select r.*, l.length_bin, row_number() over (partition by l.length_bin order by uniform(r.{key}, {200 + seed}),
                       r.{key}) as k
                from {p}_ranked_train r join {p}_lengths l using ({key})
            )
            select drawn.* exclude (length_bin, k) from drawn join wanted using (length_bin) where drawn.k <= wanted.n""",
                       replace=True)
        arms["uniform_length_matched"][seed] = (f"{p}_uniform_length_matched_s{seed}", True)
    return arms, {"unit": size, "total": float(total), "budget": budget}
