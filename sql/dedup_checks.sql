-- purpose: dedup's check on counts alone: a minhash row for every unit of docs unless missing says otherwise
-- depends: require_coverage
-- params: missing; n_missing, n_units (units of docs without a minhash row, and all of them); docs
-- dedup runs it on its own counts; a distributed selection (`corpusdb select`) on its tasks'
-- summed counts, so both refuse with the same words. Whether `corpusdb minhash` ever ran (the
-- message's cause) is read from the minhash table itself.
create or replace macro dedup_checks(missing, n_missing, n_units, docs) as (
    require_coverage(
        'dedup', missing, ['error', 'keep', 'exclude'], n_missing, n_units, docs,
        case
            when exists (select 1 from minhash) then 'minhash row (ingested after `corpusdb minhash` ran, so never compared with anything)'
            else 'minhash row (`corpusdb minhash` has not run at this version)'
        end,
        'compare them with `corpusdb minhash DB` (a re-run signs only the new documents, then re-clusters)',
        'missing := ''keep'' to keep them as if unique or missing := ''exclude'' to drop them'
    )
);
