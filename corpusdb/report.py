"""An HTML report of a selection: losses in bits per byte, the difference ranking and its cut, what it keeps.

    corpusdb report demo/db --teacher teacher --reference reference --out demo/report.html

One self-contained HTML file (plots embedded as PNG) that people can open and share. Everything is
drawn over the rows a selection is made from (`docs`: documents, the instances the teacher scored,
or any view): each model's bits per byte by source on one shared axis, teacher against reference
with the selection boundary, the distribution of difference scores with the cut, the fraction of
each source the selection keeps, the top and bottom of the ranking with excerpts, the
distributions of the annotations' columns, and the per-source shares of each view.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import html
import io
import math
import re
from typing import TYPE_CHECKING

from corpusdb.analysis import view_stats
from corpusdb.statements import quote
from corpusdb.storage import Location
from corpusdb.tables import annotation_columns, annotation_view
from corpusdb.views import relation_sql

if TYPE_CHECKING:
    from corpusdb.db import Database

MAX_POINTS = 20000  # scatter points drawn (a seeded sample beyond that)
EXAMPLES = 3  # rows shown at each end of the ranking
EXCERPT = 300  # characters of each example
MAX_ANNOTATION_PLOTS = 36  # columns drawn per annotation
LN2 = math.log(2)
NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "FLOAT",
           "DOUBLE", "REAL")


def _png(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def _unit(db: Database, model: str) -> str:
    """What a score name scored: documents or instances."""
    return (db.snapshot.models.get(model) or {}).get("unit") or "documents"


def _pool_rows(db: Database, docs: str) -> str:
    """SQL of (unit_id, doc_id, source) for the rows of `docs`: scores join on unit_id, annotations on doc_id."""
    return (f"select unit_key(struct_pack(*columns('^(instance_id|doc_id)$'))) as unit_id, doc_id, source "
            f"from ({relation_sql(db, docs)})")


def _histograms(db: Database, models: list[str], docs: str) -> str | None:
    """Bits per byte of each model over `docs`, by source, on one shared x-axis."""
    import matplotlib.pyplot as plt

    values: dict[str, dict[str, list[float]]] = {}
    for model in models:
        rows = db.sql(
            f"select p.source, l.bits_per_byte from losses l join ({_pool_rows(db, docs)}) p on l.doc_id = p.unit_id "
            "where l.model = ? and l.bits_per_byte is not null", params=[model]).fetchall()
        for source, bits in rows:
            values.setdefault(model, {}).setdefault(source, []).append(bits)
    values = {m: v for m, v in values.items() if v}
    if not values:
        return None
    everything = [x for by_source in values.values() for xs in by_source.values() for x in xs]
    low, high = min(everything), max(everything)
    bins = [low + (high - low) * i / 40 for i in range(41)] if high > low else 10
    figure, axes = plt.subplots(len(values), 1, figsize=(8, 2.6 * len(values)), squeeze=False, sharex=True)
    for axis, (model, by_source) in zip(axes[:, 0], values.items()):
        for source, xs in sorted(by_source.items()):
            axis.hist(xs, bins=bins, histtype="step", linewidth=1.4, density=True, label=f"{source} ({len(xs)})")
        axis.set_title(f"{model}: bits per byte over {docs}", fontsize=10)
        axis.set_ylabel("density")
        axis.legend(fontsize=7, ncol=2)
    axes[-1, 0].set_xlabel("bits per byte (lower: the model predicts the text better)")
    figure.tight_layout()
    return _png(figure)


SCORED = "_report_scored"  # a temp table: every scored row of the pool, its bits per byte and whether it is kept


def _coverage(db: Database, teacher: str, reference: str, docs: str) -> tuple[int, int]:
    """(units of `docs` with a score of both models, units of `docs`), as the difference policies count
    them (`difference_units`: keys alone)."""
    with db.query_errors():
        return db.con.execute(
            "select count(*) filter (where has_teacher and has_reference), count(*) "
            f"from difference_units({quote(teacher)}, {quote(reference)}, docs := {quote(docs)})").fetchall()[0]


def _score(db: Database, teacher: str, reference: str, alpha: float, docs: str, missing: str) -> int:
    """Fill SCORED with (unit_id, source, reference and teacher bits/byte, score in bits/byte, kept); returns its rows."""
    kept = f"difference({quote(teacher)}, {quote(reference)}, alpha := {alpha}, docs := {quote(docs)}{missing})"
    key = "unit_key(struct_pack(*columns('^(instance_id|doc_id)$')))"
    with db.query_errors():
        db.con.execute(f"""
            create or replace temp table {SCORED} as
            with scored as (select {key} as unit_id, source, n_bytes, score, teacher_logprob, reference_logprob
                            from difference_scores({quote(teacher)}, {quote(reference)}, docs := {quote(docs)}{missing})),
                 kept as (select {key} as unit_id from {kept})
            select s.unit_id, s.source, -s.reference_logprob / s.n_bytes / ln(2) as reference_bpb,
                   -s.teacher_logprob / s.n_bytes / ln(2) as teacher_bpb, s.score / ln(2) as score,
                   s.unit_id in (select unit_id from kept) as kept
            from scored s where s.n_bytes > 0
        """)
        return db.con.execute(f"select count(*) from {SCORED}").fetchall()[0][0]


def _cut(db: Database) -> float | None:
    """The lowest kept score: the selection's boundary."""
    return db.con.execute(f"select min(score) filter (where kept) from {SCORED}").fetchall()[0][0]


def _scatter(db: Database, teacher: str, reference: str, alpha: float) -> str | None:
    import matplotlib.pyplot as plt

    rows = db.con.execute(f"select reference_bpb, teacher_bpb, kept from {SCORED} order by hash(unit_id, 11) "
                          f"limit {MAX_POINTS}").fetchall()  # a seeded sample beyond MAX_POINTS
    if not rows:
        return None
    cut = _cut(db)
    figure, axis = plt.subplots(figsize=(6.5, 6))
    for selected, color, label in ((False, "#bbbbbb", "dropped"), (True, "#d62728", f"kept (top {alpha:.0%})")):
        points = [(x, y) for x, y, k in rows if k == selected]
        if points:
            axis.scatter([p[0] for p in points], [p[1] for p in points], s=6, c=color, label=label, alpha=0.7)
    if cut is not None:
        xs = [r[0] for r in rows]
        low, high = min(xs), max(xs)
        axis.plot([low, high], [low - cut, high - cut], "k--", linewidth=1,
                  label=f"boundary: reference - teacher = {cut:.3f} bits/byte")
    axis.set_xlabel(f"reference bits per byte ({reference})")
    axis.set_ylabel(f"teacher bits per byte ({teacher})")
    axis.set_title("MiniPLM difference sampling")
    axis.legend(fontsize=8)
    return _png(figure)


def _score_histogram(db: Database, alpha: float, bins: int = 50) -> str | None:
    """Difference scores (bits per byte), kept and dropped, with the cut (the bins counted in DuckDB)."""
    import matplotlib.pyplot as plt

    low, high = db.con.execute(f"select min(score), max(score) from {SCORED}").fetchall()[0]
    if low is None:
        return None
    width = (high - low) / bins or 1.0
    counts = db.con.execute(f"select least(floor((score - ?) / ?)::int, {bins - 1}) as bin, kept, count(*) from {SCORED} "
                            "group by all", [low, width]).fetchall()
    edges = [low + width * i for i in range(bins + 1)]
    dropped, kept = [0] * bins, [0] * bins
    for index, is_kept, n in counts:
        (kept if is_kept else dropped)[index] += n
    figure, axis = plt.subplots(figsize=(8, 3.2))
    axis.bar(edges[:-1], dropped, width=width, align="edge", color="#bbbbbb", label="dropped")
    axis.bar(edges[:-1], kept, width=width, align="edge", bottom=dropped, color="#d62728", label=f"kept (top {alpha:.0%})")
    cut = _cut(db)
    if cut is not None:
        axis.axvline(cut, color="k", linestyle="--", linewidth=1, label=f"cut: {cut:.3f} bits/byte")
    axis.set_xlabel("difference score: reference - teacher, bits per byte (higher: the teacher knows it better)")
    axis.set_ylabel("rows")
    axis.legend(fontsize=8)
    return _png(figure)


def _kept_by_source(db: Database) -> str | None:
    """The fraction of each source's scored rows the selection keeps."""
    import matplotlib.pyplot as plt

    rows = db.con.execute(f"select source, count(*), count(*) filter (where kept) from {SCORED} group by 1 order by 1").fetchall()
    if not rows:
        return None
    figure, axis = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.2))
    axis.barh(range(len(rows)), [k / n for _, n, k in rows], color="#d62728")
    axis.set_yticks(range(len(rows)), [f"{s} ({k}/{n})" for s, n, k in rows], fontsize=8)
    axis.invert_yaxis()
    axis.set_xlim(0, 1)
    axis.set_xlabel("fraction of the source's scored rows kept")
    return _png(figure)


def _examples(db: Database, docs: str) -> str:
    """HTML tables of the top and bottom rows of the ranking, with an excerpt of each."""
    key = "unit_key(struct_pack(*columns('^(instance_id|doc_id)$')))"
    texts = f"(select {key} as unit_id, text from ({relation_sql(db, docs)}))"
    out = []
    for end, order in (("top", "score desc, unit_id"), ("bottom", "score, unit_id desc")):
        rows = db.con.execute(f"select s.unit_id, s.source, s.score, left(t.text, {EXCERPT}) from "
                              f"(select * from {SCORED} order by {order} limit {EXAMPLES}) s join {texts} t using (unit_id) "
                              f"order by {order}").fetchall()
        if not rows:
            return ""
        cells = "".join(
            f"<tr><td>{html.escape(str(unit_id))}</td><td>{html.escape(source)}</td><td>{score:.3f}</td>"
            f"<td class='text'>{html.escape(text or '')}</td></tr>"
            for unit_id, source, score, text in rows)
        out.append(f"<h3>The {end} of the ranking</h3><table><tr><th>id</th><th>source</th><th>score (bits/byte)</th>"
                   f"<th>excerpt</th></tr>{cells}</table>")
    return "".join(out)


# where the built-in filters cut, per annotation column: (policy, its parameter(s)); the values are
# the macro's own defaults, read from its SQL file (one source of truth)
CUTS = {
    "quality": {
        "gopher_words": ("filter_quality", "min_doc_words", "max_doc_words"),
        "gopher_mean_word_length": ("filter_quality", "min_avg_word_length", "max_avg_word_length"),
        "gopher_hash_ratio": ("filter_quality", "max_symbol_word_ratio"),
        "gopher_ellipsis_ratio": ("filter_quality", "max_symbol_word_ratio"),
        "gopher_bullet_lines_ratio": ("filter_quality", "max_bullet_lines_ratio"),
        "gopher_ellipsis_lines_ratio": ("filter_quality", "max_ellipsis_lines_ratio"),
        "gopher_alpha_words_ratio": ("filter_quality", "min_alpha_words_ratio"),
        "gopher_stop_words": ("filter_quality", "min_stop_words"),
        "gopher_dup_para_frac": ("filter_quality", "dup_para_frac"),
        "gopher_dup_para_char_frac": ("filter_quality", "dup_para_char_frac"),
        "gopher_dup_line_frac": ("filter_quality", "dup_line_frac"),
        "gopher_dup_line_char_frac": ("filter_quality", "dup_line_char_frac"),
        **{f"gopher_top_{n}gram_frac": ("filter_quality", f"top_{n}gram_frac") for n in (2, 3, 4)},
        **{f"gopher_dup_{n}gram_frac": ("filter_quality", f"dup_{n}gram_frac") for n in range(5, 11)},
        "c4_sentences": ("filter_quality", "min_sentences"),
        "c4_any_end_sentences": ("filter_quality", "min_sentences"),
        "fineweb_line_punct_ratio": ("filter_quality", "line_punct_thr"),
        "fineweb_short_line_ratio": ("filter_quality", "short_line_thr"),
        "fineweb_char_dup_ratio": ("filter_quality", "char_duplicates_ratio"),
        "fineweb_list_ratio": ("filter_quality", "new_line_ratio"),
    },
    "language": {"language_score": ("filter_language", "min_score")},
}


@functools.cache
def _defaults(policy: str) -> dict[str, float]:
    """The numeric defaults of a built-in macro's parameters (`name := 0.65`), from its SQL file."""
    from corpusdb.policies import builtin_views

    text = next(v.text for v in builtin_views() if v.name == policy)
    signature = text[text.index(f"create or replace macro {policy}("):text.index(") as table")]
    return {k: float(v) for k, v in re.findall(r"(\w+) := (-?[0-9.]+)\b", signature)}


def _cuts(kind: str | None, column: str) -> list[tuple[float, str]]:
    """(value, label) of each threshold the built-in filter puts on an annotation column."""
    entry = CUTS.get(kind or "", {}).get(column)
    if not entry:
        return []
    policy, *params = entry
    defaults = _defaults(policy)
    return [(defaults[p], f"{policy} {p}") for p in params if p in defaults]


def _annotation_plots(db: Database, docs: str) -> list[tuple[str, str | None]]:
    """Per annotation, its columns' distributions over `docs` (numbers: histograms; text: top values; booleans: share true)."""
    import matplotlib.pyplot as plt

    out = []
    for name, entry in sorted(db.snapshot.annotations.items()):
        columns = [(c, t) for c, t in annotation_columns(entry).items()
                   if t.upper() in NUMERIC or t.upper() in ("VARCHAR", "BOOLEAN")][:MAX_ANNOTATION_PLOTS]
        if not columns:
            continue
        pool = f"(select distinct doc_id from ({_pool_rows(db, docs)}))"
        table = db.sql(f"select {', '.join(f'a.{c}' for c, _ in columns)} from {annotation_view(name)} a semi join {pool} p "
                       "on a.doc_id = p.doc_id").fetchall()
        if not table:
            continue
        ncols = min(4, len(columns))
        nrows = math.ceil(len(columns) / ncols)
        figure, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.3 * nrows), squeeze=False)
        for index, (column, kind) in enumerate(columns):
            axis = axes[index // ncols, index % ncols]
            values = [row[index] for row in table if row[index] is not None]
            if kind.upper() == "VARCHAR":
                counts: dict[str, int] = {}
                for v in values:
                    counts[v] = counts.get(v, 0) + 1
                top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:8]
                axis.barh([k for k, _ in top][::-1], [v for _, v in top][::-1], color="#1f77b4")
            elif kind.upper() == "BOOLEAN":
                share = sum(bool(v) for v in values) / max(len(values), 1)
                axis.barh(["true", "false"], [share, 1 - share], color=["#d62728", "#bbbbbb"])
                axis.set_xlim(0, 1)
            else:
                finite = [float(v) for v in values if math.isfinite(float(v))]
                if finite:
                    axis.hist(finite, bins=30, color="#1f77b4")
                    for value, label in _cuts(entry.get("kind"), column):  # where the built-in filter cuts
                        if min(finite) <= value <= max(finite):  # a threshold outside the data cuts nothing here
                            axis.axvline(value, color="#d62728", linestyle="--", linewidth=1, label=label)
                            axis.annotate(f"{value:g}", (value, 1), xycoords=("data", "axes fraction"), fontsize=6,
                                          color="#d62728", ha="left", va="top")
            missing = len(table) - len(values)
            axis.set_title(column + (f" ({missing} null)" if missing else ""), fontsize=8)
            axis.tick_params(labelsize=7)
        for index in range(len(columns), nrows * ncols):
            axes[index // ncols, index % ncols].axis("off")
        figure.tight_layout()
        out.append((f"Annotation {name} ({entry.get('kind')}) over {docs}: {len(table):,} documents", _png(figure)))
    return out


def _shares(stats: list[dict]) -> str:
    import matplotlib.pyplot as plt

    sources = sorted({s["source"] for st in stats for s in st["sources"]})
    figure, axis = plt.subplots(figsize=(8, 0.6 * len(stats) + 1.5))
    lefts = [0.0] * len(stats)
    colors = plt.get_cmap("tab20")
    for i, source in enumerate(sources):
        widths = [next((s["share_bytes"] for s in st["sources"] if s["source"] == source), 0.0) for st in stats]
        axis.barh(range(len(stats)), widths, left=lefts, color=colors(i % 20), label=source)
        lefts = [a + b for a, b in zip(lefts, widths)]
    axis.set_yticks(range(len(stats)), [st["view"] for st in stats], fontsize=8)
    axis.invert_yaxis()
    axis.set_xlabel("share of bytes")
    axis.set_title("per-source shares of each view")
    axis.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    return _png(figure)


def _dedup_view(db: Database, notes: list[str]) -> list[str]:
    """The deduplicated view for the report's table: `dedup` where every document has a minhash row, `dedup(missing
    := 'keep')` with a note where some have none (ingested since), nothing before `corpusdb minhash` ran."""
    with db.query_errors():
        missing, total = db.con.execute(
            "select count(*) filter (where m.doc_id is null), count(*) from (select doc_id from documents) d "
            "left join (select doc_id from minhash) m on m.doc_id = d.doc_id").fetchall()[0]
    if missing == total:
        return []
    if missing:
        notes.append(f"{missing:,} of {total:,} documents have no minhash row (ingested after `corpusdb minhash` ran): "
                     "dedup(missing := 'keep') below keeps them unchecked; run `corpusdb minhash DB` again.")
        return ["dedup(missing := 'keep')"]
    return ["dedup"]


def build_report(db: Database, *, teacher: str | None = None, reference: str | None = None, alpha: float = 0.5,
                 views: list[str] | None = None, docs: str | None = None) -> str:
    """The report as an HTML string.

    Args:
        teacher, reference: score names for the difference plots and view [default: the models
            named "teacher" and "reference" if scored].
        views: views to summarise [default: documents, dedup, every user view, and difference].
        docs: the rows the plots and the selection are drawn from (a view name) [default:
            documents, or instances when the teacher scored instances].
    """
    import matplotlib

    matplotlib.use("Agg")
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha {alpha} must be in (0, 1]: the fraction of scored documents difference sampling keeps")
    # score names without a row (an empty view scored, a job killed before its first commit) have nothing to plot
    models = [m for (m,) in db.sql("select distinct model from scores order by 1").fetchall()]
    empty = sorted(set(db.snapshot.models) - set(models))
    if teacher is None and reference is None and {"teacher", "reference"} <= set(models):
        teacher, reference = "teacher", "reference"
    for name in (teacher, reference):
        if name is not None and name not in models:
            raise ValueError(f"no scores named {name!r}; scored models: {', '.join(models) or 'none'} (run corpusdb score)")
    if docs is None:
        docs = "instances" if teacher and _unit(db, teacher) == "instances" else "documents"
    columns = db.sql(f"select * from ({relation_sql(db, docs)}) limit 0").columns  # an unknown view fails here
    unit = "instances" if "instance_id" in columns else "documents"
    plotted = [teacher, reference] if teacher and reference else [m for m in models if _unit(db, m) == unit]
    pool = "" if docs == "documents" else f", docs := {quote(docs)}"
    notes = []
    # a selection over a partly scored pool ranks the scored units only: say so, with the counts
    covered, n_units = _coverage(db, teacher, reference, docs) if teacher and reference else (0, 0)
    missing = ", missing := 'exclude'" if covered < n_units else ""
    if missing:
        notes.append(f"Coverage: {covered:,} of {n_units:,} {unit} of {docs} have a score of both {teacher} and {reference}; "
                     f"the difference selection below ranks those only (missing := 'exclude'). Score the rest with "
                     f"`corpusdb score DB --as NAME --view {docs}` (a re-run scores only what is missing).")
    if views is None:
        views = ["documents", *_dedup_view(db, notes), *sorted(db.snapshot.views)]
        if teacher and reference:
            views.append(f"difference({quote(teacher)}, {quote(reference)}, alpha := {alpha}{pool}{missing})")
    stats = [view_stats(db, v) for v in views]
    images = [(f"Bits per byte by source, over {docs}", _histograms(db, plotted, docs))]
    examples = ""
    if teacher and reference and _score(db, teacher, reference, alpha, docs, missing):
        images += [("Teacher vs reference, with the selection boundary", _scatter(db, teacher, reference, alpha)),
                   ("Difference scores, with the cut", _score_histogram(db, alpha)),
                   ("Kept fraction of each source", _kept_by_source(db))]
        examples = _examples(db, docs)
    db.con.execute(f"drop table if exists {SCORED}")
    images += _annotation_plots(db, docs)
    images.append(("Per-source shares of each view", _shares(stats)))

    table = "".join(
        f"<tr><td>{html.escape(s['view'])}</td><td>{s['n_documents']:,} {s['unit']}</td><td>{s['n_bytes']:,}</td>"
        f"<td>{s['share_of_corpus_bytes']:.1%}</td><td>{html.escape(', '.join(f'{m}: {t:,}' for m, t in s['n_tokens'].items()))}</td></tr>"
        for s in stats
    )
    figures = "".join(
        f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" src="data:image/png;base64,{png}">'
        for title, png in images if png
    )
    ranking = f"<h2>Examples</h2>{examples}" if examples else ""
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>corpusdb report: {html.escape(db.url)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin-bottom:1em}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right;vertical-align:top}}
td:first-child,th:first-child{{text-align:left}}td.text{{text-align:left;white-space:pre-wrap;font-family:monospace;font-size:12px}}
img{{max-width:100%}}</style></head>
<body><h1>corpusdb report</h1>
<p>{html.escape(db.url)} at version {db.version}, {now}. Scored models: {html.escape(', '.join(models) or 'none')}.
Annotations: {html.escape(', '.join(sorted(db.snapshot.annotations)) or 'none')}.
{html.escape(f'Score names without scores: {", ".join(empty)}.' if empty else '')}
Losses are in bits per byte (the negative log2-likelihood of the text per UTF-8 byte), comparable across tokenizers.</p>
{"".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)}
<h2>Views</h2><table><tr><th>view</th><th>rows</th><th>bytes</th><th>share of the corpus's text bytes</th><th>tokens per model</th></tr>{table}</table>
{figures}
{ranking}
</body></html>
"""


def write_report(db: Database, url: str, storage_options: dict | None = None, **options) -> str:
    """Write the report to URL (a local path or fsspec URL) atomically; returns the URL."""
    page = build_report(db, **options).encode("utf-8")
    folder, _, name = url.rstrip("/").rpartition("/")
    location = Location(folder or ".", db.location.storage_options if storage_options is None else storage_options)
    location.write_atomic(page, name)
    return url
