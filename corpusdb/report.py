"""An HTML report of a database: loss histograms per source, teacher vs reference, view shares.

    corpusdb report demo/db --teacher teacher --reference reference --out demo/report.html

One self-contained HTML file (plots embedded as PNG) that people can open and share: what is in
the corpus, how each scoring model sees each source, where MiniPLM's difference selection draws
its boundary, and what each view keeps of each source.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
from typing import TYPE_CHECKING

from corpusdb.analysis import view_stats
from corpusdb.storage import Location

if TYPE_CHECKING:
    from corpusdb.db import Database

MAX_POINTS = 20000  # scatter points drawn (a seeded sample beyond that)


def _png(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def _histograms(db: Database, models: list[str]) -> str | None:
    import matplotlib.pyplot as plt

    if not models:
        return None
    figure, axes = plt.subplots(len(models), 1, figsize=(8, 2.8 * len(models)), squeeze=False)
    for axis, model in zip(axes[:, 0], models):
        units = "(select instance_id as doc_id, source from instances)" if _unit(db, model) == "instances" else "documents"
        rows = db.sql(
            f"select d.source, l.loss_per_byte from losses l join {units} d using (doc_id) where l.model = ? and l.loss_per_byte is not null",
            params=[model],
        ).fetchall()
        by_source: dict[str, list[float]] = {}
        for source, loss in rows:
            by_source.setdefault(source, []).append(loss)
        low = min(v for values in by_source.values() for v in values)
        high = max(v for values in by_source.values() for v in values)
        bins = [low + (high - low) * i / 40 for i in range(41)] if high > low else 10
        for source, values in sorted(by_source.items()):
            axis.hist(values, bins=bins, histtype="step", linewidth=1.4, density=True, label=f"{source} ({len(values)})")
        axis.set_title(f"loss per byte (nats) under {model}")
        axis.set_ylabel("density")
        axis.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    return _png(figure)


def _unit(db: Database, model: str) -> str:
    """What a score name scored: documents or instances."""
    return (db.snapshot.models.get(model) or {}).get("unit") or "documents"


def _docs(db: Database, teacher: str) -> str:
    """The docs argument of policies over the teacher's unit."""
    return ", docs := 'instances'" if _unit(db, teacher) == "instances" else ""


def _scatter(db: Database, teacher: str, reference: str, alpha: float) -> str | None:
    import matplotlib.pyplot as plt

    docs = _docs(db, teacher)
    rows = db.sql(
        f"""
        with scored as (select unit_id, source, score, n_bytes, teacher_logprob, reference_logprob
                        from difference_scores('{teacher}', '{reference}'{docs})),
             kept as materialized (select score from difference('{teacher}', '{reference}', alpha := {alpha}{docs}))
        select -reference_logprob / n_bytes, -teacher_logprob / n_bytes, score >= (select min(score) from kept),
               (select min(score) from kept)
        from scored where n_bytes > 0
        order by uniform(unit_id, 0) limit {MAX_POINTS}
        """
    ).fetchall()
    if not rows:
        return None
    threshold = rows[0][3]  # the boundary: the lowest kept score
    figure, axis = plt.subplots(figsize=(6.5, 6))
    for selected, color, label in ((False, "#bbbbbb", "dropped"), (True, "#d62728", f"kept (top {alpha:.0%})")):
        points = [(x, y) for x, y, s, _ in rows if s == selected]
        if points:
            axis.scatter([p[0] for p in points], [p[1] for p in points], s=6, c=color, label=label, alpha=0.7)
    xs = [r[0] for r in rows]
    low, high = min(xs), max(xs)
    axis.plot([low, high], [low - threshold, high - threshold], "k--", linewidth=1,
              label=f"boundary: reference - teacher = {threshold:.3f} nats/byte")
    axis.set_xlabel(f"reference loss per byte ({reference})")
    axis.set_ylabel(f"teacher loss per byte ({teacher})")
    axis.set_title("MiniPLM difference sampling")
    axis.legend(fontsize=8)
    return _png(figure)


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


def build_report(db: Database, *, teacher: str | None = None, reference: str | None = None, alpha: float = 0.5,
                 views: list[str] | None = None) -> str:
    """The report as an HTML string.

    Args:
        teacher, reference: score names for the difference plot and view [default: the models
            named "teacher" and "reference" if scored].
        views: views to summarise [default: documents, dedup, every user view, and difference].
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
    if views is None:
        views = ["documents", "dedup", *sorted(db.snapshot.views)]
        if teacher and reference:
            views.append(f"difference('{teacher}', '{reference}', alpha := {alpha}{_docs(db, teacher)})")
    stats = [view_stats(db, v) for v in views]
    images = [("Loss per byte by source", _histograms(db, models))]
    if teacher and reference:
        images.append(("Teacher vs reference, with the selection boundary", _scatter(db, teacher, reference, alpha)))
    images.append(("Per-source shares of each view", _shares(stats)))

    rows = "".join(
        f"<tr><td>{html.escape(s['view'])}</td><td>{s['n_documents']:,}</td><td>{s['n_bytes']:,}</td>"
        f"<td>{s['share_of_corpus_bytes']:.1%}</td><td>{html.escape(', '.join(f'{m}: {t:,}' for m, t in s['n_tokens'].items()))}</td></tr>"
        for s in stats
    )
    figures = "".join(
        f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" src="data:image/png;base64,{png}">'
        for title, png in images if png
    )
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>corpusdb report: {html.escape(db.url)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}img{{max-width:100%}}</style></head>
<body><h1>corpusdb report</h1>
<p>{html.escape(db.url)} at version {db.version}, {now}. Scored models: {html.escape(', '.join(models) or 'none')}.
{html.escape(f'Score names without scores: {", ".join(empty)}.' if empty else '')}</p>
<h2>Views</h2><table><tr><th>view</th><th>documents</th><th>bytes</th><th>share of corpus bytes</th><th>tokens per model</th></tr>{rows}</table>
{figures}
</body></html>
"""


def write_report(db: Database, url: str, storage_options: dict | None = None, **options) -> str:
    """Write the report to URL (a local path or fsspec URL) atomically; returns the URL."""
    page = build_report(db, **options).encode("utf-8")
    folder, _, name = url.rstrip("/").rpartition("/")
    location = Location(folder or ".", db.location.storage_options if storage_options is None else storage_options)
    location.write_atomic(page, name)
    return url
