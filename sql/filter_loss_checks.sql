-- purpose: filter_loss's checks on counts alone: the score name, per, the bounds, the unit, and a score for every unit of docs unless missing says otherwise
-- depends: require, require_coverage, require_unit, score_command, scored_models
-- params: score_name (the model's score name); per; min_loss; max_loss; missing; n_missing, n_units (units of docs without a score of model, and all of them); docs
-- filter_loss runs them on its own counts; a distributed selection (`corpusdb select`) on its
-- tasks' summed counts, so both refuse with the same words.
create or replace macro filter_loss_checks(score_name, per, min_loss, max_loss, missing, n_missing, n_units, docs) as (
    require(
        exists (select 1 from scores where scores.model = score_name),
        'filter_loss: no scores named ''' || coalesce(score_name, 'NULL') || '''; scored models: ' || scored_models()
    )
    and require(per in ('byte', 'token'), 'filter_loss: per must be ''byte'' or ''token'', not ''' || per || '''')
    and require(
        min_loss is null or max_loss is null or min_loss <= max_loss,
        'filter_loss: min_loss ' || min_loss || ' is above max_loss ' || max_loss
    )
    and require_unit('filter_loss', score_name, docs)
    and require_coverage(
        'filter_loss', missing, ['error', 'exclude', 'keep'], n_missing, n_units, docs,
        'score of ''' || coalesce(score_name, '') || '''',
        'score them with ' || score_command(score_name, docs) || ' (a re-run scores only the units without a score)',
        'missing := ''exclude'' to drop them or missing := ''keep'' to keep them unjudged'
    )
);
