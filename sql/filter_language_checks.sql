-- purpose: filter_language's checks on counts alone: its arguments, and a language row for every unit of docs unless missing says otherwise
-- depends: require, require_coverage
-- params: langs; min_score; missing; n_missing, n_units (units of docs without a language row, and all of them); docs
-- filter_language runs them on its own counts; a distributed selection (`corpusdb select`) on its
-- tasks' summed counts, so both refuse with the same words.
create or replace macro filter_language_checks(langs, min_score, missing, n_missing, n_units, docs) as (
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
        'filter_language', missing, ['error', 'exclude', 'keep'], n_missing, n_units, docs,
        'language annotation (documents ingested after it was computed, or `corpusdb annotate` still running?)',
        'annotate them with `corpusdb annotate DB language` (a re-run annotates only the documents without a row)',
        'missing := ''exclude'' to drop them or missing := ''keep'' to keep them unjudged'
    )
);
