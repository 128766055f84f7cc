-- purpose: filter_decontaminated's checks on counts alone: its argument, and a decontamination row for every unit of docs unless missing says otherwise
-- depends: require, require_coverage
-- params: max_fraction; missing; n_missing, n_units (units of docs without a decontamination row, and all of them); docs
-- filter_decontaminated runs them on its own counts; a distributed selection (`corpusdb select`)
-- on its tasks' summed counts, so both refuse with the same words.
create or replace macro filter_decontaminated_checks(max_fraction, missing, n_missing, n_units, docs) as (
    require(
        max_fraction >= 0 and max_fraction <= 1,
        'filter_decontaminated: max_fraction must be in [0, 1] (the share of a unit''s bytes inside matched '
        || 'n-grams), not ' || coalesce(max_fraction::varchar, 'NULL')
    )
    and require_coverage(
        'filter_decontaminated', missing, ['error', 'exclude', 'keep'], n_missing, n_units, docs,
        'decontamination row (documents ingested after `corpusdb decontaminate` ran?)',
        'compute them with `corpusdb decontaminate DB --against FILES` (a re-run with the same files computes only '
        || 'the documents without a row)',
        'missing := ''exclude'' to drop them or missing := ''keep'' to keep them unjudged'
    )
);
