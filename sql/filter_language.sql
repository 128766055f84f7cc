-- purpose: documents in one of the given languages with at least min_score probability, on the `language` annotation (fastText)
-- depends: filter_language_checks
-- params: langs (a list of ISO 639 codes, e.g. ['en']); min_score := 0.65 (FineWeb's); docs := 'documents'; missing := 'error' | 'exclude' | 'keep'
-- Keeps a document when the probability of one of `langs` is at least min_score, as datatrove's
-- LanguageFilter(languages, language_threshold) does (it asks for more than the threshold; the
-- probabilities are continuous). Probabilities under 0.01 are not stored, so min_score must be at
-- least 0.01. Every row of `docs` needs a language row: documents ingested after the annotator
-- ran (or while it runs: a registered annotation without rows yet) are an error naming the fix,
-- unless missing := 'exclude' (dropped) or 'keep' (kept unjudged). Over instances each instance
-- has its document's language.
create or replace macro filter_language(langs, min_score := 0.65, docs := 'documents', missing := 'error') as table
with unjudged as (
    -- keys alone: how many rows of docs have no language row
    select count(*) filter (where a.doc_id is null) as n_missing, count(*) as n_units
    from (select doc_id from query_table(docs)) as d
    left join (select doc_id from annotations_language) as a on d.doc_id = a.doc_id
),

checks as (
    select
        filter_language_checks(langs, min_score, missing, unjudged.n_missing, unjudged.n_units, docs) as ok,
        min_score as low
    from unjudged
),

final as (
    -- the second branch never has a row, but keeps the checks where DuckDB proves the join empty
    -- (an annotation registered without rows yet)
    select d.*
    from query_table(docs) as d
    left join annotations_language as l on d.doc_id = l.doc_id, checks
    where
        checks.ok
        and (
            list_bool_or(list_transform(langs, lambda x: coalesce(l.language_scores[x], 0) >= checks.low))
            or (l.doc_id is null and missing = 'keep')
        )
    union all by name
    select null::bigint as doc_id from checks where not checks.ok
)

select * from final;
