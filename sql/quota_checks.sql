-- purpose: quota's and mixture's checks of their arguments and coverage, from counts over the units (what the single-process and the distributed quota both run)
-- depends: require, require_coverage, require_unit, score_command, scored_models
-- params: budgets, unit, model, docs, missing, policy (as quota's); sources (the distinct sources of docs, sorted); n_missing (units of budgeted sources the model did not score, for unit 'tokens'); n_units (units of budgeted sources)
-- A budget that is not positive, a budgeted source docs does not hold (a misspelling), an unknown
-- unit, unit 'tokens' without a scored model, a model of another unit than docs, or units the
-- model did not score (unless missing := 'exclude') is an error naming the fix.
create or replace macro quota_checks(budgets, unit, model, docs, missing, policy, sources, n_missing, n_units) as (
    require(
        len(map_keys(budgets)) > 0 and list_bool_and(list_transform(map_values(budgets), lambda b: b > 0)),
        policy || ': every budget must be positive, not ' || budgets::varchar
    )
    and require(
        list_bool_and(list_transform(map_keys(budgets), lambda s: list_contains(sources, s))),
        policy || ': no units of source(s) '
        || list_filter(map_keys(budgets), lambda s: not list_contains(sources, s))::varchar || ' in '''
        || docs || '''; sources: ' || sources::varchar
    )
    and require(
        unit in ('bytes', 'tokens', 'documents'),
        policy || ': unit must be ''bytes'', ''tokens'' or ''documents'', not ''' || coalesce(unit, 'NULL') || ''''
    )
    and require(
        unit <> 'tokens' or exists (select 1 from scores where scores.model = model),
        policy || ': unit ''tokens'' counts a scored model''s tokens; no scores named ''' || coalesce(model, 'NULL')
        || '''; scored models: ' || scored_models()
    )
    and require_unit(policy, case when unit = 'tokens' then model end, docs)
    and require_coverage(
        policy, missing, ['error', 'exclude'], n_missing, n_units, docs,
        'score of ''' || coalesce(model, '') || ''' (unit ''tokens'' counts its tokens)',
        'score them with ' || score_command(model, docs) || ' (a re-run scores only the units without a score)',
        'missing := ''exclude'' to fill the budgets from the scored units only'
    )
);
