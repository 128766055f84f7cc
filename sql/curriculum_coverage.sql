-- purpose: curriculum's coverage check: every unit of docs has a score of the model, or missing := 'last' | 'exclude' says what to do
-- depends: require_coverage, score_command
-- params: model; missing ('error', 'last' or 'exclude'); n_unscored, n_units (counts over docs); docs
create or replace macro curriculum_coverage(model, missing, n_unscored, n_units, docs) as (
    require_coverage(
        'curriculum', missing, ['error', 'last', 'exclude'], n_unscored, n_units, docs,
        'score of ''' || coalesce(model, '') || '''',
        'score them with ' || score_command(model, docs) || ' (a re-run scores only the units without a score)',
        'missing := ''last'' to put them after the ' || (n_units - n_unscored) || ' scored units, or '
        || 'missing := ''exclude'' to rank only those'
    )
);
