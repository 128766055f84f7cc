-- purpose: documents in one of the given languages with at least min_score probability, on the `language` annotation (fastText)
-- depends: require
-- params: langs (a list of ISO 639 codes, e.g. ['en']); min_score := 0.65 (FineWeb's); docs := 'documents'
-- Keeps a document when the probability of one of `langs` is at least min_score, as datatrove's
-- LanguageFilter(languages, language_threshold) does (it asks for more than the threshold; the
-- probabilities are continuous). Probabilities under 0.01 are not stored, so min_score must be at
-- least 0.01. Every
-- row of `docs` needs a language row: documents ingested after the annotator ran are an error
-- naming the fix, not silently dropped. Over instances each instance has its document's language.
create or replace macro filter_language(langs, min_score := 0.65, docs := 'documents') as table
with missing as (
    select count(*) as n from query_table(docs) as d anti join annotations_language as l on d.doc_id = l.doc_id
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
        and require(
            missing.n = 0,
            'filter_language: ' || missing.n || ' rows of ' || docs || ' have no language annotation (documents '
            || 'ingested after it was computed?); run `corpusdb annotate DB language` again to annotate them'
        ) as ok,
        min_score as low
    from missing
),

final as (
    select d.*
    from query_table(docs) as d
    join annotations_language as l on d.doc_id = l.doc_id, checks
    where checks.ok and list_bool_or(list_transform(langs, lambda x: coalesce(l.language_scores[x], 0) >= checks.low))
)

select * from final;
