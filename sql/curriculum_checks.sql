-- purpose: curriculum's argument checks: a scored model (or a column key), stages >= 1, the model's unit
-- depends: require, require_unit, scored_models
-- params: model, key, stages, docs (as curriculum's)
-- What the single-process and the distributed curriculum both run before ranking anything.
create or replace macro curriculum_checks(model, key, stages, docs) as (
    require(
        model is null or exists (select 1 from scores where scores.model = model),
        'curriculum: no scores named ''' || coalesce(model, '') || '''; scored models: ' || scored_models()
        || ' (or model := null to order by a column of docs)'
    )
    and require(
        model is not null or key not in ('loss_per_byte', 'loss_per_token', 'bits_per_byte'),
        'curriculum: key ''' || key || ''' is a model''s loss; name the model, e.g. curriculum(''reference'')'
    )
    and require(stages >= 1, 'curriculum: stages must be at least 1, not ' || coalesce(stages::varchar, 'NULL'))
    and require_unit('curriculum', model, docs)
);
