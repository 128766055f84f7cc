-- purpose: filter_classifier's checks on counts alone: its arguments, and a row of the annotation for every unit of docs unless missing says otherwise
-- depends: require, require_coverage
-- params: name; alpha; min_score; max_score; missing; n_missing, n_units (units of docs without a row of the annotation, and all of them); docs
-- filter_classifier runs them on its own counts; a distributed selection (`corpusdb select`) on
-- its tasks' summed counts, so both refuse with the same words.
create or replace macro filter_classifier_checks(name, alpha, min_score, max_score, missing, n_missing, n_units, docs) as (
    require(
        alpha is null or (alpha > 0 and alpha <= 1),
        'filter_classifier: alpha must be in (0, 1], not ' || coalesce(alpha::varchar, 'NULL')
    )
    and require(
        min_score is null or max_score is null or min_score <= max_score,
        'filter_classifier: min_score ' || coalesce(min_score::varchar, 'NULL') || ' is above max_score '
        || coalesce(max_score::varchar, 'NULL')
    )
    and require_coverage(
        'filter_classifier', missing, ['error', 'exclude', 'keep'], n_missing, n_units, docs,
        'row of annotation ''' || name || ''' (documents ingested after the annotator ran?)',
        'annotate them with `corpusdb annotate DB ' || name || '` and the same options (a re-run annotates only '
        || 'the documents without a row)',
        'missing := ''exclude'' to drop them or missing := ''keep'' to keep them unjudged'
    )
);
