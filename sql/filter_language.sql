-- purpose: documents in one of the given languages with at least min_score probability, on the `language` annotation (fastText)
-- depends: require, require_coverage
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
        require(
            len(langs) > 0,
            'filter_language: langs must be a non-empty list of language codes such as [''en''], not '
            || coalesce(langs::varchar, 'NULL')
        )
        and require(
            min_score >= 0.01 and min_score <= 1,
            'filter_language: min_score must be in [0.01, 1] (probabilities under 0.01 are not stored, so a lower '
            || 'threshold could not be told apart from them), not ' || coalesce(min_score::varchar, 'NULL')
        )
        and require_coverage(
            'filter_language', missing, ['error', 'exclude', 'keep'], unjudged.n_missing, unjudged.n_units, docs,
            'language annotation (documents ingested after it was computed, or `corpusdb annotate` still running?)',
            'annotate them with `corpusdb annotate DB language` (a re-run annotates only the documents without a row)',
            'missing := ''exclude'' to drop them or missing := ''keep'' to keep them unjudged'
        ) as ok,
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
